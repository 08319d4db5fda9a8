"""The official Twitter/X account archive ("Download an archive of your data"), zipped or not.

What real exports contain, and what this reader handles:
- ``data/tweets.js``; older exports call it ``data/tweet.js``; big ones split it into
  ``tweets-part1.js``, ``tweets-part2.js``... (``data/manifest.js`` lists the parts).
- Every data file is JavaScript: ``window.YTD.<name>.partN = [ ... ]``; the manifest is either
  ``window.YTD.manifest.part0 = ...`` or the newer ``window.__THAR_CONFIG = {...}``.
- Entries are wrapped (``{"tweet": {...}}``) in newer exports and bare in older ones.
- Numbers are strings, text is HTML-escaped, t.co links are listed in ``entities.urls``.
- ``data/account.js`` has the username and display name, ``data/profile.js`` the avatar
  (a path relative to the archive root, or a URL in older exports).
- ``data/note-tweet.js`` has the full text of long posts, whose tweet holds only a prefix.
"""

from __future__ import annotations

import html
import json
import logging
import lzma
import re
import zipfile
import zlib
from dataclasses import replace
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from job.data.handles import Handle
from job.data.tweets import (
    Avatar,
    Profile,
    Tweet,
    UserTweets,
    loads,
    mapping,
    mappings,
    parse_date,
    string,
    usable_picture,
)
from job.errors import CorruptInput, InputNotFound, InvalidHandle

log = logging.getLogger(__name__)
_ASSIGNMENT = re.compile(r"\s*window\.[\w.$]+\s*=\s*")
_TWEET_FILE = re.compile(r"data/tweets?(?:-part(\d+))?\.js")
_URL = re.compile(r"https?://\S+")
# tweets.js of 100,000 tweets is ~300 MB; JSON deflates ~5-10x, nothing a real export holds
# deflates 100x. A member past either bound is refused while it is read.
MAX_MEMBER_BYTES = 1 << 30
MAX_RATIO = 100
_MIB = MAX_MEMBER_BYTES >> 20
# What zipfile and its decompressors raise for a member they cannot read: a damaged or
# truncated one (BadZipFile, OSError, EOFError, zlib, lzma), an encrypted one (RuntimeError:
# "password required"), a method it has no reader for (NotImplementedError: deflate64).
UNREADABLE = (
    zipfile.BadZipFile,
    OSError,
    EOFError,
    zlib.error,
    lzma.LZMAError,
    RuntimeError,
    NotImplementedError,
    ValueError,
)
# Profile pictures are 400x400 JPEGs of ~50 KB; anything over 5 MB is not one. A small file
# can still claim many pixels (a 97 KB PNG of 10,000 x 10,000 decodes to 400 MB when the card's
# picture is drawn): past 4096 x 4096 it is not one either.
# A file a real archive is sure to have, used to find the archive's root inside a zip.
_MARKERS = ("data/manifest.js", "data/account.js", "data/tweets.js", "data/tweet.js")


class _Files:
    """Read-only view of an archive's files by their path from the archive root."""

    def __init__(self, path: Path | BinaryIO) -> None:
        self.label = str(getattr(path, "uri", path))
        self._zip: zipfile.ZipFile | None = None
        self._root = path if isinstance(path, Path) else Path(self.label)
        self._prefix = ""
        if isinstance(path, Path) and not path.exists():
            raise InputNotFound(f"archive not found: {path}")
        if isinstance(path, Path) and path.is_dir():
            # Accept the archive root or its data/ folder.
            if not (path / "data").is_dir() and path.name == "data":
                self._root = path.parent
            # Nothing outside the archive: a link (data/profile_media/x.jpg -> /anything) would
            # otherwise carry any file of this machine into the model folder, S3 and the Hub.
            root = self._root.resolve()
            self._names = [
                p.relative_to(self._root).as_posix()
                for p in (self._root / "data").rglob("*")
                if p.is_file() and not p.is_symlink() and root in p.resolve().parents
            ]
        else:
            try:
                self._zip = zipfile.ZipFile(path)
                names = self._zip.namelist()
            except UNREADABLE as e:
                raise CorruptInput(f"archive {self.label} is not a readable zip file: {e}") from e
            hits = [n for n in names for m in _MARKERS if n == m or n.endswith("/" + m)]
            if not hits:
                raise CorruptInput(
                    f"archive {self.label} has no data/tweets.js: not a Twitter archive"
                )
            marker = min(hits, key=len)
            self._prefix = marker[: marker.index("data/")]
            self._names = [n[len(self._prefix) :] for n in names if n.startswith(self._prefix)]

    def names(self) -> list[str]:
        return self._names

    def read(self, name: str) -> bytes | None:
        name = PurePosixPath(name.removeprefix("./")).as_posix()
        if name not in self._names:
            return None
        try:
            if self._zip is not None:
                return self._inflate(name)
            path = self._root / name
            if path.stat().st_size > MAX_MEMBER_BYTES:
                raise CorruptInput(f"archive {self.label}: {name} is over {_MIB} MiB")
            return path.read_bytes()
        except UNREADABLE as e:
            # A truncated zip lists its members but cannot inflate them; an encrypted member
            # needs a password, deflate64 (method 9) has no reader here, LZMA or bzip2 data
            # can be damaged: each is a member this job cannot read.
            raise CorruptInput(f"archive {self.label}: cannot read {name}: {e}") from e

    def _inflate(self, name: str) -> bytes:
        """A member, inflated a chunk at a time and refused as soon as it outgrows the caps:
        a 1 MB zip bomb costs ~100 MB of memory, not the gigabytes it claims to hold."""
        assert self._zip is not None
        info = self._zip.getinfo(self._prefix + name)
        limit = min(MAX_MEMBER_BYTES, max(info.compress_size, 1 << 20) * MAX_RATIO)
        out = bytearray()
        with self._zip.open(info) as member:
            while chunk := member.read(1 << 20):
                out += chunk
                if len(out) > limit:
                    raise CorruptInput(
                        f"archive {self.label}: {name} inflates past {limit >> 20} MiB from"
                        f" {info.compress_size:,} bytes: not a Twitter archive (a zip bomb?)"
                    )
        return bytes(out)


def parse_js(name: str, data: bytes) -> Any:
    """The JSON value assigned in a ``window.X = ...`` archive data file."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise CorruptInput(f"{name}: not UTF-8 text") from e
    match = _ASSIGNMENT.match(text)
    if not match:
        raise CorruptInput(f"{name}: not a Twitter archive data file (no 'window.YTD' assignment)")
    body = text[match.end() :].strip().rstrip(";")
    try:
        return loads(body)
    except json.JSONDecodeError as e:
        raise CorruptInput(f"{name}: broken JSON at line {e.lineno}: {e.msg}") from e


def _entries(value: Any, wrapper: str) -> list[dict[str, Any]]:
    """Entries of a ``[...]`` data file, unwrapped from ``{"<wrapper>": {...}}`` if wrapped."""
    if not isinstance(value, list):
        return []
    out = []
    for entry in value:
        if isinstance(entry, dict):
            inner = entry.get(wrapper)
            out.append(inner if isinstance(inner, dict) else entry)
    return out


def _first(value: Any, wrapper: str) -> dict[str, Any]:
    found = _entries(value, wrapper)
    return found[0] if found else {}


class ArchiveSource:
    """Tweets from one person's archive."""

    kind = "archive"  # provenance, on the card: the person's own export

    def __init__(self, path: Path | str | BinaryIO) -> None:
        # A folder, a zip on disk, or a zip as a seekable file (storage.py's
        # S3RangeFile: an archive on S3 read by ranged GETs, its media never fetched).
        self.file: BinaryIO | None = None
        if isinstance(path, (str, Path)):
            self.path = Path(path)
        else:
            self.file, self.path = path, Path(str(getattr(path, "uri", "archive")))

    def fetch(self, handle: Handle) -> UserTweets:
        files = _Files(self.file if self.file is not None else self.path)
        manifest = self._manifest(files)
        account = self._load(files, "data/account.js", "account")
        info = mapping(manifest.get("userInfo"))
        username = string(account.get("username")) or string(info.get("userName"))
        if username and username.lower() != handle.lower():
            raise InvalidHandle(f"archive {self.path} belongs to @{username}, not @{handle}")
        display = string(account.get("accountDisplayName")) or string(info.get("displayName"))
        profile_entry = self._load(files, "data/profile.js", "profile")
        profile = Profile(
            handle=username or handle,
            display_name=display,
            avatar=self._avatar(files, profile_entry.get("avatarMediaUrl")),
        )
        entries = self._tweet_entries(files, manifest)
        tweets = [t for t in (self._tweet(handle, e) for e in entries) if t is not None]
        if len(tweets) < len(entries):  # say so: else it ends as "too few characters"
            bad = next(e for e in entries if self._tweet(handle, e) is None)
            what = f"{len(entries) - len(tweets)} of {len(entries)} tweet entries"
            keys = ", ".join(sorted(map(str, bad))[:8]) or "none"
            if not tweets:
                raise CorruptInput(
                    f"archive {self.path.name}: none of its {len(entries)} tweet entries has an"
                    f" id and a text (the first has the keys: {keys})"
                )
            log.warning("archive %s: %s have no id or text (keys: %s)", self.path.name, what, keys)
        _attach_notes(tweets, self._notes(files))
        fetched, size = getattr(self.file, "fetched", None), getattr(self.file, "size", None)
        if fetched is not None and size:  # an archive on S3: what its ranged reads moved
            log.info(
                "archive %s: read %.1f MB of its %.1f MB by ranged GETs (%.1f%%)",
                self.path.name,
                fetched / 1e6,
                size / 1e6,
                100 * fetched / size,
            )
        return UserTweets(profile=profile, tweets=tweets, source=f"archive {self.path.name}")

    # -- the files ---------------------------------------------------------------------------

    @staticmethod
    def _load(files: _Files, name: str, wrapper: str) -> dict[str, Any]:
        data = files.read(name)
        return _first(parse_js(name, data), wrapper) if data is not None else {}

    @staticmethod
    def _manifest(files: _Files) -> dict[str, Any]:
        data = files.read("data/manifest.js")
        if data is None:
            return {}
        value = parse_js("data/manifest.js", data)
        # window.__THAR_CONFIG = {...}, or window.YTD.manifest.part0 = [{...}] / {...}
        if isinstance(value, list):
            value = _first(value, "manifest")
        return value if isinstance(value, dict) else {}

    @staticmethod
    def _tweet_entries(files: _Files, manifest: dict[str, Any]) -> list[dict[str, Any]]:
        listed: list[str] = []
        types = mapping(manifest.get("dataTypes"))
        for kind in ("tweets", "tweet"):
            files_listed = mapping(types.get(kind)).get("files")
            for f in files_listed if isinstance(files_listed, list) else []:
                if isinstance(f, dict) and isinstance(f.get("fileName"), str):
                    listed.append(f["fileName"].removeprefix("./"))
        names = [n for n in listed if files.read(n) is not None] or [
            n for n in files.names() if _TWEET_FILE.fullmatch(n)
        ]
        if not names:
            raise CorruptInput(
                f"archive {files.label} has no tweets file (data/tweets.js or data/tweet.js)"
            )

        def part(name: str) -> int:
            m = _TWEET_FILE.fullmatch(name)
            return int(m.group(1)) if m and m.group(1) else 0

        entries: list[dict[str, Any]] = []
        for name in sorted(set(names), key=part):
            data = files.read(name)
            assert data is not None
            value = parse_js(name, data)
            if not isinstance(value, list):
                raise CorruptInput(f"{name}: expected a list of tweets")
            entries.extend(_entries(value, "tweet"))
        return entries

    @staticmethod
    def _notes(files: _Files) -> list[dict[str, Any]]:
        data = files.read("data/note-tweet.js")
        return _entries(parse_js("data/note-tweet.js", data), "noteTweet") if data else []

    @staticmethod
    def _avatar(files: _Files, ref: Any) -> Avatar | None:
        if not isinstance(ref, str) or not ref:
            return None
        suffix = PurePosixPath(ref).suffix or ".jpg"
        if not ref.startswith(("http://", "https://")):
            image = _picture(files, ref)
            return Avatar(image=image, suffix=suffix) if image else None
        # Older exports give the URL and store the file as profile_media/<id>-<basename>.
        base = PurePosixPath(ref).name
        for name in files.names():
            if name.startswith("data/profile_media/") and name.endswith(base):
                return Avatar(url=ref, image=_picture(files, name), suffix=suffix)
        return Avatar(url=ref, suffix=suffix)

    @staticmethod
    def _tweet(handle: Handle, t: dict[str, Any]) -> Tweet | None:
        raw_id = t.get("id_str") or t.get("id")
        tweet_id = str(raw_id) if isinstance(raw_id, (str, int)) else ""
        text = t.get("full_text", t.get("text"))
        if not tweet_id or not isinstance(text, str):
            return None
        entities, extended = mapping(t.get("entities")), mapping(t.get("extended_entities"))
        links = [
            u.get("url")
            for group in (entities.get("urls"), entities.get("media"), extended.get("media"))
            for u in mappings(group)
        ]
        return Tweet(
            user=handle,
            id=tweet_id,
            text=text,
            created_at=parse_date(t.get("created_at")),
            lang=string(t.get("lang")),
            is_retweet=text.startswith("RT @") or "retweeted_status" in t,
            is_reply=bool(t.get("in_reply_to_status_id_str") or t.get("in_reply_to_status_id")),
            urls=tuple(dict.fromkeys(u for u in links if isinstance(u, str))),
        )


def _picture(files: _Files, name: str) -> bytes | None:
    """An archive's profile picture, if it is one (tweets.usable_picture)."""
    return usable_picture(files.read(name), f"archive {files.label}: {name}")


def _comparable(text: str) -> str:
    """Text reduced for matching a long post to its truncated tweet."""
    text = _URL.sub(" ", html.unescape(text))
    return " ".join(text.split()).rstrip("…").strip()


PREFIX = 10  # a truncated tweet shorter than this matches too many notes to tell


def _attach_notes(tweets: list[Tweet], notes: list[dict[str, Any]]) -> None:
    """Replace truncated tweets with the full text of their long post (note-tweet.js).

    Notes carry no tweet id, so a note belongs to the tweet whose text it starts with,
    nearest in time when several do. The tweets are indexed by their first ``PREFIX``
    characters, so each note looks at the few that could match: time grows with notes plus
    tweets (300 notes and 20,000 tweets: 13 s when each note read every tweet).
    """
    index: dict[str, list[tuple[int, str]]] = {}
    for i, t in enumerate(tweets):
        short = _comparable(t.text)
        if len(short) >= PREFIX:
            index.setdefault(short[:PREFIX], []).append((i, short))
    for note in notes:
        core = mapping(note.get("core"))
        full = core.get("text")
        if not isinstance(full, str):
            continue
        full_cmp = _comparable(full)
        created = parse_date(note.get("createdAt")) or ""
        candidates = [
            (i, tweets[i])
            for i, short in index.get(full_cmp[:PREFIX], [])
            if full_cmp.startswith(short)
        ]
        if not candidates:
            continue
        i, tweet = min(candidates, key=lambda c: _seconds_apart(c[1].created_at, created))
        urls = [u.get("shortUrl") or u.get("url") for u in mappings(core.get("urls"))]
        links = tuple(dict.fromkeys([*tweet.urls, *(u for u in urls if isinstance(u, str))]))
        tweets[i] = replace(tweet, text=full, urls=links)


def _seconds_apart(a: str | None, b: str | None) -> float:
    if not a or not b:
        return float("inf")
    return abs(
        (
            datetime.fromisoformat(a.replace("Z", "+00:00"))
            - datetime.fromisoformat(b.replace("Z", "+00:00"))
        ).total_seconds()
    )
