"""What every tweet source returns: one person's profile and tweets, in one shape."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol


@dataclass(frozen=True)
class Tweet:
    user: str  # handle, without '@'
    id: str
    text: str  # exactly as the source gave it (archives and the API HTML-escape it)
    created_at: str | None = None  # ISO 8601, UTC
    lang: str | None = None
    is_retweet: bool = False
    is_reply: bool = False
    urls: tuple[str, ...] = ()  # short links the source lists (t.co), removed when cleaning


@dataclass(frozen=True)
class Avatar:
    """A profile picture: a URL (API), or the image itself (archive)."""

    url: str | None = None
    image: bytes | None = None
    suffix: str = ".jpg"


@dataclass(frozen=True)
class Profile:
    handle: str
    display_name: str | None = None
    avatar: Avatar | None = None


@dataclass
class UserTweets:
    profile: Profile
    tweets: list[Tweet] = field(default_factory=list)
    source: str = ""  # human-readable, never holds a secret


class TweetSource(Protocol):
    """One implementation per kind of input (archive, API, JSONL/CSV)."""

    def fetch(self, handle: str) -> UserTweets: ...


def newest_first(tweets: list[Tweet]) -> list[Tweet]:
    """Sort by date, then by numeric id (ids are time-ordered snowflakes)."""

    def key(t: Tweet) -> tuple[str, int]:
        # isdecimal and ASCII: "²".isdigit() holds, and int("²") fails
        numeric = t.id.isascii() and t.id.isdecimal()
        return (t.created_at or "", int(t.id) if numeric else 0)

    return sorted(tweets, key=key, reverse=True)


# Twitter's v1.1 / archive date format: "Thu Nov 03 08:50:26 +0000 2022".
_V1_DATE = "%a %b %d %H:%M:%S %z %Y"


def parse_date(value: object) -> str | None:
    """Any date the sources use, as ISO 8601 UTC; None when absent or unreadable."""
    if not value or not isinstance(value, str):
        return None
    text = value.strip()
    parsed: datetime | None = None
    try:
        parsed = datetime.strptime(text, _V1_DATE)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    try:
        return parsed.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    except OverflowError:  # year 1 an hour east of UTC falls before year 1
        return None


# Reading JSON that the sources hand us, fields of any type: what is not of the expected type
# reads as absent, so a wrong type is read around, never a crash.


def mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def mappings(value: Any) -> list[dict[str, Any]]:
    """The objects of a list; anything else is no list."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def string(value: Any) -> str | None:
    """A non-empty string, or None."""
    return value if isinstance(value, str) and value else None
