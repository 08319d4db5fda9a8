from __future__ import annotations

import pytest

from job.config import CleanConfig
from job.data.clean import clean, normalise, real_words
from job.data.tweets import Tweet


def t(text: str, id: str = "1", **kw) -> Tweet:
    return Tweet(user="u", id=id, text=text, **kw)


def test_html_entities_are_decoded() -> None:
    assert normalise(t("fish &amp; chips &lt;3 &gt; &quot;x&quot;"), CleanConfig()) == (
        'fish & chips <3 > "x"'
    )


def test_urls_are_removed() -> None:
    tw = t(
        "see https://t.co/AbC123 and http://example.com/a?b=1 or www.x.org ok",
        urls=("https://t.co/AbC123",),
    )
    assert normalise(tw, CleanConfig()) == "see and or ok"


def test_listed_short_link_without_scheme_is_removed() -> None:
    assert normalise(t("look t.co/xyz now", urls=("t.co/xyz",)), CleanConfig()) == "look now"


def test_whitespace_and_newlines_collapse() -> None:
    assert normalise(t("  a\n\nb\t c  "), CleanConfig()) == "a b c"


def test_strip_leading_mentions_only() -> None:
    config = CleanConfig(replies="strip")
    assert normalise(t("@a @b_c thanks @d for this"), config) == "thanks @d for this"
    assert normalise(t("@a @b_c thanks"), CleanConfig()) == "@a @b_c thanks"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("one two three", 3),
        ("@a @b hi", 1),
        ("#x #y #z", 0),
        ("👍 🎉 ok", 1),
        ("C'est la vie", 3),
        ("2023 was good", 3),
        ("こんにちは 世界", 2),
    ],
)
def test_real_words(text: str, words: int) -> None:
    assert real_words(text) == words


def test_each_rule_counts_and_sums_hold() -> None:
    tweets = [
        t("RT @x: someone else wrote this", id="9", is_retweet=True),
        t("too short", id="8"),
        t("https://t.co/a only a link", id="7"),  # "only a link" is 3 words: kept
        t("@x a reply with enough words", id="6", is_reply=True, lang="de"),
        t("the same text again here", id="5"),
        t("the  same text again here", id="4"),  # duplicate after normalising
        t("a different text entirely now", id="3"),
    ]
    kept, stats = clean(tweets, CleanConfig())
    assert [k.id for k in kept] == ["7", "6", "5", "3"]
    assert (stats.downloaded, stats.retweets, stats.short, stats.duplicates, stats.kept) == (
        7,
        1,
        1,
        1,
        4,
    )
    assert stats.replies == 1 and stats.dropped_replies == 0
    assert stats.languages == {"und": 3, "de": 1}
    assert stats.downloaded == (
        stats.retweets + stats.short + stats.dropped_replies + stats.duplicates + stats.kept
    )


def test_drop_replies() -> None:
    tweets = [
        t("@x a reply with enough words", id="2", is_reply=True),
        t("not a reply at all", id="1"),
    ]
    kept, stats = clean(tweets, CleanConfig(replies="drop"))
    assert [k.id for k in kept] == ["1"]
    assert stats.dropped_replies == 1 and stats.replies == 1


def test_dedupe_can_be_turned_off() -> None:
    tweets = [t("good morning to you", id="2"), t("good morning to you", id="1")]
    assert len(clean(tweets, CleanConfig(dedupe=False))[0]) == 2
    assert len(clean(tweets, CleanConfig())[0]) == 1


def test_min_words_option() -> None:
    tweets = [t("just two", id="2"), t("now three words", id="1")]
    assert len(clean(tweets, CleanConfig(min_words=2))[0]) == 2
    assert len(clean(tweets, CleanConfig(min_words=4))[0]) == 0


def test_kept_newest_first_and_duplicate_keeps_newest() -> None:
    tweets = [
        t("same words in here", id="1", created_at="2020-01-01T00:00:00Z"),
        t("same words in here", id="2", created_at="2021-01-01T00:00:00Z"),
    ]
    kept, _ = clean(tweets, CleanConfig())
    assert [(k.id, k.date) for k in kept] == [("2", "2021-01-01T00:00:00Z")]
