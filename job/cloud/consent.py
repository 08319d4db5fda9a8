"""Consent: the opt-out list, taking down every bot that imitates a person, and the run's side
of the race between the two.

The job makes a model that imitates a real person and publishes it under their handle. The
original HuggingTweets gave that person no way to ask for removal. Here:

- **The opt-out list** is one record per handle at ``OUTPUT/_opt-out/<handle>.json`` (the
  handle lowercased: Twitter handles are case-insensitive), with when, why and who asked.
  ``prepare``, ``run``, ``run --manifest``, ``submit`` (its dry run too) and ``publish`` refuse
  an opted-out handle before any download or API call (exit 12). No flag overrides it: to allow
  a handle again, delete its record, deliberately (docs/batch.md).
- **``takedown``** writes the record first, so nothing new is made while it works, then for
  each bot holding the handle (alone or with others; a folder is a bot's when its name is
  handles joined with '-', local scratch ``.<bot>`` and a killed run's ``.<bot>.old`` too):
  every Hub repo its status names (all those it was ever pushed to) is deleted (or made
  private with ``keep_private``); with a W&B key, its W&B runs and their artifacts; the
  person's input files that the bot recorded, where the takedown may delete them (under the
  output, or the bucket's ``inputs/``), the others named with the command that removes them;
  then everything under ``OUTPUT/<bot>/``, the status last. The Hub goes first because the
  status names the repos: if the Hub fails, the bot's files stay and a rerun finishes the job.
  A bot that is running is said to be, and cannot publish (below).
- **The race**: a run checks the opt-out list after each thing it writes under the bot's
  folder or to the Hub (its status, each checkpoint, the run's files, the marker, ``latest``,
  the push): ``Guard.check``. A takedown writes the record, then lists and deletes. So for
  every write of the run, either the run's check comes after the record and finds it, and the
  run removes the whole bot itself (S3 and the Hub) and stops with exit 12; or the check came
  before the record, so the write came before the takedown's listing, which deletes it. Only a
  run killed between a write and its check can leave that one write (its status says running
  or stale; a second takedown removes it).
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from job.atomic import _alive
from job.cloud.hub import remove_repo
from job.cloud.runs import RUN_ID, now
from job.cloud.status import (
    STALE_AFTER_SECONDS,
    Input,
    Status,
    as_seen,
    read_status,
    seconds_since,
    write_status,
)
from job.config import WANDB_PROJECT
from job.data.handles import is_bot_name, validate_handle
from job.errors import CredentialsError, JobError, OptedOut
from job.spec import jobs, load_manifest
from job.storage import LocalStorage, S3Storage, Storage, get_json, open_storage

log = logging.getLogger(__name__)

OPT_OUT = "_opt-out/"
# What a bot's folder holds (cloud/runs.py, run.py): a folder named like a bot that holds
# anything else (an `inputs/` folder at the bucket's root, when a handle is "inputs") is not
# taken for one: the takedown names it and leaves it.
BOT_FILES = {"status.json", "latest.json", "job.json", "predictions.json", "card.json"}
BOT_FOLDERS = {"data", "model", "checkpoints"}
HubRemove = Callable[[str, bool], str]
WandbRemove = Callable[[str, str], list[str]]


def opt_out_key(handle: str) -> str:
    return f"{OPT_OUT}{validate_handle(handle).lower()}.json"


# Past this many handles (a submit of thousands), one listing of the opt-out folder costs less
# than a read per handle (10,000 reads: ~30 s against moto here).
LIST_ABOVE = 20


def opted_out(storage: Storage, handles: list[str]) -> tuple[str, dict[str, Any]] | None:
    """The first of ``handles`` with an opt-out record under ``storage``, with the record."""
    keyed = [(h, opt_out_key(h)) for h in handles]
    if len(keyed) > LIST_ABOVE:
        listed = set(storage.list(OPT_OUT))
        keyed = [(h, k) for h, k in keyed if k in listed]
    for handle, key in keyed:
        data = storage.get_bytes(key)
        if data is not None:
            try:  # a damaged record still opts the handle out: it was written for a reason
                record = json.loads(data)
            except ValueError:
                record = {}
            return handle, record if isinstance(record, dict) else {}
    return None


def check_not_opted_out(storage: Storage, handles: list[str]) -> None:
    """Refuse the first handle of ``handles`` that has an opt-out record under ``storage``."""
    found = opted_out(storage, handles)
    if found is not None:
        handle, record = found
        when = str(record.get("at", "?"))[:40]
        raise OptedOut(
            f"@{handle} asked not to be made into a bot (opt-out recorded {when} at"
            f" {storage.uri.rstrip('/')}/{opt_out_key(handle)}); no bot of theirs will be made"
        )


def opt_out(storage: Storage, handle: str, reason: str | None, requested_by: str | None) -> dict:
    """Record the opt-out (kept as first written when one exists: its date is when they asked)."""
    key = opt_out_key(handle)
    found = opted_out(storage, [handle])
    if found is not None and found[1]:
        return found[1]
    record = {"handle": handle, "at": now(), "reason": reason, "requested_by": requested_by}
    storage.put_bytes(key, json.dumps(record, indent=2).encode())
    return record


def bot_of_folder(folder: str) -> str | None:
    """The bot a top-level folder belongs to: ``<bot>``, a local run's scratch ``.<bot>``, or
    the result a killed local run left aside, ``.<bot>.old`` (atomic.replace_dir)."""
    name = folder
    if name.startswith("."):
        name = name[1:].removesuffix(".old")
    return name if is_bot_name(name) else None


def bots_of(storage: Storage, handle: str) -> tuple[list[str], list[str]]:
    """The folders under ``storage`` of every bot whose users include ``handle`` (any case),
    and the folders named so that do not hold a bot's files (left, and named)."""
    wanted = handle.lower()
    children: dict[str, set[str]] = {}
    for key in storage.list(""):
        parts = key.split("/")
        if len(parts) > 1:
            children.setdefault(parts[0], set()).add(parts[1])
    bots: list[str] = []
    odd: list[str] = []
    for folder, inside in sorted(children.items()):
        bot = bot_of_folder(folder)
        if bot is None or wanted not in bot.lower().split("-"):
            continue
        shaped = folder.startswith(".") or all(
            c in BOT_FILES or c in BOT_FOLDERS or c.startswith(".") or RUN_ID.fullmatch(c)
            for c in inside
        )
        (bots if shaped else odd).append(folder)
    return bots, odd


@dataclass
class Removed:
    """What removing one bot did, for the takedown's report."""

    bot: str
    running: str | None = None  # how it was running, when it was
    hub: list[str] = field(default_factory=list)  # "deleted owner/name" or "made private ..."
    wandb: list[str] = field(default_factory=list)  # entity/project/run, deleted with artifacts
    inputs: list[str] = field(default_factory=list)  # the person's input files, deleted
    kept: list[str] = field(default_factory=list)  # inputs it may not delete, with the command
    objects: int = 0


@dataclass
class Takedown:
    handle: str
    opt_out: dict
    removed: list[Removed] = field(default_factory=list)
    odd: list[str] = field(default_factory=list)  # folders named like a bot, holding other files

    @property
    def bots(self) -> list[str]:
        return [r.bot for r in self.removed]

    def lines(self) -> str:
        head = f"@{self.handle}: opted out"
        odd = [
            f"  left: {f}/ is named like a bot of @{self.handle} but holds other files;"
            " check it by hand"
            for f in self.odd
        ]
        if not self.removed:
            return "\n".join([f"{head}; no bot of theirs was found (nothing to remove)", *odd])
        out = [f"{head}; removed {len(self.removed)} bot folder(s): {', '.join(self.bots)}"]
        for r in self.removed:
            if r.running:
                out.append(
                    f"  {r.bot}: was running ({r.running}); it finds the opt-out before it"
                    " publishes and removes what it wrote; run this takedown again once it"
                    " has ended to be sure"
                )
            out += [f"  hub: {h}" for h in r.hub]
            out += [f"  wandb: deleted {w} and its artifacts" for w in r.wandb]
            out += [f"  input: deleted {i}" for i in r.inputs]
            out += [f"  input: NOT deleted {k}" for k in r.kept]
        out.append(f"  storage: {sum(r.objects for r in self.removed)} object(s) deleted")
        return "\n".join(out + odd)


def takedown(
    storage: Storage,
    handle: str,
    *,
    reason: str | None = None,
    requested_by: str | None = None,
    keep_private: bool = False,
    hub_remove: HubRemove | None = None,
    wandb_remove: WandbRemove | None = None,
    wandb_project: str = WANDB_PROJECT,
) -> Takedown:
    """Opt ``handle`` out and remove every bot that holds it (see the module's docstring).
    ``hub_remove(repo, keep_private)`` deletes (or hides) a Hub repo and says what it did;
    ``wandb_remove(project, group)`` deletes a bot's W&B runs (None: no W&B key was given)."""
    done = Takedown(handle, opt_out(storage, handle, reason, requested_by))
    bots, done.odd = bots_of(storage, handle)
    for bot in bots:
        done.removed.append(
            remove_bot(
                storage,
                bot,
                handle,
                keep_private=keep_private,
                hub_remove=hub_remove,
                wandb_remove=wandb_remove,
                wandb_project=wandb_project,
            )
        )
    return done


def remove_bot(
    storage: Storage,
    bot: str,
    handle: str,
    *,
    keep_private: bool = False,
    hub_remove: HubRemove | None = None,
    wandb_remove: WandbRemove | None = None,
    wandb_project: str = WANDB_PROJECT,
    check_wandb: bool = True,
) -> Removed:
    """Everything of one bot folder: its Hub repos, W&B runs, ``handle``'s inputs, its files."""
    if hub_remove is None:
        hub_remove = remove_repo
    keys = storage.list(f"{bot}/")
    group = bot_of_folder(bot) or bot  # the W&B group: the bot's name
    projects, online, recorded = _published(storage, keys)
    if wandb_remove is None and online and check_wandb:
        raise CredentialsError(
            f"{bot} logged to W&B online (project {', '.join(sorted(projects))}); set"
            " WANDB_API_KEY (and WANDB_ENTITY if not the key's own) and run the takedown"
            " again, so its runs and artifacts go too"
        )
    status = read_status(storage, bot) if not bot.startswith(".") else None
    done = Removed(bot, running=_running(storage, bot, status))
    if status is not None:
        for repo in status.hub.every_repo():
            done.hub.append(hub_remove(repo, keep_private))
    if wandb_remove is not None and not bot.startswith("."):
        for project in sorted(projects | {wandb_project}):
            done.wandb += wandb_remove(project, group)
    given = [*(status.inputs if status else []), *recorded]
    uris = sorted({i.uri for i in given if i.uri and i.handle.lower() == handle.lower()})
    if status is not None and status.manifest and not given:  # a record of an older version
        uris = _manifest_inputs(status.manifest, group, handle)
    for uri in uris:
        _remove_input(storage, uri, done)
    # Readers first lose latest.json, then the runs; the status, which names the Hub repos,
    # goes last.
    ordered = sorted(
        keys, key=lambda k: (k.endswith("/status.json"), not k.endswith("/latest.json"))
    )
    for key in ordered:
        storage.delete(key)
    if isinstance(storage, LocalStorage):  # what a listing leaves: empty folders, *.tmp files
        shutil.rmtree(storage.root / bot, ignore_errors=True)
    done.objects = len(keys)
    log.info("took down %s (%d objects)", bot, len(keys))
    return done


def _running(storage: Storage, bot: str, status: Status | None) -> str | None:
    """How ``bot`` is being made right now, if it is: a live S3 record, or a local lock."""
    if status is not None:
        at = time.time()
        if as_seen(status, at).state == "running":
            return f"run {status.run_id}, heartbeat {status.heartbeat_at}"
        # succeeded, with its push recorded as under way within a live run's heartbeat
        since = seconds_since(status.updated_at, at)
        pushing = status.state == "succeeded" and status.hub.state == "pending"
        if pushing and since is not None and since <= STALE_AFTER_SECONDS:
            return f"run {status.run_id}, pushing to the Hub since {status.updated_at}"
        return None
    if isinstance(storage, LocalStorage) and bot.startswith("."):
        try:
            holder = json.loads((storage.root / bot / "lock").read_text(encoding="utf-8"))
            pid = int(holder["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return f"pid {pid}" if _alive(pid) else None
    return None


def _published(storage: Storage, keys: list[str]) -> tuple[set[str], bool, list[Any]]:
    """From a bot's ``job.json`` files: the W&B projects its runs name, whether any logged
    online, and the inputs each run recorded."""
    projects, online, inputs = set(), False, []
    for key in keys:
        record = get_json(storage, key) if key.endswith("/job.json") else None
        if record is None:  # not a job.json, or a damaged one
            continue
        config = (record.get("config") or {}).get("wandb") or {}
        projects.add(str(config.get("project") or WANDB_PROJECT))
        online |= (record.get("wandb") or {}).get("mode") == "online"
        for given in record.get("inputs") or []:
            if isinstance(given, dict) and isinstance(given.get("handle"), str):
                inputs.append(Input.model_validate({"source": "?", **given}))
    return projects, online, inputs


def _deletable(storage: Storage, uri: str) -> tuple[Storage, str] | None:
    """Where the takedown may delete ``uri``: under the output, or (S3) under the bucket's
    ``inputs/`` folder, where docs/batch.md puts inputs. Elsewhere is not the job's."""
    if isinstance(storage, S3Storage):
        if uri.startswith(storage.uri) and len(uri) > len(storage.uri):
            return storage, uri[len(storage.uri) :]
        inputs = f"s3://{storage.bucket}/inputs/"
        if uri.startswith(inputs) and len(uri) > len(inputs):
            return open_storage(f"s3://{storage.bucket}"), uri[len(f"s3://{storage.bucket}/") :]
        return None
    if isinstance(storage, LocalStorage) and not uri.startswith("s3://"):
        root, path = storage.root.resolve(), Path(uri).resolve()
        if root in path.parents:
            return storage, path.relative_to(root).as_posix()
    return None


def _remove_input(storage: Storage, uri: str, done: Removed) -> None:
    quoted = shlex.quote(uri)  # a URI from a manifest: a pasted command must do only this
    how = f"aws s3 rm {quoted}" if uri.startswith("s3://") else f"rm -- {quoted}"
    place = _deletable(storage, uri)
    if place is None:
        done.kept.append(f"{uri}: outside the output and inputs/; remove it with: {how}")
        return
    where, key = place
    try:
        if key in where.list(key):  # else gone: an earlier takedown stopped after it
            where.delete(key)
            done.inputs.append(uri)
    except CredentialsError:
        done.kept.append(f"{uri}: access denied; remove it with: {how}")


def _manifest_inputs(manifest: str, bot: str, handle: str) -> list[str]:
    """The inputs a manifest gave ``handle`` in ``bot``: for records written before the status
    named its inputs."""
    try:
        spec = load_manifest(manifest)
    except JobError as e:  # gone or changed: what it named cannot be known
        log.warning("takedown: %s unreadable (%s); its inputs stay", manifest, e)
        return []
    return [
        user.uri
        for job in jobs(spec)
        if job.bot == bot
        for user in job.users
        if user.handle.lower() == handle.lower() and user.uri
    ]


class Guard:
    """A run's side of the race with a takedown (module docstring): ``check()`` after each
    write; when one of the bot's people has opted out, it removes the whole bot (its folder,
    its Hub repos), records why in its status, and raises OptedOut."""

    def __init__(self, storage: Storage, bot: str, handles: list[str]) -> None:
        self.storage, self.bot, self.handles = storage, bot, handles

    def check(self, after: str) -> None:
        found = opted_out(self.storage, self.handles)
        if found is None:
            return
        handle = found[0]
        bots = [self.bot, f".{self.bot}"] if isinstance(self.storage, LocalStorage) else [self.bot]
        for bot in bots:
            remove_bot(self.storage, bot, handle, check_wandb=False)
        reason = (
            f"@{handle} opted out while the bot was being made (found after {after}); nothing"
            " of it was published, and what the run wrote was removed"
        )
        if not isinstance(self.storage, LocalStorage):
            write_status(self.storage, self.bot, "failed", fresh=True, reason=reason)
        raise OptedOut(f"{self.bot}: {reason}")

    def quiet(self) -> bool:
        """For the heartbeat: whether the bot may still be written to (no opt-out yet)."""
        return opted_out(self.storage, self.handles) is None
