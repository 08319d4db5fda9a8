"""What every source returns: dates in one form, tweets newest first."""

from __future__ import annotations

import pytest

from job.data.tweets import Tweet, newest_first, parse_date


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("Thu Nov 03 08:50:26 +0000 2022", "2022-11-03T08:50:26Z"),  # archives, API v1.1
        ("Thu Nov 03 09:50:26 +0100 2022", "2022-11-03T08:50:26Z"),  # to UTC
        ("2022-11-03T08:50:26.000Z", "2022-11-03T08:50:26Z"),  # API v2
        ("2022-11-03 08:50:26", "2022-11-03T08:50:26Z"),  # no zone: UTC
        ("yesterday", None),
        ("", None),
        (None, None),
        (1667465426, None),  # a number is not a date the sources use
    ],
)
def test_parse_date(given: object, expected: str | None) -> None:
    assert parse_date(given) == expected


def test_newest_first_by_date_then_by_id() -> None:
    tweets = [
        Tweet("a", "9", "old", created_at="2020-01-01T00:00:00Z"),
        Tweet("a", "10", "same time, later id", created_at="2021-01-01T00:00:00Z"),
        Tweet("a", "2", "same time, earlier id", created_at="2021-01-01T00:00:00Z"),
        Tweet("a", "x", "no date", created_at=None),
    ]
    assert [t.id for t in newest_first(tweets)] == ["10", "2", "9", "x"]
