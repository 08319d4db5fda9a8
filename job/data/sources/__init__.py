"""Where tweets come from. Every source has ``fetch(handle) -> UserTweets``.

- ``ArchiveSource``: the official account archive, zip or folder (``archive.py``).
- ``ApiSource``: the Twitter API v2 through tweepy (``api.py``; imports tweepy lazily).
- ``FileSource``: JSON Lines or CSV the user already has (``files.py``).

``user_specs`` reads the command line's ``--archive``/``--jsonl``/``--api`` into the
``UserSpec``s a manifest holds; ``sources_for`` turns specs (from either) into sources.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Literal, cast

from job.data.handles import HANDLE_RE, Handle, validate_handle
from job.data.sources import files
from job.data.sources.api import ApiSource
from job.data.sources.archive import ArchiveSource
from job.data.sources.files import FileSource
from job.data.tweets import TweetSource
from job.deadline import deadline
from job.errors import BadConfig, InputNotFound
from job.spec import UserSpec
from job.storage import S3RangeFile, read_uri

__all__ = ["ArchiveSource", "FileSource", "sources_for", "user_specs"]


def user_specs(
    users: list[str], archives: list[str], jsonls: list[str], api: bool
) -> list[UserSpec]:
    """Each user's source from ``--archive``/``--jsonl`` values (``PATH`` or ``HANDLE=PATH``);
    ``--api`` covers the users left over."""
    handles = [validate_handle(u) for u in users]
    chosen: dict[str, UserSpec] = {}
    kinds: list[tuple[Literal["archive", "jsonl"], list[str]]] = [
        ("archive", archives),
        ("jsonl", jsonls),
    ]
    for kind, values in kinds:
        for value in values:
            name, sep, rest = value.partition("=")
            named = bool(sep) and HANDLE_RE.fullmatch(name.lstrip("@")) is not None
            if named:
                key = next((u for u in handles if u.lower() == name.lstrip("@").lower()), None)
                if key is None:
                    raise BadConfig(f"--{kind} {value}: @{name} is not among the users")
                targets = [key]
            elif kind == "jsonl":  # one file for all: it is filtered by its 'user' field
                targets = [u for u in handles if u not in chosen]
            elif len(handles) == 1:
                targets = handles
            else:
                raise BadConfig(f"with several users, name each archive: --{kind} HANDLE=PATH")
            for handle in targets:
                if handle in chosen:
                    raise BadConfig(f"@{handle} is given two sources")
                chosen[handle] = UserSpec(handle=handle, source=kind, uri=rest if named else value)
    missing = [h for h in handles if h not in chosen]
    if missing and not api:
        raise BadConfig(f"no source for @{missing[0]}: give --archive, --jsonl or --api")
    chosen.update({h: UserSpec(handle=h, source="api") for h in missing})
    return [chosen[h] for h in handles]


def sources_for(
    users: list[UserSpec],
    inputs: Path | None = None,
    fetch: bool = True,
    bars: Callable[[str], Callable[[int, int], None] | None] | None = None,
) -> dict[Handle, TweetSource]:
    """A source for each user, by handle. With ``fetch``, local files are checked now (before
    the run's seconds of imports) and S3 inputs are downloaded into ``inputs``; without it
    (ranks other than 0, which never read the tweets) nothing is touched. ``bars`` gives the
    API a progress bar (console.Bars)."""
    sources: dict[Handle, TweetSource] = {}
    api: TweetSource | None = None
    for user in users:
        if user.source == "api":
            if api is None:
                api = ApiSource(progress=bars("tweets fetched") if bars else None)
            sources[user.handle] = api
            continue
        assert user.uri is not None
        path = Path(user.uri)
        if user.uri.startswith("s3://") and fetch and user.source == "archive":
            # Ranged reads: only the archive's data/*.js and avatar cross the network, not
            # its media (exports with media run to several GB).
            sources[user.handle] = ArchiveSource(cast(BinaryIO, S3RangeFile(user.uri)))
            continue
        if user.uri.startswith("s3://") and fetch:
            if inputs is None:
                raise BadConfig(f"{user.uri}: S3 inputs are for manifests; download it first")
            path = inputs / user.handle / Path(user.uri).name
            path.parent.mkdir(parents=True, exist_ok=True)
            with deadline("input", f"downloading {user.uri}"):
                path.write_bytes(read_uri(user.uri, files.MAX_FILE_BYTES, "tweets file"))
        elif fetch and not path.exists():
            noun = "archive" if user.source == "archive" else "tweets file"
            raise InputNotFound(f"{noun} not found: {path}")
        sources[user.handle] = ArchiveSource(path) if user.source == "archive" else FileSource(path)
    return sources
