"""Checkpoints that survive spot interruptions, and resuming from them.

- The Trainer saves ``checkpoint-<step>/`` every N steps if asked, else every ten minutes of
  training (a short run writes none: a gpt2-xl checkpoint is ~20 GB), and when SIGTERM
  arrives (AWS gives ~120 s before the kill, Kubernetes 30 s by default): the step in
  progress finishes, the checkpoint is written, the job exits with the transient code and
  the platform's retry resumes from it.
- A checkpoint counts once its ``_COMPLETE`` marker exists: a save cut off by the kill is
  ignored. The last ``keep`` complete ones are kept. Each marker names the checkpoint's
  fingerprint: only ours are resumed, whatever else shares the folder.
- In batch mode each checkpoint is mirrored to ``OUTPUT/<bot>/checkpoints/`` (every node uploads
  its own ZeRO shards, rank 0 writes the marker last), because a retried attempt starts on a
  fresh machine. Checkpoints belong to one fingerprint (data and training config): others are
  discarded, never resumed.
- The W&B run id is stored with them, so the resumed attempt continues the same W&B run.
- A damaged checkpoint (its marker, metadata or trainer state not a record of its shape, a file
  its marker lists missing or of another size, a shard on S3 missing or changed) is discarded
  with one line, and training resumes from the one before it, or starts again: never a
  failure on every retry. Every record is read through job/records.py.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import ConfigDict, Field, RootModel

from job.atomic import write_json
from job.deadline import deadline
from job.errors import CorruptInput
from job.records import Record, read_or_none, read_record
from job.storage import MARKER, LocalStorage, Storage, download, put_json, sha256_file
from job.training import distributed

log = logging.getLogger(__name__)
_STEP = re.compile(r"checkpoint-(\d+)")
LISTING = "_FILES-"  # _FILES-<rank>: the files one node uploaded, and their SHA-256


TRAINER_STATE = "trainer_state.json"  # the Trainer's own record of a checkpoint


class Marker(Record):
    """``checkpoint-<step>/_COMPLETE``: whole, of this fingerprint, and (since this version)
    the files rank 0 wrote, with their sizes."""

    step: int = Field(ge=0)
    fingerprint: str
    batch_size: int | None = Field(None, ge=1)
    files: dict[str, int] | None = None


class Meta(Record):
    """``meta.json``: the fingerprint and what a run remembers (its W&B run id)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    fingerprint: str | None = None


class TrainerState(Record):
    global_step: int = Field(ge=0)


class Listing(RootModel[dict[str, str]]):
    """``_FILES-<rank>``: one node's files of a checkpoint and their SHA-256."""


def _record(folder: Path, name: str, model: type[Any]) -> Any:
    """A record in a local folder (records.py), None where absent or damaged."""
    return read_or_none(LocalStorage(folder), name, model)


# With several processes, the ranks agree on "save now?" (SIGTERM, the checkpoint clock) every
# AGREE_EVERY steps, not every step: each agreement is a collective plus a read back to the
# host, which stops the CPU from queuing the next step on the GPU. SIGTERM is then honoured
# within 8 steps: ~1 s for gpt2-xl on an H200, well inside the 120 s grace the infra gives.
# One process agrees with itself for free, every step.
AGREE_EVERY = 8


class Cadence:
    """When a checkpoint is due: every ``steps`` steps, or else every ``seconds`` of training.

    Every rank must agree on the step to save at (saving is collective under ZeRO), so the
    time-based decision is rank 0's, shared with the others every ``AGREE_EVERY`` steps.
    """

    def __init__(
        self, steps: int, seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.steps, self.seconds, self.clock = steps, seconds, clock
        self.last = clock()

    def __call__(self, step: int) -> bool:
        if self.steps > 0:
            return step % self.steps == 0
        due = self.clock() - self.last >= self.seconds
        if distributed.ranks().world > 1:
            if step % AGREE_EVERY:
                return False
            due = bool(distributed.share(due))
        if due:
            self.last = self.clock()
        return due


class Checkpoints:
    def __init__(
        self,
        folder: Path,
        fingerprint: str,
        keep: int = 3,
        storage: Storage | None = None,
        prefix: str = "",
        guard: Callable[[str], None] | None = None,
    ) -> None:
        self.folder, self.fingerprint, self.keep = folder, fingerprint, keep
        self.storage, self.prefix = storage, prefix.rstrip("/") + "/" if prefix else ""
        # Called after each write to storage: a takedown meanwhile stops the run (consent.py)
        self.guard = guard

    # -- before training ---------------------------------------------------------------------

    def latest(self) -> Path | None:
        """The newest complete checkpoint of this fingerprint, fetched from storage if needed."""
        r = distributed.ranks()
        if r.local_rank == 0:
            with deadline("output", "fetching the latest checkpoint"):
                self._sync_down()
        distributed.barrier()
        chosen = self._sound() if r.main else None
        if r.world > 1:  # rank 0 decides: every rank resumes the same step
            chosen = distributed.share(chosen)
        return chosen

    def _sound(self) -> Path | None:
        """The newest complete checkpoint of ours that is not damaged; damaged ones go."""
        marked = [p for p in self.folder.glob("checkpoint-*") if (p / MARKER).is_file()]
        for path in sorted(marked, key=_step, reverse=True):
            marker = _record(path, MARKER, Marker)
            if marker is not None and marker.fingerprint != self.fingerprint:
                continue  # another run's, beside ours: not resumed, not ours to remove
            why = damage(path)
            if why is None:
                return path
            log.warning("%s is damaged (%s): discarded, and the one before used", path.name, why)
            shutil.rmtree(path, ignore_errors=True)
        return None

    def _ours(self, marker: Path) -> bool:
        """Complete, and of this fingerprint: another run writing into the same folder (other
        seed, other tweets) may have left checkpoints of its own beside ours."""
        found = _record(marker.parent, marker.name, Marker)
        return found is not None and found.fingerprint == self.fingerprint

    def _sync_down(self) -> None:
        meta = self._read_meta()
        if meta.get("fingerprint") != self.fingerprint:
            if meta:
                log.info("discarding checkpoints of other data or config")
            shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.storage is None:
            return
        meta_remote = read_or_none(self.storage, self.prefix + "meta.json", Meta)
        if meta_remote is None or meta_remote.fingerprint != self.fingerprint:
            return
        self._write_meta(meta_remote.model_dump())
        for step in reversed(self._remote_steps(self.storage.list(self.prefix))):
            name = f"checkpoint-{step}"
            marker = read_or_none(self.storage, f"{self.prefix}{name}/{MARKER}", Marker)
            if marker is None or marker.fingerprint != self.fingerprint:
                continue
            if self._ours(self.folder / name / MARKER) and damage(self.folder / name) is None:
                return
            try:
                self._fetch(name, marker)
                return
            except CorruptInput as e:  # a shard gone or changed: the one before, or none
                log.warning("%s on %s is damaged (%s): discarded", name, self.storage.uri, e)
                shutil.rmtree(self.folder / name, ignore_errors=True)
                self.storage.delete(*self.storage.list(f"{self.prefix}{name}/"))

    def _fetch(self, name: str, marker: Marker) -> None:
        """``name`` from storage, each file checked against its node's listing."""
        assert self.storage is not None
        log.info("fetching %s from %s", name, self.storage.where(self.prefix))
        # Each uploading node listed its files with their SHA-256: nothing else is taken, and
        # a file someone changed under the output prefix is refused, not resumed from.
        remote = f"{self.prefix}{name}/"
        listed: dict[str, str] = {}
        for key in self.storage.list(remote):
            if PurePosixPath(key).name.startswith(LISTING):
                listing = read_record(self.storage, key, Listing)  # damaged: CorruptInput
                listed.update(listing.root if listing else {})
        download(self.storage, remote, self.folder / name, expected=listed)
        (self.folder / name / MARKER).write_text(marker.model_dump_json(exclude_none=True))

    @staticmethod
    def batch_of(checkpoint: Path) -> int | None:
        """The blocks per device the checkpoint's run trained at, where its marker says."""
        marker = _record(checkpoint, MARKER, Marker)
        return marker.batch_size if marker is not None else None

    @staticmethod
    def _remote_steps(keys: list[str]) -> list[int]:
        """Steps of the complete checkpoints among the keys, oldest first."""
        return sorted(
            {int(m.group(1)) for k in keys if k.endswith("/" + MARKER) and (m := _STEP.search(k))}
        )

    # -- during training ---------------------------------------------------------------------

    def saved(self, step: int, batch: int | None = None) -> None:
        """Called on every rank after the Trainer wrote ``checkpoint-<step>``, trained at
        ``batch`` blocks per device (kept in the marker: batch_of)."""
        path = self.folder / f"checkpoint-{step}"
        r = distributed.ranks()
        if self.storage is not None and r.local_rank == 0:
            with deadline("output", f"uploading checkpoint {step}"):
                self._upload(path, step, r.rank)
        distributed.barrier()
        self._mark(path, step, batch)

    def _upload(self, path: Path, step: int, rank: int) -> None:
        """This node's files of the checkpoint, then their listing."""
        assert self.storage is not None
        listing = {}
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            self.storage.put_file(f"{self.prefix}{f.relative_to(self.folder).as_posix()}", f)
            listing[f.relative_to(path).as_posix()] = sha256_file(f)
        # this node's files, after them: a resume checks what it downloads against these
        put_json(self.storage, f"{self.prefix}checkpoint-{step}/{LISTING}{rank}", listing)

    def _mark(self, path: Path, step: int, batch: int | None) -> None:
        """Rank 0, once every node's files are up: the marker, here and in storage."""
        if not distributed.ranks().main:
            return
        marker: dict[str, Any] = {"step": step, "fingerprint": self.fingerprint}
        if batch is not None:
            marker["batch_size"] = batch
        # what this node wrote, by size: a resume finds a file gone or cut short (damage())
        marker["files"] = {
            p.relative_to(path).as_posix(): p.stat().st_size
            for p in sorted(path.rglob("*"))
            if p.is_file() and p.name != MARKER
        }
        (path / MARKER).write_text(json.dumps(marker))
        if self.storage is not None:
            put_json(self.storage, f"{self.prefix}checkpoint-{step}/{MARKER}", marker)
            self._prune_remote()
            if self.guard is not None:
                self.guard(f"checkpoint {step}")
        log.info("checkpoint at step %d", step)

    def prune_local(self) -> None:
        """The newest ``keep`` checkpoints here, the older ones gone: what the Trainer does
        with its own (``save_total_limit``) for a trainer that has none (training/packs.py)."""
        for old in sorted(self.folder.glob("checkpoint-*"), key=_step)[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)

    def _prune_remote(self) -> None:
        assert self.storage is not None
        keys = self.storage.list(self.prefix)
        old = tuple(
            f"{self.prefix}checkpoint-{step}/" for step in self._remote_steps(keys)[: -self.keep]
        )
        if old:
            self.storage.delete(*(key for key in keys if key.startswith(old)))

    # -- metadata (fingerprint, W&B run id) ---------------------------------------------------

    def remember(self, **values: Any) -> None:
        meta = {**self._read_meta(), **values, "fingerprint": self.fingerprint}
        self._write_meta(meta)
        if self.storage is not None:
            put_json(self.storage, self.prefix + "meta.json", meta)
            if self.guard is not None:
                self.guard("the checkpoints' metadata")

    def recall(self, key: str) -> Any:
        meta = self._read_meta()
        return meta.get(key) if meta.get("fingerprint") == self.fingerprint else None

    def _read_meta(self) -> dict[str, Any]:
        """The local metadata; a damaged one reads as none (its checkpoints then go)."""
        meta = _record(self.folder, "meta.json", Meta)
        return meta.model_dump() if meta is not None else {}

    def _write_meta(self, meta: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json(self.folder / "meta.json", meta)

    def clear(self) -> None:
        """After a finished run: checkpoints are only for resuming it."""
        shutil.rmtree(self.folder, ignore_errors=True)
        if self.storage is not None:
            self.storage.delete(*self.storage.list(self.prefix))


def damage(path: Path) -> str | None:
    """What is wrong with the complete checkpoint ``path``, or None: its marker and trainer
    state must be records of their shape, and the files its marker lists there, at their
    sizes (a shard missing or cut short; an adapter of another rank has another size)."""
    marker = _record(path, MARKER, Marker)
    if marker is None:
        return "its marker cannot be read"
    if (path / TRAINER_STATE).exists() and _record(path, TRAINER_STATE, TrainerState) is None:
        return f"{TRAINER_STATE} cannot be read"
    for rel, size in (marker.files or {}).items():
        file = path / rel
        if ".." in PurePosixPath(rel).parts or not file.is_file():
            return f"{rel} is missing"
        if file.stat().st_size != size:
            return f"{rel} is {file.stat().st_size:,} bytes, not {size:,}"
    return None


def discard_incomplete(folder: Path) -> None:
    """Checkpoints a kill or a full disk cut off (no marker): never resumed, only space."""
    for path in folder.glob("checkpoint-*"):
        if not (path / MARKER).is_file():
            shutil.rmtree(path, ignore_errors=True)


def _step(path: Path) -> int:
    m = _STEP.search(path.name)
    return int(m.group(1)) if m else -1


class Preemption:
    """Turns SIGTERM into 'save a checkpoint after this step, then stop'."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> Preemption:
        self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGTERM, self._previous)

    def _handle(self, signum: int, frame: Any) -> None:
        log.warning("SIGTERM: saving a checkpoint after this step, then stopping")
        self.requested = True

    def agreed(self, step: int) -> bool:
        """True on every rank if SIGTERM reached any: all ranks must save the same step. With
        several processes they compare notes every ``AGREE_EVERY`` steps only."""
        import torch
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self.requested
        if step % AGREE_EVERY:
            return False
        flag = torch.tensor([1 if self.requested else 0])
        if torch.cuda.is_available():
            flag = flag.cuda()
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())
