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

import json
import time
from pathlib import Path
from typing import Any

from transformers import Trainer, TrainerCallback

WARMUP_STEPS = 5  # excluded: the first steps pay the set-up above (on one H200, ~1 s in all)
# A folder: when set, StepProfile writes profile.json there (bench/gpu_probe.py sets it).
PROFILE_ENV = "HUGGINGTWEETS_PROFILE"


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


class StepProfile(TrainerCallback):
    """torch.profiler over ``active`` steps after the warm-up: how many of a step's wall
    milliseconds the GPU is busy. Where the two are far apart the step is host-bound (the CPU
    cannot queue kernels as fast as the GPU runs them), and a faster kernel buys nothing.
    Writes ``folder/profile.json``: wall and GPU-busy ms a step, the ops a step launches, and
    the ops that took the most GPU (or, on a CPU, host) time."""

    def __init__(self, folder: Path, active: int = 5, warmup: int = WARMUP_STEPS) -> None:
        self.folder, self.active, self.warmup = folder, active, warmup
        self.profiler: Any = None
        self.first = 0
        self.marks: list[float] = []

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.first = state.global_step

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        import torch

        done = state.global_step - self.first
        if done == self.warmup:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self.profiler = torch.profiler.profile(activities=activities)
            self.profiler.__enter__()
            self.marks.append(SteadyClock._now())
        elif self.profiler is not None and done == self.warmup + self.active:
            self.marks.append(SteadyClock._now())
            self._write()

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.profiler is not None and len(self.marks) == 1:  # training ended first
            self.marks.append(SteadyClock._now())
            self._write()

    def _write(self) -> None:
        import torch

        self.profiler.__exit__(None, None, None)
        events = self.profiler.key_averages()
        self.profiler = None
        steps = self.active
        cuda = torch.cuda.is_available()
        busy = sum(e.self_device_time_total for e in events) / 1000 if cuda else 0.0
        host = sum(e.self_cpu_time_total for e in events) / 1000
        top = sorted(
            events, key=lambda e: e.self_device_time_total if cuda else e.self_cpu_time_total
        )[::-1][:10]
        report = {
            "steps": steps,
            "wall_ms_per_step": (self.marks[1] - self.marks[0]) * 1000 / steps,
            "gpu_busy_ms_per_step": busy / steps,
            "host_op_ms_per_step": host / steps,
            "aten_ops_per_step": sum(e.count for e in events if e.key.startswith("aten::")) / steps,
            "top": [
                {
                    "op": e.key,
                    "calls_per_step": e.count / steps,
                    "ms_per_step": (e.self_device_time_total if cuda else e.self_cpu_time_total)
                    / 1000
                    / steps,
                }
                for e in top
            ],
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "profile.json").write_text(json.dumps(report, indent=2))


def clocks(processes: int, profile: str | None) -> tuple[SteadyClock, StepProfile | None]:
    """The run's steady clock, and the step profile where ``profile`` (a folder) asks for one:
    the profiled steps run slower (the profiler records every op and launch), so the steady
    window starts after them, and a profiled run's figures are a plain run's."""
    if not profile:
        return SteadyClock(processes), None
    step = StepProfile(Path(profile))
    return SteadyClock(processes, warmup=step.warmup + step.active), step
