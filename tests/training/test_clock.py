"""The steady-state clock: it starts after the warm-up steps, from wherever training began."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

pytestmark = pytest.mark.integration  # imports transformers (the Trainer's callback class)


def run(clock, first: int, last: int, seconds_per_step: float) -> None:
    now = iter(float(i) * seconds_per_step for i in range(10_000))
    clock._now = lambda: next(now)  # one tick per reading: each reading is one step later
    clock.on_train_begin(None, SimpleNamespace(global_step=first), None)
    for step in range(first + 1, last + 1):
        clock.on_step_end(None, SimpleNamespace(global_step=step), None)
    clock.on_train_end(None, SimpleNamespace(global_step=last), None)


def test_counts_only_the_steps_after_the_warm_up() -> None:
    from job.training.clock import WARMUP_STEPS, SteadyClock

    clock = SteadyClock(tokens_per_step=2048)
    run(clock, 0, 40, seconds_per_step=0.5)
    assert clock.steps == 40 - WARMUP_STEPS
    assert clock.tokens_per_second == pytest.approx(clock.steps * 2048 / 0.5)


def test_a_resumed_run_warms_up_again_and_a_short_one_reports_nothing() -> None:
    from job.training.clock import SteadyClock

    resumed = SteadyClock(tokens_per_step=100, warmup=5)
    run(resumed, 100, 120, seconds_per_step=1.0)
    assert resumed.steps == 15
    short = SteadyClock(tokens_per_step=100, warmup=5)
    run(short, 0, 4, seconds_per_step=1.0)
    assert short.steps == 0 and short.tokens_per_second == 0.0
