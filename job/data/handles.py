"""Twitter handles: the only user-given strings that reach paths, S3 keys and repo names."""

from __future__ import annotations

import re
from collections.abc import Iterable

from job.errors import InvalidHandle

# Twitter's own rule for usernames: 1-15 letters, digits or underscores.
HANDLE_RE = re.compile(r"^[A-Za-z0-9_]{1,15}$")


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
    return "-".join(names)
