"""Steady-state training speed: tokens/s over the steps after warm-up.

The whole-run figure (tokens / wall time of ``trainer.train()``) includes the optimizer's and
the data loader's set-up, the CUDA context's first kernels, cuBLAS's heuristics and the caching
allocator's growth: on a run of a few hundred steps that hides the rate the GPU sustains, so
MFU from it can never reach a steady 40%. This clock starts after ``WARMUP_STEPS`` steps and
stops when training ends, synchronizing the GPU only at those two points (not every step).
"""

from __future__ import annotations

import time
from typing import Any

from transformers import TrainerCallback

WARMUP_STEPS = 5  # excluded: the first steps pay the set-up above (on one H200, ~1 s in all)


class SteadyClock(TrainerCallback):
    def __init__(self, tokens_per_step: int, warmup: int = WARMUP_STEPS) -> None:
        # every process's tokens together: batch x accumulation x block x processes
        self.tokens_per_step = tokens_per_step
        self.warmup = warmup
        self.start: float | None = None
        self.first = 0
        self.start_step = 0
        self.seconds = 0.0
        self.steps = 0

    @staticmethod
    def _now() -> float:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()  # the queued kernels are part of the steps timed
        return time.perf_counter()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.first = state.global_step  # a resumed run warms up again

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.start is None and state.global_step >= self.first + self.warmup:
            self.start, self.start_step = self._now(), state.global_step

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.start is not None:
            self.seconds = self._now() - self.start
            self.steps = state.global_step - self.start_step

    @property
    def tokens_per_second(self) -> float:
        """0.0 when the run had no steps past the warm-up."""
        return self.steps * self.tokens_per_step / self.seconds if self.seconds > 0 else 0.0
