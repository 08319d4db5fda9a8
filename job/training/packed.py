"""Packed adapters: K bots' LoRA adapters trained in one step over one frozen base.

A task of K small adapter bots trained one after another runs steps too small to keep a GPU
busy: the host's time per step (launching every kernel) decides, not the arithmetic
(bench/host_per_layer.py). Packed, one step holds a batch of each bot; every adapted matrix
holds the K adapters stacked, and each example goes through its own bot's adapter only
(``Pack.route``), so K bots make one step of K bots' tokens for about the host time of one.

Each bot still learns from its own tweets alone. The step's loss is the sum of each bot's mean
loss over its own tokens, and an adapter's weights meet only its own bot's examples, so each
adapter's gradient is what it would be trained alone. What would couple them is anything over
all the weights at once: clipping is each bot's own norm (``Pack.clip``), and AdamW here
(``AdamW``) keeps each bot's learning rate and step count. tests/training/test_packed.py trains
K bots packed and each alone from the same adapters and data, and their losses agree step by
step.

Laid out for a GPU: every bot's weights live in one (K, P) tensor and their gradients in
another, each layer's A and B views of them, so clipping is one norm over all gradients split
by bot, and the optimizer a handful of kernels a step whatever the layers and bots; the
adapters and the routing tensor sit on the base's device; the adapted input is not copied to
the adapter's precision (under autocast the matmuls take bf16 anyway; the gathered A and B,
``rank x width`` an example, are what is cast). The recipe that trains a pack: packs.py.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from job.config import TrainConfig

# Each layer's A and B are views of one row per bot of the (K, P) buffers: not dense, so
# autograd says, once per layer, that the gradient "may impair performance". It accumulates
# in place into the view (what the flat layout is for); the bench measures the step.
warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout")


class PackedLoRA(nn.Module):
    """A frozen GPT-2 Conv1D (``y = x W + b``, W stored (in, out)) plus, for each example, its
    own bot's low-rank update ``scale * x A_k^T B_k^T``: A (K, r, in) and B (K, out, r), peft's
    shapes stacked (``lora_A.weight`` is (r, in), ``lora_B.weight`` (out, r))."""

    def __init__(self, base: Conv1D, a: torch.Tensor, b: torch.Tensor, scale: float) -> None:
        super().__init__()
        self.base, self.scale = base, scale
        self.a, self.b = nn.Parameter(a), nn.Parameter(b)  # views of the pack's buffers
        self.routes: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        routes = self.routes
        assert routes is not None and routes.shape[0] == x.shape[0], "route() first"
        a = self.a[routes].to(x.dtype)  # (batch, r, in): an example's own bot's
        b = self.b[routes].to(x.dtype)  # (batch, out, r)
        low = torch.bmm(x, a.transpose(1, 2))  # (batch, seq, r)
        return self.base(x) + torch.bmm(low, b.transpose(1, 2)) * self.scale


class Pack:
    """K adapters installed in a frozen model: ``install`` puts them in, ``remove`` takes them
    out again and leaves the base's own modules, untouched."""

    def __init__(self, model: nn.Module, bots: int, config: TrainConfig, rank: int) -> None:
        self.model, self.bots, self.rank = model, bots, rank
        alpha = config.lora_alpha or 2 * rank
        self.scale = alpha / rank
        found = [
            (name, module, child_name, child)
            for name, module in model.named_modules()
            for child_name, child in module.named_children()
            if isinstance(child, Conv1D) and child_name in config.lora_targets
        ]
        if not found:
            raise ValueError(f"no module named {config.lora_targets} to adapt")
        self.names = [f"{name}.{child}" if name else child for name, _, child, _ in found]
        shapes = [tuple(c.weight.shape) for *_, c in found]  # (in, out) each
        sizes = [rank * (i + o) for i, o in shapes]
        device = found[0][3].weight.device
        self.data = torch.zeros(bots, sum(sizes), device=device)  # fp32: the adapters'
        self.grad = torch.zeros_like(self.data)
        for p in model.parameters():
            p.requires_grad_(False)
        self.layers: list[PackedLoRA] = []
        self._put_back: list[tuple[nn.Module, str, Conv1D]] = []
        offset = 0
        for (_, module, child_name, child), (width_in, width_out), size in zip(
            found, shapes, sizes, strict=True
        ):
            cut = offset + rank * width_in
            layer = PackedLoRA(
                child,
                self.data[:, offset:cut].view(bots, rank, width_in),
                self.data[:, cut : offset + size].view(bots, width_out, rank),
                self.scale,
            )
            layer.a.grad = self.grad[:, offset:cut].view(bots, rank, width_in)
            layer.b.grad = self.grad[:, cut : offset + size].view(bots, width_out, rank)
            setattr(module, child_name, layer)
            self.layers.append(layer)
            self._put_back.append((module, child_name, child))
            offset += size

    @property
    def parameters(self) -> int:
        """One bot's adapter numbers."""
        return int(self.data.shape[1])

    def init(self, bot: int, seed: int) -> None:
        """Bot ``bot``'s fresh adapter, as peft makes one: A Kaiming-uniform (a = sqrt(5)),
        drawn from the bot's own seed, B zero (so the bot starts as the base)."""
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for layer in self.layers:
                a = torch.empty(layer.a.shape[1:])
                nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=generator)
                layer.a[bot].copy_(a)
                layer.b[bot].zero_()

    def route(self, routes: torch.Tensor) -> None:
        """Which bot each example of the next forward belongs to (one per row, on the device)."""
        for layer in self.layers:
            layer.routes = routes

    def clip(self, max_norms: torch.Tensor | float) -> torch.Tensor:
        """Each bot's gradients scaled to at most its ``max_norms`` (one a bot, or one for all;
        inf: not clipped) by their own norm, as the Trainer clips a lone bot's: one norm over
        the flat gradients, split by bot. Returns the norms, before."""
        norms = torch.linalg.vector_norm(self.grad, dim=1)
        self.grad.mul_((max_norms / (norms + 1e-6)).clamp(max=1.0).unsqueeze(1))
        return norms

    def weights(self, bot: int) -> dict[str, torch.Tensor]:
        """Bot ``bot``'s adapter under peft's names (``<module>.lora_A.weight``...), on the host."""
        out: dict[str, torch.Tensor] = {}
        for name, layer in zip(self.names, self.layers, strict=True):
            out[f"{name}.lora_A.weight"] = layer.a[bot].detach().to("cpu", copy=True)
            out[f"{name}.lora_B.weight"] = layer.b[bot].detach().to("cpu", copy=True)
        return out

    def remove(self) -> None:
        """The base's own modules back in place: the model as it was before ``install``."""
        for module, child_name, child in self._put_back:
            setattr(module, child_name, child)
        self._put_back.clear()


class AdamW:
    """torch's AdamW (decoupled weight decay; the formulas of torch.optim.AdamW, non-amsgrad)
    over the pack's (K, P) buffers, with each bot's own learning rate and step count, and a bot
    left out of a step (``active`` false) left exactly as it was: its moments, its count and
    its weights. A few kernels a step, whatever the bots and layers."""

    def __init__(
        self, pack: Pack, betas: tuple[float, float], eps: float, weight_decay: float
    ) -> None:
        self.pack, self.betas, self.eps, self.weight_decay = pack, betas, eps, weight_decay
        self.m = torch.zeros_like(pack.data)
        self.v = torch.zeros_like(pack.data)
        self.steps = torch.zeros(pack.bots, device=pack.data.device)

    @torch.no_grad()
    def step(self, lrs: torch.Tensor, active: torch.Tensor) -> None:
        """One update of the active bots; ``lrs`` and ``active`` (K,) on the device."""
        b1, b2 = self.betas
        on = active.to(self.m.dtype).unsqueeze(1)  # (K, 1): 1 updates, 0 keeps
        self.steps += active.to(self.steps.dtype)
        t = self.steps.clamp(min=1).unsqueeze(1)
        lr = (lrs * active).unsqueeze(1)
        data, grad = self.pack.data, self.pack.grad
        if self.weight_decay:
            data.mul_(1 - lr * self.weight_decay)
        # m <- b1 m + (1 - b1) g for an active bot; unchanged (factor 1, plus 0) otherwise
        self.m.mul_(1 - on * (1 - b1)).add_(grad * on * (1 - b1))
        self.v.mul_(1 - on * (1 - b2)).add_(grad * grad * on * (1 - b2))
        correction1 = 1 - b1**t
        denominator = (self.v.sqrt() / (1 - b2**t).sqrt()).add_(self.eps)
        data.sub_(lr / correction1 * self.m / denominator)

    def state(self, bot: int) -> dict[str, torch.Tensor]:
        """Bot ``bot``'s moments and step count, on the host (a checkpoint's)."""
        return {
            "exp_avg": self.m[bot].to("cpu", copy=True),
            "exp_avg_sq": self.v[bot].to("cpu", copy=True),
            "steps": self.steps[bot : bot + 1].to("cpu", copy=True),
        }

    def load(self, bot: int, state: dict[str, torch.Tensor]) -> None:
        self.m[bot].copy_(state["exp_avg"])
        self.v[bot].copy_(state["exp_avg_sq"])
        self.steps[bot] = state["steps"][0]


def rows_of(routes: Sequence[int], device: Any) -> torch.Tensor:
    """The routing tensor of a step's rows (each row's bot), on ``device``."""
    return torch.tensor(list(routes), device=device)
