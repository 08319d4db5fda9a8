from __future__ import annotations

import logging

import pytest

from job.data.sources.api import ApiSource
from job.errors import (
    AccountNotFound,
    AccountProtected,
    BadConfig,
    CredentialsError,
    TransientError,
)
from tests.helpers.twitter_api import FakeUser, Fault, TwitterAPI, v2_tweet

TOKEN = "test-bearer-token"


@pytest.fixture
def api():
    with TwitterAPI(token=TOKEN) as server:
        yield server


def source(api: TwitterAPI, sleeps: list[float] | None = None, **kw) -> ApiSource:
    record = sleeps if sleeps is not None else []
    return ApiSource(TOKEN, base_url=api.url, sleep=record.append, **kw)


def user_with(n: int) -> FakeUser:
    return FakeUser(
        id="7",
        username="Writer",
        name="A Writer",
        tweets=[v2_tweet(10_000 - i, f"tweet number {i} here") for i in range(n)],
    )


def test_paginates_through_the_timeline(api: TwitterAPI) -> None:
    api.add(user_with(250))
    got = source(api).fetch("writer")
    assert [t.id for t in got.tweets] == [str(10_000 - i) for i in range(250)]
    timeline = [q for path, q in api.requests if path.endswith("/tweets")]
    assert len(timeline) == 3
    assert timeline[0]["max_results"] == ["100"]
    assert "pagination_token" not in timeline[0]
    assert timeline[1]["pagination_token"] == ["100"]
    assert got.profile.handle == "Writer" and got.profile.display_name == "A Writer"
    assert got.profile.avatar is not None
    assert got.profile.avatar.url == "https://pbs.twimg.com/profile_images/7/a_400x400.jpg"


def test_reports_tweets_fetched_against_the_accounts_count(api: TwitterAPI) -> None:
    api.add(user_with(250))
    calls: list[tuple[int, int]] = []
    source(api, progress=lambda done, total: calls.append((done, total))).fetch("writer")
    assert calls == [(100, 250), (200, 250), (250, 250), (250, 250)]
    capped: list[tuple[int, int]] = []
    source(api, max_tweets=150, progress=lambda d, t: capped.append((d, t))).fetch("writer")
    assert capped[-1] == (150, 150) and all(t == 150 for _, t in capped)


def test_stops_at_the_api_limit(api: TwitterAPI) -> None:
    api.add(user_with(450))
    got = source(api, max_tweets=300).fetch("writer")
    assert len(got.tweets) == 300
    assert len([p for p, _ in api.requests if p.endswith("/tweets")]) == 3


def test_tweet_fields(api: TwitterAPI) -> None:
    user = api.add(FakeUser(id="7", username="writer"))
    user.tweets = [
        v2_tweet(3, "RT @x: hi there all", referenced_tweets=[{"type": "retweeted", "id": "1"}]),
        v2_tweet(
            2,
            "@x sure &amp; thing https://t.co/q",
            referenced_tweets=[{"type": "replied_to", "id": "1"}],
            entities={"urls": [{"url": "https://t.co/q"}]},
        ),
        v2_tweet(
            1,
            "A long post that is cut…",
            note_tweet={"text": "A long post that is cut here but not in the note"},
        ),
    ]
    got = source(api).fetch("writer").tweets
    assert got[0].is_retweet and not got[0].is_reply
    assert got[1].is_reply and got[1].urls == ("https://t.co/q",)
    assert got[2].text.endswith("not in the note")
    assert got[0].created_at == "2023-01-02T10:00:00Z"


def test_unknown_user(api: TwitterAPI) -> None:
    with pytest.raises(AccountNotFound, match="found no such account"):  # not its words
        source(api).fetch("nobody")


def test_suspended_user(api: TwitterAPI) -> None:
    api.add(FakeUser(id="8", username="gone", suspended=True))
    with pytest.raises(AccountNotFound, match="suspended"):
        source(api).fetch("gone")


def test_protected_user(api: TwitterAPI) -> None:
    api.add(FakeUser(id="9", username="private", protected=True))
    with pytest.raises(AccountProtected, match="protected"):
        source(api).fetch("private")
    assert not any(p.endswith("/tweets") for p, _ in api.requests)


def test_rate_limit_is_waited_out_until_the_reset(api: TwitterAPI) -> None:
    api.add(user_with(150))
    api.faults = [Fault(429, reset_in=30)]
    sleeps: list[float] = []
    got = source(api, sleeps).fetch("writer")
    assert len(got.tweets) == 150
    assert len(sleeps) == 1 and 25 <= sleeps[0] <= 32


def test_rate_limit_mid_pagination_keeps_the_pages(api: TwitterAPI) -> None:
    api.add(user_with(250))
    src = source(api)
    # Serve the user lookup and the first page, then a 429 on the second page.
    original = api.timeline
    calls = {"n": 0}

    def timeline(user_id, query):
        calls["n"] += 1
        if calls["n"] == 2:
            api.faults.append(Fault(429, reset_in=1))
        return original(user_id, query)

    api.timeline = timeline  # type: ignore[method-assign]
    got = src.fetch("writer")
    assert [t.id for t in got.tweets] == [str(10_000 - i) for i in range(250)]


def test_429_without_reset_header_backs_off_and_gives_up(api: TwitterAPI) -> None:
    api.add(user_with(10))
    api.faults = [Fault(429)] * 50
    sleeps: list[float] = []
    with pytest.raises(TransientError, match="rate limited"):
        source(api, sleeps, max_retries=3).fetch("writer")
    assert len(api.requests) == 4  # bounded: no loop
    assert sleeps == sorted(sleeps) and sleeps[0] > 0


def test_reset_too_far_away_fails_fast(api: TwitterAPI) -> None:
    api.add(user_with(10))
    api.faults = [Fault(429, reset_in=3600)]
    sleeps: list[float] = []
    with pytest.raises(TransientError):
        source(api, sleeps, max_wait=900).fetch("writer")
    assert sleeps == []


def test_server_errors_are_retried(api: TwitterAPI) -> None:
    api.add(user_with(5))
    api.faults = [Fault(503), Fault(500)]
    sleeps: list[float] = []
    assert len(source(api, sleeps).fetch("writer").tweets) == 5
    assert sleeps == [1.0, 2.0]


def test_403_is_a_credentials_error_and_its_body_is_never_shown(api: TwitterAPI) -> None:
    """A server (or proxy) that echoes the request puts the token in its body."""
    api.add(user_with(5))
    api.faults = [Fault(403, echo_auth=True)]
    with pytest.raises(CredentialsError, match=r"refused access \(403\)") as info:
        source(api).fetch("writer")
    assert TOKEN not in str(info.value) and "you sent" not in str(info.value)


def test_400_is_a_bad_request_not_a_retry(api: TwitterAPI) -> None:
    api.add(user_with(5))
    api.faults = [Fault(400)]
    with pytest.raises(BadConfig, match="invalid"):
        source(api).fetch("writer")
    assert len(api.requests) == 1


@pytest.mark.parametrize(
    "fault",
    [
        Fault(200, body=b"<html>a captive portal</html>"),  # a 200 that is not JSON
        Fault(429, reset_header="soon"),  # a reset header that is not a number
        Fault(418),  # a status the API does not document
    ],
    ids=["not-json", "bad-reset-header", "odd-status"],
)
def test_unreadable_answers_are_retried_then_transient(api: TwitterAPI, fault: Fault) -> None:
    api.add(user_with(5))
    api.faults = [fault]
    sleeps: list[float] = []
    assert len(source(api, sleeps).fetch("writer").tweets) == 5  # the retry got through
    assert len(sleeps) == 1
    api.faults = [fault] * 10
    with pytest.raises(TransientError, match="after 3 tries") as info:
        source(api, max_retries=2).fetch("writer")
    assert "captive portal" not in str(info.value)


def test_a_server_that_stalls_times_out_and_is_retried(
    api: TwitterAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from job.data.sources import api as api_module

    monkeypatch.setattr(api_module, "TIMEOUT", (0.2, 0.2))
    api.add(user_with(5))
    api.faults = [Fault(200, stall=1.0)]  # says nothing for a second
    start = time.monotonic()
    sleeps: list[float] = []
    assert len(source(api, sleeps).fetch("writer").tweets) == 5
    assert time.monotonic() - start < 1.0 and sleeps == [1.0]


def test_tweets_without_text_are_skipped_and_counted(
    api: TwitterAPI, caplog: pytest.LogCaptureFixture
) -> None:
    user = user_with(5)
    del user.tweets[1]["text"]
    user.tweets[2]["entities"] = "oops"  # a wrong type is ignored, not a crash
    api.add(user)
    with caplog.at_level(logging.WARNING):
        got = source(api).fetch("writer")
    assert [t.id for t in got.tweets] == ["10000", "9998", "9997", "9996"]
    assert "1 tweets without text or id were skipped" in caplog.text


def test_bad_token(api: TwitterAPI) -> None:
    with pytest.raises(CredentialsError, match="rejected"):
        ApiSource("wrong", base_url=api.url).fetch("writer")


def test_missing_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TWITTER_BEARER_TOKEN", raising=False)
    with pytest.raises(CredentialsError, match="TWITTER_BEARER_TOKEN"):
        ApiSource()


def test_token_and_url_from_environment(api: TwitterAPI, monkeypatch) -> None:
    api.add(user_with(3))
    monkeypatch.setenv("TWITTER_BEARER_TOKEN", TOKEN)
    monkeypatch.setenv("TWITTER_API_URL", api.url)
    assert len(ApiSource().fetch("writer").tweets) == 3
    assert set(api.auth_headers) == {f"Bearer {TOKEN}"}


def test_token_never_logged(api: TwitterAPI, caplog: pytest.LogCaptureFixture) -> None:
    api.add(user_with(3))
    api.faults = [Fault(503)]
    with caplog.at_level(logging.DEBUG):
        source(api).fetch("writer")
    assert caplog.records, "expected the retry to be logged"
    assert TOKEN not in caplog.text
