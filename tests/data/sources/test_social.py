"""Bluesky and Mastodon, read from loopback servers shaped like theirs (tests/helpers/social.py):
pages, reposts, replies, links, HTML, avatars, each consent signal before any post is read,
rate limits waited out, faults in the job's words."""

from __future__ import annotations

from typing import Any

import pytest

from job.config import CleanConfig
from job.data.clean import clean
from job.data.handles import Handle
from job.data.sources.bluesky import BlueskySource
from job.data.sources.mastodon import MastodonSource, html_text
from job.data.sources.web import Web
from job.errors import (
    AccountNotFound,
    AccountProtected,
    CorruptInput,
    OptedOut,
    TransientError,
)
from tests.helpers.social import (
    Bluesky,
    BlueskyPerson,
    Fault,
    Mastodon,
    MastodonPerson,
    bsky_post,
    link_facet,
    toot,
)

ALICE = "alice.example.org"  # fictional: the tests never read a real account


def words(n: int) -> str:
    return f"post number {n} about sourdough starters and long walks"


class Sleeps:
    """An injected sleep: what the source would have waited, without waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def bluesky():
    with Bluesky() as server:
        yield server


@pytest.fixture
def mastodon():
    with Mastodon() as server:
        yield server


def bsky(server: Bluesky, sleeps: Sleeps | None = None, **kwargs: Any) -> BlueskySource:
    web = Web(server.url, "the Bluesky AppView", sleep=sleeps or Sleeps())
    return BlueskySource(server.url, web=web, **kwargs)


def masto(server: Mastodon, sleeps: Sleeps | None = None, **kwargs: Any) -> MastodonSource:
    web = Web(server.url, "the Mastodon server social.example", sleep=sleeps or Sleeps())
    return MastodonSource(server.url, web=web, **kwargs)


def feed_requests(server: Bluesky) -> int:
    return sum(1 for path, _ in server.requests if path.endswith("getAuthorFeed"))


# --- Bluesky ----------------------------------------------------------------------------------


def test_a_bluesky_feed_is_read_page_by_page_as_tweets_are(bluesky: Bluesky) -> None:
    alice = bluesky.add(BlueskyPerson(ALICE))
    linked = "read this example.com/sourdo... it is good bread"
    alice.posts = [bsky_post(alice, n, words(n)) for n in range(230)]
    alice.posts[0] = bsky_post(alice, 0, "@bob.example.org thanks for the starter", reply=True)
    alice.posts[1] = bsky_post(alice, 1, words(1), repost_of="did:plc:dddddddddddddddddddddddd")
    alice.posts[2] = bsky_post(
        alice,
        2,
        linked,
        facets=[link_facet(linked, "example.com/sourdo...", "https://example.com/sourdough")],
    )
    alice.posts[3] = bsky_post(alice, 3, "my own words on a quoted post here", quote=True)
    alice.posts[4] = bsky_post(alice, 4, "ein Beitrag auf Deutsch über Brot", langs=("de",))
    got = bsky(bluesky).fetch(Handle(ALICE))
    assert feed_requests(bluesky) == 3  # 100 + 100 + 30, by cursor
    assert len(got.tweets) == 230 and got.source == "Bluesky"
    assert got.profile.handle == ALICE and got.profile.display_name == "Alice Example"
    assert got.profile.avatar is not None and got.profile.avatar.image == bluesky.avatar
    reply, repost, link, quote, german = got.tweets[:5]
    assert reply.is_reply and not reply.is_retweet and repost.is_retweet
    assert quote.text == "my own words on a quoted post here" and not quote.is_retweet
    assert german.lang == "de" and link.urls == ("example.com/sourdo...",)
    kept, stats = clean(got.tweets, CleanConfig(replies="strip"))
    texts = {t.id: t.text for t in kept}
    assert texts[link.id] == "read this it is good bread"  # the link cut out by its facet
    assert texts[reply.id] == "thanks for the starter"  # a Bluesky mention stripped whole
    assert stats.retweets == 1 and stats.replies == 1 and stats.languages["de"] == 1


def test_bluesky_text_is_inert_and_read_as_written(bluesky: Bluesky) -> None:
    """Plain text as the person wrote it, entities and markup included: cleaning unescapes
    Twitter's HTML-escaped text, and a Bluesky post's '&amp;' stays '&amp;'."""
    alice = bluesky.add(BlueskyPerson(ALICE))
    written = "bread &amp; butter <script>alert(1)</script> is what I like 🍞"
    alice.posts = [bsky_post(alice, 0, written)]
    got = bsky(bluesky).fetch(Handle(ALICE))
    kept, _ = clean(got.tweets, CleanConfig())
    assert kept[0].text == written


def test_the_no_unauthenticated_label_refuses_before_any_post_is_read(bluesky: Bluesky) -> None:
    alice = bluesky.add(BlueskyPerson(ALICE, labels=["!no-unauthenticated"]))
    alice.posts = [bsky_post(alice, 0, words(0))]
    with pytest.raises(OptedOut, match="!no-unauthenticated") as refused:
        bsky(bluesky).fetch(Handle(f"https://bsky.app/profile/{ALICE}"))
    assert refused.value.exit_code == 12 and f"@{ALICE}" in str(refused.value)
    assert feed_requests(bluesky) == 0


@pytest.mark.parametrize(
    ("gone", "said"),
    [("AccountTakedown", "taken down"), ("AccountDeactivated", "deactivated"), (None, "no such")],
)
def test_a_bluesky_account_that_is_not_there_is_exit_6(bluesky: Bluesky, gone, said) -> None:
    if gone:
        bluesky.add(BlueskyPerson(ALICE, gone=gone))
    with pytest.raises(AccountNotFound, match=said) as missing:
        bsky(bluesky).fetch(Handle(ALICE))
    assert "script" not in str(missing.value)  # the server's message is never shown


def test_a_did_reads_the_same_person(bluesky: Bluesky) -> None:
    alice = bluesky.add(BlueskyPerson(ALICE, did="did:plc:ewvi7nxzyoun6zhxrhs64oiz"))
    alice.posts = [bsky_post(alice, n, words(n)) for n in range(3)]
    got = bsky(bluesky).fetch(Handle("did:plc:ewvi7nxzyoun6zhxrhs64oiz"))
    assert len(got.tweets) == 3 and got.profile.handle == ALICE


def test_bluesky_rate_limits_are_waited_out_by_their_reset_header(bluesky: Bluesky) -> None:
    alice = bluesky.add(BlueskyPerson(ALICE))
    alice.posts = [bsky_post(alice, n, words(n)) for n in range(150)]
    bluesky.faults = [
        Fault(answer=True),  # the profile
        Fault(status=429, reset_in=40),  # the first page: wait until the reset
        Fault(answer=True, remaining=0, reset_in=20),  # served, but nothing left: pace
    ]
    sleeps = Sleeps()
    got = bsky(bluesky, sleeps).fetch(Handle(ALICE))
    assert len(got.tweets) == 150
    assert len(sleeps.waits) == 2 and 39 <= sleeps.waits[0] <= 42 and 19 <= sleeps.waits[1] <= 22


def test_a_rate_limit_that_never_lifts_ends_in_the_transient_code(bluesky: Bluesky) -> None:
    bluesky.add(BlueskyPerson(ALICE))
    bluesky.faults = [Fault(status=429)] * 10
    sleeps = Sleeps()
    with pytest.raises(TransientError, match="the Bluesky AppView still rate limited") as e:
        bsky(bluesky, sleeps).fetch(Handle(ALICE))
    assert e.value.exit_code == 75 and len(sleeps.waits) == 5  # backing off, not at once
    assert sleeps.waits[0] >= 15


def test_a_page_of_ten_thousand_posts_is_read_to_the_page_size(bluesky: Bluesky) -> None:
    import json

    alice = bluesky.add(BlueskyPerson(ALICE))
    page = [bsky_post(alice, n, words(n)) for n in range(10_000)]
    bluesky.faults = [Fault(answer=True), Fault(body=json.dumps({"feed": page}).encode())]
    got = bsky(bluesky).fetch(Handle(ALICE))
    assert len(got.tweets) == 100 and feed_requests(bluesky) == 1  # no cursor: the end


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault(body=b"x" * (9 << 20)), CorruptInput),  # over the page's 8 MiB
        (Fault(status=503), TransientError),  # again and again
        (Fault(body=b"<html>a proxy's page</html>"), TransientError),
    ],
    ids=["9 MiB", "503", "not JSON"],
)
def test_what_a_server_sends_wrong_is_one_line_without_its_words(bluesky, fault, error) -> None:
    bluesky.add(BlueskyPerson(ALICE))
    bluesky.faults = [fault] * 6
    with pytest.raises(error) as e:
        bsky(bluesky).fetch(Handle(ALICE))
    assert "html" not in str(e.value) and "xxxx" not in str(e.value)


def test_an_avatar_that_is_no_picture_is_left_out(bluesky: Bluesky) -> None:
    alice = bluesky.add(BlueskyPerson(ALICE))
    alice.posts = [bsky_post(alice, 0, words(0))]
    bluesky.avatar = b"<svg onload=alert(1)>"
    assert bsky(bluesky).fetch(Handle(ALICE)).profile.avatar is None


# --- Mastodon ---------------------------------------------------------------------------------

BOB = "@bob@social.example"
NOBOT = (
    "<a class='mention hashtag' href='https://social.example/tags/nobot'>#<span>NoBot</span></a>"
)


def status_requests(server: Mastodon) -> int:
    return sum(1 for path, _ in server.requests if path.endswith("/statuses"))


def test_mastodon_statuses_are_read_by_max_id_and_only_public_ones(mastodon: Mastodon) -> None:
    bob = mastodon.add(MastodonPerson("bob"))
    bob.statuses = [toot(n, f"<p>{words(n)}</p>") for n in range(100)]
    bob.statuses[0] = toot(0, "<p>only for followers, not read</p>", visibility="private")
    bob.statuses[1] = toot(1, "<p>unlisted is left out too</p>", visibility="unlisted")
    bob.statuses[2] = toot(2, words(2), boost=True)
    bob.statuses[3] = toot(
        3,
        '<p><span class="h-card"><a href="https://social.example/@ann" class="u-url mention">'
        "@<span>ann</span></a></span> thanks for the loaf</p>",
        reply=True,
    )
    bob.statuses[4] = toot(4, "<p>spoilers about the bread contest</p>", spoiler="bread contest")
    got = masto(mastodon).fetch(Handle(BOB))
    assert status_requests(mastodon) == 4  # 40 + 40 + 20, then an empty page: the end
    assert [p for p, q in mastodon.requests if p.endswith("lookup")] == ["/api/v1/accounts/lookup"]
    assert mastodon.requests[0][1]["acct"] == ["bob@social.example"]  # MASTODON_URL: acct@host
    assert len(got.tweets) == 98 and got.source == "Mastodon (social.example)"
    assert got.profile.handle == "bob@social.example" and got.profile.avatar is not None
    boost, reply, warned = got.tweets[:3]
    assert boost.is_retweet and reply.is_reply
    assert reply.text == "@ann thanks for the loaf"  # a mention reads as Mastodon shows it
    assert warned.text == "spoilers about the bread contest"  # the warning dropped, not the post
    kept, stats = clean(got.tweets, CleanConfig(replies="strip"))
    assert stats.retweets == 1 and stats.downloaded == 98
    assert next(t.text for t in kept if t.id == reply.id) == "thanks for the loaf"


def test_mastodon_html_becomes_plain_text() -> None:
    content = (
        '<p>Bread &amp; butter &lt;3 <a href="https://example.com/a/very/long/link" rel="nofollow">'
        '<span class="invisible">https://</span><span class="ellipsis">example.com/a/very</span>'
        '<span class="invisible">/long/link</span></a></p><script>alert("x")</script>'
        '<p>second<br>line <a href="https://social.example/tags/bread" class="mention hashtag">'
        "#<span>bread</span></a><style>p{}</style></p>"
    )
    text, links = html_text(content)
    assert text == "Bread & butter <3 https://example.com/a/very/long/link second line #bread"
    assert links == ["https://example.com/a/very/long/link"]


@pytest.mark.parametrize(
    ("person", "said"),
    [
        (MastodonPerson("bob", noindex=True), "noindex"),
        (MastodonPerson("bob", note=f"<p>Baker. {NOBOT}</p>"), "#NoBot"),
        (MastodonPerson("bob", note="<p>no scraping please #noai</p>"), "#noai"),
        (MastodonPerson("bob", locked=True), "locked account"),
    ],
    ids=["noindex", "#nobot", "#noai", "locked"],
)  # fmt: skip
def test_each_mastodon_consent_signal_refuses_before_any_post_is_read(
    mastodon: Mastodon, person: MastodonPerson, said: str
) -> None:
    bob = mastodon.add(person)
    bob.statuses = [toot(0, words(0))]
    with pytest.raises(OptedOut, match=said) as refused:
        masto(mastodon).fetch(Handle(BOB))
    assert refused.value.exit_code == 12 and "@bob@social.example" in str(refused.value)
    assert status_requests(mastodon) == 0


@pytest.mark.parametrize("bio", ["#nobotanist club", "I love #noaire", "a#nobot"])
def test_a_bio_that_only_looks_like_an_opt_out_is_not_one(mastodon: Mastodon, bio: str) -> None:
    bob = mastodon.add(MastodonPerson("bob", note=f"<p>{bio}</p>"))
    bob.statuses = [toot(0, words(0))]
    assert len(masto(mastodon).fetch(Handle(BOB)).tweets) == 1


@pytest.mark.parametrize(
    ("person", "fault", "error"),
    [
        (MastodonPerson("bob", gone=True), None, AccountNotFound),
        (MastodonPerson("bob", suspended=True), None, AccountNotFound),
        (MastodonPerson("bob"), Fault(status=401), AccountProtected),
        (MastodonPerson("bob"), Fault(status=410), AccountNotFound),
    ],
    ids=["404", "suspended", "401: a login wanted", "410"],
)
def test_a_mastodon_account_that_cannot_be_read_has_its_code(mastodon, person, fault, error):
    mastodon.add(person)
    mastodon.faults = [fault] if fault else []
    with pytest.raises(error):
        masto(mastodon).fetch(Handle(BOB))


def test_mastodon_rate_limits_are_waited_out_by_their_reset_date(mastodon: Mastodon) -> None:
    bob = mastodon.add(MastodonPerson("bob", avatar=False))
    bob.statuses = [toot(n, words(n)) for n in range(5)]
    mastodon.faults = [Fault(answer=True), Fault(status=429, reset_in=30)]
    sleeps = Sleeps()
    got = masto(mastodon, sleeps).fetch(Handle(BOB))
    assert len(got.tweets) == 5 and len(sleeps.waits) == 1 and 29 <= sleeps.waits[0] <= 32
    assert got.profile.avatar is None  # Mastodon's missing.png is no picture of theirs
