"""Twitter handles: the only user-given strings that reach paths, S3 keys and repo names."""

from __future__ import annotations

import re
from collections.abc import Iterable

from job.errors import InvalidHandle

# Twitter's own rule for usernames: 1-15 letters, digits or underscores.
HANDLE_RE = re.compile(r"^[A-Za-z0-9_]{1,15}$")
# Folders of the job's own under an output prefix, beside the bots' folders. A bot's name is
# handles joined with '-', so one of these could be a bot's name (@_opt and @out): refused.
RESERVED = frozenset({"_opt-out"})


def validate_handle(handle: str) -> str:
    """Return the handle without a leading '@', or raise InvalidHandle."""
    bare = handle[1:] if handle.startswith("@") else handle
    if not HANDLE_RE.fullmatch(bare):
        raise InvalidHandle(
            f"invalid Twitter handle {handle!r}: use 1-15 letters, digits or underscores"
        )
    return bare


def bot_name(handles: Iterable[str]) -> str:
    """The bot made of these users: handles joined with '-', as the original HuggingTweets did."""
    names = [validate_handle(h) for h in handles]
    if not names:
        raise InvalidHandle("no Twitter handle given")
    lowered = [n.lower() for n in names]
    if len(set(lowered)) != len(lowered):
        raise InvalidHandle(f"a handle is given twice: {' '.join(names)}")
    name = "-".join(names)
    if name.lower() in RESERVED:
        raise InvalidHandle(
            f"{name} is the name of a folder of the job's own; give the handles in another order"
        )
    return name


def is_bot_name(name: str) -> bool:
    """Whether ``name`` is a bot's name: valid handles joined with '-', none reserved."""
    parts = name.split("-")
    return name.lower() not in RESERVED and all(HANDLE_RE.fullmatch(p) for p in parts)
