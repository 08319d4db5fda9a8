"""The Twitter API v2 through tweepy: a user's newest tweets (the API serves at most 3,200).

- Bearer token from ``TWITTER_BEARER_TOKEN``; it is never logged (tweepy logs request headers at
  DEBUG, so its logger is held at WARNING).
- Rate limits are waited out here, not by tweepy: its ``wait_on_rate_limit`` retries a 429 that
  has no ``x-rate-limit-reset`` header at once and forever. Waits are bounded (``max_wait``) and
  so are retries; past them the job exits with the transient code so the platform retries later.
- An unknown or suspended account comes back as data with ``errors``, not an exception; a
  protected account comes back with ``protected: true``. Each becomes its own clear error.
- ``TWITTER_API_URL`` points the client at another host (a proxy, or the tests' loopback
  server): tweepy's base URL is fixed, so a transport adapter on its session rewrites it.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from job.data.tweets import Avatar, Profile, Tweet, UserTweets, parse_date
from job.errors import AccountNotFound, AccountProtected, CredentialsError
from job.retry import Retry, with_retries

log = logging.getLogger(__name__)

TWITTER_HOST = "https://api.twitter.com"
MAX_TWEETS = 3200  # the v2 user timeline serves the newest 3,200 and no more
PAGE_SIZE = 100  # the endpoint's maximum max_results
TWEET_FIELDS = ["created_at", "lang", "entities", "referenced_tweets", "note_tweet"]
USER_FIELDS = ["name", "profile_image_url", "protected", "public_metrics"]


class RedirectAdapter(HTTPAdapter):
    """Sends requests for one base URL to another (tweepy hard-codes api.twitter.com)."""

    def __init__(self, source: str, target: str) -> None:
        super().__init__()
        self.source = source.rstrip("/")
        self.target = target.rstrip("/")

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if request.url and request.url.startswith(self.source):
            request.url = self.target + request.url[len(self.source) :]
        return super().send(request, **kwargs)


class ApiSource:
    """Newest tweets of a user from the Twitter API v2."""

    def __init__(
        self,
        bearer_token: str | None = None,
        *,
        base_url: str | None = None,
        max_tweets: int = MAX_TWEETS,
        max_wait: float = 900.0,  # one rate-limit window is 15 minutes
        max_retries: int = 5,
        sleep: Callable[[float], None] = time.sleep,
        progress: Callable[[int, int], None] | None = None,  # (tweets fetched, expected)
    ) -> None:
        import tweepy

        logging.getLogger("tweepy").setLevel(logging.WARNING)
        token = bearer_token or os.environ.get("TWITTER_BEARER_TOKEN")
        if not token:
            raise CredentialsError("the API source needs TWITTER_BEARER_TOKEN in the environment")
        self.client = tweepy.Client(bearer_token=token, wait_on_rate_limit=False)
        base_url = base_url or os.environ.get("TWITTER_API_URL")
        if base_url:
            self.client.session.mount(TWITTER_HOST, RedirectAdapter(TWITTER_HOST, base_url))
        self.max_tweets = max_tweets
        self.max_wait = max_wait
        self.max_retries = max_retries
        self.sleep = sleep
        self.progress = progress

    def fetch(self, handle: str) -> UserTweets:
        import tweepy

        user = self._call(self.client.get_user, username=handle, user_fields=USER_FIELDS)
        if user.data is None:
            raise AccountNotFound(f"@{handle}: {_error_detail(user.errors, 'account not found')}")
        if user.data.protected:
            raise AccountProtected(f"@{handle} is a protected account: its tweets are private")
        avatar_url = user.data.profile_image_url
        profile = Profile(
            handle=user.data.username,
            display_name=user.data.name,
            # The API gives the 48px "_normal" picture; the 400px one sits beside it.
            avatar=Avatar(url=avatar_url.replace("_normal.", "_400x400.")) if avatar_url else None,
        )
        tweets: list[Tweet] = []
        # The account's tweet count (retweets and replies included) bounds what the timeline
        # serves; unknown (0) means no progress bar.
        metrics = getattr(user.data, "public_metrics", None) or {}
        expected = min(self.max_tweets, int(metrics.get("tweet_count") or 0))
        pages = tweepy.Paginator(
            self._retrying(self.client.get_users_tweets),
            user.data.id,
            max_results=PAGE_SIZE,
            tweet_fields=TWEET_FIELDS,
            limit=-(-self.max_tweets // PAGE_SIZE),
        )
        for page in pages:
            if page.data is None and page.errors:
                detail = _error_detail(page.errors, "cannot read tweets")
                if _has_type(page.errors, "not-authorized-for-resource"):
                    raise AccountProtected(f"@{handle}: {detail}")
                raise AccountNotFound(f"@{handle}: {detail}")
            tweets.extend(_tweet(profile.handle, t) for t in page.data or [])
            if self.progress and expected:
                self.progress(min(len(tweets), expected), expected)
        if self.progress and expected:
            self.progress(expected, expected)  # done, whatever the count said
        return UserTweets(
            profile=profile, tweets=tweets[: self.max_tweets], source="Twitter API v2"
        )

    def _retrying(self, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)  # Paginator reads the method's __name__
        def call(*args: Any, **kwargs: Any) -> Any:
            return self._call(method, *args, **kwargs)

        return call

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        import tweepy

        def once() -> Any:
            try:
                return method(*args, **kwargs)
            except tweepy.Unauthorized as e:
                raise CredentialsError("the Twitter API rejected TWITTER_BEARER_TOKEN") from e
            except tweepy.TooManyRequests as e:
                if e.reset_time is not None:
                    raise Retry("rate limited", max(0.0, e.reset_time - time.time()) + 1) from e
                # no reset header: back off from 15 s instead of hammering the API
                raise Retry("rate limited", scale=15.0) from e
            except (tweepy.TwitterServerError, requests.ConnectionError, requests.Timeout) as e:
                raise Retry("server error or network failure") from e

        return with_retries(
            once,
            what="Twitter API",
            give_up=lambda why, tries: f"Twitter API still {why} after {tries} tries; retry later",
            retries=self.max_retries,
            backoff=1.0,
            max_wait=self.max_wait,
            sleep=self.sleep,
        )


def _tweet(handle: str, t: Any) -> Tweet:
    data = t.data
    refs = data.get("referenced_tweets") or []
    note = data.get("note_tweet") or {}
    text = note.get("text") or data["text"]  # long posts carry their full text in note_tweet
    urls = [u.get("url") for u in (data.get("entities") or {}).get("urls") or []]
    urls += [u.get("url") for u in (note.get("entities") or {}).get("urls") or []]
    return Tweet(
        user=handle,
        id=str(data["id"]),
        text=text,
        created_at=parse_date(data.get("created_at")),
        lang=data.get("lang"),
        is_retweet=any(r.get("type") == "retweeted" for r in refs),
        is_reply=any(r.get("type") == "replied_to" for r in refs),
        urls=tuple(dict.fromkeys(u for u in urls if isinstance(u, str))),
    )


def _error_detail(errors: list[dict[str, Any]] | None, default: str) -> str:
    for error in errors or []:
        detail = error.get("detail") or error.get("title")
        if detail:
            return str(detail)
    return default


def _has_type(errors: list[dict[str, Any]] | None, kind: str) -> bool:
    return any(kind in str(e.get("type", "")) for e in errors or [])
