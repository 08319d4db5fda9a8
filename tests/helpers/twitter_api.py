"""A small HTTP server on loopback that speaks the Twitter API v2 endpoints the job uses.

GET /2/users/by/username/<name> and GET /2/users/<id>/tweets, with pagination tokens,
``errors`` payloads for unknown and suspended accounts, protected accounts, and scripted
faults (429 with or without a reset header, 5xx) for the rate-limit tests.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlparse

from tests.helpers import QuietServer


@dataclass
class FakeUser:
    id: str
    username: str
    name: str = "Fake User"
    protected: bool = False
    suspended: bool = False
    tweets: list[dict[str, Any]] = field(default_factory=list)  # v2 tweet objects, newest first


@dataclass
class Fault:
    status: int
    reset_in: float | None = None  # seconds until x-rate-limit-reset; None: no header
    reset_header: str | None = None  # a raw x-rate-limit-reset value: a broken one
    body: bytes | None = None  # a raw body instead of JSON
    echo_auth: bool = False  # the body quotes the request's Authorization header, as some do
    stall: float = 0.0  # seconds to say nothing before answering
    redirect: bool = False  # a 302 to the very same URL: a redirect loop


class TwitterAPI:
    def __init__(self, token: str = "test-bearer-token") -> None:
        self.token = token
        self.users: dict[str, FakeUser] = {}
        self.faults: list[Fault] = []  # served in order, one per request, before real answers
        self.always: Fault | None = None  # served to every request, after the faults
        self.meta: Any = ...  # the timeline's "meta" as given (None, a list...), not its own
        self.requests: list[tuple[str, dict[str, list[str]]]] = []
        self.auth_headers: list[str] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            # Headers and body go out in two writes: with Nagle on, the second waits for the
            # client's delayed ACK, 40 ms a request on loopback.
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = parse_qs(url.query)
                api.requests.append((url.path, query))
                api.auth_headers.append(self.headers.get("Authorization", ""))
                if self.headers.get("Authorization") != f"Bearer {api.token}":
                    return self.reply(401, {"title": "Unauthorized", "status": 401})
                if api.faults or api.always:
                    fault = api.faults.pop(0) if api.faults else api.always
                    assert fault is not None
                    time.sleep(fault.stall)
                    headers = {}
                    if fault.reset_in is not None:
                        headers["x-rate-limit-reset"] = str(int(time.time() + fault.reset_in))
                    if fault.reset_header is not None:
                        headers["x-rate-limit-reset"] = fault.reset_header
                    if fault.redirect:
                        headers["Location"] = self.path
                    body: Any = {"title": "fault"}
                    if fault.echo_auth:
                        body["detail"] = f"you sent {self.headers.get('Authorization')}"
                    return self.reply(fault.status, body, headers, raw=fault.body)
                parts = url.path.strip("/").split("/")
                if parts[:3] == ["2", "users", "by"] and len(parts) == 5:
                    return self.reply(200, api.user_lookup(parts[4]))
                if len(parts) == 4 and parts[:2] == ["2", "users"] and parts[3] == "tweets":
                    return self.reply(200, api.timeline(parts[2], query))
                return self.reply(404, {"title": "Not Found"})

            def reply(
                self,
                status: int,
                body: Any,
                headers: dict[str, str] | None = None,
                raw: bytes | None = None,
            ) -> None:
                data = raw if raw is not None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> TwitterAPI:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()

    def add(self, user: FakeUser) -> FakeUser:
        self.users[user.username.lower()] = user
        return user

    def user_lookup(self, username: str) -> dict[str, Any]:
        user = self.users.get(username.lower())
        if user is None or user.suspended:
            detail = (
                f"User has been suspended: [{username}]."
                if user
                else f"Could not find user with username: [{username}]."
            )
            return {
                "errors": [
                    {
                        "value": username,
                        "detail": detail,
                        "title": "Not Found Error",
                        "resource_type": "user",
                        "parameter": "username",
                        "type": "https://api.twitter.com/2/problems/resource-not-found",
                    }
                ]
            }
        return {
            "data": {
                "id": user.id,
                "username": user.username,
                "name": user.name,
                "protected": user.protected,
                "description": "bio",
                "public_metrics": {"tweet_count": len(user.tweets)},
                "profile_image_url": f"https://pbs.twimg.com/profile_images/{user.id}/a_normal.jpg",
            }
        }

    def timeline(self, user_id: str, query: dict[str, list[str]]) -> dict[str, Any]:
        user = next((u for u in self.users.values() if u.id == user_id), None)
        if user is None:
            return {
                "errors": [
                    {
                        "title": "Not Found Error",
                        "detail": "no such user",
                        "type": "https://api.twitter.com/2/problems/resource-not-found",
                    }
                ]
            }
        if user.protected:
            return {
                "errors": [
                    {
                        "title": "Authorization Error",
                        "detail": f"Sorry, you are not authorized to see the user "
                        f"with id: [{user_id}].",
                        "type": "https://api.twitter.com/2/problems/not-authorized-for-resource",
                    }
                ]
            }
        size = int(query.get("max_results", ["10"])[0])
        start = int(query.get("pagination_token", ["0"])[0])
        page = user.tweets[start : start + size]
        meta: dict[str, Any] = {"result_count": len(page)}
        if page:
            meta["newest_id"], meta["oldest_id"] = page[0]["id"], page[-1]["id"]
        if start + size < len(user.tweets):
            meta["next_token"] = str(start + size)
        shown = meta if self.meta is ... else self.meta
        return {"data": page, "meta": shown} if page else {"meta": shown}


def v2_tweet(id: int, text: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": str(id),
        "text": text,
        "created_at": "2023-01-02T10:00:00.000Z",
        "lang": "en",
        "edit_history_tweet_ids": [str(id)],
        **fields,
    }
