"""The ``huggingtweets`` command, in-process (Typer's CliRunner) or as a real process."""

from __future__ import annotations

import functools
import logging
import os
import subprocess
import sys
from dataclasses import dataclass

import typer.testing

# Typer's runner builds the app's Click command again for every call, reading every command's
# signature: a third of the in-process tier's time. The same app gives the same command, so it
# is built once a process (typer.testing looks it up through this name).
typer.testing._get_command = functools.cache(typer.testing._get_command)  # type: ignore[attr-defined]


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def invoke(*args: str, env: dict[str, str] | None = None, twitter_env: bool = False) -> Result:
    """Run the command in this process: the fast tier's way. TWITTER_* variables of the
    calling environment are hidden unless ``twitter_env``; an exception the command did not
    turn into an exit code is raised here (a bug), not reported as exit 1."""
    from typer.testing import CliRunner

    from job.cli import app

    hidden: dict[str, str | None] = {
        k: None for k in os.environ if k.startswith("TWITTER_") and not twitter_env
    }
    try:
        result = CliRunner().invoke(app, list(args), env={**hidden, **(env or {})})
    finally:  # the command's log handler writes to the runner's stream, now closed
        root = logging.getLogger()
        root.handlers = [h for h in root.handlers if not getattr(h, "_huggingtweets", False)]
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Result(result.exit_code, result.stdout, result.stderr)


def one_line(result: Result, code: int) -> str:
    """The command ended in ``code`` with one ``error:`` line on stderr and no traceback:
    that line."""
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def process(
    *args: str,
    env: dict[str, str] | None = None,
    twitter_env: bool = False,
    timeout: float = 600,
    python: tuple[str, ...] = (),
) -> Result:
    """Run ``python -m job`` as its own process: for what only a process shows (exit handlers,
    imports, signals, the platform's view). ``python`` adds interpreter flags (``-X
    importtime`` lists every module the job imports on stderr)."""
    base = {k: v for k, v in os.environ.items() if twitter_env or not k.startswith("TWITTER_")}
    done = subprocess.run(
        [sys.executable, *python, "-m", "job", *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=timeout,
    )
    return Result(done.returncode, done.stdout, done.stderr)
