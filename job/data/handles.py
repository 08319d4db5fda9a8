"""Handles: the one type for a person, parsed once where it enters (a command's argument, a
manifest, a record), and the one naming rule from handles to bot names.

Every consent, naming and storage function takes a ``Handle``, never a bare string
(tests/test_layout.py checks every parameter named ``handle`` or ``handles``), so the forms a
person may give for themselves mean the same person everywhere, ``takedown`` included:

- ``@SourDough_Sam``, ``SourDough_Sam``, ``sourdough_sam``: one person (Twitter's handles are
  case-insensitive); the handle keeps the spelling it was given for display, and ``key``
  (lowercase) is what opt-outs, takedowns and comparisons use;
- ``https://twitter.com/SourDough_Sam`` and ``x.com/SourDough_Sam`` (a profile's address, what
  a person pastes into a removal request): the same person;
- anything else (spaces, paths, ``a-b``, 16 characters) is refused, exit 3.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from job.errors import InvalidHandle
from job.loading import _carried

# Twitter's own rule for usernames: 1-15 letters, digits or underscores.
HANDLE_RE = re.compile(r"^[A-Za-z0-9_]{1,15}$")
# A profile's address: what a person pastes when they ask for removal.
PROFILE_URL = re.compile(
    r"^(?:https?://)?(?:(?:www|mobile)\.)?(?:twitter|x)\.com/@?([A-Za-z0-9_]{1,15})/?$",
    re.IGNORECASE,
)
# Folders of the job's own under an output prefix, beside the bots' folders. A bot's name is
# handles joined with '-', so one of these could be a bot's name (@_opt and @out): refused.
RESERVED = frozenset({"_opt-out"})


class Handle(str):
    """A Twitter handle, as given but without ``@`` (``Handle("@Ann") == "Ann"``), checked.
    ``key`` is its lowercase form: the one to compare and to key records by."""

    __slots__ = ()

    def __new__(cls, given: str) -> Handle:
        if isinstance(given, Handle):
            return given
        if not isinstance(given, str):
            raise InvalidHandle(f"a handle is text, not {type(given).__name__}")
        url = PROFILE_URL.fullmatch(given)
        bare = url.group(1) if url else given.removeprefix("@")
        if not HANDLE_RE.fullmatch(bare):
            raise InvalidHandle(
                f"invalid Twitter handle {given[:40]!r}: use 1-15 letters, digits or underscores"
            )
        return super().__new__(cls, bare)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        """In a pydantic model (a manifest's ``users``): checked as here, its InvalidHandle
        carried through pydantic with its own code (loading.py)."""
        from pydantic_core import core_schema

        return core_schema.no_info_after_validator_function(
            lambda value: _carried(cls, value),
            core_schema.str_schema(),
            serialization=core_schema.plain_serializer_function_ser_schema(str),
        )

    @property
    def key(self) -> str:
        return self.lower()

    def same(self, other: Handle) -> bool:
        return self.key == other.key


def validate_handle(handle: str) -> Handle:
    """The handle ``handle`` names (``@``, case and profile addresses folded), or
    InvalidHandle: the parser every boundary calls."""
    return Handle(handle)


def handles_of(given: Iterable[str]) -> list[Handle]:
    return [Handle(h) for h in given]


def bot_name(handles: Iterable[Handle]) -> str:
    """The bot made of these users: handles joined with '-', as the original HuggingTweets did."""
    names = [Handle(h) for h in handles]
    if not names:
        raise InvalidHandle("no Twitter handle given")
    keys = [n.key for n in names]
    if len(set(keys)) != len(keys):
        raise InvalidHandle(f"a handle is given twice: {' '.join(names)}")
    name = "-".join(names)
    if name.lower() in RESERVED:
        raise InvalidHandle(
            f"{name} is the name of a folder of the job's own; give the handles in another order"
        )
    return name


def handles_in(bot: str) -> list[Handle] | None:
    """The handles a bot's name is made of, or None where ``bot`` is no bot's name."""
    parts = bot.split("-")  # a name as written: no '@', no address
    if bot.lower() in RESERVED or not all(HANDLE_RE.fullmatch(p) for p in parts):
        return None
    return [Handle(part) for part in parts]


def is_bot_name(name: str) -> bool:
    """Whether ``name`` is a bot's name: valid handles joined with '-', none reserved."""
    return handles_in(name) is not None


def holds(bot: str, handle: Handle) -> bool:
    """Whether the bot named ``bot`` imitates ``handle`` (alone or with others)."""
    return any(h.same(handle) for h in handles_in(bot) or [])
