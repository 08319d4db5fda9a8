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

from job.data.handles import Handle
from job.data.tweets import (
    Avatar,
    Profile,
    Tweet,
    UserTweets,
    mapping,
    mappings,
    parse_date,
    string,
)
from job.errors import AccountNotFound, AccountProtected, BadConfig, CredentialsError
from job.retry import Retry, with_retries

log = logging.getLogger(__name__)

TWITTER_HOST = "https://api.twitter.com"
MAX_TWEETS = 3200  # the v2 user timeline serves the newest 3,200 and no more
PAGE_SIZE = 100  # the endpoint's maximum max_results
TWEET_FIELDS = ["created_at", "lang", "entities", "referenced_tweets", "note_tweet"]
USER_FIELDS = ["name", "profile_image_url", "protected", "public_metrics"]


# tweepy passes no timeout: without one a server that never answers, or sends headers and
# stalls, holds the job until the platform kills it. 10 s to connect, 30 s between bytes.
TIMEOUT = (10.0, 30.0)


class Adapter(HTTPAdapter):
    """Every request with a timeout; requests for one base URL sent to another (tweepy
    hard-codes api.twitter.com: ``TWITTER_API_URL`` points it at a proxy, or a test server)."""

    def __init__(self, source: str = TWITTER_HOST, target: str | None = None) -> None:
        super().__init__()
        self.source = source.rstrip("/")
        self.target = (target or source).rstrip("/")

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if request.url and request.url.startswith(self.source):
            request.url = self.target + request.url[len(self.source) :]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = TIMEOUT
        return super().send(request, **kwargs)


class ApiSource:
    """Newest tweets of a user from the Twitter API v2."""

    kind = "api"  # provenance, on the card: the public API
    deadline = "twitter_api"  # deadline.py

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
        # return_type=dict: tweepy's own objects fail on a tweet without text (KeyError)
        self.client = tweepy.Client(bearer_token=token, wait_on_rate_limit=False, return_type=dict)
        base_url = base_url or os.environ.get("TWITTER_API_URL")
        self.client.session.mount("https://", Adapter(TWITTER_HOST, base_url))
        self.client.session.mount("http://", Adapter(TWITTER_HOST, base_url))
        self.max_tweets = max_tweets
        self.max_wait = max_wait
        self.max_retries = max_retries
        self.sleep = sleep
        self.progress = progress

    def fetch(self, handle: Handle) -> UserTweets:
        import tweepy

        answer = mapping(self._call(self.client.get_user, username=handle, user_fields=USER_FIELDS))
        user = mapping(answer.get("data"))
        if not user or not isinstance(user.get("id"), (str, int)):
            raise AccountNotFound(f"@{handle}: {_gone(answer.get('errors'))}")
        if user.get("protected") is True:
            raise AccountProtected(f"@{handle} is a protected account: its tweets are private")
        avatar_url = user.get("profile_image_url")
        name = user.get("username")
        profile = Profile(
            handle=name if isinstance(name, str) else handle,
            display_name=user.get("name") if isinstance(user.get("name"), str) else None,
            # The API gives the 48px "_normal" picture; the 400px one sits beside it.
            avatar=Avatar(url=avatar_url.replace("_normal.", "_400x400."))
            if isinstance(avatar_url, str) and avatar_url
            else None,
        )
        tweets: list[Tweet] = []
        unreadable = 0
        # The account's tweet count (retweets and replies included) bounds what the timeline
        # serves; unknown (0) means no progress bar.
        count = mapping(user.get("public_metrics")).get("tweet_count")
        expected = min(self.max_tweets, count) if isinstance(count, int) and count > 0 else 0
        pages = tweepy.Paginator(
            self._retrying(self.client.get_users_tweets),
            str(user["id"]),
            max_results=PAGE_SIZE,
            tweet_fields=TWEET_FIELDS,
            limit=-(-self.max_tweets // PAGE_SIZE),
        )
        for page in pages:  # answers as plain JSON (return_type=dict): nothing is trusted
            page = mapping(page)
            if not page.get("data") and page.get("errors"):
                # The server's own words (errors[].detail) are not shown: it may echo anything
                if _has_type(page.get("errors"), "not-authorized-for-resource"):
                    raise AccountProtected(f"@{handle}: the Twitter API may not read its tweets")
                raise AccountNotFound(f"@{handle}: {_gone(page.get('errors'))}")
            for t in mappings(page.get("data")):
                tweet = _tweet(handle, t)  # ours: the server's spelling is only shown
                if tweet is None:
                    unreadable += 1
                else:
                    tweets.append(tweet)
            if self.progress and expected:
                self.progress(min(len(tweets), expected), expected)
        if self.progress and expected:
            self.progress(expected, expected)  # done, whatever the count said
        if unreadable:
            log.warning("@%s: %d tweets without text or id were skipped", handle, unreadable)
        return UserTweets(
            profile=profile, tweets=tweets[: self.max_tweets], source="Twitter API v2"
        )

    def _retrying(self, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)  # Paginator reads the method's __name__
        def call(*args: Any, **kwargs: Any) -> Any:
            page = self._call(method, *args, **kwargs)
            # tweepy's Paginator reads page["meta"]["next_token"]: a meta that is not an
            # object (null, a list) is read as none, and the pages end there.
            if isinstance(page, dict) and not isinstance(page.get("meta"), dict):
                page = {**page, "meta": {}}
            return page

        return call

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        import tweepy

        def once() -> Any:
            try:
                return method(*args, **kwargs)
            except tweepy.Unauthorized as e:
                raise CredentialsError("the Twitter API rejected TWITTER_BEARER_TOKEN") from e
            except tweepy.Forbidden as e:  # its body is not shown: a server may echo the token
                raise CredentialsError(
                    "the Twitter API refused access (403): the token's app lacks this endpoint"
                ) from e
            except tweepy.BadRequest as e:
                raise BadConfig("the Twitter API rejected the request as invalid (400)") from e
            except tweepy.NotFound as e:
                raise AccountNotFound("the Twitter API found no such account (404)") from e
            except tweepy.TooManyRequests as e:
                if e.reset_time is not None:
                    raise Retry("rate limited", max(0.0, e.reset_time - time.time()) + 1) from e
                # no reset header: back off from 15 s instead of hammering the API
                raise Retry("rate limited", scale=15.0) from e
            except requests.JSONDecodeError as e:  # a 200 that is not JSON: a proxy's page
                raise Retry("answering with something that is not JSON") from e
            except (tweepy.TwitterServerError, requests.RequestException) as e:
                # the network, a timeout, a redirect loop, a broken answer: the server's
                # fault or the path's, which a later try may not meet
                raise Retry("server error or network failure") from e
            except tweepy.HTTPException as e:  # any other status
                raise Retry(f"answering {e.response.status_code}") from e
            except ValueError as e:  # tweepy reading a header it expected a number in
                raise Retry("answering with an unreadable response") from e

        return with_retries(
            once,
            what="Twitter API",
            give_up=lambda why, tries: f"Twitter API still {why} after {tries} tries; retry later",
            retries=self.max_retries,
            backoff=1.0,
            max_wait=self.max_wait,
            sleep=self.sleep,
        )


def _tweet(handle: Handle, data: dict[str, Any]) -> Tweet | None:
    """A tweet of the timeline, or None when it has no text or id to read."""
    refs = mappings(data.get("referenced_tweets"))
    note = mapping(data.get("note_tweet"))
    text = note.get("text") or data.get("text")  # long posts carry their text in note_tweet
    if not isinstance(text, str) or not isinstance(data.get("id"), (str, int)):
        return None
    urls = [u.get("url") for u in mappings(mapping(data.get("entities")).get("urls"))]
    urls += [u.get("url") for u in mappings(mapping(note.get("entities")).get("urls"))]
    return Tweet(
        user=handle,
        id=str(data["id"]),
        text=text,
        created_at=parse_date(data.get("created_at")),
        lang=string(data.get("lang")),
        is_retweet=any(r.get("type") == "retweeted" for r in refs),
        is_reply=any(r.get("type") == "replied_to" for r in refs),
        urls=tuple(dict.fromkeys(u for u in urls if isinstance(u, str))),
    )


def _gone(errors: Any) -> str:
    """Why the API has no account, in the job's words: its own (errors[].detail) may echo
    anything, so they only choose between these."""
    said = " ".join(str(e.get("detail", "")) for e in mappings(errors)).lower()
    if "suspended" in said:
        return "the account is suspended (the Twitter API says so)"
    return "the Twitter API found no such account"


def _has_type(errors: Any, kind: str) -> bool:
    return any(kind in str(e.get("type", "")) for e in mappings(errors))
