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

Three networks, one rule from a handle to its **name** (the ``str`` of a ``Handle``: a bot's
name is its handles' names joined with ``-``, and that name is its Hub repo's and its storage
keys'). A name is made of letters, digits, ``_`` and ``.`` only, never ``-``, and each
network's names are told apart by their shape, so no two people share one:

- Twitter: ``@Ann``, ``x.com/Ann`` -> ``Ann`` (1-15 of ``[A-Za-z0-9_]``: never a ``.``);
- Bluesky: ``@alice.bsky.social``, ``bsky.app/profile/alice.bsky.social`` ->
  ``alice.bsky.social`` (a domain; each ``-`` written ``_``, which a Bluesky handle never holds);
- Bluesky: ``did:plc:ewvi7nxzyoun6zhxrhs64oiz`` -> ``did_plc_ewvi7nxzyoun6zhxrhs64oiz`` (32
  characters: no Twitter handle's, no dot);
- Mastodon: ``@bob@mastodon.social``, ``mastodon.social/@bob`` -> ``bob._.mastodon.social`` (a
  label ``_`` alone, which no domain and so no Bluesky handle has).

Bluesky and Mastodon names are lowercase (both networks ignore case); a name, and a bot's,
is at most ``MAX_NAME`` characters (what a Hub repo's name leaves).
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
# Bluesky: a handle is a domain name (atproto's handle syntax): labels of letters, digits and
# '-' (not at a label's ends), at least two, the last not starting with a digit. In a name
# each '-' is written '_' (a handle never holds one), so a name maps back to one handle.
_LABEL = r"[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?"
DOMAIN_RE = re.compile(rf"^(?:{_LABEL}\.)+[a-z](?:[a-z0-9_-]{{0,61}}[a-z0-9])?$")
# Top-level domains atproto's handle syntax refuses (handle.invalid is its "no handle").
NOT_HANDLE_TLDS = {"alt", "arpa", "example", "internal", "invalid", "local", "localhost", "onion"}
# did:plc identifiers: 24 characters of base32 (the PLC directory's own rule).
DID_RE = re.compile(r"^did[:_]plc[:_]([a-z2-7]{24})$")
BSKY_URL = re.compile(r"^(?:https?://)?(?:www\.)?bsky\.app/profile/([^/?#]+)/?$", re.IGNORECASE)
# Mastodon: a local username (1-30 letters, digits or '_', Mastodon's own limit) at a host.
MASTODON_USER = r"[a-z0-9_]{1,30}"
ACCT_RE = re.compile(rf"^@?({MASTODON_USER})@([^@/\s]+)$", re.IGNORECASE)
MASTODON_URL = re.compile(rf"^(?:https?://)?([^/@\s]+)/@({MASTODON_USER})/?$", re.IGNORECASE)
MASTODON_NAME = "._."  # between a Mastodon name's user and host
# The Hub's limit for a repo's name is 96 (huggingface_hub's validate_repo_id), and an adapter
# bot's merged copy adds "-merged" to its bot's name (inventory.merged_repo): 89 is left.
MAX_NAME = 96 - len("-merged")
PLATFORMS = ("twitter", "bluesky", "mastodon")

# Folders of the job's own under an output prefix, beside the bots' folders. A bot's name is
# handles joined with '-', so one of these could be a bot's name (@_opt and @out): refused.
RESERVED = frozenset({"_opt-out"})


class Handle(str):
    """A person on Twitter, Bluesky or Mastodon, as its name (module docstring): checked, and
    the same ``Handle`` for every form the person may give. ``key`` is its lowercase form: the
    one to compare and to key records by; ``shown`` is how the network writes it."""

    __slots__ = ()

    def __new__(cls, given: str) -> Handle:
        if isinstance(given, Handle):
            return given
        if not isinstance(given, str):
            raise InvalidHandle(f"a handle is text, not {type(given).__name__}")
        name = _name_of(given)
        if name is None:
            raise InvalidHandle(
                f"invalid handle {given[:60]!r}: give a Twitter handle (1-15 letters, digits or"
                " underscores), a Bluesky handle (alice.bsky.social) or DID (did:plc:...), or a"
                " Mastodon account (@bob@mastodon.social)"
            )
        if len(name) > MAX_NAME:
            raise InvalidHandle(
                f"handle {given[:60]!r} is too long to name a bot: at most {MAX_NAME} characters"
            )
        return super().__new__(cls, name)

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

    @property
    def platform(self) -> str:
        """``twitter``, ``bluesky`` or ``mastodon``."""
        if MASTODON_NAME in self:
            return "mastodon"
        return "bluesky" if "." in self or DID_RE.fullmatch(self) else "twitter"

    @property
    def actor(self) -> str:
        """The handle as its network's API takes it: ``Ann``, ``alice.bsky.social``,
        ``did:plc:...``, ``bob@mastodon.social``."""
        if self.platform == "mastodon":
            user, host = self.split(MASTODON_NAME, 1)
            return f"{user}@{host.replace('_', '-')}"
        did = DID_RE.fullmatch(self)
        if did:
            return f"did:plc:{did.group(1)}"
        return self.replace("_", "-") if self.platform == "bluesky" else str(self)

    @property
    def shown(self) -> str:
        """As people write it: ``@Ann``, ``@alice.bsky.social``, ``did:plc:...``,
        ``@bob@mastodon.social``."""
        actor = self.actor
        return actor if actor.startswith("did:") else f"@{actor}"

    @property
    def posts(self) -> str:
        """What the network calls what the person writes: ``tweets``, or ``posts``."""
        return "tweets" if self.platform == "twitter" else "posts"

    @property
    def profile_url(self) -> str:
        """The person's public profile page on their network."""
        if self.platform == "mastodon":
            user, host = self.actor.split("@", 1)
            return f"https://{host}/@{user}"
        if self.platform == "bluesky":
            return f"https://bsky.app/profile/{self.actor}"
        return f"https://x.com/{self}"


def _name_of(given: str) -> str | None:
    """The name (module docstring) of any form of a handle, or None where it is none."""
    if given != given.strip() or not given:
        return None
    url = PROFILE_URL.fullmatch(given)
    if url:
        return url.group(1)
    bare = given.removeprefix("@")
    if HANDLE_RE.fullmatch(bare):
        return bare
    url = BSKY_URL.fullmatch(given)
    if url:
        return _bluesky(url.group(1).removeprefix("@"))
    url = MASTODON_URL.fullmatch(given)
    acct = ACCT_RE.fullmatch(given)
    if url or acct:
        user, host = (url.group(2), url.group(1)) if url else (acct.group(1), acct.group(2))  # type: ignore[union-attr]
        host = _bluesky(host, handle=False)  # a host is a domain as a Bluesky handle is
        return f"{user.lower()}{MASTODON_NAME}{host}" if host and "." in host else None
    if MASTODON_NAME in given:  # a name written back (a bot's name, a record's)
        user, _, host = given.partition(MASTODON_NAME)
        name = _name_of(f"@{user}@{host}") if user and host else None
        return name if name and MASTODON_NAME in name else None
    return _bluesky(bare)


def _bluesky(given: str, handle: bool = True) -> str | None:
    """A Bluesky handle's or did:plc's name (with ``handle`` false: a host's), or None."""
    text = given.lower()
    did = DID_RE.fullmatch(text) if handle else None
    if did:
        return f"did_plc_{did.group(1)}"
    if len(text) > 253 or not DOMAIN_RE.fullmatch(text):
        return None
    if handle and text.rsplit(".", 1)[-1] in NOT_HANDLE_TLDS:
        return None
    return text.replace("-", "_")


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
        raise InvalidHandle("no handle given")
    keys = [n.key for n in names]
    if len(set(keys)) != len(keys):
        raise InvalidHandle(f"a handle is given twice: {' '.join(names)}")
    name = "-".join(names)
    if len(name) > MAX_NAME:
        raise InvalidHandle(
            f"a bot of these handles would be named with {len(name)} characters, over the"
            f" {MAX_NAME} a Hub repo's name leaves: make it of fewer people"
        )
    if name.lower() in RESERVED:
        raise InvalidHandle(
            f"{name} is the name of a folder of the job's own; give the handles in another order"
        )
    return name


def handles_in(bot: str) -> list[Handle] | None:
    """The handles a bot's name is made of, or None where ``bot`` is no bot's name."""
    parts = bot.split("-")  # names as written: no '@', no address, no '-'
    if bot.lower() in RESERVED or len(bot) > MAX_NAME:
        return None
    if not all(_name_of(part) == part for part in parts):  # each a name as a Handle writes it
        return None
    return [Handle(part) for part in parts]


def is_bot_name(name: str) -> bool:
    """Whether ``name`` is a bot's name: valid handles joined with '-', none reserved."""
    return handles_in(name) is not None


def holds(bot: str, handle: Handle) -> bool:
    """Whether the bot named ``bot`` imitates ``handle`` (alone or with others)."""
    return any(h.same(handle) for h in handles_in(bot) or [])
