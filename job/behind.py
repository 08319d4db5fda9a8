"""The stage behind training: what a finished bot still has to do that needs no GPU (its rest:
its weights written, its Space exported, its card, W&B's results, its folder, run.py ``Rest``;
then its upload to storage, its record, its Hub push: task.py's session end) runs in a thread
while the next bot trains, so that a task of many bots does not leave its GPU idle for each
bot's host work (gpt2-xl: a 3-6 GB write and upload, 15-60 s; gpt2: a 20-40 s Space export).

- Bounded: at most ``behind_for`` the host's cores bots wait behind the one training (2 to 4);
  the next bot's training waits for the oldest before it starts where there are more. Each
  holds its weights on the host until they are written, and its Space's export process; the
  task plans both against the host's memory before a bot goes behind (task.py ``_finish``,
  memory.py ``fits_beside``). An upload streams from the bot's files (boto3: 8 MiB parts, 10
  threads, ~80 MiB a bot at once).
- Deadlines: a thread's own waits are not interrupted (signals reach the main thread only:
  deadline.py), so the main thread enforces each bot's total, the output's and the push's
  deadlines together; past it the bot fails with DeadlineExceeded (75) and is left behind.
- A bot is reported complete only when its upload and record are (its session's end); a
  failed upload fails that bot with its own code, not the task's others.
- A stop (SIGTERM, Ctrl-C) waits ``DRAIN_SECONDS`` for the bots behind, then leaves them: an
  upload is crash-safe (the marker last, cloud/runs.py), so nothing half-written is visible.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from job.deadline import DeadlineExceeded, seconds_for
from job.errors import TransientError

log = logging.getLogger(__name__)

# Two bots behind the one training at least: a gpt2-xl upload (3-6 GB) outlasts a bot's
# training on a fast GPU, and two keep the GPU fed through one slow upload. A gpt2 bot's Space
# export takes a core ~20-40 s (docs/batch.md) against its ~3 s of training: a host of more
# cores runs more of them at once, a bot behind for each 4 cores (the training keeps ~4: its
# launches, data loader and copies), at most 4 (each holds its weights and an export's ~2.7 GB).
BEHIND = 2
MOST_BEHIND = 4


def behind_for(cores: int) -> int:
    """How many bots may wait behind the one training on a host of ``cores`` cores."""
    return max(BEHIND, min(MOST_BEHIND, cores // 4))


# On a stop, the seconds the stage gets to finish: inside __main__'s EXIT_GRACE_SECONDS (15),
# which is inside the platforms' grace (30 s by default).
DRAIN_SECONDS = 10.0


@dataclass
class _Item:
    bot: str
    thread: threading.Thread
    started: float
    outcome: list[Any] = field(default_factory=list)  # the result, or the exception

    @property
    def done(self) -> bool:
        return not self.thread.is_alive()


class Behind:
    """``submit(bot, work)`` runs ``work`` beside the caller; ``result(bot)`` is its outcome
    once ``close`` (or the context's end) has waited for it."""

    def __init__(
        self, behind: int | None = None, on_left: Callable[[str, Exception], None] | None = None
    ) -> None:
        if behind is None:  # this host's (or container's) cores
            behind = behind_for(len(os.sched_getaffinity(0)))
        self.behind, self.on_left = behind, on_left
        self.items: dict[str, _Item] = {}
        self.limit = seconds_for("space") + seconds_for("output") + seconds_for("hub_push")

    def submit(self, bot: str, work: Callable[[], Any]) -> None:
        """``work`` in a thread of its own, once fewer than ``behind`` others still run."""
        while running := self._running():
            if len(running) < self.behind:
                break
            self._wait(running[0], None)
        outcome: list[Any] = []

        def body() -> None:
            try:
                outcome.append(work())
            except BaseException as e:  # handed to the main thread, which records it
                outcome.append(e)

        thread = threading.Thread(target=body, name=f"behind-{bot}", daemon=True)
        self.items[bot] = _Item(bot, thread, time.monotonic(), outcome)
        log.info("%s: its rest (Space, card, W&B), upload and record go on behind", bot)
        thread.start()

    def _running(self) -> list[_Item]:
        return [i for i in self.items.values() if not i.done and not i.outcome]

    def _wait(self, item: _Item, seconds: float | None) -> bool:
        """Wait for ``item`` up to ``seconds`` (None: up to its deadline); False if it still
        runs then. Past its deadline it is given up with DeadlineExceeded."""
        left = self.limit - (time.monotonic() - item.started)
        until = time.monotonic() + (left if seconds is None else min(seconds, left))
        while not item.done and time.monotonic() < until:
            item.thread.join(0.5)  # a signal's handler runs between waits
        if item.done:
            return True
        if time.monotonic() - item.started >= self.limit:
            item.outcome.append(
                DeadlineExceeded(f"{item.bot}: its upload took over {self.limit:.0f} s")
            )
            return True
        return False

    def close(self, stopping: bool = False) -> None:
        """Wait for every bot behind (each up to its deadline); on a stop, DRAIN_SECONDS for
        all of them, then each one left is recorded by ``on_left``."""
        end = time.monotonic() + DRAIN_SECONDS
        for item in list(self.items.values()):
            if item.outcome:
                continue
            if stopping:
                if not self._wait(item, max(end - time.monotonic(), 0.0)):
                    # its half upload has no marker; its record says it failed (or its
                    # push did), from here: its thread is stuck, not to be waited for
                    log.warning("%s: left behind by the stop, unpublished", item.bot)
                    error = TransientError("stopped by SIGTERM during its upload; a rerun makes it")
                    item.outcome.append(error)
                    if self.on_left is not None:
                        self.on_left(item.bot, error)
            else:
                self._wait(item, None)

    def result(self, bot: str) -> Any:
        """The bot's outcome: what its work returned, or the exception it raised."""
        return self.items[bot].outcome[0]

    def __enter__(self) -> Behind:
        return self

    def __exit__(self, kind: object, value: BaseException | None, tb: object) -> None:
        self.close(stopping=value is not None and not isinstance(value, Exception))
