"""A bot's status at ``OUTPUT/<bot>/status.json``: one typed record, written by one function.

States: ``queued`` (submitted), ``running`` (an attempt has started; ``run_id`` names it),
``succeeded`` (its run is published), ``failed`` (``reason`` says why). ``hub`` tracks the push
to the Hugging Face Hub separately: ``off``, ``pending``, ``pushed`` (with ``commit_url``) or
``failed`` (with ``reason``), because a model can be safe on S3 while the Hub is down;
``hub.repos`` keeps every repo the bot was ever pushed to (a ``publish --repo`` moves it), so
a takedown removes them all. ``inputs`` names each person's input files (their URIs), so a
takedown can delete them, or name those it may not, whatever manifest or index made the bot.

A running attempt touches ``heartbeat_at`` every ``HEARTBEAT_SECONDS``. A process killed
without a word (the OOM killer, a lost host) cannot write ``failed``; ``statuses`` shows its
``running`` record as ``stale`` once the heartbeat is older than ``STALE_AFTER_SECONDS``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from job.base import is_repo_id
from job.cloud.runs import now
from job.data.handles import Handle
from job.inventory import SPACES, is_repo_ref
from job.records import DamagedRecord, read_record
from job.storage import Storage, put_json

log = logging.getLogger(__name__)

State = Literal["queued", "running", "succeeded", "failed", "unknown", "stale", "opted out"]
DERIVED = ("unknown", "stale", "opted out")  # said when reading, never written
# Five minutes between heartbeats: one small PUT, nothing next to training. Three missed
# heartbeats (15 minutes) make a running record stale: longer than any pause of a live job
# (a checkpoint upload is written by the same process, between heartbeats' writes).
HEARTBEAT_SECONDS = 300
STALE_AFTER_SECONDS = 3 * HEARTBEAT_SECONDS


class HubStatus(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    state: Literal["off", "pending", "pushed", "failed"] = "off"
    repo: str | None = None
    private: bool = False
    run_id: str | None = None  # the run that was pushed
    commit_url: str | None = None
    reason: str | None = None
    repos: list[str] = []  # every repo this bot was pushed (or set to be pushed) to

    @field_validator("repo")
    @classmethod
    def _repo(cls, value: str | None) -> str | None:
        if value is not None and not is_repo_id(value):
            raise ValueError("not a Hub repo id")
        return value

    @field_validator("repos")
    @classmethod
    def _repos(cls, value: list[str]) -> list[str]:
        if not all(is_repo_ref(r) for r in value):
            raise ValueError("not a list of Hub repo ids")
        return value

    def every_repo(self) -> list[str]:
        """The repos a takedown must remove: those recorded, and the current one unless off."""
        named = [self.repo] if self.repo and self.state != "off" else []
        return sorted({*self.repos, *named})

    @property
    def space(self) -> str:
        """The bot's Space (sampling.space) once its push is done, as records name it; else -."""
        found = [r for r in self.repos if r.startswith(SPACES)]
        return found[0] if found and self.state == "pushed" else "-"

    def shown(self, state: str) -> str:
        """The Hub column of ``status``: a failed bot's pending push will not happen."""
        if self.state == "pending" and state not in ("queued", "running"):
            return "-"
        return self.state


class Input(BaseModel):
    """One person's tweets as a bot was given them (cloud/consent.py deletes them)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    handle: Handle  # parsed where the record is read, as everywhere a handle enters
    source: str
    uri: str | None = None


def hub_of(job: Any) -> HubStatus:
    """The Hub record of a bot (a BotJob) about to be made: pending where it will be pushed."""
    if job.hub_push and job.hub_repo:
        return HubStatus(repo=job.hub_repo, private=job.hub_private, state="pending")
    return HubStatus()


def inputs_of(users: list[Any]) -> list[Input]:
    """Each person's input as a takedown needs it: a local path made absolute, so the command
    it names works from any folder."""
    out = []
    for user in users:
        uri = user.uri
        if uri and not uri.startswith("s3://"):
            uri = str(Path(os.path.expanduser(uri)).resolve())
        out.append(Input(handle=user.handle, source=user.source, uri=uri))
    return out


class Status(BaseModel):
    # Records written by other versions may carry keys this one does not know: keep reading.
    model_config = ConfigDict(extra="ignore", frozen=True)

    bot: str = ""  # the folder's name: read_status sets it
    state: State
    run_id: str | None = None
    updated_at: str | None = None
    heartbeat_at: str | None = None  # running only: the attempt's last sign of life
    manifest: str | None = None
    attempt: str | None = None
    perplexity: float | None = None
    memorized: int | None = None
    reason: str | None = None
    hub: HubStatus = HubStatus()
    inputs: list[Input] = []

    def line(self) -> str:
        """What ``run --manifest`` and ``publish`` print for the bot."""
        bot, state, run_id, updated, hub, reason, space = self.row()
        line = f"{bot}  {state}  {run_id}  {updated}  hub:{hub}"
        line += f"  space:{space}" if space != "-" else ""
        return line + (f"  ({reason})" if reason else "")

    def row(self) -> list[str]:
        """The record as ``huggingtweets status`` shows it: one cell per column of COLUMNS."""
        return [
            self.bot,
            self.state,
            self.run_id or "-",
            self.updated_at or "-",
            self.hub.shown(self.state),
            self.reason or self.hub.reason or "",
            self.hub.space,
        ]


COLUMNS = ["bot", "state", "run", "updated", "hub", "reason", "space"]


def read_status(storage: Storage, bot: str) -> Status | None:
    """The bot's record; None when it has none. A record this version cannot read (a state it
    does not know, a field of the wrong type, not JSON, too large: records.py) reads as
    ``unknown``, saying so, and keeps every Hub repo id its bytes still name (``named_repos``):
    a takedown must find them, and the next attempt's record carries them on."""
    try:
        record = read_record(storage, f"{bot}/status.json", Status)
    except DamagedRecord as e:
        return Status(
            bot=bot,
            state="unknown",
            reason="its status record cannot be read",
            hub=HubStatus(repos=named_repos(e.raw)),
        )
    return None if record is None else record.model_copy(update={"bot": bot})


# A quoted string of a Hub repo id's form, anywhere in a record's bytes (HUB_REPO checks it)
_QUOTED_REPO = re.compile(rb'"((?:spaces/)?[A-Za-z0-9_.-]{1,96}/[A-Za-z0-9_.-]{1,96})"')


def named_repos(raw: bytes) -> list[str]:
    """Every Hub repo id that a damaged record's bytes name, wherever they stand in it: the
    candidates a takedown checks (consent.py deletes only those that prove to be the bot's)."""
    found = {m.decode() for m in _QUOTED_REPO.findall(raw)}
    return sorted(r for r in found if is_repo_ref(r))


def write_status(
    storage: Storage, bot: str, state: State, *, fresh: bool = False, **changes: Any
) -> Status:
    """The one writer: the bot's record with ``changes`` applied, in ``state``, now. ``fresh``
    starts from an empty record: a new attempt carries nothing of the last one's (its reason,
    perplexity or Hub fields)."""
    if state in DERIVED:
        raise ValueError(f"{state} is derived when reading, never written")
    previous = read_status(storage, bot)
    current = None if fresh else previous
    fields = {**(current.model_dump() if current else {}), **changes}
    hub = fields.get("hub") or {}
    hub = HubStatus.model_validate(hub.model_dump() if isinstance(hub, HubStatus) else hub)
    # Even a fresh record keeps every repo the bot was pushed to: a takedown needs them all.
    known = previous.hub.every_repo() if previous else []
    fields["hub"] = {**hub.model_dump(), "repos": sorted({*known, *hub.every_repo()})}
    if "inputs" not in changes and previous is not None and not fields.get("inputs"):
        fields["inputs"] = [i.model_dump() for i in previous.inputs]
    if state != "failed":
        fields.pop("reason", None)
    stamp = now()
    if state == "running":
        fields["heartbeat_at"] = stamp
    else:
        fields.pop("heartbeat_at", None)
    record = Status.model_validate({**fields, "bot": bot, "state": state, "updated_at": stamp})
    put_json(storage, f"{bot}/status.json", record.model_dump(exclude_none=True))
    return record


def statuses(storage: Storage, bots: list[str] | None = None) -> list[Status]:
    """Status records of the given bots, or of every bot under the output prefix."""
    if bots is None:
        bots = sorted(
            {
                k.split("/")[0]
                for k in storage.list("")
                if k.endswith("/status.json") and k.count("/") == 1
            }
        )
    records = [read_status(storage, bot) or Status(bot=bot, state="unknown") for bot in bots]
    return [as_seen(r, time.time()) for r in records]


def seconds_since(stamp: str | None, at: float) -> float | None:
    """How long before ``at`` a record's time stamp was written; None where it has none."""
    if not stamp:
        return None
    try:
        return at - datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return None


def as_seen(record: Status, at: float) -> Status:
    """The record as ``status`` shows it: a running one whose heartbeat stopped is ``stale``,
    with how long ago."""
    if record.state != "running":
        return record
    silent = seconds_since(record.heartbeat_at, at)
    if silent is None or silent <= STALE_AFTER_SECONDS:
        return record
    reason = (
        f"no heartbeat for {silent / 60:.0f} min: the process died without a word (out of"
        " memory, a lost host); run the manifest again"
    )
    return record.model_copy(update={"state": "stale", "reason": reason})


@contextmanager
def heartbeat(
    storage: Storage,
    bot: str,
    run_id: str,
    every: float = HEARTBEAT_SECONDS,
    still: Callable[[], bool] = lambda: True,
) -> Iterator[None]:
    """Touch the running record every ``every`` seconds while the block runs; stopped (and
    joined) before the block's caller writes the final state, so a late beat cannot undo it.
    ``still()`` is asked after each beat: False (the bot's person opted out meanwhile) stops
    the beats and takes back the beat's record, which a takedown may have deleted just before."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            try:
                current = read_status(storage, bot)
                if current is None or current.run_id != run_id or current.state != "running":
                    return
                write_status(storage, bot, "running")
                if not still():
                    storage.delete(f"{bot}/status.json")
                    return
            except Exception as e:  # a missed beat is not worth failing the run for
                log.warning("%s: heartbeat not written (%s)", bot, type(e).__name__)

    thread = threading.Thread(target=beat, name=f"heartbeat-{bot}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
