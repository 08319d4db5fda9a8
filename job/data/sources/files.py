"""Tweets a person already has as JSON Lines or CSV: one tweet per record.

Each record needs ``text``. Optional fields: ``user`` (or ``username``/``handle``; a file
with several people's tweets is filtered to the handle asked for), ``id``, ``created_at`` (or
``date``), ``lang``, ``is_retweet`` (else: the text starts with "RT @"), ``is_reply`` (else:
``in_reply_to`` is set, or the text starts with "@"), ``name`` (the display name).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from job.data.handles import Handle
from job.data.tweets import Profile, Tweet, UserTweets, loads, parse_date
from job.errors import CorruptInput, InputNotFound, NotEnoughData

_USER_KEYS = ("user", "username", "handle", "screen_name")
# A tweet is at most 25,000 characters (a long post); a record holds one and a few fields.
MAX_RECORD_CHARS = 100_000
# 3,200 tweets of a full API download make ~2 MB; 100 people's in one shared file, ~200 MB.
MAX_FILE_BYTES = 256 << 20
_TRUE = {"1", "true", "yes", "y", "t"}


class FileSource:
    """Tweets from a ``.jsonl``/``.ndjson`` or ``.csv`` file."""

    kind = "files"  # provenance, on the card: files the operator gave

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def fetch(self, handle: Handle) -> UserTweets:
        records = self._records()
        tweets = []
        name = None
        owners: set[str] = set()
        for n, record in records:
            owner = next((record[k] for k in _USER_KEYS if record.get(k)), None)
            if owner is not None and str(owner).lstrip("@").lower() != handle.lower():
                owners.add(str(owner).lstrip("@"))
                continue
            tweets.append(self._tweet(handle, n, record))
            name = name or record.get("name") or None
        if not tweets and owners:  # a typo in the handle, most likely: say whose tweets it has
            held = ", ".join(f"@{o}" for o in sorted(owners)[:10])
            raise NotEnoughData(f"{self.path.name} has no tweets of @{handle}; it holds {held}")
        profile = Profile(handle=handle, display_name=name if isinstance(name, str) else None)
        return UserTweets(profile=profile, tweets=tweets, source=self.path.name)

    def _records(self) -> list[tuple[int, dict[str, Any]]]:
        if not self.path.is_file():
            raise InputNotFound(f"tweets file not found: {self.path}")
        suffix = self.path.suffix.lower()
        if self.path.stat().st_size > MAX_FILE_BYTES:
            raise CorruptInput(f"{self.path}: over {MAX_FILE_BYTES >> 20} MiB: not a tweets file")
        data = self.path.read_bytes()
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            at = data[: e.start].count(b"\n") + 1
            hint = " (UTF-16? save it as UTF-8)" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
            raise CorruptInput(f"{self.path}:{at}: not UTF-8 text{hint}") from e
        if suffix == ".csv":
            reader = csv.DictReader(io.StringIO(text, newline=""))
            try:
                if "text" not in (reader.fieldnames or []):
                    raise CorruptInput(f"{self.path}: the CSV header has no 'text' column")
                rows = [(n, dict(row)) for n, row in enumerate(reader, start=2)]
            except csv.Error as e:  # a field over csv's 128 KiB limit, a NUL byte...
                raise CorruptInput(f"{self.path}:{reader.line_num}: unreadable CSV: {e}") from e
            return rows
        if suffix not in (".jsonl", ".ndjson", ".json"):
            raise CorruptInput(f"{self.path}: unknown format {suffix!r}; use .jsonl or .csv")
        out = []
        # Records end at "\n" alone: splitlines() would also split at U+2028 and the other
        # separators JSON strings may hold raw (a valid record cut in two).
        for n, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            if len(line) > MAX_RECORD_CHARS:
                raise CorruptInput(f"{self.path}:{n}: a record of {len(line):,} characters")
            try:
                record = loads(line)
            except json.JSONDecodeError as e:
                raise CorruptInput(f"{self.path}:{n}: not a JSON object: {e.msg}") from e
            if not isinstance(record, dict):
                raise CorruptInput(f"{self.path}:{n}: not a JSON object")
            out.append((n, record))
        return out

    def _tweet(self, handle: Handle, n: int, record: dict[str, Any]) -> Tweet:
        text = record.get("text")
        if not isinstance(text, str):
            raise CorruptInput(f"{self.path}:{n}: record has no 'text'")
        return Tweet(
            user=handle,
            id=str(record.get("id") or f"{self.path.stem}-{n}"),
            text=text,
            created_at=parse_date(record.get("created_at") or record.get("date")),
            lang=record.get("lang") if isinstance(record.get("lang"), str) else None,
            is_retweet=_flag(record.get("is_retweet"), text.startswith("RT @")),
            is_reply=_flag(
                record.get("is_reply"), bool(record.get("in_reply_to")) or text.startswith("@")
            ),
        )


def _flag(value: Any, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in _TRUE
