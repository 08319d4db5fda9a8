from __future__ import annotations

import json
from pathlib import Path

import pytest

from job.storage import LocalStorage
from job.training.checkpoints import MARKER, Cadence, Checkpoints


def test_cadence_by_steps() -> None:
    due = Cadence(steps=5, seconds=1e9)
    assert [s for s in range(1, 16) if due(s)] == [5, 10, 15]


def test_cadence_by_time() -> None:
    now = [100.0]
    due = Cadence(steps=0, seconds=600, clock=lambda: now[0])
    assert not due(1)
    now[0] += 599
    assert not due(2)
    now[0] += 1
    assert due(3) and not due(4)  # the clock restarts at each checkpoint
    now[0] += 600
    assert due(5)


def test_several_processes_agree_every_few_steps_not_every_step(monkeypatch) -> None:
    """The time-based decision is shared (a collective) only every AGREE_EVERY steps."""
    from job.training import checkpoints, distributed

    shared: list[bool] = []
    monkeypatch.setattr(distributed, "ranks", lambda: distributed.Ranks(0, 2, 0))
    monkeypatch.setattr(distributed, "share", lambda v: shared.append(v) or v)
    due = Cadence(steps=0, seconds=0.0)  # due at once: only the agreement holds it back
    k = checkpoints.AGREE_EVERY
    assert [s for s in range(1, 3 * k + 1) if due(s)] == [k, 2 * k, 3 * k]
    assert len(shared) == 3  # one collective per agreement, none in between


def write_checkpoint(folder: Path, step: int, complete: bool, fingerprint: str = "fp1") -> None:
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"w" * step)
    if complete:
        (path / MARKER).write_text(json.dumps({"step": step, "fingerprint": fingerprint}))


def test_latest_ignores_incomplete_and_other_fingerprints(tmp_path: Path) -> None:
    ck = Checkpoints(tmp_path / "ck", "fp1")
    ck.remember()
    write_checkpoint(tmp_path / "ck", 10, complete=True)
    write_checkpoint(tmp_path / "ck", 20, complete=False)  # cut off by the kill
    latest = ck.latest()
    assert latest is not None and latest.name == "checkpoint-10"
    other = Checkpoints(tmp_path / "ck", "fp2")  # new data or config: never resume those
    assert other.latest() is None and not (tmp_path / "ck" / "checkpoint-10").exists()


def test_mirror_to_storage_and_fetch_on_a_fresh_machine(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "s3")
    first = Checkpoints(tmp_path / "m1", "fp", keep=2, storage=store, prefix="bot/checkpoints")
    first.remember(wandb_train_run="abc")
    for step in (10, 20, 30):
        write_checkpoint(tmp_path / "m1", step, complete=False)
        first.saved(step, batch=32)
    remote = store.list("bot/checkpoints/")
    assert not any("checkpoint-10/" in k for k in remote)  # only the last two are kept
    assert "bot/checkpoints/checkpoint-30/_COMPLETE" in remote

    fresh = Checkpoints(tmp_path / "m2", "fp", storage=store, prefix="bot/checkpoints")
    latest = fresh.latest()
    assert latest is not None and latest.name == "checkpoint-30"
    assert (latest / "model.safetensors").read_bytes() == b"w" * 30
    assert fresh.recall("wandb_train_run") == "abc"
    assert Checkpoints.batch_of(latest) == 32  # the batch it trained at came along
    fresh.clear()
    assert store.list("bot/checkpoints/") == [] and not (tmp_path / "m2").exists()


def test_a_checkpoint_of_another_run_in_the_same_folder_is_not_resumed(tmp_path: Path) -> None:
    """Two runs into one --out: the folder's fingerprint says ours, its newest checkpoint is
    the other run's (seed 1's checkpoint-328 must not be resumed under seed 2)."""
    ours = Checkpoints(tmp_path / "ck", "seed-2")
    ours.remember()
    write_checkpoint(tmp_path / "ck", 100, complete=True, fingerprint="seed-2")
    write_checkpoint(tmp_path / "ck", 328, complete=True, fingerprint="seed-1")
    latest = ours.latest()
    assert latest is not None and latest.name == "checkpoint-100"


def test_a_checkpoint_changed_on_storage_is_refused_on_resume(tmp_path: Path, caplog) -> None:
    """Each node lists what it uploaded with its SHA-256; a resume on a fresh machine checks
    every file it downloads against that list. A checkpoint that fails it is discarded (here
    and on storage) with one line, and the one before it is used, or none: a retry never
    fails on it again."""
    store = LocalStorage(tmp_path / "s3")
    first = Checkpoints(tmp_path / "m1", "fp", storage=store, prefix="bot/checkpoints")
    first.remember()
    write_checkpoint(tmp_path / "m1", 10, complete=False)
    first.saved(10)
    assert "bot/checkpoints/checkpoint-10/_FILES-0" in store.list("bot/checkpoints/")
    store.put_bytes("bot/checkpoints/checkpoint-10/model.safetensors", b"tampered")
    fresh = Checkpoints(tmp_path / "m2", "fp", storage=store, prefix="bot/checkpoints")
    assert fresh.latest() is None
    assert "checkpoint-10" in caplog.text and "not the file its run's marker lists" in caplog.text
    assert not [k for k in store.list("bot/checkpoints/") if "checkpoint-10" in k]


# --- A damaged checkpoint is set aside, never a failure on every retry -----------------------


def saved(ck: Checkpoints, folder: Path, step: int) -> Path:
    """A checkpoint as the Trainer and ``saved`` leave it: files, trainer state, marker."""
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"w" * step)
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    ck.saved(step)
    return path


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: (p / "model.safetensors").unlink(),
        lambda p: (p / "model.safetensors").write_bytes(b"w"),
        lambda p: (p / "model.safetensors").write_bytes(b"w" * 999),
        lambda p: (p / "trainer_state.json").write_text("not json"),
        lambda p: (p / "trainer_state.json").write_text('{"global_step": "twenty"}'),
        lambda p: (p / MARKER).write_text('{"step": "x", "fingerprint": "fp1"}'),
    ],
    ids=[
        "a shard missing", "a shard cut short", "a shard of another size (another rank)",
        "trainer state not JSON", "trainer state of the wrong type", "a marker of the wrong type",
    ],
)  # fmt: skip
def test_a_damaged_checkpoint_is_discarded_and_the_one_before_used(damage, tmp_path, caplog):
    """Each was exit 1 on every rerun: a bad checkpoint was never set aside."""
    ck = Checkpoints(tmp_path / "ck", "fp1")
    ck.remember()
    saved(ck, tmp_path / "ck", 10)
    damage(saved(ck, tmp_path / "ck", 20))
    latest = Checkpoints(tmp_path / "ck", "fp1").latest()
    assert latest is not None and latest.name == "checkpoint-10"
    assert not (tmp_path / "ck" / "checkpoint-20").exists()
    if "marker" not in caplog.text:  # a marker it cannot read is simply not a complete one
        assert "checkpoint-20 is damaged" in caplog.text


@pytest.mark.parametrize("meta", [b"not json", b"[1]", b'{"fingerprint": 7}', b"[" * 100_000])
def test_damaged_metadata_starts_over(meta: bytes, tmp_path: Path) -> None:
    ck = Checkpoints(tmp_path / "ck", "fp1")
    ck.remember(wandb_train_run="abc")
    saved(ck, tmp_path / "ck", 10)
    (tmp_path / "ck" / "meta.json").write_bytes(meta)
    fresh = Checkpoints(tmp_path / "ck", "fp1")
    assert fresh.latest() is None  # not ours, as far as anyone can tell: gone
    assert fresh.recall("wandb_train_run") is None


def test_a_shard_missing_on_storage_falls_back_to_the_checkpoint_before(tmp_path: Path) -> None:
    """It was exit 5 on every retry."""
    store = LocalStorage(tmp_path / "s3")
    first = Checkpoints(tmp_path / "m1", "fp", keep=3, storage=store, prefix="bot/checkpoints")
    first.remember()
    for step in (10, 20):
        saved(first, tmp_path / "m1", step)
    store.delete("bot/checkpoints/checkpoint-20/model.safetensors")
    fresh = Checkpoints(tmp_path / "m2", "fp", storage=store, prefix="bot/checkpoints")
    latest = fresh.latest()
    assert latest is not None and latest.name == "checkpoint-10"
    assert not [k for k in store.list("bot/checkpoints/") if "checkpoint-20" in k]
