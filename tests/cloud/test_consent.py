"""Takedown and the opt-out list, against moto's S3 and the fake Hub (both on loopback)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from job import errors
from job.cloud.consent import opt_out_key
from job.cloud.status import HubStatus, write_status
from job.cloud.storage import Storage, get_json, open_storage
from tests.helpers.cli import invoke
from tests.helpers.twitter_api import TwitterAPI

TOKEN = "tw-consent-token"


def publish(storage: Storage, hub, bot: str) -> None:
    """A bot as a finished run leaves it: a run with its marker, latest.json, checkpoints,
    a status naming its Hub repo, and the repo on the Hub."""
    for key in ("r1/model/model.safetensors", "r1/_COMPLETE", "latest.json", "checkpoints/c"):
        storage.put_bytes(f"{bot}/{key}", b"x")
    repo = f"huggingtweets/{bot}"
    hub.state.repos[repo] = {"private": False}
    pushed = HubStatus(repo=repo, state="pushed", run_id="r1")
    write_status(storage, bot, "succeeded", run_id="r1", hub=pushed)


@pytest.fixture
def api(s3, hub, monkeypatch: pytest.MonkeyPatch) -> Iterator[TwitterAPI]:
    from job.cloud import hub as hub_module

    monkeypatch.setattr(hub_module, "BACKOFF_SECONDS", 0.01)
    with TwitterAPI(token=TOKEN) as server:
        monkeypatch.setenv("TWITTER_BEARER_TOKEN", TOKEN)
        monkeypatch.setenv("TWITTER_API_URL", server.url)
        yield server


def test_takedown_removes_every_bot_of_the_handle_and_keeps_them_out(api, hub, tmp_path) -> None:
    storage = open_storage("s3://results/bots")
    for bot in ("alice", "carol-alice", "bob"):
        publish(storage, hub, bot)

    result = invoke(
        *("takedown", "Alice", "--output", "s3://results/bots"),
        *("--reason", "asked by email", "--requested-by", "alice herself"),
    )
    assert result.returncode == 0, result.stderr
    assert "removed 2 bot folder(s): alice, carol-alice" in result.stdout
    assert "deleted huggingtweets/alice" in result.stdout
    # Nothing of theirs remains, on S3 or the Hub; bob's bot is untouched.
    left = storage.list("")
    assert not [k for k in left if k.startswith(("alice/", "carol-alice/"))], left
    assert set(hub.state.repos) == {"huggingtweets/bob"}
    assert "bob/latest.json" in left
    record = get_json(storage, opt_out_key("alice"))
    assert record["reason"] == "asked by email" and record["requested_by"] == "alice herself"

    # Again: idempotent, and it says there was nothing left.
    again = invoke("takedown", "alice", "--output", "s3://results/bots")
    assert again.returncode == 0 and "nothing to remove" in again.stdout
    assert get_json(storage, opt_out_key("alice")) == record  # the first request's date stays

    # run --manifest (the handle in another case) and submit: refused before any work.
    manifest = (
        "version: 1\noutput: s3://results/bots\nwandb: {mode: disabled}\n"
        "bots:\n  - users: [{handle: ALICE, source: api}]\n"
    )
    boto3.client("s3").put_object(Bucket="results", Key="jobs/m.yaml", Body=manifest.encode())
    result = invoke("run", "--manifest", "s3://results/jobs/m.yaml", twitter_env=True)
    assert result.returncode == errors.OPTED_OUT and "asked not to be made" in result.stderr
    assert storage.list("ALICE/") == [] and storage.list("alice/") == []  # no new trace
    result = invoke(
        "submit", "alice", "--output", "s3://results/bots", "--no-push", twitter_env=True
    )
    assert result.returncode == errors.OPTED_OUT
    assert boto3.client("s3").list_objects_v2(Bucket="results", Prefix="jobs/2")["KeyCount"] == 0
    assert api.requests == []  # the Twitter API was never asked


def test_a_local_output_keeps_its_opt_outs_too(api, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "alice" / "model").mkdir(parents=True)
    (out / "alice" / "model" / "model.safetensors").write_bytes(b"x")
    (out / ".alice" / "checkpoints").mkdir(parents=True)  # the bot's local scratch
    (out / ".alice" / "checkpoints" / "c").write_bytes(b"x")
    result = invoke("takedown", "alice", "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert "removed 2 bot folder(s): .alice, alice" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["_opt-out"]  # its folders are gone
    for command in (["run", "alice", "--api"], ["prepare", "alice", "--api"]):
        result = invoke(*command, "--out", str(out), twitter_env=True)
        assert result.returncode == errors.OPTED_OUT, result.stderr
    assert api.requests == []
    record = json.loads((out / "_opt-out" / "alice.json").read_text())
    assert record["handle"] == "alice" and record["at"]


def test_a_hub_failure_leaves_what_a_rerun_finishes(api, hub) -> None:
    storage = open_storage("s3://results/bots")
    publish(storage, hub, "alice")
    hub.state.faults.append(lambda m, p: 503 if m == "DELETE" else None)
    result = invoke("takedown", "alice", "--output", "s3://results/bots")
    assert result.returncode == errors.TRANSIENT
    assert "alice/status.json" in storage.list("alice/")  # still names the repo
    hub.state.faults.clear()
    result = invoke("takedown", "alice", "--output", "s3://results/bots")
    assert result.returncode == 0 and storage.list("alice/") == []
    assert "huggingtweets/alice" not in hub.state.repos


def test_keep_private_hides_the_repo_instead(api, hub) -> None:
    storage = open_storage("s3://results/bots")
    publish(storage, hub, "alice")
    result = invoke("takedown", "alice", "--output", "s3://results/bots", "--keep-private")
    assert result.returncode == 0 and "made private huggingtweets/alice" in result.stdout
    assert hub.state.repos["huggingtweets/alice"] == {"private": True}
