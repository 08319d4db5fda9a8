"""A finished bot's rest (its Space, card, W&B's results: run.py ``Rest``), upload, record and
push run behind the next bot's training (job/behind.py): the next bot starts while the last
one's upload is held on the loopback S3 proxy, and trains while its Space is exported in a
process of its own; a takedown of the bot behind still wins; a failed upload fails that bot
alone; SIGTERM while a bot is behind ends the task with 75 within the grace, nothing of the bot
behind visible."""

from __future__ import annotations

import json
import os
import signal
import time

import boto3
import pytest

from job import errors
from job.storage import open_storage
from tests.helpers import SAMPLE, get_json
from tests.helpers.cli import invoke
from tests.helpers.holds import MARKER, held, hold_at
from tests.helpers.jobs import TINY_MANIFEST
from tests.helpers.s3 import FaultProxy

pytestmark = pytest.mark.integration

MANIFEST = f"""
version: 1
output: s3://results/bots{TINY_MANIFEST}
wandb: {{mode: disabled}}
bots:
  - users: [{{handle: ann, source: jsonl, uri: s3://results/inputs/ann.jsonl}}]
  - users: [{{handle: bob, source: jsonl, uri: s3://results/inputs/bob.jsonl}}]
"""
RUN = ["run", "--manifest", "s3://results/jobs/m.yaml"]


@pytest.fixture
def manifest(s3) -> None:
    client = boto3.client("s3")
    for who in ("ann", "bob"):  # the sample's tweets, as each one's
        rows = [json.loads(line) | {"user": who} for line in SAMPLE.read_text().splitlines()]
        body = "".join(json.dumps(r) + "\n" for r in rows).encode()
        client.put_object(Bucket="results", Key=f"inputs/{who}.jsonl", Body=body)
    client.put_object(Bucket="results", Key="jobs/m.yaml", Body=MANIFEST.encode())


def until(condition, seconds: float = 120) -> None:
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, "never happened"
        time.sleep(0.05)


def state(bot: str) -> str | None:
    record = get_json(open_storage("s3://results/bots"), f"{bot}/status.json")
    return record and record["state"]


def test_the_next_bot_trains_while_the_last_one_uploads_and_a_takedown_still_wins(
    s3, manifest
) -> None:
    storage = open_storage("s3://results/bots")
    with FaultProxy(s3.url) as proxy:
        hold = hold_at(MARKER, proxy=proxy)  # ann's run marker: her upload is held there
        with held(hold, RUN, {"AWS_ENDPOINT_URL": proxy.url}) as job:
            until(lambda: state("bob") == "running")  # bob started before ann was published
            assert state("ann") == "running" and storage.list("ann/latest.json") == []
            done = invoke("takedown", "ann", "--output", "s3://results/bots")
            assert done.returncode == 0, done.stderr
    assert job.returncode == errors.OPTED_OUT, job.said
    assert storage.list("ann/") == []  # her upload went on after the takedown: undone
    assert state("bob") == "succeeded" and storage.list("bob/latest.json")


def test_a_bots_space_card_and_wandb_run_are_made_while_the_next_bot_trains(s3, manifest) -> None:
    """ann's Space is exported in a process of its own (~5 s of imports alone) while bob
    loads and trains (~2 s), so bob's training ends before ann's card is written; what ann
    gets is what a lone bot gets: the Space, the card that names it, a finished W&B run
    (bob, the task's last bot, ends in the main thread as a lone bot does)."""
    client = boto3.client("s3")
    body = MANIFEST.replace("wandb: {mode: disabled}", "wandb: {mode: offline}").replace(
        "uri: s3://results/inputs/ann.jsonl}]", "uri: s3://results/inputs/ann.jsonl}]\n"
        "    sampling: {space: 'on'}"
    )  # fmt: skip
    assert "space: 'on'" in body and "mode: offline" in body
    client.put_object(Bucket="results", Key="jobs/m.yaml", Body=body.encode())
    result = invoke(*RUN)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stderr.splitlines()
    card = next(i for i, line in enumerate(lines) if "ann: card:" in line)
    trained = [i for i, line in enumerate(lines) if " train: " in line]
    assert len(trained) == 2 and trained[1] < card, "\n".join(lines)  # bob's, before ann's card
    assert any("ann: save (written):" in line for line in lines)  # her weights, written behind
    storage = open_storage("s3://results/bots")
    for bot in ("ann", "bob"):
        latest = get_json(storage, f"{bot}/latest.json")
        run = f"{bot}/{latest['run_id']}"
        job = get_json(storage, f"{run}/job.json")
        assert job["wandb"]["runs"]["train"] and job["result"]["perplexity"] > 1
        readme = (storage.get_bytes(f"{run}/model/README.md") or b"").decode()
        assert "onnx/model" in readme or bot == "bob"  # the card names the Space's graph
        spaced = storage.list(f"{run}/space/index.html") and storage.list(f"{run}/model/onnx/")
        assert bool(spaced) == (bot == "ann") == ("space" in job["timings"])


def test_a_failed_upload_fails_that_bot_alone(s3, manifest) -> None:
    with FaultProxy(s3.url) as proxy:
        proxy.hook = lambda method, path: (
            503 if method == "PUT" and "/bots/ann/" in path and "status" not in path else None
        )
        result = invoke(*RUN, env={"AWS_ENDPOINT_URL": proxy.url})
    assert result.returncode == errors.TRANSIENT, result.stderr[-2000:]
    assert state("ann") == "failed" and state("bob") == "succeeded"


def test_sigterm_while_a_bot_is_behind_ends_the_task_in_the_grace(s3, manifest) -> None:
    storage = open_storage("s3://results/bots")
    with FaultProxy(s3.url) as proxy:
        hold = hold_at(MARKER, proxy=proxy)
        with held(hold, RUN, {"AWS_ENDPOINT_URL": proxy.url}) as job:
            until(lambda: state("bob") == "running")
            start = time.monotonic()
            job.send_signal(signal.SIGTERM)
            job.wait(60)
            took = time.monotonic() - start
    assert job.returncode == errors.TRANSIENT, job.said
    assert took < 15, took  # __main__'s EXIT_GRACE_SECONDS, inside the platforms' 30 s
    # ann is not published: no latest.json (her upload's marker, held in flight on the proxy
    # when the process ended, may land after it: a whole run, which the retry then publishes)
    assert storage.list("ann/latest.json") == []
    ann = get_json(storage, "ann/status.json")  # recorded by the stop, not left "running"
    assert ann["state"] == "failed" and "SIGTERM" in ann["reason"]
    assert state("bob") == "failed"
    retry = invoke(*RUN)
    assert retry.returncode == 0, retry.stderr[-2000:]
    assert state("ann") == state("bob") == "succeeded" and storage.list("ann/latest.json")


def test_a_host_of_more_cores_keeps_more_bots_behind_its_training() -> None:
    """Each bot behind may be exporting its Space on a core of its own: two at least (one
    slow upload), a bot for each 4 cores past that, 4 at most (each holds an export's memory)."""
    from job.behind import Behind, behind_for

    assert [behind_for(n) for n in (1, 2, 8, 12, 16, 64)] == [2, 2, 2, 3, 4, 4]
    assert Behind().behind == behind_for(len(os.sched_getaffinity(0)))  # this host's
