"""Training speed as the steps really ran: tokens counted batch by batch, over the whole run and
over the steady steps after warm-up.

The whole-run figure (tokens / wall time of ``trainer.train()``) includes the optimizer's and
the data loader's set-up, the CUDA context's first kernels, cuBLAS's heuristics and the caching
allocator's growth: on a run of a few hundred steps that hides the rate the GPU sustains, so
MFU from it can never reach a steady 40%. The steady clock starts after ``WARMUP_STEPS`` steps
and stops when training ends, synchronizing the GPU only at those two points (not every step).

Tokens are each batch's own: ``count`` is called with every micro-batch as it goes in (a
tensor's shape is on the host: no sync). A fixed tokens-a-step figure counted a partial batch
as full: with 18 blocks and batch 8 an epoch's batches are 8, 8 and 2, so gpt2-xl's 8 x 1,024
row claimed 106,496 steady tokens where its steps held 75,776 (41% MFU that was 29%).
"""

from __future__ import annotations

import time
from typing import Any

from transformers import Trainer, TrainerCallback

WARMUP_STEPS = 5  # excluded: the first steps pay the set-up above (on one H200, ~1 s in all)


class SteadyClock(TrainerCallback):
    def __init__(self, processes: int = 1, warmup: int = WARMUP_STEPS) -> None:
        # Under DDP every process gets batches of the same sizes (accelerate's even_batches
        # pads the last one from the start): this process's count times the processes.
        self.processes = processes
        self.warmup = warmup
        self.seen = 0  # tokens this process has trained on in this run
        self.start: float | None = None
        self.first = 0
        self.start_step = 0
        self.start_seen = 0
        self.seconds = 0.0
        self.steps = 0
        self.tokens = 0  # every process's, over the steady steps

    def count(self, inputs: dict[str, Any]) -> None:
        self.seen += int(inputs["input_ids"].numel())

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
            self.start, self.start_step, self.start_seen = (
                self._now(),
                state.global_step,
                self.seen,
            )

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.start is not None:
            self.seconds = self._now() - self.start
            self.steps = state.global_step - self.start_step
            self.tokens = (self.seen - self.start_seen) * self.processes

    @property
    def total_tokens(self) -> int:
        """Every process's tokens over the whole run (this session of it, when resumed)."""
        return self.seen * self.processes

    @property
    def tokens_per_second(self) -> float:
        """Steady tokens a second; 0.0 when the run had no steps past the warm-up."""
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def counted(trainer: type[Trainer], clock: SteadyClock) -> type[Trainer]:
    """``trainer`` with each micro-batch counted by ``clock`` as it goes in."""

    class Counted(trainer):  # type: ignore[misc,valid-type]
        def training_step(self, model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
            clock.count(inputs)
            return super().training_step(model, inputs, *args, **kwargs)

    return Counted
