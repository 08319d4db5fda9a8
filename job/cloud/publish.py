"""Publishing a bot to the Hub, from an output prefix or a local output: ``publish_latest``
(`huggingtweets publish`, and a manifest's retry of a published bot), and ``push_run``, which
pushes a run's model folder (and an adapter's merged copy) inside the guard of public writes
(cloud/consent.py) and records every repo in the bot's status. ``record_local_run`` writes a
local run's record, so a local output is read as a prefix is.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from job.base import Base
from job.cloud import hub
from job.cloud.consent import Guard, check_not_opted_out
from job.cloud.runs import latest_complete, new_run_id
from job.cloud.status import HubStatus, Status, inputs_of, read_status, write_status
from job.errors import BadConfig, InputNotFound, OptedOut, Terminated, classify
from job.inventory import CARD, MERGED, MODEL, SPACE, merged_repo, space_repo
from job.outputs import browser
from job.outputs.card import for_repo
from job.records import Record, read_record
from job.spec import BotJob, check_repo
from job.storage import LocalStorage, Storage, download

log = logging.getLogger(__name__)


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
            return push_run(storage, bot, run_dir, status.run_id, repo, private, guard)
        assert marker is not None
        listed = {
            rel: meta.sha256
            for rel, meta in marker.files.items()
            if rel.startswith((f"{MODEL}/", f"{MERGED}/")) or rel == CARD
        }
        download(storage, f"{bot}/{marker.run_id}/", run_dir, expected=listed)
        return push_run(storage, bot, run_dir, marker.run_id, repo, private, guard)


def _local_result(storage: Storage, bot: str, status: Status | None) -> Path | None:
    """The result a local ``run --out`` left (``OUT/<bot>/``, recorded by ``record_local_run``),
    where ``storage`` is that folder."""
    if not isinstance(storage, LocalStorage) or status is None or status.state != "succeeded":
        return None
    result = storage.root / bot
    return result if (result / MODEL).is_dir() and status.run_id else None


def _linked(result: Path, run_dir: Path) -> None:
    """What a push reads of a local result, without copying gigabytes: the model folders as
    hard links (a copy where the file system has none), and the card, which the push renders
    again for its repo, as a copy (a link would rewrite the user's own card)."""

    def place(source: str, target: str) -> None:
        if Path(source).name == "README.md":
            shutil.copy2(source, target)
            return
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)

    for folder in (MODEL, MERGED, SPACE):
        if (result / folder).is_dir():
            shutil.copytree(result / folder, run_dir / folder, copy_function=place)
    if (result / CARD).is_file():
        shutil.copy2(result / CARD, run_dir / CARD)


def record_local_run(out: Path, job: BotJob, perplexity: float, memorized: int) -> Status:
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
        perplexity=perplexity,
        memorized=memorized,
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


def push_run(
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
    # the Space (sampling.space): its page loads the model it was made from (an adapter
    # bot's merged copy) from the Hub, in a visitor's browser, with no token: of a private
    # repo it could load nothing, so a private push has none
    space = space_repo(repo) if (run_dir / SPACE / "index.html").is_file() else None
    if space and private:
        log.info("%s: no Space for a private repo (a visitor's browser could not read it)", bot)
        space = None
    for_repo(run_dir, repo, private)
    status = read_status(storage, bot)
    state = status.state if status and status.state != "unknown" else "succeeded"
    # recorded first: should the push half-happen, a takedown still finds the repos
    also = [r for r in (merged, space) if r]
    write_status(
        storage, bot, state, hub=HubStatus(repo=repo, private=private, state="pending", repos=also)
    )
    with guard.public("the Hub push", [repo, *also]):
        try:
            url = hub.push_folder(run_dir / MODEL, repo, private=private, run_id=run_id)
            if merged:
                hub.push_folder(run_dir / MERGED, merged, private=private, run_id=run_id)
            if space:
                with tempfile.TemporaryDirectory(prefix="huggingtweets-space-") as tmp:
                    model = merged or repo
                    card = f"https://huggingface.co/{model}"
                    browser.for_hub(run_dir / SPACE, Path(tmp), model, card)
                    hub.push_folder(Path(tmp), space, private=private, run_id=run_id)
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
