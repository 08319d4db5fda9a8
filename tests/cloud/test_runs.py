"""Runs under the output prefix: files first, the marker last, latest.json after it."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from job.cloud.runs import MARKER, latest_complete, new_run_id, upload_run
from job.storage import LocalStorage
from tests.helpers import get_json


def bot_folder(root: Path) -> Path:
    bot = root / "alice"
    (bot / "model").mkdir(parents=True)
    (bot / "data").mkdir()
    (bot / "model" / "model.safetensors").write_bytes(b"weights")
    (bot / "model" / "README.md").write_text("card")
    for name in ("predictions.json", "job.json", "data/stats.json", "data/clean.jsonl"):
        (bot / name).write_text(json.dumps({"name": name}))
    (bot / "wandb").mkdir()
    (bot / "wandb" / "local.log").write_text("not published")
    return bot


def test_run_ids_are_new_each_attempt_and_name_the_fingerprint() -> None:
    a, b = new_run_id("f" * 64), new_run_id("f" * 64)
    assert a != b and re.fullmatch(r"\d{8}T\d{12}Z-ffffffff", a)


R1 = "20261201T120000123456Z-abcdef12"  # as new_run_id makes them


def test_upload_lists_every_file_in_the_marker_then_moves_latest(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "out")
    marker = upload_run(storage, "alice", R1, bot_folder(tmp_path / "work"), "fp")
    assert set(marker["files"]) == {
        "model/model.safetensors",
        "model/README.md",
        "predictions.json",
        "job.json",
        "data/stats.json",
        "data/clean.jsonl",
    }  # W&B's local files are not published
    weights = marker["files"]["model/model.safetensors"]
    assert weights == {"bytes": 7, "sha256": hashlib.sha256(b"weights").hexdigest()}
    assert get_json(storage, f"alice/{R1}/{MARKER}") == marker
    assert get_json(storage, "alice/latest.json")["run_id"] == R1
    assert latest_complete(storage, "alice").model_dump() == marker


def test_latest_without_its_marker_is_not_complete(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "out")
    upload_run(storage, "alice", R1, bot_folder(tmp_path / "work"), "fp")
    storage.delete(f"alice/{R1}/{MARKER}")
    assert latest_complete(storage, "alice") is None
    assert latest_complete(storage, "nobody") is None


def test_latest_only_moves_forward(tmp_path: Path) -> None:
    """Two attempts at once: the one started later finishes first; the earlier one's finish
    must not move latest back to it."""
    storage = LocalStorage(tmp_path / "out")
    earlier, later = new_run_id("a" * 64), new_run_id("b" * 64)
    upload_run(storage, "alice", later, bot_folder(tmp_path / "w1"), "fp")
    marker = upload_run(storage, "alice", earlier, bot_folder(tmp_path / "w2"), "fp")
    assert get_json(storage, "alice/latest.json")["run_id"] == later
    assert get_json(storage, f"alice/{earlier}/{MARKER}") == marker  # still whole, still there


@pytest.mark.parametrize(
    "latest",
    [b"", b"not json", b"[]", b'{"run_id": 7}', b'{"run_id": "../../x"}', b'{"run_id": null}'],
)
def test_a_damaged_latest_json_reads_as_no_published_run(tmp_path: Path, latest: bytes) -> None:
    """Anyone who can write to the output can damage a record: the bot is made again (a new
    run id, nothing overwritten), never a crash."""
    storage = LocalStorage(tmp_path / "out")
    upload_run(storage, "alice", R1, bot_folder(tmp_path / "work"), "fp")
    storage.put_bytes("alice/latest.json", latest)
    assert latest_complete(storage, "alice") is None
    later = new_run_id("b" * 64)
    upload_run(storage, "alice", later, bot_folder(tmp_path / "w2"), "fp")
    assert latest_complete(storage, "alice").run_id == later
