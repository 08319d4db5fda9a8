"""Status records: one typed record per bot, one writer, a line per bot for `status`."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from job.cloud.status import (
    STALE_AFTER_SECONDS,
    HubStatus,
    Status,
    heartbeat,
    read_status,
    statuses,
    write_status,
)
from job.storage import LocalStorage


def test_the_writer_keeps_what_it_is_not_told_to_change(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    write_status(storage, "alice", "queued", manifest="s3://b/jobs/1.yaml")
    write_status(storage, "alice", "running", run_id="r1", hub=HubStatus(state="pending"))
    record = write_status(storage, "alice", "failed", reason="S3 error 500")
    assert (record.state, record.run_id, record.manifest) == ("failed", "r1", "s3://b/jobs/1.yaml")
    assert record.hub.state == "pending" and record.reason == "S3 error 500"
    assert read_status(storage, "alice") == record
    again = write_status(storage, "alice", "running", run_id="r2")
    assert again.reason is None  # a reason belongs to a failure only
    on_disk = json.loads((tmp_path / "alice" / "status.json").read_text())
    assert "reason" not in on_disk and on_disk["run_id"] == "r2"


def test_hub_push_is_tracked_apart_from_the_run(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    write_status(storage, "bob", "succeeded", run_id="r1")
    url = "https://hub/huggingtweets/bob/commit/abc"
    pushed = HubStatus(repo="huggingtweets/bob", state="pushed", run_id="r1", commit_url=url)
    record = write_status(storage, "bob", "succeeded", hub=pushed)
    assert record.hub.commit_url == url and record.state == "succeeded"
    assert record.line().startswith("bob  succeeded  r1  ") and record.line().endswith("hub:pushed")


def test_line_gives_the_reason(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    failed = HubStatus(state="failed", reason="the Hub said 503")
    record = write_status(storage, "carol", "succeeded", hub=failed)
    assert record.line().endswith("hub:failed  (the Hub said 503)")


def test_statuses_lists_every_bot_or_the_ones_asked(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    for bot in ("b", "a"):
        write_status(storage, bot, "queued")
    assert [s.bot for s in statuses(storage)] == ["a", "b"]
    assert statuses(storage, ["a", "zed"])[1] == Status(bot="zed", state="unknown")


def test_records_of_other_versions_still_read(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    record = {"bot": "old", "state": "succeeded", "some_future_key": 1, "hub": {"state": "off"}}
    (tmp_path / "old" / "status.json").write_text(json.dumps(record))
    status = read_status(LocalStorage(tmp_path), "old")
    assert status is not None and status.state == "succeeded"


def test_a_silent_running_record_shows_as_stale(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    write_status(storage, "dead", "running", run_id="r1")
    write_status(storage, "alive", "running", run_id="r2")
    record = json.loads((tmp_path / "dead" / "status.json").read_text())
    then = datetime.now(timezone.utc) - timedelta(seconds=STALE_AFTER_SECONDS + 60)
    record["heartbeat_at"] = then.isoformat(timespec="seconds")
    (tmp_path / "dead" / "status.json").write_text(json.dumps(record))
    dead, alive = statuses(storage, ["dead", "alive"])
    assert dead.state == "stale" and "no heartbeat for 16 min" in dead.line()
    assert alive.state == "running"
    with pytest.raises(ValueError):
        write_status(storage, "dead", "stale")  # derived, never written


def test_the_heartbeat_beats_and_stops_before_the_final_state(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    write_status(storage, "eve", "running", run_id="r1")
    first = read_status(storage, "eve")
    assert first is not None and first.heartbeat_at
    writes: list[str] = []
    beat_thrice = threading.Event()
    real_put = storage.put_bytes

    def put(key: str, data: bytes) -> None:
        writes.append(key)
        if len(writes) >= 3:
            beat_thrice.set()
        real_put(key, data)

    storage.put_bytes = put  # type: ignore[method-assign]
    with heartbeat(storage, "eve", "r1", every=0.01):
        assert beat_thrice.wait(30)  # it beats while the block runs: no sleep to guess at
    # the block ends with its beats: the thread is joined, so none can undo the final state
    assert not [t for t in threading.enumerate() if t.name == "heartbeat-eve"]
    write_status(storage, "eve", "succeeded", run_id="r1")
    final = read_status(storage, "eve")
    assert final is not None and final.state == "succeeded" and final.heartbeat_at is None


def test_a_fresh_record_carries_nothing_of_the_last_attempt_but_its_repos(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    failed = HubStatus(state="failed", reason="the Hub said 503", repo="o/r")
    write_status(storage, "fay", "failed", run_id="r1", perplexity=9.0, reason="x", hub=failed)
    record = write_status(storage, "fay", "running", fresh=True, run_id="r2")
    assert (record.perplexity, record.reason) == (None, None)
    # Only the repos it was pushed to carry over: a takedown must find every one of them.
    assert record.hub == HubStatus(repos=["o/r"])
    moved = write_status(storage, "fay", "succeeded", hub=HubStatus(repo="o/s", state="pushed"))
    assert moved.hub.repos == ["o/r", "o/s"] and moved.hub.every_repo() == ["o/r", "o/s"]
    off = write_status(storage, "fay", "running", fresh=True, run_id="r3")
    assert off.hub.every_repo() == ["o/r", "o/s"]
