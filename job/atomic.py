"""Writing outputs so that readers never see half of them."""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from job.errors import BadConfig


def replace_dir(new: Path, final: Path) -> None:
    """Put a fully written folder in place of ``final`` by renames, never by overwriting."""
    old = final.with_name(f".{final.name}.old")
    recover(final)
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    new.rename(final)  # a kill before this line: recover() puts the old one back
    shutil.rmtree(old, ignore_errors=True)


def recover(final: Path) -> None:
    """After a kill between replace_dir's two renames: the previous folder goes back."""
    old = final.with_name(f".{final.name}.old")
    if old.is_dir() and not final.exists():
        old.rename(final)


def write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path`` and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def copy_file(source: Path, path: Path) -> None:
    """Copy ``source`` to ``path`` by way of a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.copyfile(source, tmp)
    os.replace(tmp, path)


def json_bytes(value: Any) -> bytes:
    """The one JSON layout of every file the job writes: indented, UTF-8, a final newline.
    JSON has no NaN or infinity (Python writes them, and readers then fail): as null."""
    return (
        json.dumps(_finite(value), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    ).encode()


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_json(path: Path, value: Any) -> None:
    write_bytes(path, json_bytes(value))


@contextmanager
def lock(path: Path, what: str) -> Iterator[None]:
    """Hold ``path`` as the one writer of ``what`` (a bot's output), with our pid and host in
    it. A lock whose process is gone (this host, no such pid) is taken over with a warning; a
    live one, or one of another host, is an error: two runs into one folder would mix their
    files or resume each other's checkpoints."""
    import logging
    import socket
    import time

    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            with open(path, "x", encoding="utf-8") as f:
                json.dump(me, f)
            break
        except FileExistsError:
            try:
                holder = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                holder = {}
            pid, host = holder.get("pid"), holder.get("host")
            if host == me["host"] and isinstance(pid, int) and not _alive(pid):
                logging.getLogger(__name__).warning(
                    "%s: taking over the lock of pid %s, which is gone", what, pid
                )
                path.unlink(missing_ok=True)
                continue
            raise BadConfig(
                f"{what} is being written by pid {pid} on {host}; wait for it, use another"
                f" --out, or delete {path} if that run is gone"
            ) from None
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's: alive
        return True
    return True
