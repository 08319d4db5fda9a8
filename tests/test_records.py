"""job/records.py: every record the job keeps in storage is read bounded (size, then depth),
then typed; a damaged one is one documented code (5), or read as what it still says."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest

from job import errors
from job.cloud.runs import latest_complete
from job.cloud.status import read_status
from job.records import MAX_DEPTH, MAX_RECORD_BYTES, AnyObject, DamagedRecord, depth, read_record
from job.storage import LocalStorage, open_storage
from tests.helpers import REPO


def test_absent_is_none_and_a_record_is_its_model(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    assert read_record(storage, "a/status.json", AnyObject) is None
    storage.put_bytes("a/status.json", b'{"state": "queued", "x": [1, {"y": "]"}]}')
    assert read_record(storage, "a/status.json", AnyObject).model_dump()["state"] == "queued"


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1]", "model_type"),  # of the wrong shape: not an object
        (b"[" * 100_000, "nested over"),
        (b'{"a": ' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1), "nested over"),
        (b'"' + b"x" * MAX_RECORD_BYTES + b'"', "over 1 MiB"),
    ],
    ids=["text", "not utf-8", "a list", "100,000 [", "33 levels", "over the size"],
)
def test_a_damaged_record_is_one_code_and_says_why(data: bytes, why: str, tmp_path) -> None:
    storage = LocalStorage(tmp_path)
    storage.put_bytes("bot/latest.json", data)
    started = time.monotonic()
    with pytest.raises(DamagedRecord) as caught:
        read_record(storage, "bot/latest.json", AnyObject)
    assert time.monotonic() - started < 2
    assert caught.value.exit_code == errors.CORRUPT_INPUT
    # where it is, with its slash: /tmp/x/bot/latest.json (it once lost it)
    assert f"{tmp_path}/bot/latest.json: a damaged record" in str(caught.value)
    assert why in str(caught.value) or why == "model_type"


def test_brackets_inside_strings_do_not_nest() -> None:
    assert depth(b'{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}') == 1
    assert depth(b'[[1], {"b": [2]}]') == 3
    assert depth(b'"\\"[[["') == 0


def test_a_record_on_s3_is_read_by_one_ranged_get(s3) -> None:
    """A 3 MiB status costs 1 MiB and a byte; an empty object has no byte 0 (S3's 416)."""
    client = boto3.client("s3")
    client.put_object(Bucket="results", Key="bots/a/status.json", Body=b" " * (3 << 20))
    client.put_object(Bucket="results", Key="bots/b/status.json", Body=b"")
    storage = open_storage("s3://results/bots")
    assert len(storage.get_bytes("a/status.json", limit=MAX_RECORD_BYTES)) == MAX_RECORD_BYTES + 1
    assert storage.get_bytes("b/status.json", limit=MAX_RECORD_BYTES) == b""
    assert read_status(storage, "a").state == "unknown"
    assert read_status(storage, "b").state == "unknown"


@pytest.mark.integration  # a process of its own: not the in-process tier
def test_a_sparse_gigabyte_status_costs_status_no_memory(tmp_path: Path) -> None:
    """`status` read a 1 GiB status.json whole (1.36 GB of memory); now 1 MiB of it, under an
    address-space cap that a whole read would break."""
    out = tmp_path / "out"
    (out / "big").mkdir(parents=True)
    with open(out / "big" / "status.json", "wb") as f:
        f.truncate(1 << 30)
    (out / "ok").mkdir()
    (out / "ok" / "status.json").write_text('{"bot": "ok", "state": "queued"}')
    code = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30));"
        "from job.cli import app; sys.argv = ['huggingtweets', 'status', '--output', sys.argv[1]];"
        "app()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    rows = [line.split("\t")[:2] for line in done.stdout.splitlines()[1:]]
    assert rows == [["big", "unknown"], ["ok", "queued"]]


@pytest.mark.parametrize(
    ("latest", "marker"),
    [
        (b'{"run_id": "RUN"}', b'{"run_id": "RUN", "fingerprint": 5, "files": {}}'),
        (b'{"run_id": "RUN"}', b'{"run_id": "RUN", "fingerprint": "f", "files": []}'),
        (b'{"run_id": "RUN"}', b'{"run_id": "RUN", "fingerprint": "f", "files": {"a": 1}}'),
        (b'{"run_id": "RUN"}', b"[" * 50_000),
        (b'{"run_id": ["RUN"]}', b'{"run_id": "RUN", "fingerprint": "f", "files": {}}'),
    ],
    ids=["fingerprint 5", "files a list", "a file of no hash", "deep", "run id a list"],
)
def test_a_marker_of_the_wrong_shape_names_no_complete_run(latest, marker, tmp_path) -> None:
    """`run --manifest` then makes the bot again (a new run id, nothing overwritten), and
    `publish` says there is no complete run (exit 4), never exit 1."""
    from tests.helpers.cli import invoke

    run = "20261201T120000123456Z-abcdef12"
    storage = LocalStorage(tmp_path / "out")
    storage.put_bytes("sam/latest.json", latest.replace(b"RUN", run.encode()))
    storage.put_bytes(f"sam/{run}/_COMPLETE", marker.replace(b"RUN", run.encode()))
    assert latest_complete(storage, "sam") is None
    done = invoke("publish", "sam", "--output", str(tmp_path / "out"))
    assert done.returncode == errors.INPUT_NOT_FOUND, done.stderr
    assert "no complete run" in done.stderr
