"""What every tweet source returns: one person's profile and tweets, in one shape.

The one boundary for what the sources read: every ``Tweet``, ``Profile`` and ``Avatar`` is
made here, so each field is made safe to write, compare and show once, whatever source it came
from (an archive, a JSONL or CSV file, the API): text holds no lone surrogate (UTF-8 cannot
write one: JSON's ``"\\ud800"`` is valid JSON, not text), ids and language codes are short
strings, an avatar's suffix is an image's. ``loads`` reads the sources' JSON with integers of
any length kept as text (Python refuses to turn 4,300 digits or more into an int).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from job.data.handles import Handle

log = logging.getLogger(__name__)

# Snowflake ids are 19-20 digits; other sources' ids are short too. A longer one is made short.
MAX_ID_CHARS = 64
MAX_NAME_CHARS = 200  # Twitter's display names are at most 50 characters
AVATAR_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp")
# A profile picture is published with the model: a small image or none. Twitter's own are
# 400 x 400 and under 100 KB; Bluesky's and Mastodon's are at most 1,000 KB.
MAX_AVATAR_BYTES = 5 << 20
MAX_AVATAR_PIXELS = 4096 * 4096
MAX_INT_DIGITS = 40  # past this, JSON's integers stay text (``loads``)


def text_of(value: str) -> str:
    """``value`` as text UTF-8 can hold: a lone surrogate becomes U+FFFD."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def short_id(value: str) -> str:
    value = text_of(value)
    if len(value) <= MAX_ID_CHARS:
        return value
    return "h" + hashlib.sha256(value.encode()).hexdigest()[:32]


def _int(digits: str) -> int | str:
    return int(digits) if len(digits) <= MAX_INT_DIGITS else digits


def loads(text: str) -> Any:
    """JSON as the sources give it; an integer too long for Python stays a string."""
    return json.loads(text, parse_int=_int)


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

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: set once, here
        set_(self, "user", text_of(self.user))
        set_(self, "id", short_id(self.id))
        set_(self, "text", text_of(self.text))
        lang = self.lang
        set_(self, "lang", text_of(lang) if lang and len(lang) <= 16 else None)
        set_(self, "urls", tuple(text_of(u) for u in self.urls if len(u) <= 2048))


@dataclass(frozen=True)
class Avatar:
    """A profile picture: a URL (API), or the image itself (archive)."""

    url: str | None = None
    image: bytes | None = None
    suffix: str = ".jpg"

    def __post_init__(self) -> None:
        suffix = self.suffix.lower()
        object.__setattr__(self, "suffix", suffix if suffix in AVATAR_SUFFIXES else ".jpg")
        if self.url is not None and (len(self.url) > 2048 or text_of(self.url) != self.url):
            object.__setattr__(self, "url", None)


@dataclass(frozen=True)
class Profile:
    handle: str
    display_name: str | None = None
    avatar: Avatar | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "handle", text_of(self.handle)[:MAX_NAME_CHARS])
        name = self.display_name
        object.__setattr__(
            self, "display_name", text_of(name)[:MAX_NAME_CHARS] if name is not None else None
        )


@dataclass
class UserTweets:
    profile: Profile
    tweets: list[Tweet] = field(default_factory=list)
    source: str = ""  # human-readable, never holds a secret


class TweetSource(Protocol):
    """One implementation per kind of input (archive, API, JSONL/CSV)."""

    def fetch(self, handle: Handle) -> UserTweets: ...


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


def usable_picture(data: bytes | None, what: str) -> bytes | None:
    """``data`` if it is a profile picture: small, and an image Pillow can read. It is
    published with the model, so anything else is left out (with a warning naming ``what``),
    never copied."""
    import io
    import warnings

    from PIL import Image

    if data is None:
        return None
    try:
        if len(data) > MAX_AVATAR_BYTES:
            raise ValueError(f"{len(data):,} bytes")
        with warnings.catch_warnings():  # Pillow's own bomb warning: the size is checked here
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))  # reads the header: the size, no pixels
        with image:
            if image.width * image.height > MAX_AVATAR_PIXELS:
                raise ValueError(f"{image.width} x {image.height} pixels")
            image.verify()
    except Exception as e:  # Pillow raises many kinds; none is a reason to fail the job
        log.warning("%s is not a usable picture (%s)", what, e)
        return None
    return data
