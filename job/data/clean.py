"""Cleaning: from tweets as downloaded to training text, counting what each rule removed.

Rules, in the order they apply (each tweet is counted by the first rule that drops it, so
``downloaded = retweets + short + dropped_replies + duplicates + kept``):

1. ``retweets``: retweets are someone else's words; always dropped.
2. Text is normalised: HTML entities decoded (``&amp;`` -> ``&``), URLs removed (the links
   the source lists: t.co's, a Bluesky post's link facets, a Mastodon post's links; and
   anything else that looks like ``http(s)://...``), leading @mentions (of any network:
   ``@ann``, ``@alice.bsky.social``, ``@bob@host``) stripped when ``replies="strip"``,
   whitespace (newlines too) collapsed to single spaces.
3. ``short``: fewer than ``min_words`` real words after normalising. A real word has a letter
   or digit and is not an @mention or #hashtag: "@a @b 👍 #yes" is empty, not three words.
4. ``dropped_replies``: replies, when ``replies="drop"``.
5. ``duplicates``: the same normalised text as a newer tweet of the same user.

``replies`` counts replies among the downloaded tweets whatever happened to them, and
``languages`` counts the languages (the source's ``lang``) of the kept ones.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from job.config import CleanConfig
from job.data.tweets import Tweet, newest_first

_URL = re.compile(r"(?:https?://|www\.)\S+|\bpic\.twitter\.com/\S+", re.IGNORECASE)
# @ann, and Bluesky's @alice.bsky.social, @my-name.example.org and Mastodon's @bob@host.example
# (a '.', '-' or '@' inside a mention, never its last character: "@ann." ends a sentence)
_LEADING_MENTIONS = re.compile(r"^(?:\s*[@＠]\w+(?:[.@-]\w+)*)+\s*")
_WORD = re.compile(r"\w", re.UNICODE)


@dataclass(frozen=True)
class CleanTweet:
    user: str
    id: str
    date: str | None
    text: str


@dataclass
class Prepared:
    """A bot's training data, as the prepare recipe wrote it to ``data_dir``."""

    bot: str
    data_dir: Path
    tweets: list[CleanTweet]
    stats: dict[str, Any]

    def line(self) -> str:
        """What ``huggingtweets prepare`` prints on stdout."""
        total = self.stats["total"]
        return (
            f"prepared {self.bot}: {total['used']} tweets, {total['characters']} characters"
            f" -> {self.data_dir}"
        )


@dataclass
class UserStats:
    downloaded: int = 0
    retweets: int = 0
    short: int = 0
    dropped_replies: int = 0
    duplicates: int = 0
    kept: int = 0
    replies: int = 0
    languages: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def normalise(tweet: Tweet, config: CleanConfig) -> str:
    """Rule 2: the tweet's text as training text."""
    text = html.unescape(tweet.text)
    for url in tweet.urls:
        text = text.replace(url, " ")
    text = _URL.sub(" ", text)
    if config.replies == "strip":
        text = _LEADING_MENTIONS.sub("", text)
    return " ".join(text.split())


def real_words(text: str) -> int:
    return sum(1 for w in text.split() if w[0] not in "@#＠" and _WORD.search(w))


def clean(tweets: list[Tweet], config: CleanConfig) -> tuple[list[CleanTweet], UserStats]:
    """Apply the rules to one user's tweets; the kept ones come back newest first."""
    stats = UserStats()
    seen: set[str] = set()
    kept: list[CleanTweet] = []
    languages: Counter[str] = Counter()
    for tweet in newest_first(tweets):
        stats.downloaded += 1
        stats.replies += tweet.is_reply
        if tweet.is_retweet:
            stats.retweets += 1
            continue
        text = normalise(tweet, config)
        if real_words(text) < config.min_words:
            stats.short += 1
        elif tweet.is_reply and config.replies == "drop":
            stats.dropped_replies += 1
        elif config.dedupe and text in seen:
            stats.duplicates += 1
        else:
            seen.add(text)
            kept.append(CleanTweet(tweet.user, tweet.id, tweet.created_at, text))
            languages[tweet.lang or "und"] += 1
    stats.kept = len(kept)
    stats.languages = dict(languages.most_common())
    return kept, stats
