"""Runs under the output prefix: each attempt's files, uploaded so readers never see half a model.

Layout under OUTPUT (an S3 prefix or a folder)::

    <bot>/<run-id>/model/...          the model folder, card included
    <bot>/<run-id>/predictions.json
    <bot>/<run-id>/job.json
    <bot>/<run-id>/card.json          the card's context: publish --repo renders it again
    <bot>/<run-id>/data/stats.json, data/clean.jsonl
    <bot>/<run-id>/_COMPLETE          written last: the run is whole (lists every file)
    <bot>/latest.json                 moved after the marker: the run readers should use
    <bot>/status.json                 the bot's status record (cloud/status.py)

A run id is new for every attempt, so a failed or killed run never touches the files of an
earlier one, and ``latest.json`` only ever names a run whose marker exists.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from job.inventory import files_to_publish
from job.records import Record, read_or_none
from job.storage import MARKER, Storage, put_json, sha256_file

log = logging.getLogger(__name__)

RUN_ID = re.compile(r"\d{8}T\d{12}Z-[0-9a-f]{8}")  # new_run_id's form


def _run_id(value: str) -> str:
    if not RUN_ID.fullmatch(value):
        raise ValueError("not a run id")
    return value


RunId = Annotated[str, AfterValidator(_run_id)]


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_run_id(fingerprint: str) -> str:
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}-{fingerprint[:8]}"


def upload_run(
    storage: Storage,
    bot: str,
    run_id: str,
    bot_dir: Path,
    fingerprint: str,
    guard: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Upload a run's files, then its marker, then move ``latest``; return the marker.
    ``guard(after)`` is called after the files, the marker and ``latest`` (consent.Guard)."""
    check = guard or (lambda after: None)
    prefix = f"{bot}/{run_id}/"
    listing = {}
    for path in files_to_publish(bot_dir):
        rel = path.relative_to(bot_dir).as_posix()
        storage.put_file(prefix + rel, path)
        listing[rel] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    check("the run's files")  # before the marker: an opted-out run is never whole
    marker = {
        "bot": bot,
        "run_id": run_id,
        "fingerprint": fingerprint,
        "completed_at": now(),
        "files": listing,
    }
    put_json(storage, prefix + MARKER, marker)
    check("the run's marker")
    # Forward only: two attempts at once (a retry while the first still runs) must not move
    # latest back to the earlier-started one. Run ids begin with their start time, so they
    # sort in time. (A read, then a write: two writers within the same moment can still race.)
    current = latest_run(storage, bot)  # (a damaged latest.json names no run: not kept for one)
    if current is not None and current > run_id:
        log.info("%s: run %s is newer; latest.json stays on it", bot, current)
        return marker
    put_json(
        storage,
        f"{bot}/latest.json",
        {"run_id": run_id, "fingerprint": fingerprint, "completed_at": marker["completed_at"]},
    )
    check("latest.json")
    log.info("published %s to %s", bot, storage.where(prefix))
    return marker


class Latest(Record):
    """``<bot>/latest.json``: the run readers should use."""

    run_id: RunId
    fingerprint: str = ""
    completed_at: str | None = None


class Listed(Record):
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Marker(Record):
    """``<bot>/<run-id>/_COMPLETE``: the run is whole, and these are its files."""

    bot: str | None = None
    run_id: RunId
    fingerprint: str
    completed_at: str | None = None
    files: dict[str, Listed]


def latest_run(storage: Storage, bot: str) -> str | None:
    """The run ``latest.json`` names; None where it names none (absent, or damaged)."""
    latest = read_or_none(storage, f"{bot}/latest.json", Latest)
    return latest.run_id if latest else None


def latest_complete(storage: Storage, bot: str) -> Marker | None:
    """The marker of the run ``latest.json`` names, if that run is complete: a damaged
    ``latest.json`` or marker (records.py) names no complete run."""
    run_id = latest_run(storage, bot)
    if run_id is None:
        return None
    marker = read_or_none(storage, f"{bot}/{run_id}/{MARKER}", Marker)
    return marker if marker is not None and marker.run_id == run_id else None
