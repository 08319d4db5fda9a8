"""The process's temporary folder: everything the job and its libraries put in TMPDIR goes in
one folder of the process's own, removed when the process ends, however it ends.

What a job leaves in the temporary folder outlives the bot's takedown, which reaches only the
output: a task's folder for each bot (the person's tweets, the model), W&B's copy of each
predictions table (texts that may repeat a tweet), its media and socket folders, onnxruntime's
files. Most are removed at a normal exit, none at an exit by os._exit (SIGTERM, SIGINT, the
grace's fallback: job/__main__.py), and nothing is after SIGKILL or the OOM killer. So the
command (job/__main__.py) points TMPDIR at ``start()``'s folder, removes it on every way out
(``end()``), and first removes the folders of this user's processes that are gone.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

# Short (a Unix socket's path is at most 107 bytes, and W&B's service makes one in here: its
# folder and name take ~40 more), and named for its process: a later job knows it by the pid.
PREFIX = "ht-"
_OURS = re.compile(rf"^{PREFIX}(\d+)-[a-z0-9_]{{8}}$")
_STARTED: list[Path] = []


def start() -> Path | None:
    """Make the process's folder, TMPDIR from now on (its children's too), after removing those
    of this user's processes that are gone. None where the temporary folder takes no folder:
    the job goes on there, and says so where it writes."""
    parent = Path(tempfile.gettempdir())
    sweep(parent)
    try:
        folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=parent))
    except OSError:
        return None
    os.environ["TMPDIR"] = str(folder)
    tempfile.tempdir = str(folder)  # this process's, read once
    _STARTED.append(folder)
    return folder


def end() -> None:
    """Remove the process's folder (from the exits that skip the interpreter's own cleanup)."""
    for folder in _STARTED:
        shutil.rmtree(folder, ignore_errors=True)


def sweep(parent: Path) -> list[Path]:
    """Remove the folders ``start`` made for this user's processes that no longer run."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        found = _OURS.match(entry.name)
        try:
            if not found or not entry.is_dir(follow_symlinks=False):
                continue
            if entry.stat(follow_symlinks=False).st_uid != os.getuid() or _running(int(found[1])):
                continue
        except OSError:
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(Path(entry.path))
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's: not ours to judge
    return True
