"""The terminal: one console for log lines and bars; plain lines when not a terminal."""

from __future__ import annotations

import io
import logging
import os

import pytest

from job import console


def test_plain_lines_when_stderr_is_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    console.setup_logging(verbose=False)
    logging.getLogger("job.run").info("train: %.1f s", 2.0)
    logging.getLogger("job.run").debug("not shown unless verbose")
    assert capsys.readouterr().err == "INFO train: 2.0 s\n"
    with console.progress() as bars:
        assert bars("training") is None  # no bar: nothing is even computed for one


def test_setup_twice_does_not_print_twice(capsys: pytest.CaptureFixture[str]) -> None:
    console.setup_logging(verbose=False)
    console.setup_logging(verbose=True)
    logging.getLogger("job").debug("once")
    assert capsys.readouterr().err == "DEBUG once\n"


def test_a_log_line_and_a_printed_line_show_escapes_as_text(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Whatever logger a line goes by (the job's, a library's) and whatever a command prints:
    a value that holds an escape sequence (a forged record's, a server's) cannot act on the
    terminal that shows it."""
    console.setup_logging(verbose=False)
    hostile = "alice\x1b]0;pwned\x07\x1b[2J\u202e"
    logging.getLogger("job.cloud").warning("names the repo %s", hostile)
    logging.getLogger("huggingface_hub").warning("answered %s", hostile)
    console.show(f"removed {hostile}")
    console.show(f"note {hostile}", err=True)
    said = capsys.readouterr()
    shown = "alice\\u001b]0;pwned\\u0007\\u001b[2J\\u202e"
    assert said.out == f"removed {shown}\n"
    assert said.err == (f"WARNING names the repo {shown}\nWARNING answered {shown}\nnote {shown}\n")


def test_log_lines_print_above_one_live_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=80)
    monkeypatch.setattr(console, "console", lambda: terminal)
    console.setup_logging(verbose=False)
    with console.progress() as bars:
        advance = bars("training")
        logging.getLogger("job.prepare").info("prepare: 0.4 s")  # before any bar: no bar yet
        assert "training" not in screen.getvalue()
        advance(3, 10)
        assert "training" in screen.getvalue() and bars.tasks
        logging.getLogger("job.run").info("halfway")
        advance(10, 10)
        assert not bars.tasks  # the phase is over: its bar goes
    lines = [ln for ln in screen.getvalue().splitlines() if "halfway" in ln]
    assert lines and all("training" not in ln for ln in lines)  # the log line stands alone
    logging.getLogger().handlers = [
        h for h in logging.getLogger().handlers if not getattr(h, "_huggingtweets", False)
    ]


@pytest.mark.integration
def test_deepspeed_is_told_it_needs_no_op_on_a_cpu_and_asked_nothing_on_a_gpu() -> None:
    """On the CPU accelerator the shared-memory all-reduce op (inference's; a g++ build) is
    marked not wanted; on a GPU's, the op probe (it runs compilers there) is never started."""
    import subprocess
    import sys

    from tests.helpers import REPO

    check = (
        "from job.console import quiet_libraries; quiet_libraries()\n"
        "import deepspeed.ops\n"
        "ops = vars(deepspeed.ops).get('__compatible_ops__')\n"
        "print(None if ops is None else ops['deepspeed_shm_comm'])\n"
    )
    said = {}
    for accelerator in ("cpu", "cuda"):  # cuda: the accelerator a GPU host's DeepSpeed picks
        done = subprocess.run(
            [sys.executable, "-c", check], cwd=REPO, capture_output=True, text=True,
            env={**os.environ, "DS_ACCELERATOR": accelerator}, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        said[accelerator] = done.stdout.split()[-1]
    assert said == {"cpu": "False", "cuda": "None"}
