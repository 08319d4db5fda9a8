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
  handles joined with '-', local scratch ``.<bot>`` and a killed run's ``.<bot>.old`` too;
  what a bot leaves is named in job/inventory.py): every Hub repo its status names (all those
  it was ever pushed to; a damaged status's too, read from its bytes) that proves to be the
  bot's is deleted (or made private with ``keep_private``); with a W&B key, its W&B runs and
  their artifacts; the person's input files that the bot recorded, where the takedown may
  delete them (under the output, or the bucket's ``inputs/``), the others named with the
  command that removes them; then everything under ``OUTPUT/<bot>/``, the status last. The
  Hub goes first because the status names the repos: if the Hub fails, the bot's files stay
  and a rerun finishes the job. A bot that is running is said to be, and cannot publish.
- **A Hub repo is deleted only when it proves to be the bot's**: its name is the bot's (any
  owner; ``<bot>-merged`` for a merged copy), or its card on the Hub names the handle as its
  bot's (``huggingtweets.handles`` in the front matter the job writes, so a ``publish --repo``
  copy is found too). Whoever can write the output prefix can write a status; a record that
  names any other repo is reported, never obeyed.
- **The race**: a run checks the opt-out list after each thing it writes under the bot's folder
  or to the Hub (its status, each checkpoint, the run's files, the marker, ``latest``, the
  push): ``Guard.check``; every write that makes something public (the Hub commit, the merged
  copy) runs inside ``Guard.public``, which checks at the moment of commit and, on a commit that
  lost the race (or failed because the takedown deleted the repo under it), deletes what it made
  public and stops with exit 12. A takedown writes the record, then lists and deletes. So for
  every write of the run, either the run's check comes after the record and finds it, and the
  run removes the whole bot itself (S3 and the Hub) and stops with exit 12; or the check came
  before the record, so the write came before the takedown's listing, which deletes it. Only a
  run killed between a write and its check can leave that one write (its status says running or
  stale; a second takedown removes it).
"""

from __future__ import annotations

import logging
import shlex
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field

from job.atomic import _alive, json_bytes
from job.cloud import hub as hub_api
from job.cloud.runs import RUN_ID, now
from job.cloud.status import (
    STALE_AFTER_SECONDS,
    Input,
    Status,
    as_seen,
    read_status,
    seconds_since,
)
from job.config import WANDB_PROJECT
from job.data.handles import Handle, handles_in, holds
from job.errors import CredentialsError, JobError, OptedOut
from job.inventory import (
    BOT_FILES,
    BOT_FOLDERS,
    JOB,
    LATEST,
    STATUS,
    bot_of_folder,
    local_folders,
    repo_named_for,
)
from job.records import AnyObject, DamagedRecord, Record, read_or_none, read_record
from job.spec import jobs, load_manifest
from job.storage import LocalStorage, S3Storage, Storage, open_storage

log = logging.getLogger(__name__)

OPT_OUT = "_opt-out/"
HubRemove = Callable[[str, bool], str]
HubCard = Callable[[str], "list[str] | None"]  # the handles a repo's card names (hub.py)
WandbRemove = Callable[[str, str], list[str]]


def opt_out_key(handle: Handle) -> str:
    """Where ``takedown`` records the opt-out: the handle's lowercase key."""
    return f"{OPT_OUT}{handle.key}.json"


# Past this many handles (a submit of thousands), one listing of the opt-out folder costs less
# than two listings per handle (10,000 reads: ~30 s against moto here).
LIST_ABOVE = 20


def _opt_out_keys(storage: Storage, handles: list[Handle]) -> dict[str, str]:
    """Every opt-out record of ``handles`` by handle key, however its file name is cased (one
    written by hand as ``_opt-out/SourDough_Sam.json`` counts). Listed by the first letter in
    both cases, so a check costs one or two listings of a few keys, not the whole folder."""
    if len(handles) > LIST_ABOVE:
        prefixes = {OPT_OUT}
    else:
        prefixes = {OPT_OUT + c for h in handles for c in {h.key[0], h.key[0].upper()}}
    wanted = {h.key for h in handles}
    found: dict[str, str] = {}
    for prefix in sorted(prefixes):
        for key in storage.list(prefix):
            name = key[len(OPT_OUT) :].removesuffix(".json").lower()
            if key.endswith(".json") and name in wanted:
                found.setdefault(name, key)
    return found


def opted_out(storage: Storage, handles: list[Handle]) -> tuple[Handle, str, dict] | None:
    """The first of ``handles`` with an opt-out record under ``storage``: the handle, the
    record's key and the record. A damaged record still opts the handle out (it was written
    for a reason); it reads as empty."""
    found = _opt_out_keys(storage, handles)
    for handle in handles:
        key = found.get(handle.key)
        if key is None:
            continue
        try:
            record = read_record(storage, key, AnyObject)
        except DamagedRecord as e:
            log.warning("%s; it still opts %s out", e, handle.shown)
            record = None
        return handle, key, record.model_dump() if record is not None else {}
    return None


def check_not_opted_out(storage: Storage, handles: list[Handle]) -> None:
    """Refuse the first handle of ``handles`` that has an opt-out record under ``storage``."""
    found = opted_out(storage, handles)
    if found is not None:
        handle, key, record = found
        when = str(record.get("at", "?"))[:40]
        raise OptedOut(
            f"{handle.shown} asked not to be made into a bot (opt-out recorded {when} at"
            f" {storage.where(key)}); no bot of theirs will be made"
        )


def shown(storage: Storage, records: list[Status]) -> list[Status]:
    """Records as ``status`` shows them: a bot with no record whose person has opted out is
    ``opted out`` (a takedown removed its record, or a manifest's run refused it), not
    ``unknown``."""
    out = []
    for record in records:
        if record.state == "unknown" and record.reason is None:
            found = opted_out(storage, handles_in(record.bot) or [])
            if found is not None:
                why = f"@{found[0]} asked not to be made into a bot (huggingtweets takedown)"
                record = record.model_copy(update={"state": "opted out", "reason": why})
        out.append(record)
    return out


def opt_out(storage: Storage, handle: Handle, reason: str | None, requested_by: str | None) -> dict:
    """Record the opt-out (kept as first written when one exists: its date is when they asked)."""
    found = opted_out(storage, [handle])
    if found is not None and found[2]:
        return found[2]
    record = {"handle": handle.key, "at": now(), "reason": reason, "requested_by": requested_by}
    storage.put_bytes(opt_out_key(handle), json_bytes(record))
    return record


def bots_of(storage: Storage, handle: Handle) -> tuple[list[str], list[str]]:
    """The folders under ``storage`` of every bot whose users include ``handle`` (any case),
    and the folders named so that do not hold a bot's files (left, and named). A folder is a
    bot's when all it holds is what a bot leaves, or when it holds a file only the job writes
    (a status, ``latest.json``, a run's ``job.json``) or a run: a key planted beside a bot's
    files once made the takedown leave the whole bot, "to check by hand", and exit 0."""
    children: dict[str, set[str]] = {}
    for key in storage.list(""):
        parts = key.split("/")
        if len(parts) > 1:
            children.setdefault(parts[0], set()).add(parts[1])
    bots: list[str] = []
    odd: list[str] = []
    for folder, inside in sorted(children.items()):
        bot = bot_of_folder(folder)
        if bot is None or not holds(bot, handle):
            continue
        shaped = (
            folder.startswith(".")
            or any(c in BOT_FILES or RUN_ID.fullmatch(c) for c in inside)
            or all(c in BOT_FOLDERS or c.startswith(".") for c in inside)
        )
        (bots if shaped else odd).append(folder)
    return bots, odd


@dataclass
class Removed:
    """What removing one bot did, for the takedown's report."""

    bot: str
    running: str | None = None  # how it was running, when it was
    hub: list[str] = field(default_factory=list)  # "deleted owner/name" or "made private ..."
    unproven: list[str] = field(default_factory=list)  # repos a record named, not the bot's
    wandb: list[str] = field(default_factory=list)  # entity/project/run, deleted with artifacts
    inputs: list[str] = field(default_factory=list)  # the person's input files, deleted
    kept: list[str] = field(default_factory=list)  # inputs it may not delete, with the command
    denied: list[str] = field(default_factory=list)  # inputs whose delete was refused
    objects: int = 0


@dataclass
class Takedown:
    handle: Handle
    opt_out: dict
    removed: list[Removed] = field(default_factory=list)
    odd: list[str] = field(default_factory=list)  # folders named like a bot, holding other files

    @property
    def bots(self) -> list[str]:
        return [r.bot for r in self.removed]

    def lines(self) -> str:
        head = f"{self.handle.shown}: opted out"
        odd = [
            f"  left: {f}/ is named like a bot of {self.handle.shown} but holds other files;"
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
            out += [
                f"  hub: NOT removed {u}: {r.bot}'s record names it, but neither its name nor"
                f" its card says it is {r.bot}'s; check it by hand"
                for u in r.unproven
            ]
            out += [f"  wandb: deleted {w} and its artifacts" for w in r.wandb]
            out += [f"  input: deleted {i}" for i in r.inputs]
            out += [f"  input: NOT deleted {k}" for k in (*r.kept, *r.denied)]
        out.append(f"  storage: {sum(r.objects for r in self.removed)} object(s) deleted")
        return "\n".join(out + odd)

    def error(self) -> JobError | None:
        """What the takedown could not do that it should have: an input whose delete was
        refused (exit 9), after everything else was removed."""
        denied = [d for r in self.removed for d in r.denied]
        if denied:
            return CredentialsError(
                f"@{self.handle}: {len(denied)} input file(s) of theirs could not be deleted"
                f" (access denied), the first {denied[0]}"
            )
        return None


def takedown(
    storage: Storage,
    handle: Handle,
    *,
    reason: str | None = None,
    requested_by: str | None = None,
    keep_private: bool = False,
    hub_remove: HubRemove | None = None,
    hub_card: HubCard | None = None,
    wandb_remove: WandbRemove | None = None,
    wandb_project: str = WANDB_PROJECT,
) -> Takedown:
    """Opt ``handle`` out and remove every bot that holds it (see the module's docstring).
    ``hub_remove(repo, keep_private)`` deletes (or hides) a Hub repo and says what it did;
    ``hub_card(repo)`` reads the handles its card names; ``wandb_remove(project, group)``
    deletes a bot's W&B runs (None: no W&B key was given)."""
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
                hub_card=hub_card,
                wandb_remove=wandb_remove,
                wandb_project=wandb_project,
            )
        )
    return done


class _Wandb(Record):
    project: str | None = None


class _Config(Record):
    wandb: _Wandb = _Wandb()


class _Logged(Record):
    mode: str | None = None


class JobRecord(Record):
    """What a takedown reads of a run's ``job.json``: where it logged, whose inputs."""

    config: _Config = _Config()
    wandb: _Logged = _Logged()
    inputs: list[Input] = Field(default_factory=list)


def proven(repo: str, bot: str, handle: Handle, hub_card: HubCard) -> bool:
    """Whether ``repo`` is ``bot``'s, so a takedown of ``handle`` may delete it: by its name,
    or by its card on the Hub (module docstring)."""
    if repo_named_for(repo, bot):
        return True
    return handle.key in (hub_card(repo) or [])


def remove_bot(
    storage: Storage,
    bot: str,
    handle: Handle,
    *,
    keep_private: bool = False,
    hub_remove: HubRemove | None = None,
    hub_card: HubCard | None = None,
    wandb_remove: WandbRemove | None = None,
    wandb_project: str = WANDB_PROJECT,
    check_wandb: bool = True,
    also: list[str] | None = None,
) -> Removed:
    """Everything of one bot folder: its Hub repos (with ``also``: repos a run is writing,
    named by its own hand), W&B runs, ``handle``'s inputs, its files."""
    hub_remove = hub_remove or hub_api.remove_repo
    hub_card = hub_card or hub_api.card_handles
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
    repos = sorted({*(status.hub.every_repo() if status else []), *(also or [])})
    for repo in repos:
        if repo in (also or []) or proven(repo, group, handle, hub_card):
            done.hub.append(hub_remove(repo, keep_private))
        else:
            log.warning("%s: %s names the Hub repo %s, which is not the bot's", bot, STATUS, repo)
            done.unproven.append(repo)
    if wandb_remove is not None and not bot.startswith("."):
        for project in sorted(projects | {wandb_project}):
            done.wandb += wandb_remove(project, group)
    given = [*(status.inputs if status else []), *recorded]
    uris = sorted({i.uri for i in given if i.uri and i.handle.same(handle)})
    if status is not None and status.manifest and not given:  # a record of an older version
        uris = _manifest_inputs(status.manifest, group, handle)
    for uri in uris:
        _remove_input(storage, uri, done)
    # Readers first lose latest.json, then the runs (their markers first: storage.delete);
    # the status, which names the Hub repos, goes last: a takedown stopped halfway leaves
    # what its rerun finds.
    latest = [k for k in keys if k.endswith(f"/{LATEST}")]
    status_keys = [k for k in keys if k.endswith(f"/{STATUS}")]
    pointers = {*latest, *status_keys}
    runs = [k for k in keys if k not in pointers]
    for phase in (latest, runs, status_keys):
        if phase:
            storage.delete(*phase)
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
        holder = read_or_none(storage, f"{bot}/lock", _Lock)
        return f"pid {holder.pid}" if holder is not None and _alive(holder.pid) else None
    return None


class _Lock(Record):
    pid: int


def _published(storage: Storage, keys: list[str]) -> tuple[set[str], bool, list[Input]]:
    """From a bot's ``job.json`` files: the W&B projects its runs name, whether any logged
    online, and the inputs each run recorded. A damaged one is named and passed over (the
    status names the inputs too)."""
    projects, online, inputs = set(), False, []
    for key in keys:
        if not key.endswith(f"/{JOB}"):
            continue
        record = read_or_none(storage, key, JobRecord)
        if record is None:
            continue
        projects.add(record.config.wandb.project or WANDB_PROJECT)
        online |= record.wandb.mode == "online"
        inputs += record.inputs
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
        done.denied.append(f"{uri}: access denied; remove it with: {how}")


def _manifest_inputs(manifest: str, bot: str, handle: Handle) -> list[str]:
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
        if user.handle.same(handle) and user.uri
    ]


class Guard:
    """A run's side of the race with a takedown (module docstring): ``check()`` after each
    write, ``public()`` around each write that makes something public. When one of the bot's
    people has opted out, it removes the whole bot (its folders, its Hub repos) and raises
    OptedOut; it leaves no record of its own (a status would be a new trace)."""

    def __init__(self, storage: Storage, bot: str, handles: list[Handle]) -> None:
        self.storage, self.bot, self.handles = storage, bot, handles

    @classmethod
    def of(cls, storage: Storage, bot: str) -> Guard:
        """The guard of the bot named ``bot``: its people are in its name."""
        return cls(storage, bot, handles_in(bot) or [])

    def check(self, after: str) -> None:
        self._stop_if_opted_out(after, [])

    def also(self, names: list[Handle]) -> None:
        """The bot's people's other names (a Bluesky DID for a handle, and back), as a source
        reads them before any post: opted out under one, the bot is withdrawn as above."""
        found = opted_out(self.storage, names)
        if found is not None:
            self._withdraw(found[0], "asked not to be made into a bot", [])

    def _stop_if_opted_out(self, after: str, made: list[str]) -> None:
        found = opted_out(self.storage, self.handles)
        if found is not None:
            said = f"opted out while the bot was being made (found after {after})"
            self._withdraw(found[0], said, made)

    def _withdraw(self, handle: Handle, said: str, made: list[str]) -> None:
        local = isinstance(self.storage, LocalStorage)
        for i, bot in enumerate(local_folders(self.bot) if local else [self.bot]):
            remove_bot(self.storage, bot, handle, check_wandb=False, also=made if i == 0 else None)
        raise OptedOut(
            f"{self.bot}: {handle.shown} {said}; nothing of it was published, and what the run"
            " wrote was removed"
        )

    @contextmanager
    def public(self, what: str, made: list[str]) -> Iterator[None]:
        """Around a write that makes ``made`` (Hub repos) public: checked before, and at the
        moment of commit after; a write that lost the race, or failed because a takedown
        deleted what it wrote to, is undone (``made`` deleted) and ends in OptedOut."""
        self.check(f"the run up to {what}")
        try:
            yield
        except Exception as e:
            try:
                self._stop_if_opted_out(what, made)
            except OptedOut as stop:
                raise stop from e
            raise
        self._stop_if_opted_out(what, made)

    def quiet(self) -> bool:
        """For the heartbeat: whether the bot may still be written to (no opt-out yet)."""
        return opted_out(self.storage, self.handles) is None
