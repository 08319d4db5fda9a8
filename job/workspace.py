"""A bot's workspace under a local output: ``OUT/<bot>`` (its result) and ``OUT/.<bot>`` (its
lock, scratch space, checkpoints and W&B files; job/inventory.py names both), and the one
writer of them. A leaf: the recipes (prepare, run) use it, and so may anything else.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from job.atomic import lock, recover
from job.errors import BadConfig, NotWritable
from job.inventory import scratch
from job.storage import check_uri


def scratch_of(out: Path, bot: str) -> Path:
    """``OUT/.<bot>``: the bot's lock, scratch space, checkpoints and W&B files, beside
    ``OUT/<bot>``, its result."""
    return out / scratch(bot)


@contextmanager
def bot_writer(out: Path, bot: str) -> Iterator[None]:
    """Be the one writer of ``OUT/<bot>``: hold its lock, and first put back the result that
    a run killed between replace_dir's two renames left aside."""
    with lock(scratch_of(out, bot) / "lock", str(out / bot)):
        recover(out / bot)
        yield


def check_out(out: Path) -> None:
    """The output folder can be one: it is a folder, or nothing yet."""
    if out.exists() and not out.is_dir():
        raise BadConfig(f"--out {out}: a file is there, not a folder")
    existing = next((p for p in (out, *out.parents) if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        # A bind mount that Docker made for root, seen by the image's uid 1000, say.
        raise NotWritable(f"--out {out}: {existing} is not writable by uid {os.getuid()}")


def check_out_folder(value: str, flag: str) -> str:
    """A local output folder (``--out``): S3 output is a manifest's (run --manifest, submit)."""
    check_uri(value)
    if value.startswith("s3://"):
        raise BadConfig(
            f"{flag} {value}: a local folder; to write to S3, give it as a manifest's output"
            " (run --manifest) or use submit"
        )
    return value
