"""A manifest's task (job/task.py) against S3 (moto) and the Hub (fake), both on loopback."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from job import task
from job.cloud import hub as hub_module
from job.cloud.runs import MARKER
from job.errors import TransientError
from job.outputs.card import inert
from job.storage import open_storage
from tests.helpers import SAMPLE, get_json
from tests.helpers.cli import Result, invoke, process
from tests.helpers.jobs import TINY_MANIFEST, made_run
from tests.helpers.s3 import FaultProxy
from tests.helpers.twitter_api import FakeUser, TwitterAPI, v2_tweet

pytestmark = pytest.mark.integration
TWITTER_TOKEN = "tw-token-for-tests-123"

MANIFEST = f"""
version: 1
output: s3://results/bots{TINY_MANIFEST}
hub: {{push: true, owner: huggingtweets, contact: takedown@example.org}}
wandb: {{mode: disabled}}
bots:
  - users: [{{handle: sourdough_sam, source: jsonl, uri: s3://inputs/tweets/sam.jsonl}}]
  - users: [{{handle: andreruffert, source: archive, uri: s3://inputs/archives/andre.zip}}]
  - users: [{{handle: talker, source: api}}]
"""


@pytest.fixture(scope="module")
def andre_zip(real_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The real archive as the zip a user downloads: made once for the module."""
    return shutil.make_archive(str(tmp_path_factory.mktemp("zip") / "andre"), "zip", real_archive)


@pytest.fixture
def inputs(s3, andre_zip: str, monkeypatch: pytest.MonkeyPatch):
    client = boto3.client("s3")
    client.create_bucket(Bucket="inputs")
    client.upload_file(str(SAMPLE), "inputs", "tweets/sam.jsonl")
    client.upload_file(andre_zip, "inputs", "archives/andre.zip")
    client.put_object(Bucket="inputs", Key="jobs/three.yaml", Body=MANIFEST.encode())
    client.put_object(
        Bucket="inputs",
        Key="jobs/one.yaml",
        Body=MANIFEST.split("  - users: [{handle: andreruffert")[0].encode(),
    )
    monkeypatch.setattr(hub_module, "BACKOFF_SECONDS", 0.01)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    with TwitterAPI(token=TWITTER_TOKEN) as api:
        api.add(
            FakeUser(
                id="5",
                username="talker",
                name="Talker",
                tweets=[
                    v2_tweet(9000 - i, f"talker shares thought {i} about the bread of the day")
                    for i in range(150)
                ],
            )
        )
        monkeypatch.setenv("TWITTER_BEARER_TOKEN", TWITTER_TOKEN)
        monkeypatch.setenv("TWITTER_API_URL", api.url)
        yield api


def cli(*args: str, **env: str) -> Result:
    """In this process: the fast way to a whole batch run (the kill test starts its own)."""
    return invoke(*args, env=env, twitter_env=True)


def assert_complete(bot: str) -> dict:
    """latest.json names a run whose marker lists files that are all there, byte for byte."""
    storage = open_storage("s3://results/bots")
    latest = get_json(storage, f"{bot}/latest.json")
    marker = get_json(storage, f"{bot}/{latest['run_id']}/{MARKER}")
    assert marker["run_id"] == latest["run_id"]
    for rel, meta in marker["files"].items():
        data = storage.get_bytes(f"{bot}/{latest['run_id']}/{rel}")
        assert data is not None and hashlib.sha256(data).hexdigest() == meta["sha256"], rel
    assert {
        "model/README.md",
        "model/model.safetensors",
        "job.json",
        "predictions.json",
        "data/stats.json",
    } <= set(marker["files"])
    return marker


def test_three_bots_by_array_index(inputs, hub) -> None:
    uri = "s3://inputs/jobs/three.yaml"
    runs = [
        # as a process, as AWS Batch starts it: the exit code, stdout and stderr it sees, and
        # (-X importtime) every module it imports
        process(
            *("run", "--manifest", uri),
            env={"AWS_BATCH_JOB_ARRAY_INDEX": "0"},
            twitter_env=True,
            python=("-X", "importtime"),
        ),
        cli("run", "--manifest", uri, JOB_COMPLETION_INDEX="1"),
        cli("run", "--manifest", uri, "--index", "2"),
    ]
    for r in runs:
        assert r.returncode == 0, r.stderr
    bots = ["sourdough_sam", "andreruffert", "talker"]
    for bot, r in zip(bots, runs, strict=True):
        assert r.stdout.startswith(f"{bot}  succeeded  "), r.stdout
        assert "hub:pushed" in r.stdout
    markers = {bot: assert_complete(bot) for bot in bots}
    # W&B disabled costs nothing: wandb (and the requests it imports) stay unloaded
    imported = [
        ln.rsplit("|", 1)[1].strip() for ln in runs[0].stderr.splitlines() if "import time:" in ln
    ]
    assert "torch" in imported and not [m for m in imported if m.split(".")[0] == "wandb"]
    storage = open_storage("s3://results/bots")
    run_id = markers["sourdough_sam"]["run_id"]
    job = json.loads(storage.get_bytes(f"sourdough_sam/{run_id}/job.json") or b"{}")
    assert job["wandb"] == {"mode": "disabled", "runs": {}, "urls": {}, "skipped": []}
    assert [c.repo for c in hub.state.commits] == [f"huggingtweets/{b}" for b in bots]
    for commit in hub.state.commits:
        run_id = markers[commit.repo.split("/")[1]]["run_id"]
        assert commit.message == f"huggingtweets run {run_id}"
        assert {"README.md", "model.safetensors", "config.json"} <= set(commit.files)
        card = commit.files["README.md"].decode()
        assert f"huggingface.co/{commit.repo}/resolve/main/predictions.png" in card
        # Provenance and the removal contact, on every card that is pushed.
        assert f"write to **{inert('takedown@example.org')}**" in card
        assert "## Request removal" in card
        where = {
            "sourdough_sam": "tweet files given by the operator",
            "andreruffert": "their own Twitter archive export",
            "talker": "the public Twitter API v2",
        }[commit.repo.split("/")[1]]
        assert where in card.split("### Where the tweets came from")[1].split("##")[0]

    status = cli("status", "--manifest", uri)
    assert status.returncode == 0
    header, *rows = [line.split("\t") for line in status.stdout.splitlines()]
    assert header == ["bot", "state", "run", "updated", "hub", "reason", "space"]
    assert [row[:2] + row[4:5] for row in rows] == [[b, "succeeded", "pushed"] for b in bots]

    listed = cli("status", "--output", "s3://results/bots")  # no manifest: every bot found
    assert sorted(line.split()[0] for line in listed.stdout.splitlines()[1:]) == sorted(bots)

    # Each bot's status names its manifest and its people's inputs, whatever index ran it:
    # a takedown deletes the inputs, or names those it may not (another bucket, here).
    storage = open_storage("s3://results/bots")
    sam = get_json(storage, "sourdough_sam/status.json")
    assert sam["manifest"] == uri
    assert sam["inputs"] == [
        {"handle": "sourdough_sam", "source": "jsonl", "uri": "s3://inputs/tweets/sam.jsonl"}
    ]

    again = cli("run", "--manifest", uri, AWS_BATCH_JOB_ARRAY_INDEX="0")  # a retried attempt
    assert again.returncode == 0, again.stderr
    assert assert_complete("sourdough_sam")["run_id"] == markers["sourdough_sam"]["run_id"]
    assert len(hub.state.commits) == 3  # nothing redone, nothing pushed twice
    for secret in (TWITTER_TOKEN, os.environ["HF_TOKEN"]):
        assert all(secret not in r.stdout + r.stderr for r in [*runs, status, again])


def test_bad_index_and_missing_manifest(inputs) -> None:
    r = cli("run", "--manifest", "s3://inputs/jobs/three.yaml", AWS_BATCH_JOB_ARRAY_INDEX="3")
    assert r.returncode == 10 and "out of range" in r.stderr
    r = cli("run", "--manifest", "s3://inputs/jobs/nope.yaml")
    assert r.returncode == 4 and "no such object" in r.stderr


def test_s3_error_mid_upload_keeps_the_published_run(inputs, hub, monkeypatch) -> None:
    first = task.run_manifest("s3://inputs/jobs/one.yaml")[0]
    before = assert_complete("sourdough_sam")
    direct = os.environ["AWS_ENDPOINT_URL"]
    with FaultProxy(direct) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        puts: list[str] = []

        def fail_after_two_files(method: str, path: str) -> int | None:
            if method == "PUT" and "/bots/sourdough_sam/2" in path:  # the new run's files
                puts.append(path)
                return 500 if len(puts) > 2 else None
            return None

        proxy.hook = fail_after_two_files
        with pytest.raises(TransientError):
            task.run_manifest("s3://inputs/jobs/one.yaml", force=True)
    monkeypatch.setenv("AWS_ENDPOINT_URL", direct)
    storage = open_storage("s3://results/bots")
    status = get_json(storage, "sourdough_sam/status.json")
    assert status["state"] == "failed" and "upload failed" in status["reason"]
    assert status["run_id"] != first.run_id
    assert storage.get_bytes(f"sourdough_sam/{status['run_id']}/{MARKER}") is None
    assert assert_complete("sourdough_sam") == before  # the earlier run is whole and current


def test_hub_outage_keeps_s3_and_publish_alone_retries(inputs, hub) -> None:
    hub.state.faults.append(lambda m, p: 503 if p.endswith("/commit/main") else None)
    with pytest.raises(TransientError, match="Hub push"):
        task.run_manifest("s3://inputs/jobs/one.yaml")
    marker = assert_complete("sourdough_sam")  # the S3 results are safe
    storage = open_storage("s3://results/bots")
    status = get_json(storage, "sourdough_sam/status.json")
    assert status["state"] == "succeeded" and status["hub"]["state"] == "failed"
    assert hub.state.commits == []

    hub.state.faults.clear()
    r = cli("publish", "sourdough_sam", "--output", "s3://results/bots")
    assert r.returncode == 0, r.stderr
    (commit,) = hub.state.commits
    assert commit.message == f"huggingtweets run {marker['run_id']}"
    assert get_json(storage, "sourdough_sam/status.json")["hub"]["state"] == "pushed"
    assert assert_complete("sourdough_sam")["run_id"] == marker["run_id"]  # nothing retrained
    repo = commit.repo
    assert hub.state.repos[repo]["private"] is False

    # --private on the now public repo: the Hub and the record both say private.
    r = cli("publish", "sourdough_sam", "--output", "s3://results/bots", "--private")
    assert r.returncode == 0, r.stderr
    assert hub.state.repos[repo]["private"] is True
    assert get_json(storage, "sourdough_sam/status.json")["hub"]["private"] is True

    # To another repo: its card names that repo, and both repos stay recorded...
    r = cli("publish", "sourdough_sam", "--output", "s3://results/bots", "--repo", "someone/sam")
    assert r.returncode == 0, r.stderr
    card = hub.state.files("someone/sam")["README.md"].decode()
    assert "huggingface.co/someone/sam/resolve/main/predictions.png" in card
    assert 'model="someone/sam"' in card and repo not in card
    assert get_json(storage, "sourdough_sam/status.json")["hub"]["repos"] == [repo, "someone/sam"]
    # ...so the takedown removes both, and names the input it may not delete (another bucket).
    r = cli("takedown", "sourdough_sam", "--output", "s3://results/bots")
    assert r.returncode == 0, r.stderr
    assert f"deleted {repo}" in r.stdout and "deleted someone/sam" in r.stdout
    assert "input: NOT deleted s3://inputs/tweets/sam.jsonl" in r.stdout
    assert "aws s3 rm s3://inputs/tweets/sam.jsonl" in r.stdout
    assert not {repo, "someone/sam"} & set(hub.state.repos)


def test_rerun_after_hub_failure_pushes_without_retraining(inputs, hub) -> None:
    hub.state.faults.append(lambda m, p: 503 if p.endswith("/commit/main") else None)
    with pytest.raises(TransientError):
        task.run_manifest("s3://inputs/jobs/one.yaml")
    run_id = assert_complete("sourdough_sam")["run_id"]
    hub.state.faults.clear()
    (record,) = task.run_manifest("s3://inputs/jobs/one.yaml")  # the platform's retry
    assert record.hub.state == "pushed" and record.hub.run_id == run_id
    assert assert_complete("sourdough_sam")["run_id"] == run_id


def test_a_published_run_supersedes_a_failed_record(inputs, hub) -> None:
    """A bot that failed under another manifest (or a dead attempt) and then ran well says
    succeeded on the next "nothing to do" pass, with nothing of the failure left."""
    (first,) = task.run_manifest("s3://inputs/jobs/one.yaml")
    storage = open_storage("s3://results/bots")
    from job.cloud.status import write_status

    write_status(storage, "sourdough_sam", "failed", run_id="other", reason="another manifest")
    (again,) = task.run_manifest("s3://inputs/jobs/one.yaml")
    assert again.state == "succeeded" and again.run_id == first.run_id and again.reason is None
    assert again.hub.state == "pushed" and len(hub.state.commits) == 1  # that run is on the Hub


def test_job_killed_between_upload_and_marker(inputs, hub) -> None:
    assert cli("run", "--manifest", "s3://inputs/jobs/one.yaml").returncode == 0
    before = assert_complete("sourdough_sam")
    with FaultProxy(os.environ["AWS_ENDPOINT_URL"]) as proxy:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "job",
                "run",
                "--manifest",
                "s3://inputs/jobs/one.yaml",
                "--force",
            ],
            env={**os.environ, "AWS_ENDPOINT_URL": proxy.url},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

        def kill_at_marker(method: str, path: str) -> int | None:
            key = path.split("?")[0]  # the run's marker, not a checkpoint's
            if method == "PUT" and "/bots/sourdough_sam/2" in key and key.endswith(MARKER):
                os.kill(proc.pid, signal.SIGKILL)  # dies with every file up, before the marker
                return 500
            return None

        proxy.hook = kill_at_marker
        proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL
    storage = open_storage("s3://results/bots")
    status = get_json(storage, "sourdough_sam/status.json")
    killed = status["run_id"]
    assert status["state"] == "running" and killed != before["run_id"]
    assert storage.list(f"sourdough_sam/{killed}/model/")  # its files were uploaded...
    assert storage.get_bytes(f"sourdough_sam/{killed}/{MARKER}") is None  # ...but not marked
    assert assert_complete("sourdough_sam") == before  # readers still get the earlier run

    r = cli("run", "--manifest", "s3://inputs/jobs/one.yaml", "--force")
    assert r.returncode == 0, r.stderr
    after = assert_complete("sourdough_sam")
    assert after["run_id"] not in (before["run_id"], killed)
    assert len(hub.state.commits) == 2


def test_an_unexpected_error_fails_the_status_with_one_line(inputs, hub, monkeypatch) -> None:
    """Whatever escapes is caught once: the status says failed (not running forever), the
    exit code is 1 (a bug: not retried), and no exception text reaches either."""
    import job.task

    def crash(*args, **kwargs):
        raise RuntimeError(f"upstream said: Bearer {TWITTER_TOKEN}")

    monkeypatch.setattr(job.task, "make", crash)  # the recipe, as the manifest runs it
    r = cli("run", "--manifest", "s3://inputs/jobs/one.yaml")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.count("error: internal error: RuntimeError") == 1
    status = get_json(open_storage("s3://results/bots"), "sourdough_sam/status.json")
    assert status["state"] == "failed" and status["reason"].startswith("internal error")
    assert TWITTER_TOKEN not in r.stderr + json.dumps(status)


@pytest.mark.parametrize(
    ("uri", "body", "code", "reason"),
    [
        ("s3://inputs/tweets/utf16.jsonl", '{"text": "hi"}\n'.encode("utf-16"), 5, "not UTF-8"),
        ("s3://inputs/archives/bad.zip", b"PK\x03\x04 not really a zip", 5, "not a readable zip"),
    ],
    ids=["utf16-jsonl", "bad-zip"],
)
def test_bad_inputs_fail_the_bot_with_the_reason(inputs, hub, uri, body, code, reason) -> None:
    bucket, key = uri[len("s3://") :].split("/", 1)
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=body)
    source = "archive" if uri.endswith(".zip") else "jsonl"
    manifest = MANIFEST.split("bots:")[0] + (
        f"bots:\n  - users: [{{handle: sourdough_sam, source: {source}, uri: {uri}}}]\n"
    )
    boto3.client("s3").put_object(Bucket="inputs", Key="jobs/bad.yaml", Body=manifest.encode())
    r = cli("run", "--manifest", "s3://inputs/jobs/bad.yaml")
    assert r.returncode == code and r.stderr.count("error: ") == 1, r.stderr
    status = get_json(open_storage("s3://results/bots"), "sourdough_sam/status.json")
    assert status["state"] == "failed" and reason in status["reason"]


def test_a_403_that_echoes_the_token_fails_the_bot_without_it(inputs, hub) -> None:
    from tests.helpers.twitter_api import Fault

    inputs.faults = [Fault(403, echo_auth=True)]
    manifest = MANIFEST.split("bots:")[0] + "bots:\n  - users: [{handle: talker, source: api}]\n"
    boto3.client("s3").put_object(Bucket="inputs", Key="jobs/api.yaml", Body=manifest.encode())
    r = cli("run", "--manifest", "s3://inputs/jobs/api.yaml")
    assert r.returncode == 9 and TWITTER_TOKEN not in r.stderr
    status = get_json(open_storage("s3://results/bots"), "talker/status.json")
    assert status["state"] == "failed" and "refused access (403)" in status["reason"]
    assert TWITTER_TOKEN not in json.dumps(status)


SLICED = f"""
version: 1
output: s3://results/bots{TINY_MANIFEST}
wandb: {{mode: disabled}}
bots_per_task: 2
bots:
  - users: [{{handle: sourdough_sam, source: jsonl, uri: s3://inputs/tweets/sam.jsonl}}]
  - users: [{{handle: ghost, source: jsonl, uri: s3://inputs/tweets/ghost.jsonl}}]
  - users: [{{handle: talker, source: api}}]
"""


def test_a_task_makes_its_slice_of_bots_each_on_its_own(inputs, hub, monkeypatch) -> None:
    boto3.client("s3").put_object(Bucket="inputs", Key="jobs/sliced.yaml", Body=SLICED.encode())
    uri = "s3://inputs/jobs/sliced.yaml"
    # Task 0: sourdough_sam and ghost, whose input is missing. ghost fails with its own
    # reason; sam is still made and published; the task's code is ghost's (bad input: no retry).
    first = cli("run", "--manifest", uri, AWS_BATCH_JOB_ARRAY_INDEX="0")
    assert first.returncode == 4, first.stderr
    storage = open_storage("s3://results/bots")
    assert get_json(storage, "sourdough_sam/status.json")["state"] == "succeeded", first.stderr
    published = assert_complete("sourdough_sam")["run_id"]
    ghost = get_json(storage, "ghost/status.json")
    assert ghost["state"] == "failed" and "ghost.jsonl" in ghost["reason"]
    assert storage.list("talker/") == []  # not this task's
    # Task 1: talker alone. Task 2 does not exist: 3 bots at 2 per task are 2 tasks.
    second = cli("run", "--manifest", uri, "--index", "1")
    assert second.returncode == 0, second.stderr
    assert_complete("talker")
    third = cli("run", "--manifest", uri, "--index", "2")
    assert third.returncode == 10 and "2 per task: 2 task(s)" in third.stderr

    # A retryable failure of any bot in the slice makes the task's code retryable (75), even
    # after another bot's bad input; the retry skips what is published (sam, by fingerprint).
    real = task.run_bot

    def flaky(job, storage, **kw):
        if job.bot == "sourdough_sam" and kw["published"] is None:  # forced: made again
            raise TransientError("S3 went away")
        return real(job, storage, **kw)

    monkeypatch.setattr(task, "run_bot", flaky)
    with pytest.raises(TransientError):
        task.run_manifest(uri, index=0, force=True)
    monkeypatch.setattr(task, "run_bot", real)
    again = cli("run", "--manifest", uri, "--index", "0")
    assert again.returncode == 4  # ghost still has no input; sam was not made again
    assert assert_complete("sourdough_sam")["run_id"] == published


MANY = """version: 1
output: OUT
wandb: {mode: disabled}
bots:
  - users: [{handle: a, source: jsonl, uri: SAMPLE}]
  - users: [{handle: b, source: jsonl, uri: SAMPLE}]
  - users: [{handle: c, source: jsonl, uri: SAMPLE}]
"""


def many(tmp_path: Path) -> str:
    path = tmp_path / "many.yaml"
    path.write_text(MANY.replace("OUT", str(tmp_path / "out")).replace("SAMPLE", str(SAMPLE)))
    return str(path)


def test_a_failed_bots_memory_is_freed_before_the_next_bot_starts(tmp_path, monkeypatch) -> None:
    """A task of many bots: whatever a failed bot held (its model, Trainer, optimizer state)
    is gone before the next starts, whether it failed with the job's own error or a bug; the
    stored error keeps no traceback that would hold it."""
    import weakref

    class Weights:  # what a bot's frames hold while it trains
        pass

    held: list[weakref.ref] = []
    freed_at_start: list[list[bool]] = []

    def bot(job, storage, **kw):
        weights = Weights()
        freed_at_start.append([ref() is None for ref in held])
        held.append(weakref.ref(weights))
        if job.bot == "a":
            raise TransientError("S3 went away")  # the job's own error: it is what is kept
        raise ValueError("a bug")  # a foreign one: classify makes a new error of it

    monkeypatch.setattr(task, "run_bot", bot)
    with pytest.raises(TransientError):
        task.run_manifest(many(tmp_path))
    assert freed_at_start == [[], [True], [True, True]]
    assert all(ref() is None for ref in held)


def test_a_cuda_error_stops_the_task_and_its_retry_makes_the_rest(tmp_path, monkeypatch) -> None:
    """An illegal memory access leaves the process's CUDA context unusable: the next bots would
    fail the same way. The task stops at once with the retryable code; the bots it did not
    reach stay queued for the retry (on a fresh process)."""
    from job import errors

    ran: list[str] = []

    def bot(job, storage, **kw):
        ran.append(job.bot)
        if job.bot == "b":
            try:
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            except RuntimeError as e:  # as deep code may wrap it
                raise TransientError("checkpoint upload failed") from e
        return None

    monkeypatch.setattr(task, "run_bot", bot)
    with pytest.raises(TransientError) as info:
        task.run_manifest(many(tmp_path))
    assert ran == ["a", "b"] and errors.classify(info.value).exit_code == errors.TRANSIENT
    status = get_json(open_storage(str(tmp_path / "out")), "c/status.json")
    assert status["state"] == "queued"
    # out of memory is no such error: the next bot, perhaps smaller, may fit
    assert not errors.gpu_lost(RuntimeError("CUDA error: out of memory"))
    assert errors.gpu_lost(type("AcceleratorError", (RuntimeError,), {})("device-side assert"))
    assert isinstance(errors.classify(RuntimeError("CUDA error: ECC")), TransientError)


def test_a_tasks_decode_compile_is_decided_once_and_kept_out_of_the_fingerprint(
    tmp_path: Path,
) -> None:
    """The task decides ``sampling.compile`` for the bots that leave it unset (no GPU here:
    off), a bot's own setting stands; job.json says what each sampled with, the compiled one
    its capture's seconds apart (none on a CPU: transformers compiles no CPU decode), and the
    choice leaves each bot's fingerprint, and so its published run, as it was."""
    from job.spec import jobs, load_manifest

    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    for who in ("ann", "bob"):
        (tmp_path / f"{who}.jsonl").write_text(
            "".join(json.dumps(r | {"user": who}) + "\n" for r in rows)
        )
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        f"version: 1\noutput: {tmp_path / 'out'}{TINY_MANIFEST}wandb: {{mode: disabled}}\nbots:\n"
        f"  - users: [{{handle: ann, source: jsonl, uri: {tmp_path / 'ann.jsonl'}}}]\n"
        f"  - users: [{{handle: bob, source: jsonl, uri: {tmp_path / 'bob.jsonl'}}}]\n"
        "    sampling: {compile: true}\n"
    )
    done = invoke("run", "--manifest", str(manifest))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "decode step compiled for this task's bots: no (no GPU" in done.stderr
    fingerprints = {j.bot: j.fingerprint() for j in jobs(load_manifest(str(manifest)))}
    for bot, compiled in (("ann", False), ("bob", True)):
        latest = json.loads((tmp_path / "out" / bot / "latest.json").read_text())
        made = json.loads((made_run(tmp_path / "out", bot) / "job.json").read_text())
        assert made["config"]["sampling"]["compile"] is compiled
        assert ("decode_compile" in made["timings"]) is compiled
        assert made["timings"].get("decode_compile", 0.0) == 0.0
        assert latest["fingerprint"] == fingerprints[bot]


def test_the_cleanup_between_bots_keeps_dynamos_graphs_only_for_a_compiled_decode() -> None:
    """Between bots Dynamo's caches go (a training compile past its recompile limit would run
    eager), unless the task compiles its decode step: then the next bot's step reuses them."""
    import torch

    compiles: list[int] = []

    def counted(graph, inputs):  # a backend that only counts what Dynamo hands it
        compiles.append(1)
        return graph.forward

    step = torch.compile(lambda x: x * 2 + 1, backend=counted)
    step(torch.ones(3))
    for keep, recompiled in ((True, False), (False, True)):
        before = len(compiles)
        task._between_bots(keep_compiled=keep)
        step(torch.ones(3))
        assert (len(compiles) > before) is recompiled
