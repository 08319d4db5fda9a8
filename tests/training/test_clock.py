"""The clock: it starts after the warm-up steps, from wherever training began, and counts the
tokens each step's batches really held (a partial last batch is not a full one)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

pytestmark = pytest.mark.integration  # imports transformers (the Trainer's callback class)


def batches(blocks: int, batch: int, epochs: int) -> list[int]:
    """The blocks in each step, as the Trainer's loader makes them (no drop_last)."""
    epoch = [batch] * (blocks // batch) + ([blocks % batch] if blocks % batch else [])
    return epoch * epochs


def run(clock, sizes: list[int], first: int, block: int, seconds_per_step: float) -> None:
    import torch

    now = iter(float(i) * seconds_per_step for i in range(10_000))
    clock._now = lambda: next(now)  # one tick per reading: each reading is one step later
    clock.on_train_begin(None, SimpleNamespace(global_step=first), None)
    for step, size in enumerate(sizes, start=first + 1):
        clock.count({"input_ids": torch.zeros(size, block, dtype=torch.long)})
        clock.on_step_end(None, SimpleNamespace(global_step=step), None)
    clock.on_train_end(None, SimpleNamespace(global_step=first + len(sizes)), None)


def test_counts_the_tokens_of_the_steps_after_the_warm_up_as_their_batches_held_them() -> None:
    from job.training.clock import WARMUP_STEPS, SteadyClock

    # gpt2-xl's row of the 8 x 1,024 bench: 18 blocks, batch 8 -> 8, 8, 2 each epoch
    sizes = batches(18, 8, epochs=4)
    clock = SteadyClock()
    run(clock, sizes, 0, block=1024, seconds_per_step=0.5)
    assert clock.steps == len(sizes) - WARMUP_STEPS
    assert clock.tokens == sum(sizes[WARMUP_STEPS:]) * 1024
    assert clock.tokens < clock.steps * 8 * 1024  # what the fixed figure claimed
    assert clock.tokens_per_second == pytest.approx(clock.tokens / 0.5)  # one tick: 0.5 s
    assert clock.total_tokens == 18 * 4 * 1024


def test_every_process_counts_alike_and_a_resumed_or_short_run_warms_up_again() -> None:
    from job.training.clock import SteadyClock

    two = SteadyClock(processes=2, warmup=5)
    run(two, [4] * 20, 100, block=16, seconds_per_step=1.0)
    assert (two.steps, two.tokens, two.total_tokens) == (15, 15 * 4 * 16 * 2, 20 * 4 * 16 * 2)
    short = SteadyClock(warmup=5)
    run(short, [4] * 4, 0, block=16, seconds_per_step=1.0)
    assert short.steps == short.tokens == 0 and short.tokens_per_second == 0.0


def test_a_run_whose_last_batch_is_partial_reports_what_its_steps_held(tmp_path: Path) -> None:
    """The demo's figures: steady tokens/s was 1.35x the whole run's, in part because 30 of
    its 90 steps were batches of 2 counted as 8. Now the steady tokens are the steady steps'
    own, and the whole run's are every step's."""
    from job.config import TrainConfig
    from job.training.clock import WARMUP_STEPS
    from job.training.train import finetune
    from tests.training.test_train import sample_model

    texts, model, tokenizer = sample_model(tmp_path / "m")
    config = TrainConfig(base_model="tiny", epochs=6, batch_size=8)
    result, _ = finetune(model, tokenizer, texts, config, tmp_path)
    blocks = result.train_tokens // result.block_size
    assert blocks % result.batch_size, "the sample must leave a partial batch for this test"
    sizes = batches(blocks, result.batch_size, int(config.epochs))
    assert result.steps == len(sizes) and result.steady_steps == len(sizes) - WARMUP_STEPS
    assert result.steady_tokens == sum(sizes[WARMUP_STEPS:]) * result.block_size
    assert result.trained_tokens == result.train_tokens * config.epochs
    full = result.steady_steps * result.batch_size * result.block_size  # the old count
    assert result.steady_tokens < full


def test_the_step_profile_runs_before_the_steady_window_not_in_it(tmp_path: Path) -> None:
    """The probe's profile (HUGGINGTWEETS_PROFILE) records every op of its steps, which run
    slower for it: the steady clock starts after them, so a profiled run's tokens/s and MFU
    are a plain one's."""
    from job.training.clock import WARMUP_STEPS, clocks

    plain, none = clocks(1, None)
    assert none is None and plain.warmup == WARMUP_STEPS
    clock, profile = clocks(1, str(tmp_path))
    assert profile is not None and profile.warmup == WARMUP_STEPS
    profiled = range(profile.warmup + 1, profile.warmup + profile.active + 1)  # its steps
    run(clock, [4] * 30, 0, block=16, seconds_per_step=1.0)
    assert clock.steps == 30 - max(profiled) and clock.start_step == max(profiled)
