"""Packed adapters: K bots' LoRA adapters trained in one step over one frozen base.

A task of K small adapter bots (bots_per_task) trains them one after another, each in steps
too small to keep a GPU busy: the host's time per step (launching every kernel) decides, not
the arithmetic (bench/host_per_layer.py). Packed, one step holds a batch of each bot; every
adapted matrix holds the K adapters stacked, and each example goes through its own bot's
adapter only (``route``), so K bots make one step of K bots' tokens for about the host time
of one.

Each bot still learns from its own tweets alone. The step's loss is the sum of each bot's mean
loss over its own tokens, and an adapter's weights meet only its own bot's examples, so each
adapter's gradient is what it would be trained alone; AdamW works weight by weight, so each
bot's update is too. What would couple them is anything over all the weights at once: no
gradient clipping over the whole step (``clip`` clips each bot's gradients by their own norm).
tests/training/test_packed.py trains K bots packed and each alone from the same adapters and
data order, and their losses agree step by step.

Not yet the job's: ``run`` trains one bot at a time (training/train.py). This module is what
a packed task would train with; bench/packed_adapters.py measures it.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from job.config import TrainConfig


def pack(model: nn.Module, bots: int, config: TrainConfig, rank: int) -> list[PackedLoRA]:
    """Replace each targeted Conv1D of ``model`` (frozen) with one that carries ``bots``
    LoRA adapters; returns them, in the model's order."""
    for p in model.parameters():
        p.requires_grad_(False)
    layers = []
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, Conv1D) and child_name in config.lora_targets:
                alpha = config.lora_alpha or 2 * rank
                packed = PackedLoRA(child, bots, rank, alpha / rank)
                setattr(module, child_name, packed)
                layers.append(packed)
    if not layers:
        raise ValueError(f"no module named {config.lora_targets} to adapt")
    return layers


def route(layers: list[PackedLoRA], bot_of_example: torch.Tensor) -> None:
    """Which bot each example of the next forward belongs to (a LongTensor, one per row)."""
    for layer in layers:
        layer.routes = bot_of_example


def adapters(layers: list[PackedLoRA], bot: int) -> list[torch.Tensor]:
    """Bot ``bot``'s adapter weights, as views (A then B of each layer, in order)."""
    return [w for layer in layers for w in (layer.a[bot], layer.b[bot])]


def clip(layers: list[PackedLoRA], max_norm: float) -> None:
    """Each bot's gradients clipped by their own norm, as if trained alone."""
    for bot in range(layers[0].a.shape[0]):
        grads = [w.grad[bot] for layer in layers for w in (layer.a, layer.b) if w.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        scale = (max_norm / (norm + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(scale)


class PackedLoRA(nn.Module):
    """A frozen GPT-2 Conv1D (``y = x W + b``, W stored (in, out)) plus, for each example, its
    own bot's low-rank update ``scale * x A_k^T B_k^T``: A (K, r, in) and B (K, out, r), peft's
    shapes stacked. A starts as peft's (Kaiming-uniform, a = sqrt(5)), B at zero."""

    def __init__(self, base: Conv1D, bots: int, rank: int, scale: float) -> None:
        super().__init__()
        width_in, width_out = base.weight.shape
        self.base, self.scale = base, scale
        self.a = nn.Parameter(torch.empty(bots, rank, width_in))
        self.b = nn.Parameter(torch.zeros(bots, width_out, rank))
        for k in range(bots):
            nn.init.kaiming_uniform_(self.a.data[k], a=math.sqrt(5))
        self.routes: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert self.routes is not None and len(self.routes) == x.shape[0], "route() first"
        a, b = self.a[self.routes], self.b[self.routes]  # (batch, r, in), (batch, out, r)
        low = torch.bmm(x.to(a.dtype), a.transpose(1, 2))  # (batch, seq, r)
        return self.base(x) + torch.bmm(low, b.transpose(1, 2)).to(x.dtype) * self.scale
