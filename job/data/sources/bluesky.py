"""A person's public posts on Bluesky, from an AppView with no login.

- ``app.bsky.actor.getProfile`` first: the account (a deleted, deactivated or taken-down one is
  exit 6) and its consent signals, checked before any post is read (exit 12): the
  ``!no-unauthenticated`` self-label, which a person sets (Settings, "Discourage apps from
  showing my account to logged-out users") to ask that tools without a login leave their
  posts alone; and an opt-out at the output under their other name (their DID for a handle,
  their handle for a DID: a person who changes handle stays opted out).
- Then ``app.bsky.feed.getAuthorFeed`` (``posts_with_replies``), cursor pages of 100, newest
  first, up to ``MAX_POSTS``. Reposts (an item with a repost ``reason``, or another author's
  post) count as retweets; a post with a ``reply`` is a reply; a quote post keeps the
  person's own text (the quoted post is an embed, never read). Links are cut out of the text
  by the facets' byte ranges (the text shows a shortened ``example.com/pa...``); mentions stay
  as written, ``@alice.bsky.social``, as a tweet's ``@name`` does.
- ``BLUESKY_APPVIEW_URL`` points it at another AppView (a self-hosted one, or a PDS that serves
  these two methods; the tests' loopback server); the public one is the default.

Every answer is read through ``web.Web`` (timeouts, size, rate limits); nothing a server says
is shown.
"""

from __future__ import annotations

import contextlib
import html
import os
from collections.abc import Callable
from typing import Any

from job.data.handles import Handle
from job.data.sources.web import Answer, Web, first
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
from job.errors import AccountNotFound, CorruptInput, InvalidHandle, OptedOut

APPVIEW = "https://public.api.bsky.app"  # Bluesky's public AppView: no login, no key
PAGE_SIZE = 100  # getAuthorFeed's maximum limit
MAX_POSTS = 10_000  # 100 pages; a person's newest 10,000 posts are plenty for a bot
NO_UNAUTHENTICATED = "!no-unauthenticated"
REPOST = "app.bsky.feed.defs#reasonRepost"
LINK = "app.bsky.richtext.facet#link"
# The AppView's error names for an account that is not there to read (its message is unshown).
GONE = {
    "AccountTakedown": "taken down by Bluesky",
    "AccountDeactivated": "deactivated",
    "BlockedActor": "not readable (blocked)",
}


class BlueskySource:
    kind = "bluesky"  # provenance, on the card
    deadline = "posts_api"  # its total deadline: DEADLINES in deadline.py

    def __init__(
        self,
        base_url: str | None = None,
        *,
        max_posts: int = MAX_POSTS,
        web: Web | None = None,
        progress: Any = None,
        retries: int = 5,
        consent: Callable[[list[Handle]], None] | None = None,
    ) -> None:
        url = base_url or os.environ.get("BLUESKY_APPVIEW_URL") or APPVIEW
        self.web = web or Web(url, "the Bluesky AppView", max_retries=retries)
        self.max_posts = max_posts
        self.progress = progress
        # Checks the person's other names (their DID for a handle, their handle for a DID)
        # against the output's opt-outs, before any post is read (sources_for gives it).
        self.consent = consent

    def fetch(self, handle: Handle) -> UserTweets:
        profile = self._profile(handle)
        did = string(profile.get("did"))
        shown = handle.shown
        if did is None:
            raise AccountNotFound(f"{shown}: the Bluesky AppView found no such account")
        labels = {string(label.get("val")) for label in mappings(profile.get("labels"))}
        if NO_UNAUTHENTICATED in labels:
            raise OptedOut(
                f"{shown} asks apps without a login not to show their posts (Bluesky's"
                f" {NO_UNAUTHENTICATED} label): no bot is made of them"
            )
        if self.consent is not None:
            self.consent(names_of(profile))
        tweets = self._posts(handle, did)
        name = string(profile.get("handle")) or handle.actor
        return UserTweets(
            profile=Profile(
                handle=name,
                display_name=string(profile.get("displayName")) or name,
                avatar=self._avatar(string(profile.get("avatar"))),
            ),
            tweets=tweets,
            source="Bluesky",
        )

    def names(self, handle: Handle) -> list[Handle]:
        """Every name of the person ``handle`` names (their handle and their DID), asked of
        the AppView once: for a takedown, which must find bots made under either."""
        return names_of(self._profile(handle))

    def _profile(self, handle: Handle) -> dict[str, Any]:
        answer = self.web.get("/xrpc/app.bsky.actor.getProfile", {"actor": handle.actor})
        if answer.status == 200:
            return mapping(answer.body)
        self._refused(handle, answer)
        raise AssertionError  # _refused raises

    def _refused(self, handle: Handle, answer: Answer) -> None:
        """A 4xx: the account is not there to read (its server's words chosen from, not
        shown), or the request was refused."""
        error = string(mapping(answer.body).get("error")) or ""
        if error in GONE:
            raise AccountNotFound(f"{handle.shown}: the account is {GONE[error]}")
        if answer.status in (400, 404, 410):
            raise AccountNotFound(f"{handle.shown}: the Bluesky AppView found no such account")
        raise CorruptInput(f"the Bluesky AppView refused the request ({answer.status})")

    def _posts(self, handle: Handle, did: str) -> list[Tweet]:
        tweets: list[Tweet] = []
        cursor: str | None = None
        seen: set[str] = set()
        for _ in range(-(-self.max_posts // PAGE_SIZE)):
            params = {"actor": did, "limit": PAGE_SIZE, "filter": "posts_with_replies"}
            if cursor:
                params["cursor"] = cursor
            answer = self.web.get("/xrpc/app.bsky.feed.getAuthorFeed", params)
            if answer.status != 200:
                self._refused(handle, answer)
            page = mapping(answer.body)
            items = first(mappings(page.get("feed")), PAGE_SIZE, handle.shown)
            tweets += [t for t in (_post(handle, did, item) for item in items) if t is not None]
            if self.progress:
                self.progress(min(len(tweets), self.max_posts), self.max_posts)
            cursor = string(page.get("cursor"))
            if not items or cursor is None or cursor in seen or len(tweets) >= self.max_posts:
                break
            seen.add(cursor)
        return tweets[: self.max_posts]

    def _avatar(self, url: str | None) -> Avatar | None:
        """The profile's picture (web.py ``picture``), or none."""
        image = self.web.picture(url, "the Bluesky avatar")
        if image is None or url is None:
            return None
        # Bluesky's CDN names the format after an '@' (".../bafk...@jpeg"); Avatar checks it
        name = url.rsplit("/", 1)[-1]
        suffix = "." + name.rsplit("@", 1)[-1].lower() if "@" in name else ".jpg"
        return Avatar(image=image, suffix=suffix)


def names_of(profile: dict[str, Any]) -> list[Handle]:
    """A profile's handle and DID, each as a Handle where it is a valid one."""
    found = []
    for given in (string(profile.get("handle")), string(profile.get("did"))):
        if given is not None and given != "handle.invalid":  # atproto's "no valid handle"
            with contextlib.suppress(InvalidHandle):
                found.append(Handle(given))
    return found


def _post(handle: Handle, did: str, item: dict[str, Any]) -> Tweet | None:
    """A feed item as a Tweet, or None when it holds no post to read."""
    post = mapping(item.get("post"))
    record = mapping(post.get("record"))
    text, uri = record.get("text"), string(post.get("uri"))
    if not isinstance(text, str) or uri is None:
        return None
    author = string(mapping(post.get("author")).get("did"))
    reposted = string(mapping(item.get("reason")).get("$type")) == REPOST or author != did
    links = _link_texts(text, mappings(record.get("facets")))
    langs = record.get("langs")
    return Tweet(
        user=handle,
        id=uri.rsplit("/", 1)[-1],  # the record key: a time-ordered id of 13 characters
        # plain text: escaped as Twitter's text is, so cleaning unescapes both the same way
        text=html.escape(text, quote=False),
        created_at=parse_date(record.get("createdAt")),
        lang=string(langs[0]) if isinstance(langs, list) and langs else None,
        is_retweet=reposted,
        is_reply=bool(mapping(record.get("reply"))),
        urls=tuple(html.escape(link, quote=False) for link in links),
    )


def _link_texts(text: str, facets: list[dict[str, Any]]) -> list[str]:
    """The text that each link facet covers (byte offsets into the UTF-8 text)."""
    data = text.encode("utf-8")
    found = []
    for facet in facets:
        if not any(string(f.get("$type")) == LINK for f in mappings(facet.get("features"))):
            continue
        index = mapping(facet.get("index"))
        start, end = index.get("byteStart"), index.get("byteEnd")
        if isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(data):
            piece = data[start:end].decode("utf-8", "ignore").strip()
            if piece:
                found.append(piece)
    return found
