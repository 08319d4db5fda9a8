from __future__ import annotations

import pytest

from job.data.handles import bot_name, validate_handle
from job.errors import InvalidHandle


@pytest.mark.parametrize("handle", ["__wmww", "a", "A_b_9", "x" * 15, "@dril"])
def test_valid(handle: str) -> None:
    assert validate_handle(handle) == handle.lstrip("@")


@pytest.mark.parametrize(
    "handle", ["", "x" * 16, "a-b", "../x", "a b", "a/b", "é", "@", "a.1", "s3://b", "a\n"]
)
def test_invalid(handle: str) -> None:
    with pytest.raises(InvalidHandle):
        validate_handle(handle)


def test_bot_name() -> None:
    assert bot_name(["elonmusk", "@dril"]) == "elonmusk-dril"
    with pytest.raises(InvalidHandle, match="twice"):
        bot_name(["dril", "DRIL"])
    with pytest.raises(InvalidHandle):
        bot_name([])


@pytest.mark.parametrize(
    "given",
    [
        "SourDough_Sam", "@SourDough_Sam", "sourdough_sam", "@SOURDOUGH_SAM",
        "https://twitter.com/SourDough_Sam", "https://x.com/sourdough_sam/",
        "x.com/@SourDough_Sam", "http://www.twitter.com/SourDough_Sam",
        "mobile.twitter.com/sourdough_sam",
    ],
)  # fmt: skip
def test_every_form_of_a_handle_is_the_same_person(given: str) -> None:
    """The forms a person gives for themselves (their handle, with @, in another case, their
    profile's address) are one Handle: one opt-out key, one bot."""
    from job.data.handles import Handle, holds

    handle = Handle(given)
    assert handle.key == "sourdough_sam"
    assert handle.same(Handle("sourdough_sam"))
    assert holds("pal_9-SourDough_Sam", handle) and not holds("pal_9", handle)
    assert Handle(handle) is handle  # parsed once


@pytest.mark.parametrize(
    "given",
    [
        "https://evil.com/sam", "twitter.com/a/b", "@@sam", " sam", "sam ", "https://x.com/",
        "x.com/sam?ref=1", "ftp://x.com/sam", "sam-pal", "s" * 16,
    ],
)  # fmt: skip
def test_what_is_no_handle_is_refused(given: str) -> None:
    from job.data.handles import Handle

    with pytest.raises(InvalidHandle):
        Handle(given)


def test_one_person_twice_in_one_bot_is_refused_in_any_form() -> None:
    from job.data.handles import handles_of

    with pytest.raises(InvalidHandle, match="twice"):
        bot_name(handles_of(["Sam", "https://x.com/sam"]))


# --- Bluesky and Mastodon -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("forms", "name", "platform", "shown", "profile"),
    [
        (
            ["alice.bsky.social", "@alice.bsky.social", "Alice.Bsky.Social",
             "https://bsky.app/profile/alice.bsky.social", "bsky.app/profile/@alice.bsky.social/"],
            "alice.bsky.social", "bluesky", "@alice.bsky.social",
            "https://bsky.app/profile/alice.bsky.social",
        ),
        (
            ["my-name.example.org", "my_name.example.org", "https://bsky.app/profile/my-name.example.org"],
            "my_name.example.org", "bluesky", "@my-name.example.org",
            "https://bsky.app/profile/my-name.example.org",
        ),
        (
            ["did:plc:ewvi7nxzyoun6zhxrhs64oiz", "DID:PLC:EWVI7NXZYOUN6ZHXRHS64OIZ",
             "https://bsky.app/profile/did:plc:ewvi7nxzyoun6zhxrhs64oiz",
             "did_plc_ewvi7nxzyoun6zhxrhs64oiz"],
            "did_plc_ewvi7nxzyoun6zhxrhs64oiz", "bluesky", "did:plc:ewvi7nxzyoun6zhxrhs64oiz",
            "https://bsky.app/profile/did:plc:ewvi7nxzyoun6zhxrhs64oiz",
        ),
        (
            ["@bob@social.example", "bob@social.example", "@Bob@Social.Example",
             "https://social.example/@bob", "social.example/@Bob/", "bob._.social.example"],
            "bob._.social.example", "mastodon", "@bob@social.example", "https://social.example/@bob",
        ),
        (
            ["@bob_2@my-host.example", "https://my-host.example/@bob_2"],
            "bob_2._.my_host.example", "mastodon", "@bob_2@my-host.example",
            "https://my-host.example/@bob_2",
        ),
    ],
)  # fmt: skip
def test_every_form_of_a_bluesky_or_mastodon_handle_is_one_name(
    forms: list[str], name: str, platform: str, shown: str, profile: str
) -> None:
    from job.data.handles import Handle, holds

    for given in forms:
        handle = Handle(given)
        assert (handle, handle.platform, handle.shown, handle.profile_url) == (
            name,
            platform,
            shown,
            profile,
        ), given
        assert Handle(handle.shown) == Handle(handle.profile_url) == Handle(str(handle)) == handle
        assert holds(f"ann-{name}", handle) and not holds("ann", handle)


@pytest.mark.parametrize(
    "given",
    [
        "alice", "a..b.com", "-a.example", "a-.example", "a.example-", "a.1example",
        "alice.bsky.social.", ".alice.bsky.social", "al ice.bsky.social", "alice/bsky.social",
        "did:plc:short", "did:web:example.com", "did:plc:ewvi7nxzyoun6zhxrhs64oi0",
        "@bob@", "bob@", "@bob@localhost", "@bo-b@social.example", "@b.ob@social.example",
        "@bob@social.example@x", "https://social.example/@bob/123", "https://evil.example/bob",
        "bob._.", "._.social.example", "x" * 64 + ".example.org" + ".example" * 4,
        "https://bsky.app/profile/", "https://bsky.app/profile/alice.bsky.social/post/3k",
        "alice.example", "handle.invalid", "bob.local", "sam.onion",  # atproto's refused TLDs
    ],
)  # fmt: skip
def test_what_is_no_bluesky_or_mastodon_handle_is_refused(given: str) -> None:
    from job.data.handles import Handle

    if given == "alice":  # a Twitter handle: the one shape without a dot
        assert Handle(given).platform == "twitter"
        return
    with pytest.raises(InvalidHandle):
        Handle(given)


def test_names_are_collision_free_across_networks() -> None:
    """Many people of each network, given in every form: one name each, never another
    person's, and every bot of them gives its people back (handles_in)."""
    import itertools
    import random

    from job.data.handles import MAX_NAME, Handle, bot_name, handles_in

    rng = random.Random(7)
    HOSTS = ["bsky.social", "example.org", "a-b.example", "social.example", "m.example.org"]
    DOMAINS = [h for h in HOSTS if not h.endswith(".example")]  # atproto refuses .example
    letters = "abcdefghijklmnopqrstuvwxyz0123456789"

    def word(n: int, extra: str = "") -> str:
        inner = "".join(rng.choice(letters + extra) for _ in range(n))
        return rng.choice("abcdefghij") + inner + rng.choice("xyz")

    people: set[tuple[str, str]] = set()  # (network, the person's own spelling, lowercase)
    for _ in range(400):
        people.add(("twitter", word(rng.randrange(0, 12), "_")))
        people.add(
            (
                "bluesky",
                f"{word(rng.randrange(0, 9), '-')}.{rng.choice(DOMAINS)}",
            )
        )
        people.add(
            (
                "mastodon",
                f"{word(rng.randrange(0, 9), '_')}@{rng.choice(HOSTS)}",
            )
        )
        people.add(
            (
                "bluesky",
                "did:plc:"
                + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz234567") for _ in range(24)),
            )
        )
    # the shapes closest to each other's
    people |= {
        ("bluesky", "a-b.example.org"), ("bluesky", "a.b.example.org"), ("mastodon", "a@b.example"),
        ("mastodon", "a_b@example.org"), ("bluesky", "a.example.org"), ("twitter", "did_plc_a"),
    }  # fmt: skip
    names: dict[str, tuple[str, str]] = {}
    for network, who in people:
        handle = Handle(("@" if network == "mastodon" else "") + who)
        assert handle.platform == network and handle.actor.lower() == who.lower()
        assert handles_in(handle) == [handle] and Handle(handle.actor) == handle
        assert names.setdefault(handle.key, (network, who.lower())) == (network, who.lower())
    for a, b, c in itertools.islice(itertools.permutations(list(names)[:40], 3), 200):
        if len(a) + len(b) + len(c) + 2 > MAX_NAME:
            with pytest.raises(InvalidHandle, match="fewer people"):
                bot_name([Handle(a), Handle(b), Handle(c)])
            continue
        bot = bot_name([Handle(a), Handle(b), Handle(c)])
        assert handles_in(bot) == [Handle(a), Handle(b), Handle(c)]


def test_a_bot_name_fits_a_hub_repo_name_or_is_refused() -> None:
    from huggingface_hub.utils import validate_repo_id

    from job.data.handles import MAX_NAME, Handle, bot_name
    from job.inventory import merged_repo

    bot = bot_name([Handle("@bob@my-host.example"), Handle("alice.bsky.social"), Handle("ann")])
    validate_repo_id(merged_repo(f"huggingtweets/{bot}"))  # the longest repo a bot makes
    long = [Handle(f"{'a' * 40}.example.org"), Handle(f"{'b' * 40}.example.org")]
    with pytest.raises(InvalidHandle, match=f"over the {MAX_NAME}"):
        bot_name(long)
