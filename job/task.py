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
from collections.abc import Callable, Generator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from job.behind import Behind
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
    Preempted,
    Terminated,
    TransientError,
    classify,
    detached,
    gpu_lost,
)
from job.outputs.predict import decode_compiled
from job.preflight import driver_cuda_version, per_bot, shared
from job.run import Request, Rest, make, run, run_pack
from job.spec import BotJob, jobs, load_manifest, tasks
from job.storage import Storage, open_storage
from job.training.distributed import ranks
from job.training.memory import (
    fits_beside,
    gpu_free_bytes,
    host_memory_bytes,
    process_memory_bytes,
)
from job.training.model import base_arch, bases_kept
from job.training.packs import pack_size, tokens_a_bot
from job.training.strategy import shape_of

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
    errors: list[JobError] = [refused] if refused else []
    errors += failed.values()
    made: list[tuple[BotJob, Any]] = []
    decided = {j.bot: j for j in _decode_choice([j for j in chosen if done[j.bot] is None])}
    chosen = [decided.get(j.bot, j) for j in chosen]
    keep = any(j.config.sampling.compile for j in chosen)
    units = packs(chosen)
    left = partial(_left_behind, storage)
    with (
        bases_kept() if len(chosen) > 1 else contextlib.nullcontext(),
        Behind(on_left=left) as behind,
    ):
        for i, unit in enumerate(units):
            # the last unit has no next bot to train beside its end: it ends here, and a
            # stop during it is its own, as for a lone bot
            last = i == len(units) - 1
            try:
                outcomes = _make(unit, storage, uri, done, None if last else behind)
            finally:
                _between_bots(keep)
            stop = _stops(outcomes)  # before detaching: a CUDA error may be the cause
            # a failed bot's traceback holds its model: only its error is kept (errors.py)
            outcomes = [detached(classify(o)) if isinstance(o, BaseException) else o
                        for o in outcomes]  # fmt: skip
            made += zip(unit, outcomes, strict=True)
            if stop:  # every later bot of this process would fail too
                log.error("%s: the task stops here; its retry makes the rest", stop)
                behind.close(stopping=stop == "SIGTERM")  # SIGTERM: within the grace
                break
    records: list[Status] = []
    for job, outcome in made:
        if isinstance(outcome, Later):
            outcome = behind.result(job.bot)
        if isinstance(outcome, Status):
            records.append(outcome)
        elif isinstance(outcome, BaseException):  # one bot's failure: the others still ran
            error = detached(classify(outcome))  # a later one's: detached here
            log.error("%s: %s", job.bot, error)
            errors.append(error)
    if errors:
        # The task's exit code says what to retry: a retryable failure of any bot retries
        # the task (its published bots are skipped then, by fingerprint); else the first.
        raise next((e for e in errors if isinstance(e, TransientError)), errors[0])
    return records


def _left_behind(storage: Storage, bot: str, error: Exception) -> None:
    """A bot a stop left behind (behind.py): its record says the attempt failed, or, where
    its run was recorded and only its push was left, that the push did."""
    status = read_status(storage, bot)
    if status is None:
        return
    if status.state == "running":
        write_status(storage, bot, "failed", reason=str(error))
    elif status.state == "succeeded" and status.hub.state == "pending":
        hub = status.hub.model_copy(update={"state": "failed", "reason": str(error)})
        write_status(storage, bot, "succeeded", hub=hub)


@dataclass(frozen=True)
class Later:
    """A bot whose end (upload, record, push) runs behind the next bot's training (behind.py);
    its outcome is ``Behind.result``."""

    bot: str


def _stops(outcomes: list[Any]) -> str | None:
    """Why the task cannot go on after these outcomes: the GPU failed (a CUDA error leaves
    the process's context unusable), or SIGTERM came in training (its checkpoint is saved)."""
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and gpu_lost(outcome):  # before detaching
            return "the GPU failed"
        if isinstance(outcome, Preempted):
            return "SIGTERM"
    return None


def _decode_choice(chosen: list[BotJob]) -> list[BotJob]:
    """The task's bots to make, each with ``sampling.compile`` decided once for the task
    (outputs/predict.py decode_compiled, from all their decode steps) where it left it unset:
    the decode step's capture is paid by the first bot that samples and kept for the rest.
    A GPU is the driver's (preflight.py): torch is not imported for it, before any bot."""
    settings = [j.config.sampling for j in chosen]
    if not chosen or all(s.compile is not None for s in settings):
        return chosen
    compiled, why = decode_compiled(settings, driver_cuda_version() is not None)
    log.info("decode step compiled for this task's bots: %s (%s)", "yes" if compiled else "no", why)
    return [
        j if j.config.sampling.compile is not None else j.model_copy(update={"config": (
            j.config.model_copy(update={"sampling": j.config.sampling.model_copy(
                update={"compile": compiled})})
        )})
        for j in chosen
    ]  # fmt: skip


def _between_bots(keep_compiled: bool = False) -> None:
    """What one bot leaves in the process goes before the next: its model, its Trainer and
    optimizer, and what run() froze out of the collector's sight (gc.freeze). With
    ``keep_compiled`` (the task's decode step is compiled), Dynamo's caches stay."""
    import gc
    import sys

    gc.unfreeze()
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is None:
        return
    if "torch._dynamo" in sys.modules and not keep_compiled:
        # --compile: the next bot's model is another module; past Dynamo's recompile limit
        # (8) it would silently run eager. Inductor's compiled graphs stay in its cache on
        # HF_HOME, so the next bot's compile loads them (seconds, not minutes). A compiled
        # decode step keeps them: its graphs take a module's weights as inputs (Dynamo inlines
        # nn.Modules), so the next bot of the same shape runs them without a recompile.
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


def _make(
    unit: list[BotJob],
    storage: Storage,
    uri: str,
    done: dict[str, Marker | None],
    behind: Behind | None = None,
) -> list[Any]:
    """A unit's outcomes, bot by bot (a record, an error, or ``Later``): a lone bot's, or a
    pack's (its published bots only brought up to date, the others trained together)."""
    if len(unit) == 1:
        job = unit[0]
        return [
            _outcome(
                lambda: run_bot(job, storage, manifest=uri, published=done[job.bot], behind=behind)
            )
        ]
    outcomes: dict[str, Any] = {}
    for job in unit:
        marker = done[job.bot]
        if marker is not None:
            outcomes[job.bot] = _outcome(partial(_already, job, storage, marker))
    todo = [j for j in unit if done[j.bot] is None]
    if todo:
        made = run_pack_bots(todo, storage, uri, behind)
        outcomes.update(zip([j.bot for j in todo], made, strict=True))
    return [outcomes[j.bot] for j in unit]


def _outcome(make: Callable[[], Any]) -> Any:
    """A bot's record, or its error (a stop, SIGTERM's or Ctrl-C's, ends the task)."""
    try:
        return make()
    except Exception as e:
        return e


def pack_key(job: BotJob) -> tuple[Any, ...] | None:
    """What adapter bots must share to train in one step (training/packs.py): the base (a
    tiny base is built from each bot's own tweets: none), the adapter's shape, the block, the
    precision and the decay; None for a bot that trains alone (a full bot, ``pack`` off, LoRA
    dropout or gradient accumulation, which a pack's step does not do)."""
    train = job.config.train
    if not (train.lora and train.pack) or job.base.kind == "tiny":
        return None
    if train.lora_dropout or train.grad_accum != 1 or ranks().world > 1:
        return None
    return (
        train.base_model, train.lora_rank, train.lora_alpha, tuple(train.lora_targets),
        train.block_size, train.precision, train.weight_decay, train.tokenizer,
    )  # fmt: skip


def packs(chosen: list[BotJob]) -> list[list[BotJob]]:
    """The task's bots in units of work, in their order: a bot alone, or the adapter bots of
    one key (``pack_key``), as many a pack as fit (training/packs.py ``pack_size``, planned from
    the free memory now and said in the log). Decided on the task's bots before the published
    ones are left out, so that a retry packs a bot as its first attempt did (its checkpoints
    are a pack's)."""
    groups: dict[tuple[Any, ...], list[BotJob]] = {}
    units: list[list[BotJob]] = []
    for job in chosen:
        key = pack_key(job)
        if key is None:
            units.append([job])
        elif key not in groups:
            groups[key] = [job]
            units.append(groups[key])
        else:
            groups[key].append(job)
    out: list[list[BotJob]] = []
    for unit in units:
        if len(unit) < 2:
            out.append(unit)
            continue
        size, why = _pack_size(unit[0])
        log.info("packs of up to %d adapter bots of %s: %s", size, unit[0].base.name, why)
        out += [unit[i : i + size] for i in range(0, len(unit), size)]
    return out


def _pack_size(job: BotJob) -> tuple[int, str]:
    """How many of ``job``'s kind fit a pack on this machine now (training/packs.py)."""
    import torch

    train = job.config.train
    arch = base_arch(job.base)
    shape = shape_of(train.base_model if job.base.size else "model", arch)
    cuda = torch.cuda.is_available()
    if cuda:
        free = gpu_free_bytes()
        bf16 = train.precision != "fp32" and torch.cuda.is_bf16_supported()
    else:
        free, bf16 = host_memory_bytes() - process_memory_bytes(), False
    base = shape.params * (2 if bf16 else 4)
    tokens = tokens_a_bot(train, arch, cuda)
    return pack_size(shape, int(arch["vocab_size"]), tokens, bf16, free, base)


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
    behind: Behind | None = None,
) -> Status | Later | None:
    """Make one bot and publish it, or, where it is ``published`` already (``published_run``),
    make sure its record and its push say so; None on ranks other than 0, which only train.
    After each thing it writes, it checks the opt-out list (cloud/consent.py, ``Guard``).
    With ``behind``, its upload, record and push run behind the next bot (``Later``)."""
    checkpoints = (storage, f"{job.bot}/checkpoints/")
    if not ranks().main:  # other ranks only train; rank 0 decides, records and publishes
        with tempfile.TemporaryDirectory(prefix="huggingtweets-") as tmp:
            run(job, sources_for(job.users, fetch=False), Path(tmp) / "out", None, checkpoints)
        return None
    if published is not None:
        return _already(job, storage, published)
    session = _session(job, storage, manifest)
    request = next(session)
    try:
        made = make(request)
    except BaseException as e:
        return _end(session, e)
    assert made is not None  # rank 0
    return _finish(job.bot, session, made, behind)


def _finish(
    bot: str, session: Generator[Request, Any, Status], made: Rest, behind: Behind | None
) -> Status | Later:
    """A made bot's rest (run.py ``Rest``) and session's end here, or behind the next bot:
    then its Space is exported in a process of its own (``apart``)."""
    if behind is None:
        return _end(session, made)
    need = made.host_bytes()
    if need and not fits_beside(need, behind.behind, host_memory_bytes(), process_memory_bytes()):
        log.info(
            "%s: its rest stays in line: %d rests of %.1f GiB each (weights to write, a Space's"
            " export) would not fit the host's memory beside the training",
            bot, behind.behind, need / 2**30,
        )  # fmt: skip
        return _end(session, made)
    made.apart = True
    behind.submit(bot, partial(_end, session, made))
    return Later(bot)


def run_pack_bots(
    chosen: list[BotJob], storage: Storage, manifest: str | None, behind: Behind | None = None
) -> list[Any]:
    """Make a pack's bots (run.run_pack), each recorded, uploaded and pushed as ``run_bot``
    does it; one outcome a bot, its record or its error. A stop (SIGTERM's Terminated,
    Ctrl-C) is recorded on each bot, then ends the task."""
    sessions: dict[int, Generator[Request, Any, Status]] = {}
    requests: dict[int, Request] = {}
    outcomes: dict[int, Any] = {}
    for i, job in enumerate(chosen):
        session = _session(job, storage, manifest)
        try:
            requests[i] = next(session)
            sessions[i] = session
        except Exception as e:  # its running status, its guard: this bot's alone
            outcomes[i] = e
    made: dict[int, Any]
    try:
        made = dict(zip(requests, run_pack(list(requests.values())), strict=True))
    except BaseException as e:  # the pack's training stopped: every bot's end says so
        made = dict.fromkeys(requests, e)
    stop: BaseException | None = None
    for i, session in sessions.items():
        try:
            if isinstance(made[i], BaseException):
                outcomes[i] = _end(session, made[i])
            else:
                outcomes[i] = _finish(chosen[i].bot, session, made[i], behind)
        except Exception as e:
            outcomes[i] = e
        except BaseException as e:  # a stop: recorded on every bot, then the task ends
            stop = e
    if stop is not None:
        raise stop
    return [outcomes[i] for i in range(len(chosen))]


def _end(session: Generator[Request, Any, Status], made: Any) -> Status:
    """The rest of a bot's session (``_session``) with what its run made, or its error."""
    try:
        if isinstance(made, BaseException):
            session.throw(made)
        else:
            session.send(made)
    except StopIteration as finished:
        return finished.value
    raise AssertionError("a bot's session yields once")


def _already(job: BotJob, storage: Storage, marker: Marker) -> Status:
    """A bot whose very job is published: its record and its push made to say so."""
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


def _session(
    job: BotJob, storage: Storage, manifest: str | None
) -> Generator[Request, Any, Status]:
    """One bot's attempt, around its making: the running record, then (a generator) the
    ``Request`` for whoever makes it (run.make, or a pack's run.run_pack), sent back its
    ``Rest`` or thrown its error; then its rest, the upload, the record and the push."""
    fingerprint = job.fingerprint()
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
                rest: Rest = yield Request(
                    job,
                    sources_for(job.users, work / "inputs", consent=guard.also),
                    work / "out",
                    (storage, f"{job.bot}/checkpoints/"),
                    guard.check,
                )
                result = rest()  # its Space, card, W&B's results, its folder in place
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
