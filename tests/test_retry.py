"""Retries with backoff (tenacity): waits asked for, backoff, bounds, the final message."""

from __future__ import annotations

import pytest

from job.errors import BadConfig, TransientError
from job.retry import Retry, with_retries


def failing(errors: list[Exception], result: str = "ok"):
    calls = []

    def call() -> str:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return result

    return call, calls


def give_up(why: str, tries: int) -> str:
    return f"still {why} after {tries} tries"


def test_backoff_doubles_then_succeeds() -> None:
    call, calls = failing([Retry("down"), Retry("down"), Retry("down")])
    slept: list[float] = []
    assert with_retries(call, what="x", give_up=give_up, retries=4, backoff=2, sleep=slept.append)
    assert slept == [2, 4, 8] and len(calls) == 4


def test_a_wait_the_server_asks_for_wins_and_scale_multiplies() -> None:
    call, _ = failing([Retry("rate limited", delay=7.5), Retry("rate limited", scale=15)])
    slept: list[float] = []
    with_retries(call, what="x", give_up=give_up, retries=4, backoff=1, sleep=slept.append)
    assert slept == [7.5, 30]


def test_gives_up_after_the_retries_with_the_transient_code() -> None:
    call, calls = failing([Retry("down")] * 10)
    with pytest.raises(TransientError, match="still down after 3 tries"):
        with_retries(call, what="x", give_up=give_up, retries=2, backoff=1, sleep=lambda s: None)
    assert len(calls) == 3


def test_a_wait_longer_than_max_wait_gives_up_at_once() -> None:
    call, calls = failing([Retry("rate limited", delay=3600)])
    with pytest.raises(TransientError, match="after 1 tries"):
        with_retries(call, what="x", give_up=give_up, retries=5, backoff=1, max_wait=900)
    assert len(calls) == 1


def test_other_errors_are_not_retried() -> None:
    call, calls = failing([BadConfig("no")])
    with pytest.raises(BadConfig):
        with_retries(call, what="x", give_up=give_up, retries=5, backoff=1)
    assert len(calls) == 1
