"""Plain HTTP for the public post APIs (Bluesky's AppView, a Mastodon server): GETs of JSON with
the job's rules for every network call, and nothing a server says shown raw.

Why not the ecosystems' clients (the ``atproto`` SDK, ``Mastodon.py``): each source needs two
GETs of public JSON. The SDK validates every answer against its models and fails the whole
read on one field it does not know (servers add fields often); Mastodon.py's rate-limit mode
``wait`` sleeps for as long as the server says, with no bound, and both bring dependencies for
what ``requests`` already does here. With plain HTTP every page is bounded the same way:

- 10 s to connect and 30 s between bytes (``TIMEOUT``), at most ``PAGE_SECONDS`` for a whole
  answer (a server that sends a byte every 20 s), at most ``MAX_PAGE_BYTES``; the caller's
  total deadline (``posts_api`` of DEADLINES in deadline.py) holds around all of it;
- a rate limit (429) is waited out until the reset time the server's headers give (Bluesky's
  ``ratelimit-reset``, seconds since the epoch; Mastodon's ``x-ratelimit-reset``, a date), at
  most 15 minutes a wait; an answer that says no requests remain is waited out before the
  next one;
- server errors, timeouts and answers that are not JSON are retried with backoff (retry.py),
  then the job exits with the transient code; a 4xx is the caller's to read (``Answer``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import requests

from job.data.tweets import MAX_AVATAR_BYTES, loads, usable_picture
from job.errors import CorruptInput
from job.retry import Retry, with_retries

TIMEOUT = (10.0, 30.0)  # as the Twitter API's (api.py)
PAGE_SECONDS = 120.0  # a page of 100 posts is ~100 KB: seconds on any link
MAX_PAGE_BYTES = 8 << 20  # a full page is ~100-300 KB; 8 MiB is no page of posts
MAX_WAIT = 900.0  # both networks' rate-limit windows are 5 minutes; a reset later than 15 is odd
log = logging.getLogger(__name__)

RESET_HEADERS = ("ratelimit-reset", "x-ratelimit-reset")
REMAINING_HEADERS = ("ratelimit-remaining", "x-ratelimit-remaining")


@dataclass
class Answer:
    status: int
    body: Any  # parsed JSON (None when the answer had none)
    headers: Mapping[str, str]


class Web:
    """GETs of JSON from one server, named ``what`` in every line (never by what it said)."""

    def __init__(
        self,
        base_url: str,
        what: str,
        *,
        max_retries: int = 5,
        max_wait: float = MAX_WAIT,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.what = what
        self.session = requests.Session()
        self.session.headers["User-Agent"] = (
            "huggingtweets (+https://github.com/borisdayma/huggingtweets)"
        )
        self.max_retries, self.max_wait = max_retries, max_wait
        self.sleep, self.clock = sleep, clock

    def get(self, path: str, params: Mapping[str, Any]) -> Answer:
        """The JSON answer to ``GET base_url/path?params``; retried while worth it. A 4xx
        other than 429 comes back for the caller to read."""
        answer = with_retries(
            lambda: self._once(f"{self.base_url}{path}", params),
            what=self.what,
            give_up=lambda why, tries: f"{self.what} still {why} after {tries} tries; retry later",
            retries=self.max_retries,
            backoff=1.0,
            max_wait=self.max_wait,
            sleep=self.sleep,
        )
        self._pace(answer.headers)
        return answer

    def picture(self, url: str | None, what: str) -> bytes | None:
        """A profile's picture at ``url``, fetched once as any avatar is: over https (or from
        this server), at most MAX_AVATAR_BYTES, an image (tweets.usable_picture); else None."""
        if url is None or not (url.startswith("https://") or url.startswith(self.base_url)):
            return None
        try:
            status, data, _ = self._fetch(url, {}, MAX_AVATAR_BYTES)
        except (Retry, CorruptInput):
            return None
        return usable_picture(data, what) if status == 200 else None

    def _once(self, url: str, params: Mapping[str, Any]) -> Answer:
        status, data, headers = self._fetch(url, params, MAX_PAGE_BYTES)
        if status == 429:
            raise Retry("rate limited", self._reset_in(headers, fallback=None), scale=15.0)
        if status >= 500:
            raise Retry(f"answering {status}")
        try:
            body = loads(data.decode("utf-8")) if data else None
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            if status >= 400:
                body = None  # an error page: its status says enough
            else:
                raise Retry("answering with something that is not JSON") from None
        return Answer(status, body, headers)

    def _fetch(
        self, url: str, params: Mapping[str, Any], limit: int
    ) -> tuple[int, bytes, Mapping[str, str]]:
        started = self.clock()
        try:
            with self.session.get(
                url, params=params, timeout=TIMEOUT, stream=True, allow_redirects=True
            ) as response:
                chunks, size = [], 0
                for chunk in response.iter_content(64 << 10):
                    size += len(chunk)
                    if size > limit:
                        raise CorruptInput(
                            f"{self.what} sent an answer of over {limit >> 20} MiB; no page of"
                            " posts is that large"
                        )
                    if self.clock() - started > PAGE_SECONDS:
                        raise Retry(f"sending one answer for over {PAGE_SECONDS:.0f} s")
                    chunks.append(chunk)
                return response.status_code, b"".join(chunks), response.headers
        except requests.RequestException:
            # the network, a timeout, a redirect loop, a broken answer (its text unshown)
            raise Retry("not answering (network failure or timeout)") from None

    def _reset_in(self, headers: Mapping[str, str], fallback: float | None) -> float | None:
        """Seconds until the rate limit's window resets, from either network's header."""
        for name in RESET_HEADERS:
            given = headers.get(name)
            if not given:
                continue
            try:
                at = float(given)  # Bluesky: seconds since the epoch
            except ValueError:
                try:  # Mastodon: an ISO 8601 date
                    at = datetime.fromisoformat(given.replace("Z", "+00:00")).timestamp()
                except ValueError:
                    continue
            return max(0.0, at - self.clock()) + 1.0
        return fallback

    def _pace(self, headers: Mapping[str, str]) -> None:
        """No requests left in this window: wait for the next before the next request."""
        left = next((headers.get(n) for n in REMAINING_HEADERS if headers.get(n)), None)
        if left is None or left.strip() != "0":
            return
        wait = self._reset_in(headers, fallback=None)
        if wait is not None and wait <= self.max_wait:
            self.sleep(wait)


def first(items: list[Any], size: int, who: str) -> list[Any]:
    """A page's items, at most the ``size`` asked for: the rest is not read (a server may send
    any number), and a log line says so."""
    if len(items) > size:
        log.warning("%s: a page of %d posts; read the first %d", who, len(items), size)
    return items[:size]
