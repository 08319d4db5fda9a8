"""Recipe: a cloud batch job. Reads a manifest, makes its bots, publishes them safely.

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

from job.base import Base
from job.cloud import hub
from job.cloud.consent import Guard, check_not_opted_out
from job.cloud.runs import latest_complete, new_run_id, upload_run
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
    InputNotFound,
    JobError,
    OptedOut,
    Terminated,
    TransientError,
    classify,
    detached,
    gpu_lost,
)
from job.inventory import CARD, MERGED, MODEL, merged_repo
from job.outputs.card import for_repo
from job.preflight import per_bot, shared
from job.records import Record, read_record
from job.run import RunResult, run
from job.spec import BotJob, check_repo, jobs, load_manifest, tasks
from job.storage import LocalStorage, Storage, download, open_storage
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
    failed = _preflight([j for j in chosen if force or not _done(storage, j)], storage, uri)
    chosen = [j for j in chosen if j.bot not in failed]
    if index is None:  # this process will do them all: say so before starting the first
        for job in chosen:
            if not _done(storage, job) or force:
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
                record = run_bot(job, storage, force=force, manifest=uri)
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


def _done(storage: Storage, job: BotJob) -> bool:
    marker = latest_complete(storage, job.bot)
    return bool(marker and marker.fingerprint == job.fingerprint())


def run_bot(
    job: BotJob, storage: Storage, *, force: bool = False, manifest: str | None = None
) -> Status | None:
    """Make one bot and publish it; None on ranks other than 0, which only train. After each
    thing it writes, it checks the opt-out list (cloud/consent.py, ``Guard``)."""
    checkpoints = (storage, f"{job.bot}/checkpoints/")
    if not ranks().main:  # other ranks only train; rank 0 decides, records and publishes
        with tempfile.TemporaryDirectory(prefix="huggingtweets-") as tmp:
            run(job, sources_for(job.users, fetch=False), Path(tmp) / "out", None, checkpoints)
        return None
    fingerprint = job.fingerprint()
    marker = latest_complete(storage, job.bot)
    if marker and marker.fingerprint == fingerprint and not force:
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
                    sources_for(job.users, work / "inputs"),
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
                return _push(
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


def publish_latest(
    storage: Storage, bot: str, repo: str | None = None, private: bool | None = None
) -> Status:
    """Push the latest complete run of ``bot`` to the Hub (again), from the output prefix. Its
    card is rendered for the repo it goes to; every repo it was pushed to stays recorded."""
    guard = Guard.of(storage, bot)
    check_not_opted_out(storage, guard.handles)  # first: a takedown may have come since
    marker = latest_complete(storage, bot)
    status = read_status(storage, bot)
    local = _local_result(storage, bot, status) if marker is None else None
    if marker is None and local is None:
        raise InputNotFound(f"{bot}: no complete run under {storage.where('')}")
    hub = status.hub if status else HubStatus()
    repo = repo or hub.repo
    if not repo:
        raise BadConfig(f"{bot}: no Hub repo recorded; give --repo OWNER/NAME")
    check_repo(repo, "--repo")
    private = hub.private if private is None else private
    with tempfile.TemporaryDirectory(prefix="huggingtweets-publish-") as tmp:
        run_dir = Path(tmp) / "run"
        if local is not None:  # a `run --out` result: its folders, as they are
            _linked(local, run_dir)
            assert status is not None and status.run_id is not None
            return _push(storage, bot, run_dir, status.run_id, repo, private, guard)
        assert marker is not None
        listed = {
            rel: meta.sha256
            for rel, meta in marker.files.items()
            if rel.startswith((f"{MODEL}/", f"{MERGED}/")) or rel == CARD
        }
        download(storage, f"{bot}/{marker.run_id}/", run_dir, expected=listed)
        return _push(storage, bot, run_dir, marker.run_id, repo, private, guard)


def _local_result(storage: Storage, bot: str, status: Status | None) -> Path | None:
    """The result a local ``run --out`` left (``OUT/<bot>/``, recorded by record_local_run),
    where ``storage`` is that folder."""
    if not isinstance(storage, LocalStorage) or status is None or status.state != "succeeded":
        return None
    result = storage.root / bot
    return result if (result / MODEL).is_dir() and status.run_id else None


def _linked(result: Path, run_dir: Path) -> None:
    """What a push reads of a local result, without copying gigabytes: the model folders as
    hard links (a copy where the file system has none), and the card, which the push renders
    again for its repo, as a copy (a link would rewrite the user's own card)."""
    import os
    import shutil

    def place(source: str, target: str) -> None:
        if Path(source).name == "README.md":
            shutil.copy2(source, target)
            return
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)

    for folder in (MODEL, MERGED):
        if (result / folder).is_dir():
            shutil.copytree(result / folder, run_dir / folder, copy_function=place)
    if (result / CARD).is_file():
        shutil.copy2(result / CARD, run_dir / CARD)


def record_local_run(out: Path, job: BotJob, result: RunResult) -> Status:
    """A local run's record, ``OUT/<bot>/status.json``, as a manifest's run writes one: what
    ``status`` lists, ``publish`` pushes and ``takedown`` reads (the repos it was pushed to
    stay recorded across runs)."""
    storage = LocalStorage(out)
    return write_status(
        storage,
        job.bot,
        "succeeded",
        fresh=True,
        run_id=new_run_id(job.fingerprint()),
        perplexity=result.train.perplexity,
        memorized=result.flagged,
        inputs=inputs_of(job.users),
        hub=HubStatus(repo=job.hub_repo, private=job.hub_private),
    )


class AdapterConfig(Record):
    """What publishing reads of peft's ``adapter_config.json``: the base it names."""

    base_model_name_or_path: str | None = None


def _hub_id(base: str) -> str | None:
    try:
        return Base.of(base).hub_id
    except ValueError:
        return None


def _push(
    storage: Storage,
    bot: str,
    run_dir: Path,
    run_id: str,
    repo: str,
    private: bool,
    guard: Guard,
) -> Status:
    """Push ``run_dir/model`` (its card rendered for ``repo``), and an adapter's merged copy
    (``run_dir/merged``, train.lora_merged) to ``<repo>-merged``, and record them, inside the
    guard of public writes (cloud/consent.py: a takedown meanwhile wins)."""
    adapter = read_record(LocalStorage(run_dir / MODEL), "adapter_config.json", AdapterConfig)
    if adapter is not None:  # an adapter loads its base by the name it gives
        base = adapter.base_model_name_or_path
        if base is None or _hub_id(base) is None:
            raise BadConfig(
                f"{bot}: an adapter of {base!r}, which is no Hub model: the Hub could not load"
                " it; make the bot again from a Hub base to publish it"
            )
    merged = merged_repo(repo) if (run_dir / MERGED).is_dir() else None
    if merged:
        check_repo(merged, "the merged copy's repo")
    for_repo(run_dir, repo, private)
    status = read_status(storage, bot)
    state = status.state if status and status.state != "unknown" else "succeeded"
    # recorded first: should the push half-happen, a takedown still finds the repos
    also = [merged] if merged else []
    write_status(
        storage, bot, state, hub=HubStatus(repo=repo, private=private, state="pending", repos=also)
    )
    with guard.public("the Hub push", [repo, *also]):
        try:
            url = hub.push_folder(run_dir / MODEL, repo, private=private, run_id=run_id)
            if merged:
                hub.push_folder(run_dir / MERGED, merged, private=private, run_id=run_id)
        except (Exception, Terminated, KeyboardInterrupt) as e:  # a stop too: not "pending"
            if not isinstance(e, OptedOut):
                failed = HubStatus(
                    repo=repo, private=private, state="failed", reason=str(classify(e))
                )
                write_status(storage, bot, state, hub=failed)
            raise
        pushed = HubStatus(
            repo=repo, private=private, state="pushed", run_id=run_id, commit_url=url
        )
        record = write_status(storage, bot, state, hub=pushed)
    return record
