"""Waits that end: a total deadline for a whole network operation, and the Hub client's timeouts.

Per-request timeouts (docs/exit-codes.md) end a server that stops answering, not one that
answers slowly: a server that sends one byte every 2 s passes every "between bytes" timeout
and never finishes. So each operation that talks to a server has a total deadline too
(``DEADLINES``), past which it ends with the transient code (75), which the platforms retry.

``deadline`` arms a real-time timer (SIGALRM) for the block: its signal interrupts a blocking
read in the main thread as SIGTERM does, and the handler raises ``DeadlineExceeded``. Nested
deadlines keep the sooner one. Off the main thread (where signals cannot go) it only measures.
Each deadline can be changed with ``HUGGINGTWEETS_DEADLINE_<NAME>`` (seconds), for a slow link.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from job.errors import BadConfig, TransientError

# Seconds, by operation. Each is many times what the operation takes on a working link, and
# short enough that a stuck one gives its task back to the platform's retry within the hour.
DEADLINES = {
    # gpt2-xl's weights are 6.4 GB: 11 minutes at 10 MB/s, the slowest link a GPU host has.
    "base_model": 1800.0,
    # 3,200 tweets are 32 pages; a rate limit's wait is at most 15 minutes (api.py).
    "twitter_api": 1800.0,
    # Bluesky's or Mastodon's public posts: 10,000 are 100 or 250 pages of ~1 s, and a rate
    # limit's wait is at most 15 minutes (data/sources/web.py)
    "posts_api": 1800.0,
    # an input on S3 or a file: a 1 GB archive at 10 MB/s is under 2 minutes
    "input": 900.0,
    # a gpt2-xl model folder is 6.4 GB up (fp32): the same 11 minutes at 10 MB/s
    "hub_push": 1800.0,
    # a takedown's calls to the Hub and W&B; the Hub's whoami and card check in preflight
    "hub_call": 300.0,
    # a run's files up to S3, or a checkpoint up or down: gpt2-xl's with its optimizer state
    # is ~20 GB, 33 minutes at 10 MB/s
    "output": 3600.0,
    # a bot's Space exported on the host, in a process of its own (outputs/browser.py): ~30 s
    # for gpt2 on one core of this CPU, ~2 minutes for gpt2-medium; a stuck exporter ends here
    "space": 900.0,
}
# huggingface_hub's own HTTP client has no timeout at all (httpx, timeout=None): a Hub that
# stops answering would hold the job until the platform kills it. 10 s to connect, 60 s
# between bytes, for every request it makes: downloads of the base model and pushes alike.
CONNECT_TIMEOUT, READ_TIMEOUT = 10.0, 60.0


class DeadlineExceeded(TransientError):
    pass


class _Expired(BaseException):
    """What the timer raises inside the block: a BaseException, as SIGTERM's is, so that no
    library's ``except Exception`` on the way up (a retry loop, a wrapper) can swallow it;
    ``deadline`` turns it into DeadlineExceeded where the block ends."""


# The longest deadline a variable may set: a week. A deadline is there to end a stuck wait;
# none, or an endless one, is not something a variable can ask for.
MAX_SECONDS = 7 * 24 * 3600.0


def seconds_for(name: str) -> float:
    """``DEADLINES[name]``, or ``HUGGINGTWEETS_DEADLINE_<NAME>`` where set: a number of seconds
    above 0 and at most a week (``nan``, ``inf``, ``1e400``, ``-5``: BadConfig, exit 10)."""
    variable = f"HUGGINGTWEETS_DEADLINE_{name.upper()}"
    given = os.environ.get(variable)
    if not given:
        return DEADLINES[name]
    try:
        seconds = float(given)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= MAX_SECONDS:  # nan and inf fail too
        raise BadConfig(
            f"{variable}={given[:20]!r}: give seconds above 0 and at most {MAX_SECONDS:.0f}"
        )
    return seconds


def check_deadlines() -> None:
    """Every deadline variable that is set, checked (preflight: before any work)."""
    for name in DEADLINES:
        seconds_for(name)


@contextmanager
def deadline(name: str, what: str) -> Iterator[None]:
    """The block ends within ``DEADLINES[name]`` seconds, or raises DeadlineExceeded."""
    seconds = seconds_for(name)
    if threading.current_thread() is not threading.main_thread() or seconds <= 0:
        yield
        return
    outer_left, _ = signal.getitimer(signal.ITIMER_REAL)
    if outer_left and outer_left <= seconds:  # an enclosing deadline comes first: it rules
        yield
        return
    started = time.monotonic()

    def expired(signum: int, frame: object) -> None:
        raise _Expired()

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except _Expired:
        raise DeadlineExceeded(f"{what} took over {seconds:.0f} s (its total deadline)") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_left:  # the enclosing deadline, less the time this block took
            signal.setitimer(
                signal.ITIMER_REAL, max(outer_left - (time.monotonic() - started), 0.001)
            )


_hub_timeouts: tuple[float, float] | None = None  # what the Hub client was given


def hub_timeouts() -> None:
    """huggingface_hub's client, with the timeouts above (its factory builds it per thread).
    Installed once for the timeouts as they stand: a client costs ~25 ms (its TLS context),
    and a takedown or a publish makes several Hub calls."""
    global _hub_timeouts
    if _hub_timeouts == (READ_TIMEOUT, CONNECT_TIMEOUT):
        return
    import httpx2
    from huggingface_hub import close_session, set_client_factory
    from huggingface_hub.utils._http import default_client_factory

    read, connect = _hub_timeouts = (READ_TIMEOUT, CONNECT_TIMEOUT)

    def client() -> httpx2.Client:
        made = default_client_factory()  # its event hooks and redirects, and our timeouts
        made.timeout = httpx2.Timeout(read, connect=connect)
        return made

    set_client_factory(client)
    close_session()  # a session made before now has no timeout
