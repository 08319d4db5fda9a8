"""Where tweets come from. Every source has ``fetch(handle) -> UserTweets``.

- ``ArchiveSource``: the official account archive, zip or folder (``archive.py``).
- ``ApiSource``: the Twitter API v2 through tweepy (``api.py``; imports tweepy lazily).
- ``FileSource``: JSON Lines or CSV the user already has (``files.py``).
- ``BlueskySource``, ``MastodonSource``: a person's public posts on Bluesky or Mastodon, with
  no login, each network's consent signals checked first (``bluesky.py``, ``mastodon.py``).

``user_specs`` reads the command line's ``--archive``/``--jsonl`` and online flags (``--api``,
``--bluesky``, ``--mastodon``) into the ``UserSpec``s a manifest holds; ``sources_for`` turns
specs (from either) into sources.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path
from typing import BinaryIO, Literal, cast

from job.data.handles import Handle, validate_handle
from job.data.sources import files
from job.data.sources.api import ApiSource
from job.data.sources.archive import ArchiveSource
from job.data.sources.bluesky import BlueskySource
from job.data.sources.files import FileSource
from job.data.sources.mastodon import MastodonSource
from job.data.tweets import TweetSource
from job.deadline import deadline
from job.errors import BadConfig, InputNotFound, InvalidHandle
from job.spec import ONLINE, UserSpec
from job.storage import S3RangeFile, read_uri

__all__ = ["ArchiveSource", "FileSource", "sources_for", "user_specs"]


def user_specs(
    users: list[str], archives: list[str], jsonls: list[str], online: Collection[str]
) -> list[UserSpec]:
    """Each user's source from ``--archive``/``--jsonl`` values (``PATH`` or ``HANDLE=PATH``);
    the online sources asked for (``online``: ``api``, ``bluesky``, ``mastodon``, each its
    flag) cover the users left over, each user by their own network's."""
    handles = [validate_handle(u) for u in users]
    chosen: dict[str, UserSpec] = {}
    kinds: list[tuple[Literal["archive", "jsonl"], list[str]]] = [
        ("archive", archives),
        ("jsonl", jsonls),
    ]
    for kind, values in kinds:
        for value in values:
            name, sep, rest = value.partition("=")
            given = _handle_or_none(name) if sep else None
            if given is not None:
                key = next((u for u in handles if u.same(given)), None)
                if key is None:
                    raise BadConfig(f"--{kind} {value}: {given.shown} is not among the users")
                targets = [key]
            elif kind == "jsonl":  # one file for all: it is filtered by its 'user' field
                targets = [u for u in handles if u not in chosen]
            elif len(handles) == 1:
                targets = handles
            else:
                raise BadConfig(f"with several users, name each archive: --{kind} HANDLE=PATH")
            for handle in targets:
                if handle in chosen:
                    raise BadConfig(f"{handle.shown} is given two sources")
                chosen[handle] = UserSpec(
                    handle=handle, source=kind, uri=rest if given is not None else value
                )
    for handle in handles:
        own = ONLINE[handle.platform]
        if handle not in chosen and own not in online:
            raise BadConfig(f"no source for {handle.shown}: give --archive, --jsonl or --{own}")
        chosen.setdefault(handle, UserSpec(handle=handle, source=own))
    return [chosen[h] for h in handles]


def _handle_or_none(given: str) -> Handle | None:
    try:
        return Handle(given)
    except InvalidHandle:
        return None


def sources_for(
    users: list[UserSpec],
    inputs: Path | None = None,
    fetch: bool = True,
    bars: Callable[[str], Callable[[int, int], None] | None] | None = None,
    consent: Callable[[list[Handle]], None] | None = None,
) -> dict[Handle, TweetSource]:
    """A source for each user, by handle. With ``fetch``, local files are checked now (before
    the run's seconds of imports) and S3 inputs are downloaded into ``inputs``; without it
    (ranks other than 0, which never read the tweets) nothing is touched. ``bars`` gives the
    API a progress bar (console.Bars). ``consent`` refuses a person's other names that
    Bluesky gives (cloud/consent.py Guard.also: an opt-out at the output under either)."""
    sources: dict[Handle, TweetSource] = {}
    online: dict[str, TweetSource] = {}  # one client a network, shared by its users
    for user in users:
        if user.source in ONLINE.values():
            source = user.source
            if source not in online:
                noun = "tweets" if source == "api" else "posts"
                progress = bars(f"{noun} fetched") if bars else None
                online[source] = (
                    ApiSource(progress=progress)
                    if source == "api"
                    else BlueskySource(progress=progress, consent=consent)
                    if source == "bluesky"
                    else MastodonSource(progress=progress)
                )
            sources[user.handle] = online[source]
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
