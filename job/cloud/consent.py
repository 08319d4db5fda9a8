"""Consent: the opt-out list, and taking down every bot that imitates a person.

The job makes a model that imitates a real person and publishes it under their handle. The
original HuggingTweets gave that person no way to ask for removal. Here:

- **The opt-out list** is one record per handle at ``OUTPUT/_opt-out/<handle>.json`` (the
  handle lowercased: Twitter handles are case-insensitive), with when, why and who asked.
  ``prepare``, ``run``, ``run --manifest`` and ``submit`` refuse an opted-out handle before any
  download or API call (exit 12). No flag overrides it: to allow a handle again, delete its
  record, deliberately (docs/batch.md).
- **``takedown``** writes the record first, so nothing new is made while it works, then for
  each bot holding the handle (alone or with others): the Hub repo its status names is deleted
  (or made private with ``keep_private``), then everything under ``OUTPUT/<bot>/`` (runs,
  markers, ``latest.json``, checkpoints, the status last). The Hub goes first because the status
  names the repo: if the Hub fails, the bot's files stay and a rerun finishes the job. Running
  it again on a finished takedown removes nothing and says so.
- **W&B**, when a key is given (WANDB_API_KEY): every run in the bot's group (the job names
  the group after the bot) is deleted with the artifacts it logged (the raw tweets, the
  dataset, the model), in the project each published run's ``job.json`` names and the default
  one, failed attempts' runs included. Without a key, a bot whose published run logged online
  is refused (exit 9) before anything of it is removed: its tweets would stay on W&B.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from job.cloud.runs import now
from job.cloud.status import read_status
from job.cloud.storage import Storage, get_json
from job.config import WANDB_PROJECT
from job.data.handles import validate_handle
from job.errors import CredentialsError, OptedOut

log = logging.getLogger(__name__)

OPT_OUT = "_opt-out/"


def opt_out_key(handle: str) -> str:
    return f"{OPT_OUT}{validate_handle(handle).lower()}.json"


def check_not_opted_out(storage: Storage, handles: list[str]) -> None:
    """Refuse the first handle of ``handles`` that has an opt-out record under ``storage``."""
    for handle in handles:
        record = get_json(storage, opt_out_key(handle))
        if record is not None:
            when = record.get("at", "?") if isinstance(record, dict) else "?"
            raise OptedOut(
                f"@{handle} asked not to be made into a bot (opt-out recorded {when} at"
                f" {storage.uri}{opt_out_key(handle)}); no bot of theirs will be made"
            )


def opt_out(storage: Storage, handle: str, reason: str | None, requested_by: str | None) -> dict:
    """Record the opt-out (kept as first written when one exists: its date is when they asked)."""
    key = opt_out_key(handle)
    existing = get_json(storage, key)
    if isinstance(existing, dict):
        return existing
    record = {"handle": handle, "at": now(), "reason": reason, "requested_by": requested_by}
    storage.put_bytes(key, json.dumps(record, indent=2).encode())
    return record


def bots_of(storage: Storage, handle: str) -> list[str]:
    """Every bot under ``storage`` whose users include ``handle`` (any case)."""
    wanted = handle.lower()
    folders = {k.split("/", 1)[0] for k in storage.list("") if "/" in k}
    # A local output also has each bot's scratch, OUT/.<bot> (checkpoints, W&B files).
    return sorted(
        f
        for f in folders
        if not f.startswith("_") and wanted in f.removeprefix(".").lower().split("-")
    )


@dataclass
class Takedown:
    handle: str
    opt_out: dict
    bots: list[str] = field(default_factory=list)
    hub: list[str] = field(default_factory=list)  # "deleted owner/name" or "made private ..."
    wandb: list[str] = field(default_factory=list)  # entity/project/run, deleted with artifacts
    inputs: list[str] = field(default_factory=list)  # the person's input files, deleted
    objects: int = 0

    def lines(self) -> str:
        if not self.bots:
            return f"@{self.handle}: opted out; no bot of theirs was found (nothing to remove)"
        bots = ", ".join(self.bots)
        out = [f"@{self.handle}: opted out; removed {len(self.bots)} bot folder(s): {bots}"]
        out += [f"  hub: {h}" for h in self.hub]
        out += [f"  wandb: deleted {r} and its artifacts" for r in self.wandb]
        out += [f"  input: deleted {i}" for i in self.inputs]
        out.append(f"  storage: {self.objects} object(s) deleted")
        return "\n".join(out)


def takedown(
    storage: Storage,
    handle: str,
    *,
    reason: str | None = None,
    requested_by: str | None = None,
    keep_private: bool = False,
    hub_remove: Callable[[str, bool], str] | None = None,
    wandb_remove: Callable[[str, str], list[str]] | None = None,
    wandb_project: str = WANDB_PROJECT,
) -> Takedown:
    """Opt ``handle`` out and remove every bot that holds it (see the module's docstring).
    ``hub_remove(repo, keep_private)`` deletes (or hides) a Hub repo and says what it did;
    ``wandb_remove(project, group)`` deletes a bot's W&B runs (None: no W&B key was given)."""
    if hub_remove is None:
        from job.cloud.hub import remove_repo

        hub_remove = remove_repo
    done = Takedown(handle, opt_out(storage, handle, reason, requested_by))
    for bot in bots_of(storage, handle):
        keys = storage.list(f"{bot}/")
        group = bot.removeprefix(".")  # a local output's scratch folder: the same bot
        projects, online = _wandb_projects(storage, keys)
        if wandb_remove is None and online:
            raise CredentialsError(
                f"{bot} logged to W&B online (project {', '.join(sorted(projects))}); set"
                " WANDB_API_KEY (and WANDB_ENTITY if not the key's own) and run the takedown"
                " again, so its runs and artifacts go too"
            )
        status = read_status(storage, bot)
        if status is not None and status.hub.repo and status.hub.state != "off":
            done.hub.append(hub_remove(status.hub.repo, keep_private))
        if wandb_remove is not None and not bot.startswith("."):
            for project in sorted(projects | {wandb_project}):
                done.wandb += wandb_remove(project, group)
        for key in _inputs(storage, status.manifest if status else None, group, handle):
            if key in storage.list(key):  # else gone: an earlier takedown stopped after it
                storage.delete(key)
                done.inputs.append(f"{storage.uri}{key}")
        # Readers first lose latest.json, then the runs; the status, which names the Hub
        # repo, goes last.
        ordered = sorted(
            keys, key=lambda k: (k.endswith("/status.json"), not k.endswith("/latest.json"))
        )
        for key in ordered:
            storage.delete(key)
        done.objects += len(keys)
        done.bots.append(bot)
        log.info("took down %s (%d objects)", bot, len(keys))
    return done


def _wandb_projects(storage: Storage, keys: list[str]) -> tuple[set[str], bool]:
    """The W&B projects a bot's published runs name in ``job.json``, and whether any of them
    logged online."""
    projects, online = set(), False
    for key in keys:
        if key.endswith("/job.json"):
            record = get_json(storage, key)
            if isinstance(record, dict):
                config = record.get("config", {}).get("wandb", {})
                projects.add(str(config.get("project") or WANDB_PROJECT))
                online |= record.get("wandb", {}).get("mode") == "online"
    return projects, online


def _inputs(storage: Storage, manifest: str | None, bot: str, handle: str) -> list[str]:
    """Keys of the files the manifest gave as ``handle``'s tweets (an archive, a JSONL file)
    in the bot ``bot``, where they lie under the output; other people's inputs stay."""
    if manifest is None:
        return []
    from job.config import jobs, load_manifest
    from job.errors import JobError

    try:
        spec = load_manifest(manifest)
    except JobError as e:  # gone or changed: what it named cannot be known
        log.warning("takedown: %s unreadable (%s); its inputs stay", manifest, e)
        return []
    base = storage.uri if storage.uri.endswith("/") else f"{storage.uri}/"
    return [
        user.uri[len(base) :]
        for job in jobs(spec)
        if job.bot == bot
        for user in job.users
        if user.handle.lower() == handle.lower() and user.uri and user.uri.startswith(base)
    ]
