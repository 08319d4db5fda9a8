"""Recipe: a manifest's task. Reads the manifest, makes the task's bots, publishes them safely
(the Hub push itself: cloud/publish.py).

- One bot per array index (``AWS_BATCH_JOB_ARRAY_INDEX`` on AWS Batch, ``JOB_COMPLETION_INDEX``
  in a Kubernetes Indexed Job, or ``--index``), or every bot in turn when there is no index.
- Idempotent under retries: a bot whose latest complete run has the same fingerprint (users,
  sources, config) is not made again unless forced; a pending Hub push is still done.
- Each attempt publishes under a new run id, marker last, ``latest`` moved after it (see
  cloud/runs.py), so a failed or killed attempt never harms what was published before.
- A Hub failure keeps the S3 results, marks the push failed and exits with the transient code:
  the platform's retry (or ``huggingtweets publish``) pushes again without retraining.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from pathlib import Path

from job.cloud.consent import Guard, check_not_opted_out
from job.cloud.publish import publish_latest, push_run
from job.cloud.runs import Marker, latest_complete, new_run_id, upload_run
from job.cloud.status import (
    HubStatus,
    Status,
    heartbeat,
    hub_of,
    inputs_of,
    read_status,
    write_status,
)
from job.data.handles import bot_name
from job.data.sources import sources_for
from job.deadline import deadline
from job.errors import (
    BadConfig,
    JobError,
    OptedOut,
    Terminated,
    TransientError,
    classify,
    detached,
    gpu_lost,
)
from job.preflight import per_bot, shared
from job.run import run
from job.spec import BotJob, jobs, load_manifest, tasks
from job.storage import Storage, open_storage
from job.training.distributed import ranks
from job.training.memory import process_memory_bytes
from job.training.model import bases_kept

log = logging.getLogger(__name__)

INDEX_VARIABLES = ("AWS_BATCH_JOB_ARRAY_INDEX", "JOB_COMPLETION_INDEX")


def output_of(manifest: str | None, output: str | None) -> tuple[str, list[str] | None]:
    """The output prefix given by ``--output`` or by a manifest, and the manifest's bots."""
    if (manifest is None) == (output is None):
        raise BadConfig("give --manifest or --output")
    if manifest is None:
        assert output is not None
        return output, None
    loaded = load_manifest(manifest, resolve=False)
    return loaded.output, [bot_name([u.handle for u in b.users]) for b in loaded.bots]


def array_index(given: int | None) -> int | None:
    if given is not None:
        return given
    for name in INDEX_VARIABLES:
        value = os.environ.get(name)
        if value not in (None, ""):
            # ASCII digits only ("²".isdigit() holds, and int("²") fails), and few of them
            if not re.fullmatch(r"[0-9]{1,9}", value):
                raise BadConfig(f"{name}={value[:20]!r} is not an index")
            return int(value)
    return None


def run_manifest(uri: str, *, index: int | None = None, force: bool = False) -> list[Status]:
    """Make the manifest's bots (one, or all in turn); return their status records."""
    manifest = load_manifest(uri, resolve=False)  # this task resolves only its own bots
    storage = open_storage(manifest.output)
    index = array_index(index)
    count, per = tasks(manifest), manifest.bots_per_task
    if index is not None and not 0 <= index < count:
        raise BadConfig(
            f"array index {index} is out of range: the manifest has {len(manifest.bots)} bots,"
            f" {per} per task: {count} task(s)"
        )
    chosen = jobs(manifest, None if index is None else range(index * per, (index + 1) * per))
    refused, chosen = _opted_out(chosen, storage)
    # "Is it done?", asked once a bot (a read of latest.json and a marker): what it names is
    # the run the bot's retry publishes again instead of making it anew
    done = {job.bot: None if force else published_run(storage, job) for job in chosen}
    failed = _preflight([j for j in chosen if done[j.bot] is None], storage, uri)
    chosen = [j for j in chosen if j.bot not in failed]
    if index is None:  # this process will do them all: say so before starting the first
        for job in chosen:
            if done[job.bot] is None:
                write_status(
                    storage,
                    job.bot,
                    "queued",
                    manifest=uri,
                    inputs=inputs_of(job.users),
                    hub=hub_of(job),
                )
    records: list[Status] = []
    errors: list[JobError] = [refused] if refused else []
    errors += failed.values()
    with bases_kept() if len(chosen) > 1 else contextlib.nullcontext():
        for job in chosen:
            try:
                record = run_bot(job, storage, manifest=uri, published=done[job.bot])
                if record is not None:
                    records.append(record)
            except Exception as e:  # one bot's failure is recorded; the others still run
                lost = gpu_lost(e)  # before detaching: the CUDA error may be its cause
                error = detached(classify(e))
                log.error("%s: %s", job.bot, error)
                errors.append(error)
                if lost:  # every later bot of this process would fail the same way
                    log.error("the GPU failed: the task stops here; its retry makes the rest")
                    break
            finally:
                _between_bots()
    if errors:
        # The task's exit code says what to retry: a retryable failure of any bot retries
        # the task (its published bots are skipped then, by fingerprint); else the first.
        raise next((e for e in errors if isinstance(e, TransientError)), errors[0])
    return records


def _between_bots() -> None:
    """What one bot leaves in the process goes before the next: its model, its Trainer and
    optimizer, and what run() froze out of the collector's sight (gc.freeze)."""
    import gc
    import sys

    gc.unfreeze()
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is None:
        return
    if "torch._dynamo" in sys.modules:
        # --compile: the next bot's model is another module; past Dynamo's recompile limit
        # (8) it would silently run eager. Inductor's compiled graphs stay in its cache on
        # HF_HOME, so the next bot's compile loads them (seconds, not minutes).
        torch._dynamo.reset()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.empty_cache()
    # What the next bot starts with: the figure that shows a bot's memory was given back.
    gpu = torch.cuda.memory_allocated() / 2**30 if cuda else 0.0
    log.info(
        "between bots: %.2f GiB of host memory in this process, %.2f GiB allocated on the GPU",
        process_memory_bytes() / 2**30,
        gpu,
    )


def _opted_out(chosen: list[BotJob], storage: Storage) -> tuple[OptedOut | None, list[BotJob]]:
    """The bots whose people have not opted out; the others are refused before any work, and
    leave no record (a takedown removed theirs: a status would be a new trace)."""
    kept, first = [], None
    for job in chosen:
        try:
            check_not_opted_out(storage, [u.handle for u in job.users])
        except OptedOut as e:  # a storage that cannot be read fails the run, as anywhere
            log.error("%s: %s", job.bot, e)
            first = first or e
            continue
        kept.append(job)
    return first, kept


def _preflight(todo: list[BotJob], storage: Storage, manifest: str) -> dict[str, JobError]:
    """Every credential and permission the bots to make need, before any of them starts
    (preflight.py). A bot's own problem (its input, its memory) fails that bot: it is
    recorded and returned by bot, to be left out. A shared one (the output, a token) fails
    every bot: it is recorded on each and raised."""
    kept, failed = [], {}
    for job in todo:
        try:
            per_bot(job)
        except Exception as e:
            error = classify(e)
            log.error("%s: %s", job.bot, error)
            write_status(  # with the push it would have made: `status` shows it will not
                storage, job.bot, "failed", manifest=manifest, reason=str(error), hub=hub_of(job)
            )
            failed[job.bot] = error
            continue
        kept.append(job)
    try:
        shared(kept, storage)
    except Exception as e:
        error = classify(e)
        for job in kept:
            write_status(  # with the push it would have made: `status` shows it will not
                storage, job.bot, "failed", manifest=manifest, reason=str(error), hub=hub_of(job)
            )
        raise error from e
    return failed


def published_run(storage: Storage, job: BotJob) -> Marker | None:
    """The marker of ``job``'s published run, if it is of this very job (its fingerprint)."""
    marker = latest_complete(storage, job.bot)
    return marker if marker is not None and marker.fingerprint == job.fingerprint() else None


def run_bot(
    job: BotJob,
    storage: Storage,
    *,
    manifest: str | None = None,
    published: Marker | None = None,
) -> Status | None:
    """Make one bot and publish it, or, where it is ``published`` already (``published_run``),
    make sure its record and its push say so; None on ranks other than 0, which only train.
    After each thing it writes, it checks the opt-out list (cloud/consent.py, ``Guard``)."""
    checkpoints = (storage, f"{job.bot}/checkpoints/")
    if not ranks().main:  # other ranks only train; rank 0 decides, records and publishes
        with tempfile.TemporaryDirectory(prefix="huggingtweets-") as tmp:
            run(job, sources_for(job.users, fetch=False), Path(tmp) / "out", None, checkpoints)
        return None
    fingerprint = job.fingerprint()
    marker = published
    if marker is not None:
        log.info("%s: already published as run %s; nothing to do", job.bot, marker.run_id)
        status = read_status(storage, job.bot)
        if status is None or status.state != "succeeded" or status.run_id != marker.run_id:
            # The published run is the bot's truth: a failed (or stale) record of another
            # attempt, or of another manifest, does not outlive it.
            hub = status.hub if status and status.hub.run_id == marker.run_id else HubStatus()
            status = write_status(
                storage, job.bot, "succeeded", fresh=True, run_id=marker.run_id, hub=hub
            )
        if job.hub_push and job.hub_repo and status.hub.run_id != marker.run_id:
            return publish_latest(storage, job.bot, job.hub_repo, job.hub_private)
        return status
    run_id = new_run_id(fingerprint)
    guard = Guard(storage, job.bot, [u.handle for u in job.users])
    earlier = read_status(storage, job.bot)
    write_status(  # a fresh record: nothing of an earlier attempt's carries over
        storage,
        job.bot,
        "running",
        fresh=True,
        run_id=run_id,
        hub=hub_of(job),
        manifest=manifest or (earlier.manifest if earlier else None),
        inputs=inputs_of(job.users),
        attempt=os.environ.get("AWS_BATCH_JOB_ATTEMPT", "1"),
    )
    try:
        guard.check("the running status")
        with tempfile.TemporaryDirectory(prefix="huggingtweets-") as tmp:
            work = Path(tmp)
            with heartbeat(storage, job.bot, run_id, still=guard.quiet):
                result = run(
                    job,
                    sources_for(job.users, work / "inputs", consent=guard.also),
                    work / "out",
                    None,
                    checkpoints,
                    guard=guard.check,
                )
                assert result is not None  # rank 0
                bot_dir = work / "out" / job.bot
                with deadline("output", f"uploading {job.bot}'s run"):
                    upload_run(storage, job.bot, run_id, bot_dir, fingerprint, guard.check)
            record = write_status(
                storage,
                job.bot,
                "succeeded",
                run_id=run_id,
                perplexity=result.train.perplexity,
                memorized=result.flagged,
            )
            guard.check("the succeeded status")
            if job.hub_push and job.hub_repo:
                return push_run(
                    storage, job.bot, bot_dir, run_id, job.hub_repo, job.hub_private, guard
                )
            return record
    except (Exception, Terminated, KeyboardInterrupt) as e:  # the status says failed, one line
        if isinstance(e, Exception) and not isinstance(e, OptedOut):
            # A takedown meanwhile may be why it failed (a Hub repo deleted under its push):
            # then that is what it was, and what the run wrote goes (consent.Guard).
            guard.check("a failure")
        error = classify(e)
        current = read_status(storage, job.bot)
        if current and current.run_id == run_id and current.state == "running":
            write_status(storage, job.bot, "failed", reason=str(error))
        if not isinstance(e, Exception):
            raise  # a stop ends the task, not just this bot: the boundary says it
        raise error from e
