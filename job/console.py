"""What a person sees in the terminal: log lines above one live progress bar, on stderr.

One Rich console carries both, so a log line prints above the bar instead of re-printing it.
A bar appears only for a phase of known length (tweets fetched from the API, training steps),
with its ETA, and goes when the phase ends. When stderr is not a terminal (CI, AWS Batch and
Kubernetes logs) there is no bar and log lines are plain text: ``LEVEL message``.
stdout carries only each command's one-line result.
"""

from __future__ import annotations

import logging
import platform
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from job import __version__
from job.errors import inert, redact

log = logging.getLogger("job")
Advance = Callable[[int, int], None]  # (done, total)


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


_CONSOLE: Any = None


def console() -> Any:
    global _CONSOLE
    if _CONSOLE is None or _CONSOLE.file is not sys.stderr:  # tests swap stderr
        _CONSOLE = _console()
    return _CONSOLE


def _redacted(record: logging.LogRecord) -> logging.LogRecord:
    """A log record with the value of every secret the process was given taken out
    (errors.redact): a library may log a server's answer that echoes a token; and nothing
    in it that a terminal acts on (errors.inert): a line may quote a record or a server."""
    try:
        message = record.getMessage()
    except Exception:  # args that do not fit msg: logging reports that when it emits
        return record
    cleaned = inert(redact(message))
    if cleaned != message:
        record.msg, record.args = cleaned, ()
    if record.exc_info and record.exc_info[1] is not None:  # --verbose's traceback: as text
        import traceback

        record.msg = inert(
            redact(
                record.getMessage() + "\n" + "".join(traceback.format_exception(*record.exc_info))
            )
        )
        record.args, record.exc_info, record.exc_text = (), None, None
    return record


def _redacting(make: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return _redacted(make(*args, **kwargs))

    factory._huggingtweets = True  # type: ignore[attr-defined]
    return factory


def show(text: str, err: bool = False) -> None:
    """A line of the command's output (stdout; ``err``: stderr), with nothing in it that a
    terminal acts on (errors.inert): what the commands print quotes records, inputs and
    servers. The only way the package prints (tests/test_layout.py)."""
    import typer

    typer.echo(inert(text), err=err)


def setup_logging(verbose: bool) -> None:
    """The job's log lines on stderr: through the console on a terminal, else plain."""
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_huggingtweets", False):
            root.removeHandler(old)
    handler: Any
    if console().is_terminal:
        from rich.logging import RichHandler

        handler = RichHandler(console=console(), show_path=False, show_time=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler._huggingtweets = True
    root.addHandler(handler)
    # No secret in any line, whatever logger and handler it goes by: records are redacted as
    # they are made. A filter on this handler missed the handlers libraries add of their own
    # (huggingface_hub prints through one unless a run has removed it).
    make = logging.getLogRecordFactory()
    if not getattr(make, "_huggingtweets", False):
        logging.setLogRecordFactory(_redacting(make))
    root.setLevel(logging.WARNING)
    log.setLevel(logging.DEBUG if verbose else logging.INFO)


class Bars:
    """Progress bars by phase name; ``bars("training")`` is an ``Advance`` callback that shows
    a bar from its first call (when the total is known) until ``done == total``, or None
    when there is no terminal to show it on (then nothing is even computed for it)."""

    def __init__(self, progress: Any) -> None:
        self.progress = progress
        self.tasks: dict[str, Any] = {}

    def __call__(self, name: str) -> Advance | None:
        if self.progress is None:
            return None

        def advance(done: int, total: int) -> None:
            if total <= 0:
                return
            if name not in self.tasks:
                self.tasks[name] = self.progress.add_task(name, total=total)
            self.progress.update(self.tasks[name], completed=done, total=total)
            if done >= total:
                self.progress.remove_task(self.tasks.pop(name))

        return advance


@contextmanager
def progress() -> Iterator[Bars]:
    """Bars on the console while the block runs; no bars when stderr is not a terminal."""
    if not console().is_terminal:
        yield Bars(None)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress(
        "{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console(),
        transient=True,
    ) as bar:
        yield Bars(bar)


def versions() -> dict[str, str]:
    """What made the model: the job's and its libraries' versions (job.json, the card)."""
    import tokenizers
    import torch
    import transformers

    return {
        "huggingtweets": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "cuda": torch.version.cuda or "none",
    }


def quiet_libraries() -> None:
    """Keep stdout for the job's result line, and progress bars off the job's own display."""
    import contextlib
    import importlib.util
    import os
    import sys

    import torch

    if importlib.util.find_spec("deepspeed"):
        if not torch.cuda.is_available():
            # Else DeepSpeed probes every accelerator it knows and warns "Setting accelerator
            # to CPU" on every CPU run; DS_ACCELERATOR is its documented override.
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        # DeepSpeed's logger binds its handler to sys.stdout when first imported (and
        # accelerate imports it whenever it is installed, even for plain DDP, when the
        # Trainer unwraps the model): bind it to stderr instead.
        with contextlib.redirect_stdout(sys.stderr):
            import deepspeed.ops
        if os.environ.get("DS_ACCELERATOR") == "cpu":
            # DeepSpeed's communication backend (its TorchBackend) compiles the CPU
            # accelerator's shared-memory all-reduce op (g++: ~25 s on the 2-core dev machine,
            # on a fresh machine's first ZeRO run) whenever its probe of the ops lists the op
            # as compatible. Only its inference all-reduce uses that op, which training never
            # calls. Not on a GPU: no such op there, and the probe this reads runs compilers.
            deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_warning()
    disable_progress_bars()
    # peft 0.21 asks transformers 5 for a name it renamed: a warning on every adapter run that
    # says nothing to the job's user (peft's to change, not ours).
    import warnings

    warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
    # huggingface_hub's logger prints through a handler of its own and then, propagating,
    # through the job's too: each retry line came out twice. The job's handler (console.py)
    # is the one.
    hub_logger = logging.getLogger("huggingface_hub")
    for handler in list(hub_logger.handlers):
        hub_logger.removeHandler(handler)
