"""A person's public posts on Mastodon, from their server's public API with no token.

- ``/api/v1/accounts/lookup?acct=USER`` first: the account (unknown, suspended or gone is
  exit 6) and its consent signals, checked before any post is read (exit 12, naming the
  signal):
  - ``noindex: true``: the person asked not to be indexed (Preferences, "Opt-out of search
    engine indexing"); a bot trained on their posts is that and more;
  - ``#nobot`` or ``#noai`` in their bio: the fediverse's convention for "no bots, no AI on my
    posts" (bots honour ``#nobot`` since 2017; ``#noai`` is its newer, wider form);
  - a locked account: its posts are for followers the person approves, not for a tool.
- Then ``/api/v1/accounts/:id/statuses``, pages of 40 (the API's maximum), ``max_id`` paging,
  newest first, up to ``MAX_POSTS``. Only posts whose visibility is ``public`` are used
  (unlisted, followers-only and direct ones are left out and counted in a log line). A boost
  counts as a retweet; a post with ``in_reply_to_id`` is a reply.
- Mastodon sends a post as HTML: it becomes text here (``html_text``): paragraphs and line
  breaks are spaces, links are cut out (their addresses go to the Tweet's ``urls``, as a
  tweet's t.co links do), a mention reads ``@user`` as Mastodon shows it, a hashtag
  ``#tag``; ``<script>`` and ``<style>`` contents are dropped, entities decoded. A content
  warning (``spoiler_text``) is a label over the post, not the post: it is dropped and the
  post's text is kept (trained on, "CW: politics" would be written before random tweets).
- The server is the account's own, ``https://HOST``; ``MASTODON_URL`` points every Mastodon
  account at another (a proxy, the tests' loopback server), which is asked for ``USER@HOST``.
  A server that shows posts only with a login (its "authorized fetch" settings) is exit 7.

Every answer is read through ``web.Web`` (timeouts, size, rate limits); nothing a server says
is shown.
"""

from __future__ import annotations

import html
import logging
import os
import re
from html.parser import HTMLParser
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
from job.errors import AccountNotFound, AccountProtected, CorruptInput, OptedOut

log = logging.getLogger(__name__)

PAGE_SIZE = 40  # the statuses endpoint's maximum limit
MAX_POSTS = 10_000  # 250 pages
# The fediverse's opt-out tags, as whole tags in the bio (#nobots too; #NoAI is the same tag).
OPT_OUT_TAGS = re.compile(r"(?<![\w#])#(nobots?|noai)(?!\w)", re.IGNORECASE)
MAX_BIO_CHARS = 100_000  # a bio is at most 500 characters on stock Mastodon


class MastodonSource:
    kind = "mastodon"  # provenance, on the card
    deadline = "posts_api"  # its total deadline: DEADLINES in deadline.py

    def __init__(
        self,
        base_url: str | None = None,
        *,
        max_posts: int = MAX_POSTS,
        web: Web | None = None,
        progress: Any = None,
    ) -> None:
        self.base_url = base_url or os.environ.get("MASTODON_URL")
        self.web = web
        self.max_posts = max_posts
        self.progress = progress

    def fetch(self, handle: Handle) -> UserTweets:
        user, host = handle.actor.split("@", 1)
        web = self.web or Web(self.base_url or f"https://{host}", f"the Mastodon server {host}")
        # its own server knows it as USER; another (MASTODON_URL) as USER@HOST
        account = self._account(web, handle, handle.actor if self.base_url else user)
        _consent(handle, account)
        account_id = account.get("id")
        if not isinstance(account_id, (str, int)) or not str(account_id).isalnum():
            raise AccountNotFound(f"{handle.shown}: the Mastodon server found no such account")
        tweets = self._posts(web, handle, str(account_id))
        name = handle.actor
        return UserTweets(
            profile=Profile(
                handle=name,
                display_name=string(account.get("display_name")) or user,
                avatar=_avatar(web, string(account.get("avatar"))),
            ),
            tweets=tweets,
            source=f"Mastodon ({host})",
        )

    def _account(self, web: Web, handle: Handle, acct: str) -> dict[str, Any]:
        answer = web.get("/api/v1/accounts/lookup", {"acct": acct})
        if answer.status != 200:
            _refused(handle, answer)
        account = mapping(answer.body)
        if account.get("suspended") is True or not account:
            raise AccountNotFound(f"{handle.shown}: the account is suspended or gone")
        return account

    def _posts(self, web: Web, handle: Handle, account_id: str) -> list[Tweet]:
        tweets: list[Tweet] = []
        not_public = 0
        max_id: str | None = None
        for _ in range(-(-self.max_posts // PAGE_SIZE)):
            params: dict[str, Any] = {"limit": PAGE_SIZE}
            if max_id:
                params["max_id"] = max_id
            answer = web.get(f"/api/v1/accounts/{account_id}/statuses", params)
            if answer.status != 200:
                _refused(handle, answer)
            page = first(mappings(answer.body), PAGE_SIZE, handle.shown)
            for status in page:
                if string(status.get("visibility")) != "public":
                    not_public += 1
                    continue
                tweet = _status(handle, status)
                if tweet is not None:
                    tweets.append(tweet)
            if self.progress:
                self.progress(min(len(tweets), self.max_posts), self.max_posts)
            last = page[-1].get("id") if page else None
            next_id = str(last) if isinstance(last, (str, int)) else None
            # ids fall page by page; one that does not is a loop, and the pages end
            if not page or next_id is None or next_id == max_id or len(tweets) >= self.max_posts:
                break
            max_id = next_id
        if not_public:
            log.info("%s: %d posts that are not public were left out", handle.shown, not_public)
        return tweets[: self.max_posts]


def _refused(handle: Handle, answer: Answer) -> None:
    if answer.status in (404, 410):
        raise AccountNotFound(f"{handle.shown}: the Mastodon server found no such account")
    if answer.status in (401, 403):
        raise AccountProtected(
            f"{handle.shown}: the Mastodon server shows this account's posts only with a login"
        )
    raise CorruptInput(f"the Mastodon server refused the request ({answer.status})")


def _consent(handle: Handle, account: dict[str, Any]) -> None:
    """Each signal the account gives that it does not want this (module docstring)."""
    bio = html_text(string(account.get("note")) or "")[0][:MAX_BIO_CHARS]
    tag = OPT_OUT_TAGS.search(bio)
    why = (
        "asks not to be indexed (Mastodon's noindex)"
        if account.get("noindex") is True
        else f"has #{tag.group(1)} in their bio"
        if tag
        else "is a locked account (its posts are for approved followers)"
        if account.get("locked") is True
        else None
    )
    if why:
        raise OptedOut(f"{handle.shown} {why}: no bot is made of them")


def _status(handle: Handle, status: dict[str, Any]) -> Tweet | None:
    boost = mapping(status.get("reblog"))
    content = string(status.get("content"))
    ident = status.get("id")
    if not isinstance(ident, (str, int)) or (content is None and not boost):
        return None
    text, links = html_text(content or "")
    return Tweet(
        user=handle,
        id=str(ident),
        # escaped as Twitter's text is, so cleaning unescapes both the same way
        text=html.escape(text, quote=False),
        created_at=parse_date(status.get("created_at")),
        lang=string(status.get("language")),
        is_retweet=bool(boost),
        is_reply=status.get("in_reply_to_id") is not None,
        urls=tuple(html.escape(link, quote=False) for link in links),
    )


def _avatar(web: Web, url: str | None) -> Avatar | None:
    """The profile's picture (web.py ``picture``), or none: Mastodon's stand-in for no
    picture (``missing.png``) too."""
    if url is None or url.endswith("/missing.png"):
        return None
    image = web.picture(url, "the Mastodon avatar")
    suffix = "." + url.rsplit(".", 1)[-1].lower() if "." in url.rsplit("/", 1)[-1] else ".jpg"
    return Avatar(image=image, suffix=suffix) if image else None


class _Text(HTMLParser):
    """A post's HTML as text, and the links it cuts out."""

    SKIP = frozenset({"script", "style", "template", "noscript"})
    BREAK = frozenset({"p", "br", "div", "li", "blockquote", "pre"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.links: list[str] = []
        self.skipping = 0
        self.link: list[str] | None = None  # the text of the link being read, if one is

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self.skipping += 1
        elif tag in self.BREAK:
            self.parts.append(" ")
        elif tag == "a":
            classes = (dict(attrs).get("class") or "").split()
            # a mention or a hashtag reads as its text; any other link is cut out
            self.link = None if {"mention", "hashtag"} & set(classes) else []

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self.BREAK:
            self.parts.append(" ")
        elif tag == "a" and self.link is not None:
            text = "".join(self.link).strip()
            if text:
                self.links.append(text)
            self.link = None

    def handle_data(self, data: str) -> None:
        if self.skipping:
            return
        if self.link is not None:
            self.link.append(data)
        self.parts.append(data)


def html_text(content: str) -> tuple[str, list[str]]:
    """Mastodon's HTML as one line of text, and the links' texts (to be cut out)."""
    parser = _Text()
    parser.feed(content)
    parser.close()
    return " ".join("".join(parser.parts).split()), parser.links
