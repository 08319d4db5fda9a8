"""The process's temporary folder: everything the job and its libraries put in TMPDIR goes in
one folder of the process's own, removed when the process ends, however it ends.

What a job leaves in the temporary folder outlives the bot's takedown, which reaches only the
output: a task's folder for each bot (the person's tweets, the model), W&B's copy of each
predictions table (texts that may repeat a tweet), its media and socket folders, onnxruntime's
files. Most are removed at a normal exit, none at an exit by os._exit (SIGTERM, SIGINT, the
grace's fallback: job/__main__.py), and nothing is after SIGKILL or the OOM killer. So the
command (job/__main__.py) points TMPDIR at ``start()``'s folder, removes it on every way out
(``end()``), and first removes the folders whose process is gone (``sweep``).

A folder's process holds a lock on a file in it for as long as it lives, and the kernel lets it
go when the process dies, however it dies: a folder whose lock can be taken is an ended one.
Not its pid: two containers that share /tmp each number their processes from 1.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

# Short: a Unix socket's path is at most 107 bytes, and W&B's service makes one in here (its
# folder and name take ~40 more).
PREFIX = "ht-"
_OURS = re.compile(rf"^{PREFIX}[a-z0-9_]{{8}}$")
LOCK = ".held"
# A folder with no lock yet is a process's between mkdtemp and its lock (microseconds), or one
# killed in between: ended once it is this old.
UNLOCKED_SECONDS = 60.0
_STARTED: list[tuple[Path, int]] = []  # the folder, and the open file that holds its lock


def start() -> Path | None:
    """Make the process's folder, TMPDIR from now on (its children's too), after removing those
    whose process is gone. None where the temporary folder takes no folder: the job goes on
    there, and says so where it writes."""
    folder = hold(Path(tempfile.gettempdir()))
    if folder is not None:
        os.environ["TMPDIR"] = str(folder)
        tempfile.tempdir = str(folder)  # this process's, read once
    return folder


def hold(parent: Path) -> Path | None:
    """A folder in ``parent`` that this process holds for as long as it lives, made after
    removing those whose process is gone, and removed by ``end``: the job's (``start``), and
    the test suite's for each of its processes (tests/conftest.py). None where ``parent``
    takes no folder."""
    sweep(parent)
    try:
        folder = Path(tempfile.mkdtemp(prefix=PREFIX, dir=parent))
        held = os.open(folder / LOCK, os.O_CREAT | os.O_RDWR, 0o600)  # not inherited on exec
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return None
    _STARTED.append((folder, held))
    return folder


def end() -> None:
    """Remove the process's folder (from the exits that skip the interpreter's own cleanup)."""
    for folder, _ in _STARTED:
        shutil.rmtree(folder, ignore_errors=True)


def sweep(parent: Path) -> list[Path]:
    """Remove the folders ``hold`` made whose process no longer runs (their lock is free)."""
    removed: list[Path] = []
    try:
        entries = [e for e in os.scandir(parent) if _OURS.match(e.name)]
    except OSError:
        return removed
    for entry in entries:
        try:
            if not entry.is_dir(follow_symlinks=False):
                continue
            if _ended(Path(entry.path)):
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(Path(entry.path))
        except OSError:  # another user's, or gone meanwhile: not ours to judge
            continue
    return removed


def _ended(folder: Path) -> bool:
    try:
        held = os.open(folder / LOCK, os.O_RDONLY)
    except FileNotFoundError:
        return time.time() - folder.stat().st_mtime > UNLOCKED_SECONDS
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False  # its process holds it
    finally:
        os.close(held)
    return True
