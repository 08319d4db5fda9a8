"""How to spread training over GPUs: plain data parallel, ZeRO-2, ZeRO-3, or ZeRO with offload.

``auto`` estimates what one GPU must hold under each strategy and takes the fastest that fits:

- model states, mixed-precision Adam: 16 bytes/parameter (bf16 weights 2 + bf16 grads 2 +
  fp32 master weights, momentum and variance 12), per the ZeRO paper (arXiv:1910.02054, §3.1).
  ZeRO-2 partitions the 14 bytes of grads and optimizer states over the GPUs; ZeRO-3 all 16.
  ZeRO-2 offload keeps the optimizer states (and the fp32 gradients they update) in CPU memory:
  the GPU holds the 16-bit weights whole and its share of the 16-bit gradients. ZeRO-3 offload
  moves the weights too: ~2 bytes/parameter of working copy, fetched every step.
- activations without recomputation: ~40 x tokens x width x layers bytes under bf16 autocast
  (Korthikanti et al., arXiv:2205.05198, eq. 2, give 34 in pure 16-bit, less the attention
  scores that SDPA's fused kernels never store; autocast keeps some in fp32), plus the logits
  (~0.5 MB a token at GPT-2's vocabulary) and autocast's bf16 copy of the weights: the terms
  above ``per_gpu_bytes``.
- 15% of the GPU left for the CUDA context, the allocator's fragmentation and NCCL buffers.
- offload moves the model states to the host: fp32 master weights, momentum and variance
  (12 bytes/parameter) and the 16-bit gradients and pinned weights (4) are in host memory
  (ZeRO-Offload, arXiv:2101.06840, §4.1), plus each process's fp32 copy while loading (4).
  gpt2-xl on one GPU so needs ~29 GiB of host memory, more than a 15 GB Batch job has: ``auto``
  checks the host (its cgroup limit, in a container) before it picks offload, and refuses
  with the figures rather than be killed for memory an hour in.

Order of preference: ddp (no partitioning: fastest), zero2, zero3, zero2-offload (the weights
stay on the GPU: only the optimizer step crosses the bus), zero3-offload (slowest: the weights
cross it every forward and backward). On a single GPU, ZeRO-2/3 save nothing, so only ddp or an
offload are candidates: gpt2-xl on one 24 GB GPU fits zero2-offload (~11 GiB) where it once
took zero3-offload.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from job.base import Base
from job.config import STRATEGIES
from job.errors import BadConfig
from job.gpt2 import Shape
from job.training.memory import GIB, HEADROOM

CONFIGS = Path(__file__).parent / "deepspeed"


@dataclass(frozen=True)
class Choice:
    strategy: str
    reason: str
    per_gpu_bytes: dict[str, float]  # estimate for each candidate strategy

    def deepspeed_config(self, cpu: bool, hidden: int) -> dict[str, Any] | None:
        """The shipped DeepSpeed config for the strategy, or None for plain data parallel, with
        its buckets sized for a GPT-2 of ``hidden`` (n_embd)."""
        if self.strategy == "ddp":
            return None
        config: dict[str, Any] = json.loads((CONFIGS / f"{self.strategy}.json").read_text())
        config.pop("_comment", None)
        zero = config["zero_optimization"]
        # The Trainer's "auto" makes each bucket hidden^2 elements (gpt2-xl: 2.6 M), smaller
        # than one of a block's MLP matrices (4 x hidden^2: 10.2 M): a collective for every
        # matrix or less. One block's parameters (12 x hidden^2: 30.7 M, 61 MB in bf16) a
        # bucket: one reduce a layer, overlapping the backward of the next, and ZeRO-3
        # prefetches the next block whole. Small tensors (LayerNorms, biases: under 10 x
        # hidden) stay whole on every GPU, as "auto" has it.
        block = 12 * hidden * hidden
        zero["reduce_bucket_size"] = block
        if zero["stage"] == 2:
            zero["allgather_bucket_size"] = block
        else:
            zero["stage3_prefetch_bucket_size"] = block
            zero["stage3_param_persistence_threshold"] = 10 * hidden
        if cpu:  # DeepSpeed's fused CPU Adam takes a minute to compile; torch's is fine here
            config["optimizer"]["params"]["torch_adam"] = True
            config.pop("bf16")
        return config


def shape_of(base_model: str, config: dict[str, Any] | None = None) -> Shape:
    """The model's size, from the GPT-2 table or a config.json's fields."""
    try:
        size = Base.of(base_model).size
    except ValueError:  # no base's name (the bench's "model"): sized from its config
        size = None
    if size is not None:
        return Shape(size.params, size.n_layer, size.n_embd)
    if config is None:
        raise BadConfig(f"cannot size {base_model!r} without its config.json")
    d, layers = int(config["n_embd"]), int(config["n_layer"])
    vocab, positions = int(config["vocab_size"]), int(config["n_positions"])
    # 12 d^2 per block (attention 4 d^2, MLP 8 d^2), embeddings tied with the output layer
    return Shape(12 * layers * d * d + (vocab + positions) * d, layers, d)


# The memory terms, each with its source. Measured on CPU by the review (2026-12) and within
# 2% of the H200's peaks of 2026-11-28 (docs/benchmarks-history.md, gpt2-xl 27.5 GiB at 2 k
# tokens a step, 47.6 GiB at 8 k; tests/training/test_strategy.py holds the plan to 5% of both):
# - activations kept for the backward, bf16 autocast, a width a token a layer: 40 bytes (not
#   Korthikanti's 34: autocast keeps an fp32 residual stream and LayerNorm inputs beside the
#   bf16 matmul inputs);
# - the logits and their loss: fp32 logits, the loss's fp32 copy and the bf16 output, 10 bytes
#   a vocabulary entry a token (0.5 MB a token at GPT-2's 50,257);
# - autocast's bf16 copy of each fp32 weight for the forward: 2 bytes a parameter.
ACTIVATION_BYTES = 40
LOGIT_BYTES = 10
AUTOCAST_COPY_BYTES = 2
GPT2_VOCAB = 50257


def logit_bytes(tokens: int, vocab: int = GPT2_VOCAB) -> float:
    """The logits of ``tokens`` and their loss's copies."""
    return LOGIT_BYTES * vocab * tokens


def activation_bytes(
    shape: Shape, tokens_per_gpu: int, vocab: int = GPT2_VOCAB, logits: bool = True
) -> float:
    """What a step's forward keeps for its backward: the blocks' activations and (``logits``)
    the logits."""
    layers = ACTIVATION_BYTES * tokens_per_gpu * shape.n_embd * shape.n_layer
    return layers + (logit_bytes(tokens_per_gpu, vocab) if logits else 0)


def per_gpu_bytes(
    shape: Shape, gpus: int, tokens_per_gpu: int, vocab: int = GPT2_VOCAB
) -> dict[str, float]:
    n = shape.params
    activations = activation_bytes(shape, tokens_per_gpu, vocab)
    return {
        # plain DDP, fp32 weights under bf16 autocast: at the forward's end, weights (4),
        # Adam's moments (8) and autocast's bf16 copies (2) beside the activations; the
        # gradients (4) come as the backward frees them (the Trainer sets them to None after
        # each step), so the larger of the two moments is the peak
        "ddp": max(16 * n, (12 + AUTOCAST_COPY_BYTES) * n + activations),
        "zero2": 2 * n + 14 * n / gpus + activations,
        "zero3": 16 * n / gpus + activations,
        "zero2-offload": 2 * n + 2 * n / gpus + activations,
        "zero3-offload": 2 * n / gpus + activations,
        # an adapter run (ddp): the frozen base held in bf16 (run.py), no gradients or
        # optimizer state for it; the adapter's own (~1% of the weights with its Adam) is
        # within the headroom
        "lora": 2 * n + activations,
    }


def offload_host_bytes(shape: Shape, gpus: int) -> float:
    """Host memory that an offload (ZeRO-2's or ZeRO-3's) needs on one machine: the optimizer
    states and fp32 gradients either way (see the module's docstring)."""
    return 16 * shape.params + 4 * shape.params * max(gpus, 1)


def choose(
    requested: str,
    shape: Shape,
    *,
    gpus: int,
    gpu_bytes: int,
    tokens_per_gpu: int,
    host_bytes: int | None = None,
    adapter: bool = False,
    vocab: int = GPT2_VOCAB,
) -> Choice:
    """The strategy to use, and why. ``gpus == 0`` means CPU training; ``host_bytes`` None
    means the host's memory is not checked. An ``adapter`` run is plain data parallel: ZeRO
    partitions optimizer state, and the frozen base has none."""
    if requested not in STRATEGIES:
        raise BadConfig(f"strategy must be one of {', '.join(STRATEGIES)}, not {requested!r}")
    need = per_gpu_bytes(shape, max(gpus, 1), tokens_per_gpu, vocab)
    if adapter:
        return _adapter_choice(requested, shape, gpus, gpu_bytes, need)
    host_need = offload_host_bytes(shape, gpus)
    short = host_bytes is not None and host_need > host_bytes * HEADROOM
    host = (
        f"offload needs ~{host_need / GIB:.0f} GiB of host memory"
        f" and {(host_bytes or 0) * HEADROOM / GIB:.1f} GiB is usable here"
    )
    if requested.endswith("-offload") and short:
        raise BadConfig(
            f"strategy {requested}: {host}; give the job more memory (Batch: the job"
            " definition's memory; Kubernetes: resources.limits.memory) or another strategy"
        )
    if requested != "auto":
        return Choice(requested, "asked for", need)
    if gpus == 0:
        return Choice("ddp", "no GPU: plain data parallel on CPU", need)
    budget = gpu_bytes * HEADROOM
    candidates = ["ddp", "zero2", "zero3"] if gpus > 1 else ["ddp"]
    for name in [*candidates, "zero2-offload", "zero3-offload"]:
        if need[name] <= budget:
            if name.endswith("-offload") and short:
                raise BadConfig(
                    f"{shape.params / 1e6:.0f} M parameters fit no strategy here:"
                    f" {', '.join(candidates)} need more than the {budget / GIB:.1f} GiB usable"
                    f" on each of {gpus} GPUs, and {host}. Give the job more memory (Batch: the"
                    " job definition's memory; Kubernetes: resources.limits.memory), larger"
                    " GPUs, or a smaller base model"
                )
            return Choice(
                name,
                f"{shape.params / 1e6:.0f} M parameters need ~{need[name] / GIB:.1f} GiB per GPU"
                f" with {name} (of {budget / GIB:.1f} GiB usable on each of {gpus} GPUs); "
                + (
                    "the fastest that fits"
                    if name == "ddp"
                    else f"{', '.join(c for c in candidates if c != name and need[c] > budget)}"
                    " would not fit"
                    + (
                        f"; host memory checked: offload needs ~{host_need / GIB:.0f} GiB"
                        if name.endswith("-offload") and host_bytes is not None
                        else ""
                    )
                ),
                need,
            )
    if short:
        raise BadConfig(
            f"{shape.params / 1e6:.0f} M parameters fit no strategy here, and {host}; give"
            " the job more memory, larger GPUs, or a smaller base model"
        )
    return Choice("zero3-offload", "nothing fits on the GPUs; offload is the last resort", need)


def _adapter_choice(
    requested: str, shape: Shape, gpus: int, gpu_bytes: int, need: dict[str, float]
) -> Choice:
    if requested not in ("auto", "ddp"):
        raise BadConfig(
            f"strategy {requested} with an adapter: ZeRO partitions the optimizer state, and a"
            " LoRA run has none for the base; use --strategy ddp (or auto)"
        )
    if gpus == 0:
        return Choice("ddp", "no GPU: plain data parallel on CPU (an adapter)", need)
    budget = gpu_bytes * HEADROOM
    if need["lora"] > budget:
        raise BadConfig(
            f"{shape.params / 1e6:.0f} M parameters with an adapter need ~{need['lora'] / GIB:.1f}"
            f" GiB per GPU, over the {budget / GIB:.1f} GiB usable: a smaller batch or block,"
            " larger GPUs, or a full fine-tune with offload"
        )
    return Choice(
        "ddp",
        f"an adapter: the frozen base needs ~{need['lora'] / GIB:.1f} GiB per GPU (of"
        f" {budget / GIB:.1f} GiB usable), with no optimizer state for it",
        need,
    )
