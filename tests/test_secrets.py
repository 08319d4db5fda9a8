"""No secret the process was given reaches a line, a log record, a status or a written file,
whatever path its text comes by: servers that echo the request (the Twitter API, the Hub, S3)
are given distinctive secrets, then everything the job wrote or said is searched for them."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import boto3
import pytest

from job.cloud.runs import upload_run
from job.cloud.status import HubStatus, write_status
from job.storage import open_storage
from tests.helpers.cli import Result, invoke
from tests.helpers.s3 import FaultProxy
from tests.helpers.twitter_api import FakeUser, Fault, TwitterAPI, v2_tweet

SECRETS = {
    "TWITTER_BEARER_TOKEN": "tw-SECRET-31337-bearer",
    "WANDB_API_KEY": "wandb-SECRET-31337-key",
    "AWS_ACCESS_KEY_ID": "AKIASECRET31337KEY",
    "AWS_SECRET_ACCESS_KEY": "aws-SECRET-31337-access",
}
MANIFEST = """version: 1
output: s3://results/bots
wandb: {mode: disabled}
hub: {push: true, owner: huggingtweets, contact: takedown@example.org}
bots:
  - users: [{handle: talker, source: api}]
"""


@pytest.fixture
def secrets(s3, hub, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    from job.cloud import hub as hub_module

    monkeypatch.setattr(hub_module, "BACKOFF_SECONDS", 0.01)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    return {**SECRETS, "HF_TOKEN": hub.state.token}


def leaks(secrets: dict[str, str], *texts: str) -> list[str]:
    """The secrets found in ``texts`` and in every object of the bucket."""
    objects = boto3.client("s3").list_objects_v2(Bucket="results").get("Contents", [])
    stored = [
        boto3.client("s3").get_object(Bucket="results", Key=o["Key"])["Body"].read().decode()
        for o in objects
    ]
    found = []
    for name, value in secrets.items():
        if any(value in text for text in [*texts, *stored]):
            found.append(name)
    return found


def said(result: Result) -> str:
    return result.stdout + result.stderr


@pytest.mark.integration  # the run loads torch before it fetches: not the unit tier
def test_a_twitter_api_that_echoes_the_token(secrets) -> None:
    boto3.client("s3").put_object(Bucket="results", Key="jobs/m.yaml", Body=MANIFEST.encode())
    with TwitterAPI(token=secrets["TWITTER_BEARER_TOKEN"]) as api:
        api.add(FakeUser(id="5", username="talker", tweets=[v2_tweet(1, "a b c d")]))
        # a 200 whose errors[].detail quotes the request, as the job once showed it
        api.faults = [Fault(200, echo_auth=True)]
        result = invoke(
            "run", "--manifest", "s3://results/jobs/m.yaml", twitter_env=True,
            env={"TWITTER_API_URL": api.url},
        )  # fmt: skip
    assert result.returncode == 6 and "error:" in result.stderr
    key = "bots/talker/status.json"
    status = json.loads(boto3.client("s3").get_object(Bucket="results", Key=key)["Body"].read())
    assert status["state"] == "failed"
    assert leaks(secrets, said(result)) == []


def test_a_hub_whose_card_check_echoes_the_token(secrets, hub, tmp_path: Path) -> None:
    """A published run pushed again (`publish`): the Hub's 400 quotes the Authorization header;
    neither the line nor the status's hub.reason may hold it."""
    storage = open_storage("s3://results/bots")
    bot = tmp_path / "talker"
    (bot / "model").mkdir(parents=True)
    (bot / "model" / "README.md").write_text("---\ntags: [x]\n---\ncard\n")
    (bot / "model" / "model.safetensors").write_bytes(b"w")
    (bot / "data").mkdir()
    for name in ("predictions.json", "job.json", "data/stats.json", "data/clean.jsonl"):
        (bot / name).write_text("{}")
    upload_run(storage, "talker", "20261201T120000123456Z-abcdef12", bot, "fp")
    write_status(
        storage, "talker", "succeeded", hub=HubStatus(repo="huggingtweets/talker", private=True)
    )
    hub.state.echo = True
    result = invoke("publish", "talker", "--output", "s3://results/bots")
    assert result.returncode == 10 and "rejected the model card" in result.stderr
    assert leaks(secrets, said(result)) == []


@pytest.mark.parametrize("status", [403, 500, 400])
def test_an_s3_that_echoes_the_request(secrets, s3, status: int) -> None:
    """boto3 signs with the access key id in the Authorization header; an error body that
    quotes it (and a code made of it) reaches no line."""
    open_storage("s3://results/bots").put_bytes("a/status.json", b'{"bot": "a", "state": "queued"}')
    with FaultProxy(s3.url) as proxy:
        proxy.echo = True
        proxy.hook = lambda method, path: status
        result = invoke(
            "status", "--output", "s3://results/bots", env={"AWS_ENDPOINT_URL": proxy.url}
        )
    assert result.returncode in (9, 10, 75) and result.stderr.startswith("error:")
    assert leaks(secrets, said(result)) == []


def test_a_log_record_that_quotes_a_secret_is_redacted(secrets, capsys) -> None:
    from job.console import setup_logging

    setup_logging(False)
    try:
        logging.getLogger("huggingface_hub.utils._http").warning(
            "'%s' thrown while requesting", f"Bearer {secrets['HF_TOKEN']}"
        )
        logging.getLogger("job").info("token %s", secrets["TWITTER_BEARER_TOKEN"])
    finally:
        root = logging.getLogger()
        root.handlers = [h for h in root.handlers if not getattr(h, "_huggingtweets", False)]
    err = capsys.readouterr().err
    assert "<HF_TOKEN>" in err and "<TWITTER_BEARER_TOKEN>" in err
    assert leaks(secrets, err) == []


def test_a_library_that_logs_through_a_handler_of_its_own_is_redacted_too(secrets, capsys) -> None:
    """huggingface_hub adds a StreamHandler to its logger when imported: a record that goes
    out by it never reaches the job's handler. Records are redacted as they are made."""
    import sys

    from job.console import setup_logging

    library = logging.getLogger("some_library")
    own = logging.StreamHandler(sys.stderr)
    library.addHandler(own)
    library.propagate = False
    setup_logging(False)
    try:
        library.warning("retrying with %s", f"Bearer {secrets['HF_TOKEN']}")
        library.error("key=%(key)s", {"key": secrets["AWS_SECRET_ACCESS_KEY"]})
    finally:
        library.removeHandler(own)
        root = logging.getLogger()
        root.handlers = [h for h in root.handlers if not getattr(h, "_huggingtweets", False)]
    err = capsys.readouterr().err
    assert "Bearer <HF_TOKEN>" in err and "key=<AWS_SECRET_ACCESS_KEY>" in err
    assert leaks(secrets, err) == []
