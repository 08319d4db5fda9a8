"""plan(): the run's decisions, against the GPT-2 table and any host or GPU size, without torch."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from job.config import TrainConfig
from job.errors import BadConfig
from job.gpt2 import GPT2, pretraining_rate
from job.training.memory import GIB
from job.training.plan import (
    BATCH,
    COMPILE_MIN_STEPS,
    GPU_TOKENS,
    MIN_STEPS,
    ORIGINAL_RATE,
    batch_size,
    learning_rate,
    pick_strategy,
    plan,
)
from job.training.strategy import shape_of

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


# --- The rate, and the batch a step (moved here from test_train.py: plan.py decides them) -----


def test_the_default_rate_is_the_originals_scaled_to_the_tokens_per_step() -> None:
    # The original: batch 1 of one 1024-token block at 1.372e-4. gpt2 here: 8 blocks of 256,
    # twice the tokens per step; tiny: 8 blocks of its whole 128-token context, eight times.
    assert learning_rate(TrainConfig(), 8 * 256, 1024) == pytest.approx(2 * ORIGINAL_RATE)
    assert learning_rate(TrainConfig(), 8 * 128, 128) == pytest.approx(8 * ORIGINAL_RATE)
    assert learning_rate(TrainConfig(), 1024, 1024) == pytest.approx(ORIGINAL_RATE)
    assert learning_rate(TrainConfig(learning_rate=3e-5), 8 * 256, 1024) == 3e-5  # given wins


def test_the_scaled_rate_stays_under_the_rate_the_size_was_pretrained_at() -> None:
    xl = pretraining_rate(GPT2["gpt2-xl"].arch)
    assert xl == 2.0e-4  # GPT-3's 1.3 B (Brown et al. 2020, Table 2.1)
    assert pretraining_rate({"n_layer": 2, "n_embd": 64}) is None  # tiny: not a GPT-2 size
    # gpt2-xl at 8 k tokens a step would scale to 8x the original, 1.1e-3: held at 2e-4
    assert learning_rate(TrainConfig(), 8 * 1024, 1024, xl) == xl
    small = pretraining_rate(GPT2["gpt2"].arch)
    assert learning_rate(TrainConfig(), 8 * 256, 1024, small) == pytest.approx(2 * ORIGINAL_RATE)
    assert learning_rate(TrainConfig(learning_rate=1e-3), 8 * 256, 1024, xl) == 1e-3  # given


XL = shape_of("gpt2-xl")
H200 = 141 * GIB


def xl_choice(gpu_bytes: int):  # the strategy the job picks at the default batch
    return pick_strategy(TrainConfig(base_model="gpt2-xl"), {}, 256, 1, gpu_bytes, HOST)


def xl_batch(
    config: TrainConfig | None = None,
    blocks: int = 10_000,
    block: int = 256,
    world: int = 1,
    gpu_bytes: int = H200,
    ceiling: float | None = 2e-4,
    choice=None,
) -> tuple[int, str]:
    """gpt2-xl's batch a step and why, with what a test does not name at its usual value."""
    return batch_size(
        config=config or TrainConfig(),
        shape=XL,
        blocks=blocks,
        block_size=block,
        world=world,
        choice=choice or xl_choice(gpu_bytes),
        gpu_bytes=gpu_bytes,
        ceiling=ceiling,
    )


def test_batch_is_the_default_on_cpu_and_as_given() -> None:
    cpu = pick_strategy(TrainConfig(base_model="gpt2-xl"), {}, 256, 0, 0, HOST)
    assert xl_batch(gpu_bytes=0, choice=cpu) == (BATCH, "no GPU")
    assert xl_batch(config=TrainConfig(batch_size=3)) == (3, "asked for")


def test_on_a_gpu_the_batch_grows_to_the_tokens_sized_to_it() -> None:
    batch, why = xl_batch()
    assert batch * 256 == GPU_TOKENS and "sized to a GPU" in why
    assert xl_batch(block=1024)[0] == 8  # 1,024-token blocks: 8 of them make 8 k tokens
    # a base of no GPT-2 size (tiny): its rate has no bound, so its step does not grow
    tiny = xl_batch(ceiling=None)
    assert tiny[0] == BATCH and "pre-training rate" in tiny[1]


def test_the_batch_stops_growing_where_the_gpu_memory_ends() -> None:
    # gpt2-xl's model states are ~25 GB: 8 blocks of 256 fit a 40 GB GPU, 16 would not
    a100 = 40 * 10**9
    assert xl_choice(a100).strategy == "ddp"
    batch, why = xl_batch(gpu_bytes=a100)
    assert batch == BATCH and "would need" in why and "GiB" in why


def test_the_batch_stops_growing_where_a_small_data_set_would_get_too_few_steps() -> None:
    # 4 epochs of 800 blocks (a bot of several users): 16 blocks a step make 50 x 4 = 200
    # steps, 32 would make 100
    blocks = 800
    batch, why = xl_batch(blocks=blocks)
    steps = math.ceil(blocks / batch) * 4
    assert steps >= MIN_STEPS and math.ceil(blocks / (2 * batch)) * 4 < MIN_STEPS
    assert batch > BATCH and "optimizer steps" in why
    # one user's ~3,000 tweets (~300 blocks): 152 steps at the default, which stays
    assert xl_batch(blocks=300)[0] == BATCH
    # the same data over 8 GPUs: each step takes 8x the blocks, so the batch cannot grow
    assert xl_batch(blocks=blocks, world=8)[0] == BATCH
