"""Small HTTP servers on loopback shaped like Bluesky's public AppView and a Mastodon server.

- ``Bluesky``: ``app.bsky.actor.getProfile`` and ``app.bsky.feed.getAuthorFeed`` (cursor
  pages), errors as the AppView gives them (``{"error": "AccountTakedown", "message": ...}``),
  self-labels on the profile, ``ratelimit-*`` headers.
- ``Mastodon``: ``/api/v1/accounts/lookup`` and ``/api/v1/accounts/:id/statuses`` (``max_id``
  pages), accounts with ``noindex``, ``locked`` and a bio, ``x-ratelimit-*`` headers.

Both serve an avatar at ``/avatar.png`` and take scripted ``Fault``s (429 with a reset, 5xx, a
stall, a raw body, a page of many posts) in order before real answers. Fictional people only.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlparse

from tests.helpers import QuietServer


def png(size: int = 8) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (200, 120, 40)).save(buffer, "PNG")
    return buffer.getvalue()


@dataclass
class Fault:
    status: int = 200
    reset_in: float | None = None  # seconds until the rate limit resets (the network's header)
    remaining: int | None = None  # a ratelimit-remaining header
    body: bytes | None = None  # raw body instead of the real answer
    stall: float = 0.0  # seconds before answering
    drip: float = 0.0  # seconds between bytes of the body
    answer: bool = False  # after the headers, the real answer (a 200 with rate headers)


class _Server:
    """What both fakes share: faults, the request log, the avatar, start and stop."""

    reset_header = "ratelimit-reset"
    remaining_header = "ratelimit-remaining"

    def __init__(self) -> None:
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, dict[str, list[str]]]] = []
        self.avatar = png()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = parse_qs(url.query)
                fake.requests.append((url.path, query))
                headers: dict[str, str] = {}
                if fake.faults:
                    fault = fake.faults.pop(0)
                    time.sleep(fault.stall)
                    if fault.reset_in is not None:
                        headers[fake.reset_header] = fake.reset_value(fault.reset_in)
                    if fault.remaining is not None:
                        headers[fake.remaining_header] = str(fault.remaining)
                    if not fault.answer:
                        data = fault.body if fault.body is not None else b'{"error": "fault"}'
                        return self.send(fault.status, data, headers, drip=fault.drip)
                if url.path == "/avatar.png":
                    return self.send(200, fake.avatar, {"Content-Type": "image/png"})
                status, body = fake.answer(url.path, query)
                self.send(status, json.dumps(body).encode(), headers)

            def send(
                self, status: int, data: bytes, headers: dict[str, str], drip: float = 0.0
            ) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(data)))
                    kind = headers.pop("Content-Type", "application/json")
                    self.send_header("Content-Type", kind)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    if not drip:
                        self.wfile.write(data)
                        return
                    for i in range(len(data)):
                        self.wfile.write(data[i : i + 1])
                        self.wfile.flush()
                        time.sleep(drip)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def reset_value(self, seconds: float) -> str:
        return str(int(time.time() + seconds))

    def answer(self, path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        raise NotImplementedError

    def __enter__(self) -> Any:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()


# --- Bluesky ----------------------------------------------------------------------------------


@dataclass
class BlueskyPerson:
    handle: str  # alice.example.org
    did: str = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
    display_name: str = "Alice Example"
    labels: list[str] = field(default_factory=list)  # self-labels, "!no-unauthenticated"
    posts: list[dict[str, Any]] = field(default_factory=list)  # feed items, newest first
    gone: str | None = None  # "AccountTakedown", "AccountDeactivated"
    avatar: bool = True


class Bluesky(_Server):
    def __init__(self) -> None:
        super().__init__()
        self.people: list[BlueskyPerson] = []

    def add(self, person: BlueskyPerson) -> BlueskyPerson:
        self.people.append(person)
        return person

    def find(self, actor: str) -> BlueskyPerson | None:
        return next((p for p in self.people if actor in (p.handle, p.did)), None)

    def answer(self, path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        actor = query.get("actor", [""])[0]
        person = self.find(actor)
        if person is None:
            return 400, {"error": "InvalidRequest", "message": f"Profile not found: {actor}"}
        if person.gone:
            return 400, {"error": person.gone, "message": f"<script>{actor}</script>"}
        if path == "/xrpc/app.bsky.actor.getProfile":
            profile: dict[str, Any] = {
                "did": person.did,
                "handle": person.handle,
                "displayName": person.display_name,
                "labels": [
                    {"src": person.did, "val": v, "cts": "2026-01-01T00:00:00Z"}
                    for v in person.labels
                ],
                "postsCount": len(person.posts),
            }
            if person.avatar:
                profile["avatar"] = f"{self.url}/avatar.png"
            return 200, profile
        if path == "/xrpc/app.bsky.feed.getAuthorFeed":
            limit = int(query.get("limit", ["50"])[0])
            start = int(query.get("cursor", ["0"])[0])
            page = person.posts[start : start + limit]
            body: dict[str, Any] = {"feed": page}
            if start + limit < len(person.posts):
                body["cursor"] = str(start + limit)
            return 200, body
        return 404, {"error": "MethodNotImplemented"}


def bsky_post(
    person: BlueskyPerson,
    n: int,
    text: str,
    *,
    reply: bool = False,
    repost_of: str | None = None,
    facets: list[dict[str, Any]] | None = None,
    langs: tuple[str, ...] = ("en",),
    quote: bool = False,
) -> dict[str, Any]:
    """A feed item of ``person``'s (or, with ``repost_of``, someone's post they reposted)."""
    author = repost_of or person.did
    record: dict[str, Any] = {
        "$type": "app.bsky.feed.post",
        "text": text,
        "createdAt": (datetime(2026, 6, 1, tzinfo=timezone.utc) - timedelta(hours=n)).isoformat(),
        "langs": list(langs),
    }
    if reply:
        parent = {"uri": "at://did:plc:bbbbbbbbbbbbbbbbbbbbbbbb/app.bsky.feed.post/3k", "cid": "x"}
        record["reply"] = {"root": parent, "parent": parent}
    if facets:
        record["facets"] = facets
    if quote:
        record["embed"] = {
            "$type": "app.bsky.embed.record",
            "record": {"uri": "at://did:plc:cccccccccccccccccccccccc/app.bsky.feed.post/3q"},
        }
    item: dict[str, Any] = {
        "post": {
            "uri": f"at://{author}/app.bsky.feed.post/3k{n:011d}",
            "cid": f"bafy{n}",
            "author": {"did": author, "handle": "someone.example" if repost_of else person.handle},
            "record": record,
            "indexedAt": record["createdAt"],
        }
    }
    if repost_of:
        item["reason"] = {"$type": "app.bsky.feed.defs#reasonRepost", "by": {"did": person.did}}
    return item


def link_facet(text: str, shown: str, uri: str) -> dict[str, Any]:
    """A link facet over ``shown`` in ``text`` (byte offsets, as atproto counts them)."""
    start = len(text[: text.index(shown)].encode())
    return {
        "index": {"byteStart": start, "byteEnd": start + len(shown.encode())},
        "features": [{"$type": "app.bsky.richtext.facet#link", "uri": uri}],
    }


# --- Mastodon ---------------------------------------------------------------------------------


@dataclass
class MastodonPerson:
    username: str
    host: str = "social.example"
    id: str = "1090"
    display_name: str = "Bob Example"
    note: str = "<p>I bake bread.</p>"
    noindex: bool = False
    locked: bool = False
    suspended: bool = False
    gone: bool = False  # 404 on lookup
    statuses: list[dict[str, Any]] = field(default_factory=list)  # newest first
    avatar: bool = True


class Mastodon(_Server):
    reset_header = "x-ratelimit-reset"
    remaining_header = "x-ratelimit-remaining"

    def __init__(self) -> None:
        super().__init__()
        self.people: list[MastodonPerson] = []

    def reset_value(self, seconds: float) -> str:
        at = datetime.now(timezone.utc) + timedelta(seconds=seconds)
        return at.isoformat(timespec="microseconds").replace("+00:00", "Z")

    def add(self, person: MastodonPerson) -> MastodonPerson:
        self.people.append(person)
        return person

    def answer(self, path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        if path == "/api/v1/accounts/lookup":
            acct = query.get("acct", [""])[0].lower()
            person = next(
                (p for p in self.people if acct in (p.username, f"{p.username}@{p.host}")), None
            )
            if person is None or person.gone:
                return 404, {"error": "Record not found"}
            account: dict[str, Any] = {
                "id": person.id,
                "username": person.username,
                "acct": person.username,
                "display_name": person.display_name,
                "locked": person.locked,
                "bot": False,
                "note": person.note,
                "noindex": person.noindex,
                "statuses_count": len(person.statuses),
                "avatar": f"{self.url}/avatar.png" if person.avatar else
                f"https://{person.host}/avatars/original/missing.png",
            }  # fmt: skip
            if person.suspended:
                account["suspended"] = True
            return 200, account
        parts = path.strip("/").split("/")
        if parts[:3] == ["api", "v1", "accounts"] and len(parts) == 5 and parts[4] == "statuses":
            person = next((p for p in self.people if p.id == parts[3]), None)
            if person is None:
                return 404, {"error": "Record not found"}
            limit = int(query.get("limit", ["20"])[0])
            max_id = query.get("max_id", [None])[0]
            statuses = person.statuses
            if max_id is not None:
                statuses = [s for s in statuses if int(s["id"]) < int(max_id)]
            return 200, statuses[:limit]
        return 404, {"error": "Not found"}


def toot(
    n: int,
    content: str,
    *,
    visibility: str = "public",
    reply: bool = False,
    boost: bool = False,
    spoiler: str = "",
    language: str | None = "en",
) -> dict[str, Any]:
    """A status with id ``100000 - n`` (newer statuses have higher ids, as Mastodon's)."""
    created = datetime(2026, 6, 1, tzinfo=timezone.utc) - timedelta(hours=n)
    status: dict[str, Any] = {
        "id": str(100_000 - n),
        "created_at": created.isoformat().replace("+00:00", "Z"),
        "in_reply_to_id": "555" if reply else None,
        "visibility": visibility,
        "language": language,
        "spoiler_text": spoiler,
        "content": "" if boost else content,
        "reblog": {"id": "777", "content": content} if boost else None,
        "mentions": [],
        "tags": [],
    }
    return status
