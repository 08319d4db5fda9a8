"""The Trainer the job runs and its callback: module-level classes that hold their own state
(Composer's habit), imported where training starts (transformers loads with them).

- ``Report``: the job's logs and progress, checkpoints by step or by training time, and
  SIGTERM's checkpoint, with the step the run stopped at (``stopped_at``).
- ``JobTrainer``: the Trainer, its FLOPs counted once (``flops_per_token``), not walked.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from typing import Any

# transformers' integrations print "[INFO] Running in WANDB offline mode" on stdout at import
# when WANDB_MODE=offline; stdout is for the job's one-line result.
with contextlib.redirect_stdout(sys.stderr):
    from transformers import Trainer, TrainerCallback

from job.config import TrainConfig
from job.training.checkpoints import Cadence, Checkpoints, Preemption


class Report(TrainerCallback):
    """The job's side of each step: ``on_log(logs, step)`` and ``on_step(step, total)`` as
    the run asked, a checkpoint when ``Cadence`` says one is due, and on SIGTERM a last one
    after the step in progress, then the end (every rank agrees on the step: Preemption)."""

    def __init__(
        self,
        config: TrainConfig,
        checkpoints: Checkpoints | None = None,
        on_log: Callable[[dict[str, float], int], None] | None = None,
        on_step: Callable[[int, int], None] | None = None,
    ) -> None:
        self.checkpoints, self.report_log, self.report_step = checkpoints, on_log, on_step
        self.preemption = Preemption()
        self.due = Cadence(config.checkpoint_every, config.checkpoint_minutes * 60)
        self.stopped_at: int | None = None  # the step SIGTERM's checkpoint was saved at

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
        if self.report_log and logs:
            self.report_log({k: float(v) for k, v in logs.items()}, state.global_step)

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.report_step:
            self.report_step(state.global_step, state.max_steps)
        if self.checkpoints is None:
            return
        if self.preemption.agreed(state.global_step):
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step
        elif self.due(state.global_step):
            control.should_save = True

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.checkpoints is not None:
            self.checkpoints.saved(state.global_step, args.per_device_train_batch_size)


class JobTrainer(Trainer):
    """The Trainer's own ``floating_point_ops`` (its logged total_flos) walks every module and
    parameter of the model in every step: 2.9 ms a step for 48 layers on the dev CPU, host
    time that a GPU's step waits for (docs/benchmarks.md). Here the count is taken once."""

    flops_per_token = 0  # set by flops_per_token() before training

    def floating_point_ops(self, inputs: dict[str, Any]) -> int:
        return self.flops_per_token * int(inputs["input_ids"].numel())


def flops_per_token(model: Any, config: TrainConfig) -> int:
    """6 N a token (forward 2, backward 4); an adapter run computes no gradient for the frozen
    weights, only for the activations through them: 4 N (the adapter's own is under 1%)."""
    return (4 if config.lora else 6) * int(model.num_parameters(exclude_embeddings=True))
