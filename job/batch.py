"""Recipe: a cloud batch job. Reads a manifest, makes its bots, publishes them safely.

- One bot per array index (``AWS_BATCH_JOB_ARRAY_INDEX`` on AWS Batch, ``JOB_COMPLETION_INDEX``
  in a Kubernetes Indexed Job, or ``--index``), or every bot in turn when there is no index.
- Idempotent under retries: a bot whose latest complete run has the same fingerprint (users,
  sources, config) is not made again unless forced; a pending Hub push is still done.
- Each attempt publishes under a new run id, marker last, ``latest`` moved after it (see
  publish.py), so a failed or killed attempt never harms what was published before.
- A Hub failure keeps the S3 results, marks the push failed and exits with the transient code:
  the platform's retry (or ``huggingtweets publish``) pushes again without retraining.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from job.errors import BadConfig, InputNotFound, JobError
from job.manifest import BotJob, Manifest, jobs, parse
from job.publish import latest_complete, new_run_id, set_status, upload_run
from job.storage import Storage, download, get_json, open_storage
from job.tweets import TweetSource

log = logging.getLogger(__name__)

INDEX_VARIABLES = ("AWS_BATCH_JOB_ARRAY_INDEX", "JOB_COMPLETION_INDEX")


def read_uri(uri: str) -> bytes:
    """The bytes of an ``s3://bucket/key`` object or a local file."""
    if uri.startswith("s3://"):
        bucket, _, key = uri[len("s3://") :].partition("/")
        data = open_storage(f"s3://{bucket}").get_bytes(key)
        if data is None:
            raise InputNotFound(f"{uri}: no such object")
        return data
    path = Path(uri)
    if not path.is_file():
        raise InputNotFound(f"{uri}: no such file")
    return path.read_bytes()


def load_manifest(uri: str) -> Manifest:
    try:
        text = read_uri(uri).decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadConfig(f"{uri}: not UTF-8 text") from e
    return parse(text, uri)


def array_index(given: int | None) -> int | None:
    if given is not None:
        return given
    for name in INDEX_VARIABLES:
        value = os.environ.get(name)
        if value not in (None, ""):
            if not value.isdigit():
                raise BadConfig(f"{name}={value!r} is not an index")
            return int(value)
    return None


def run_manifest(
    uri: str, *, index: int | None = None, force: bool = False
) -> list[dict[str, Any]]:
    """Make the manifest's bots (one, or all in turn); return their status records."""
    manifest = load_manifest(uri)
    storage = open_storage(manifest.output)
    all_jobs = jobs(manifest)
    index = array_index(index)
    if index is not None and not 0 <= index < len(all_jobs):
        raise BadConfig(
            f"array index {index} is out of range: the manifest has {len(all_jobs)} bots"
        )
    chosen = all_jobs if index is None else [all_jobs[index]]
    if index is None:  # this process will do them all: say so before starting the first
        for job in chosen:
            if not _done(storage, job) or force:
                set_status(storage, job.bot, "queued", manifest=uri)
    records, first_error = [], None
    for job in chosen:
        try:
            records.append(run_bot(job, storage, force=force))
        except JobError as e:
            log.error("%s: %s", job.bot, e)
            first_error = first_error or e
    if first_error:
        raise first_error
    return records


def _done(storage: Storage, job: BotJob) -> bool:
    marker = latest_complete(storage, job.bot)
    return bool(marker and marker["fingerprint"] == job.fingerprint())


def run_bot(job: BotJob, storage: Storage, *, force: bool = False) -> dict[str, Any]:
    from job.distributed import ranks
    from job.run import run

    if not ranks().main:  # other ranks only train; rank 0 decides, records and publishes
        with tempfile.TemporaryDirectory(prefix="huggingtweets-") as tmp:
            run(
                _sources(job, Path(tmp), fetch=False),
                Path(tmp) / "out",
                job.config,
                checkpoint_storage=(storage, f"{job.bot}/checkpoints/"),
            )
        return {}
    fingerprint = job.fingerprint()
    marker = latest_complete(storage, job.bot)
    if marker and marker["fingerprint"] == fingerprint and not force:
        log.info("%s: already published as run %s; nothing to do", job.bot, marker["run_id"])
        status = get_json(storage, f"{job.bot}/status.json") or {}
        if job.hub_repo and (status.get("hub") or {}).get("run_id") != marker["run_id"]:
            return publish(storage, job.bot, job.hub_repo, job.hub_private)
        return status
    run_id = new_run_id(fingerprint)
    hub = (
        {"repo": job.hub_repo, "private": job.hub_private, "state": "pending"}
        if (job.hub_repo)
        else {"state": "off"}
    )
    set_status(
        storage,
        job.bot,
        "running",
        run_id=run_id,
        hub=hub,
        attempt=os.environ.get("AWS_BATCH_JOB_ATTEMPT", "1"),
    )
    try:
        with tempfile.TemporaryDirectory(prefix="huggingtweets-") as tmp:
            work = Path(tmp)
            result = run(
                _sources(job, work / "inputs"),
                work / "out",
                job.config,
                checkpoint_storage=(storage, f"{job.bot}/checkpoints/"),
            )
            assert result is not None  # rank 0
            upload_run(storage, job.bot, run_id, work / "out" / job.bot, fingerprint)
            record = set_status(
                storage,
                job.bot,
                "succeeded",
                run_id=run_id,
                perplexity=result.train.perplexity,
                memorized=result.flagged,
            )
            if job.hub_repo:
                return _push(
                    storage, job.bot, result.model_dir, run_id, job.hub_repo, job.hub_private
                )
            return record
    except JobError as e:
        current = get_json(storage, f"{job.bot}/status.json") or {}
        if current.get("run_id") == run_id and current.get("state") == "running":
            set_status(storage, job.bot, "failed", reason=str(e))
        raise


def publish(
    storage: Storage, bot: str, repo: str | None = None, private: bool | None = None
) -> dict[str, Any]:
    """Push the latest complete run of ``bot`` to the Hub (again), from the output prefix."""
    marker = latest_complete(storage, bot)
    if marker is None:
        raise InputNotFound(f"{bot}: no complete run under {storage.uri}")
    status = get_json(storage, f"{bot}/status.json") or {}
    hub = status.get("hub") or {}
    repo = repo or hub.get("repo")
    if not repo:
        raise BadConfig(f"{bot}: no Hub repo recorded; give --repo OWNER/NAME")
    private = bool(hub.get("private")) if private is None else private
    with tempfile.TemporaryDirectory(prefix="huggingtweets-publish-") as tmp:
        folder = Path(tmp) / "model"
        download(storage, f"{bot}/{marker['run_id']}/model/", folder)
        return _push(storage, bot, folder, marker["run_id"], repo, private)


def _push(
    storage: Storage, bot: str, folder: Path, run_id: str, repo: str, private: bool
) -> dict[str, Any]:
    from job.hub import push

    status = get_json(storage, f"{bot}/status.json") or {}
    state = status.get("state", "succeeded")
    try:
        url = push(folder, repo, private=private, run_id=run_id)
    except JobError as e:
        set_status(
            storage,
            bot,
            state,
            hub={"repo": repo, "private": private, "state": "failed", "reason": str(e)},
        )
        raise
    return set_status(
        storage,
        bot,
        state,
        hub={"repo": repo, "private": private, "state": "pushed", "run_id": run_id, "commit": url},
    )


def _sources(job: BotJob, inputs: Path, fetch: bool = True) -> dict[str, TweetSource]:
    """Sources for the job's users; S3 inputs are downloaded first unless ``fetch`` is off."""
    from job.sources import ArchiveSource, FileSource

    sources: dict[str, TweetSource] = {}
    api: TweetSource | None = None
    for user in job.users:
        if user.source == "api":
            if api is None:
                from job.sources.api import ApiSource

                api = ApiSource()
            sources[user.handle] = api
            continue
        assert user.uri is not None
        path = Path(user.uri)
        if user.uri.startswith("s3://") and fetch:
            path = inputs / user.handle / Path(user.uri).name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(read_uri(user.uri))
        sources[user.handle] = ArchiveSource(path) if user.source == "archive" else FileSource(path)
    return sources


def statuses(storage: Storage, bots: list[str] | None = None) -> list[dict[str, Any]]:
    """Status records of the given bots, or of every bot under the output prefix."""
    if bots is None:
        bots = sorted(
            {
                k.split("/")[0]
                for k in storage.list("")
                if k.endswith("/status.json") and k.count("/") == 1
            }
        )
    return [
        get_json(storage, f"{bot}/status.json") or {"bot": bot, "state": "unknown"} for bot in bots
    ]
