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

from job.atomic import write_json
from job.deadline import deadline
from job.storage import MARKER, Storage, download, get_json, put_json, sha256_file
from job.training import distributed

log = logging.getLogger(__name__)
_STEP = re.compile(r"checkpoint-(\d+)")
LISTING = "_FILES-"  # _FILES-<rank>: the files one node uploaded, and their SHA-256


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

    def __init__(self, steps: int, seconds: float) -> None:
        self.steps, self.seconds = steps, seconds
        self.last = time.monotonic()

    def __call__(self, step: int) -> bool:
        if self.steps > 0:
            return step % self.steps == 0
        due = time.monotonic() - self.last >= self.seconds
        if distributed.ranks().world > 1:
            if step % AGREE_EVERY:
                return False
            due = bool(distributed.share(due))
        if due:
            self.last = time.monotonic()
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
        done = [p for p in self.folder.glob("checkpoint-*") if self._ours(p / MARKER)]
        return max(done, key=_step) if done else None

    def _ours(self, marker: Path) -> bool:
        """Complete, and of this fingerprint: another run writing into the same folder (other
        seed, other tweets) may have left checkpoints of its own beside ours."""
        if not marker.is_file():
            return False
        try:
            return bool(json.loads(marker.read_text()).get("fingerprint") == self.fingerprint)
        except (ValueError, AttributeError):
            return False

    def _sync_down(self) -> None:
        meta = self._read_meta()
        if meta.get("fingerprint") != self.fingerprint:
            if meta:
                log.info("discarding checkpoints of other data or config")
            shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.storage is None:
            return
        meta_remote = get_json(self.storage, self.prefix + "meta.json") or {}
        if meta_remote.get("fingerprint") != self.fingerprint:
            return
        self._write_meta(meta_remote)
        steps = self._remote_steps(self.storage.list(self.prefix))
        ours = [
            s
            for s in steps
            if (get_json(self.storage, f"{self.prefix}checkpoint-{s}/{MARKER}") or {}).get(
                "fingerprint"
            )
            == self.fingerprint
        ]
        if not ours:
            return
        name = f"checkpoint-{ours[-1]}"
        if self._ours(self.folder / name / MARKER):
            return
        log.info("fetching %s from %s%s", name, self.storage.uri, self.prefix)
        # Each uploading node listed its files with their SHA-256: nothing else is taken, and
        # a file someone changed under the output prefix is refused, not resumed from.
        remote = f"{self.prefix}{name}/"
        listed: dict[str, str] = {}
        for key in self.storage.list(remote):
            if PurePosixPath(key).name.startswith(LISTING):
                listed.update(get_json(self.storage, key) or {})
        download(self.storage, remote, self.folder / name, expected=listed)
        marker = get_json(self.storage, remote + MARKER)
        (self.folder / name / MARKER).write_text(json.dumps(marker))

    @staticmethod
    def batch_of(checkpoint: Path) -> int | None:
        """The blocks per device the checkpoint's run trained at, where its marker says."""
        try:
            batch = json.loads((checkpoint / MARKER).read_text()).get("batch_size")
        except (OSError, ValueError, AttributeError):
            return None
        return batch if isinstance(batch, int) else None

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
        (path / MARKER).write_text(json.dumps(marker))
        if self.storage is not None:
            put_json(self.storage, f"{self.prefix}checkpoint-{step}/{MARKER}", marker)
            self._prune_remote()
            if self.guard is not None:
                self.guard(f"checkpoint {step}")
        log.info("checkpoint at step %d", step)

    def _prune_remote(self) -> None:
        assert self.storage is not None
        keys = self.storage.list(self.prefix)
        steps = self._remote_steps(keys)
        for old in steps[: -self.keep]:
            for key in keys:
                if key.startswith(f"{self.prefix}checkpoint-{old}/"):
                    self.storage.delete(key)

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
        path = self.folder / "meta.json"
        return dict(json.loads(path.read_text())) if path.is_file() else {}

    def _write_meta(self, meta: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json(self.folder / "meta.json", meta)

    def clear(self) -> None:
        """After a finished run: checkpoints are only for resuming it."""
        shutil.rmtree(self.folder, ignore_errors=True)
        if self.storage is not None:
            for key in self.storage.list(self.prefix):
                self.storage.delete(key)


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
