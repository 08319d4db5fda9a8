"""plan(): the run's decisions, against the GPT-2 table and any host or GPU size, without torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from job.config import TrainConfig
from job.errors import BadConfig
from job.gpt2 import GPT2
from job.training.memory import GIB
from job.training.plan import (
    BATCH,
    COMPILE_MIN_STEPS,
    GPU_TOKENS,
    MIN_STEPS,
    ORIGINAL_RATE,
    plan,
)

HOST = 512 * GIB
TINY = {"n_layer": 2, "n_embd": 64, "n_head": 2, "n_positions": 128, "vocab_size": 2000}


def fields(name: str) -> dict:
    return GPT2[name].arch | {"vocab_size": 50257}


def planned(name: str, gpu_gib: float, blocks: int = 100_000, world: int = 1, **config):
    model = TINY if name == "tiny" else fields(name)
    return plan(
        TrainConfig(base_model=name, **config),
        model,
        train_blocks=blocks,
        world=world,
        gpu_bytes=int(gpu_gib * GIB),
        host_bytes=HOST,
        bf16_supported=gpu_gib > 0,
    )


def test_on_a_cpu_the_default_batch_in_fp32_at_the_scaled_rate() -> None:
    run = planned("gpt2", 0)
    assert (run.batch, run.batch_reason, run.strategy, run.bf16) == (BATCH, "no GPU", "ddp", False)
    assert run.block_size == 256 and run.tokens_per_step == BATCH * 256
    assert run.learning_rate == pytest.approx(ORIGINAL_RATE * BATCH * 256 / 1024)


def test_the_tiny_model_keeps_its_context_and_the_default_batch() -> None:
    run = planned("tiny", 80)
    assert run.block_size == 128  # 256 asked, 128 positions
    assert run.batch == BATCH and "pre-training rate" in run.batch_reason


def test_on_a_large_gpu_the_step_grows_to_its_token_budget_in_bf16() -> None:
    run = planned("gpt2-xl", 141)
    assert run.bf16 and run.batch * run.block_size == GPU_TOKENS
    # the scaled rate stops at the size's pre-training rate
    assert run.learning_rate == GPT2["gpt2-xl"].pretraining_rate


def test_a_small_data_set_keeps_its_optimizer_steps() -> None:
    run = planned("gpt2", 80, blocks=500)  # 16 blocks a step would leave 128 steps
    assert run.batch == BATCH and f"under {MIN_STEPS}" in run.batch_reason
    assert run.total_steps == run.steps_per_epoch * 4 == -(-500 // BATCH) * 4


def test_gpt2_xl_on_a_24_gb_gpu_offloads() -> None:
    assert planned("gpt2-xl", 24).strategy == "zero2-offload"
    assert planned("gpt2-xl", 80).strategy == "ddp"


def test_what_is_asked_for_is_what_runs() -> None:
    run = planned("gpt2", 80, batch_size=4, learning_rate=1e-5, precision="fp32", world=2)
    assert (run.batch, run.batch_reason, run.learning_rate, run.bf16) == (
        4,
        "asked for",
        1e-5,
        False,
    )
    assert run.tokens_per_step == 4 * 2 * 256


def test_compile_is_on_by_default_only_for_a_gpu_run_long_enough_to_repay_it() -> None:
    # a bot's usual run: a few hundred steps, eager
    usual = planned("gpt2-xl", 80, blocks=2_000)
    assert usual.total_steps < COMPILE_MIN_STEPS and not usual.compile
    assert f"under {COMPILE_MIN_STEPS}" in usual.compile_reason
    long = planned("gpt2-xl", 80, blocks=100_000)
    assert long.total_steps >= COMPILE_MIN_STEPS and long.compile
    assert not planned("gpt2-xl", 0, blocks=100_000).compile  # never on a CPU
    # asked for, either way, wins; and the result reports it
    assert planned("gpt2", 80, blocks=2_000, compile=True).compile
    assert not planned("gpt2", 80, compile=False).compile
    assert planned("gpt2", 80, compile=False).summary()["compiled"] is False


def test_bf16_on_a_cpu_is_refused() -> None:
    with pytest.raises(BadConfig, match="bf16 needs a GPU"):
        planned("gpt2", 0, precision="bf16")


def test_planning_needs_no_torch() -> None:
    script = "import sys, job.training.plan; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr
