"""Retries with backoff for the job's own HTTP calls (the Twitter API, the Hub), via tenacity.

A call raises ``Retry`` for a failure worth another try: with the wait the server asked for
(a rate limit's reset time), or none, for exponential backoff (``backoff`` x 2^n seconds).
Past ``retries`` retries, or when a wait would exceed ``max_wait``, the job gives up with the
transient exit code, so the platform retries the whole job later. S3 needs none of this:
botocore retries on its own (job/storage.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from job.errors import TransientError

log = logging.getLogger(__name__)
T = TypeVar("T")


class Retry(Exception):
    def __init__(self, why: str, delay: float | None = None, scale: float = 1.0) -> None:
        super().__init__(why)
        self.why, self.delay, self.scale = why, delay, scale


def with_retries(
    call: Callable[[], T],
    *,
    what: str,
    give_up: Callable[[str, int], str],
    retries: int,
    backoff: float,
    max_wait: float = float("inf"),
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``call()``, retried on ``Retry``; ``give_up(why, tries)`` is the final message."""
    import tenacity

    def wait(state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if not isinstance(error, Retry):
            return 0.0
        if error.delay is not None:
            return error.delay
        return min(max_wait, backoff * error.scale * 2.0 ** (state.attempt_number - 1))

    def stop(state: tenacity.RetryCallState) -> bool:
        return state.attempt_number > retries or wait(state) > max_wait

    def before_sleep(state: tenacity.RetryCallState) -> None:
        error: Any = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        log.warning("%s %s; retrying in %.0f s", what, error.why, delay)

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(Retry),
        wait=wait,
        stop=stop,
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        return retrying(call)
    except Retry as e:
        tries = retrying.statistics.get("attempt_number", retries + 1)
        raise TransientError(give_up(e.why, tries)) from None
