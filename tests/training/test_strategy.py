from __future__ import annotations

from pathlib import Path

import pytest

from job.errors import BadConfig
from job.training.memory import GIB
from job.training.model import build_random, load
from job.training.strategy import choose, shape_of

# Loads transformers and builds models through it: ~5 s of imports, so not the unit tier.
MODEL = pytest.mark.integration

TOKENS = 8 * 256


@pytest.mark.parametrize(
    ("model", "gpus", "gib", "expected"),
    [
        ("gpt2", 0, 0, "ddp"),
        ("gpt2", 1, 80, "ddp"),
        ("gpt2-xl", 1, 80, "ddp"),  # 16 B/param x 1.56 B = 25 GB: fits an H100 whole
        # one 24 GB GPU: only an offload fits; ZeRO-2's keeps the weights (~11 GiB) on the GPU
        ("gpt2-xl", 1, 24, "zero2-offload"),
        ("gpt2-xl", 1, 12, "zero3-offload"),  # ~11.6 GiB > 10.2 usable: the weights go too
        ("gpt2-xl", 4, 24, "zero2"),  # ddp needs ~28 GiB, zero2 ~13
        # zero2 ~12.2 GiB > 10.2 usable; zero3 ~9.7 (6.8 of them activations and logits)
        ("gpt2-xl", 8, 12, "zero3"),
        ("gpt2-xl", 2, 4, "zero3-offload"),
    ],
)
def test_auto_prefers_the_fastest_that_fits(model, gpus, gib, expected) -> None:
    choice = choose("auto", shape_of(model), gpus=gpus, gpu_bytes=gib * GIB, tokens_per_gpu=TOKENS)
    assert choice.strategy == expected, choice.reason
    assert choice.reason


def test_estimates_follow_the_zero_paper() -> None:
    need = choose(
        "auto", shape_of("gpt2-xl"), gpus=4, gpu_bytes=80 * GIB, tokens_per_gpu=0
    ).per_gpu_bytes
    n = 1_557_611_200
    assert need["ddp"] == 16 * n and need["zero2"] == 2 * n + 14 * n / 4
    assert need["zero3"] == 4 * n and need["ddp"] > need["zero2"] > need["zero3"]


@pytest.mark.parametrize(("tokens", "measured_gib"), [(2048, 27.5), (8192, 47.6)])
def test_the_plan_is_within_5_percent_of_the_h200s_peaks(tokens: int, measured_gib: float) -> None:
    """gpt2-xl, plain DDP, bf16 autocast, fused AdamW on one H200 (2026-11-28,
    docs/benchmarks-history.md "gpt2-xl: tokens per step": torch.cuda.max_memory_allocated):
    the plan's estimate of what the GPU holds is within 5% of both peaks. The old terms (34
    bytes of activations, no logits, no autocast copy) were 9% under at 8 k tokens."""
    need = choose(
        "ddp", shape_of("gpt2-xl"), gpus=1, gpu_bytes=141 * GIB, tokens_per_gpu=tokens
    ).per_gpu_bytes["ddp"]
    assert need / GIB == pytest.approx(measured_gib, rel=0.05)


def test_asked_for_is_kept_and_unknown_refused() -> None:
    assert choose("zero3", shape_of("gpt2"), gpus=0, gpu_bytes=0, tokens_per_gpu=1).strategy == (
        "zero3"
    )
    with pytest.raises(BadConfig):
        choose("zero4", shape_of("gpt2"), gpus=0, gpu_bytes=0, tokens_per_gpu=1)


@MODEL
def test_shape_from_config_matches_the_real_model(tmp_path: Path) -> None:
    model, _ = load(str(build_random(tmp_path / "t", ["a b c"] * 30, None, 0)), device="cpu")
    assert shape_of("tiny", model.config.to_dict()).params == pytest.approx(
        model.num_parameters(), rel=0.02
    )


def test_shipped_deepspeed_configs() -> None:
    shape = shape_of("gpt2")
    assert (
        choose("ddp", shape, gpus=1, gpu_bytes=GIB, tokens_per_gpu=1).deepspeed_config(
            cpu=False, hidden=768
        )
        is None
    )
    z3 = choose("zero3", shape, gpus=2, gpu_bytes=GIB, tokens_per_gpu=1).deepspeed_config(
        cpu=False, hidden=768
    )
    assert z3["zero_optimization"]["stage"] == 3
    assert z3["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    assert z3["train_micro_batch_size_per_gpu"] == "auto" and "scheduler" not in z3
    off = choose("zero3-offload", shape, gpus=2, gpu_bytes=GIB, tokens_per_gpu=1)
    cfg = off.deepspeed_config(cpu=True, hidden=768)
    assert cfg["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert cfg["optimizer"]["params"]["torch_adam"] is True and "bf16" not in cfg
    z2 = choose("zero2", shape, gpus=2, gpu_bytes=GIB, tokens_per_gpu=1).deepspeed_config(
        cpu=False, hidden=768
    )
    assert z2["zero_optimization"]["stage"] == 2 and "torch_adam" not in z2["optimizer"]["params"]
    # buckets of one block's parameters, never "auto" (hidden^2: smaller than one matrix)
    block = 12 * 768 * 768
    assert z2["zero_optimization"]["reduce_bucket_size"] == block
    assert z2["zero_optimization"]["allgather_bucket_size"] == block
    assert z3["zero_optimization"]["stage3_prefetch_bucket_size"] == block
    assert z3["zero_optimization"]["stage3_param_persistence_threshold"] == 10 * 768
    assert "auto" not in {v for v in z3["zero_optimization"].values() if isinstance(v, str)}


def test_auto_checks_the_host_before_it_picks_offload() -> None:
    # gpt2-xl on one 24 GB GPU: only offload fits the GPU, and offload needs ~29 GiB of host
    # memory, which the 15 GB of the Batch job definition does not have.
    xl = shape_of("gpt2-xl")
    kwargs = {"gpus": 1, "gpu_bytes": 24 * GIB, "tokens_per_gpu": TOKENS}
    roomy = choose("auto", xl, host_bytes=64 * GIB, **kwargs)
    assert roomy.strategy == "zero2-offload" and "host memory checked" in roomy.reason
    with pytest.raises(BadConfig, match=r"offload needs ~29 GiB of host memory.*12\.\d GiB"):
        choose("auto", xl, host_bytes=15 * GIB, **kwargs)
    for asked in ("zero2-offload", "zero3-offload"):
        with pytest.raises(BadConfig, match=rf"strategy {asked}: .*resources\.limits\.memory"):
            choose(asked, xl, host_bytes=15 * GIB, **kwargs)
    # A GPU that holds the model whole never needs the host's memory.
    assert choose("auto", xl, **{**kwargs, "gpu_bytes": 80 * GIB}, host_bytes=GIB).strategy == (
        "ddp"
    )
