"""A request held at a known point: the job runs as a process, a loopback server (the Hub, or
the S3 proxy) holds the first request that matches, the test acts while it is held (a
takedown, a SIGTERM), then lets it go."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# The points the tests hold a run at
MARKER = ("PUT", "/_COMPLETE")  # a run's marker on S3 (not a checkpoint's)
COMMIT = ("POST", "/commit/main")  # the Hub's commit
WEIGHTS = ("PUT", "/model/model.safetensors")  # the model's upload to S3


class Hold:
    """Holds the first request that ``matches`` until ``go``; ``reached`` once it is held."""

    def __init__(self, matches: Callable[[str, str], bool]) -> None:
        self.matches, self.reached, self.go = matches, threading.Event(), threading.Event()

    def __call__(self, method: str, path: str) -> None:
        if not self.reached.is_set() and self.matches(method, path):
            self.reached.set()
            self.go.wait(300)
        return None


def hold_at(point: tuple[str, str], hub: Any = None, proxy: Any = None) -> Hold:
    """A hold of the first request to ``point`` (method, path ending), on the fake Hub's
    faults or on the S3 proxy's hook (not a checkpoint's marker)."""
    method, ending = point
    hold = Hold(lambda m, p: m == method and p.endswith(ending) and "checkpoint" not in p)
    if hub is not None:
        hub.state.faults.append(hold)
    if proxy is not None:
        proxy.hook = hold
    return hold


@contextmanager
def held(
    hold: Hold, args: list[str], env: dict[str, str] | None = None, stderr: Path | None = None
) -> Iterator[subprocess.Popen[str]]:
    """``python -m job ARGS`` as a process, the block run once it reached ``hold``; then the
    hold is let go and the process waited for. What it said on stderr is ``job.said`` (from
    the file ``stderr``, or a pipe)."""
    job = subprocess.Popen(
        [sys.executable, "-m", "job", *args],
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=stderr.open("w") if stderr else subprocess.PIPE,
        text=True,
    )
    try:
        assert hold.reached.wait(300), f"the job never reached the point: {args}"
        yield job
    finally:
        hold.go.set()
        _, err = job.communicate(timeout=300)
        job.said = stderr.read_text() if stderr else err  # type: ignore[attr-defined]
