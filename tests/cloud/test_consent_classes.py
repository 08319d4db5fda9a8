"""The consent promise under hostile records and races, by class (issue "Consent by design"):
a person's handle in any form, a record anyone who can write the output may damage or forge,
a public write that races a takedown, an opt-out written by hand."""

from __future__ import annotations

import json

import boto3
import pytest

from job import errors
from job.cloud.status import HubStatus, write_status
from job.storage import open_storage
from tests.cloud.test_consent import RUN, card_naming, publish
from tests.helpers import SAMPLE
from tests.helpers.cli import invoke
from tests.helpers.holds import COMMIT, held, hold_at
from tests.test_consent_runs import MANIFEST


@pytest.fixture
def api(s3, hub, monkeypatch: pytest.MonkeyPatch):
    """moto's S3 and the loopback Hub, the Hub's retries short."""
    from job.cloud import hub as hub_module

    monkeypatch.setattr(hub_module, "BACKOFF_SECONDS", 0.01)


# --- A damaged status still names the Hub repos; a forged one cannot steer deletions ---------


@pytest.mark.parametrize(
    "status",
    [
        b'{"state": "weird", "hub": {"repo": "huggingtweets/alice", "state": "pushed"}}',
        b'{"state": "succeeded", "hub": {"repos": "huggingtweets/alice"}}',
        b'{"state": "succeeded", "perplexity": "x", "hub": {"repos": ["huggingtweets/alice"]}}',
        b'{"deep": ' + b"[" * 5000 + b'"huggingtweets/alice"' + b"]" * 5000 + b"}",
        b'not json, but it names "huggingtweets/alice"',
    ],
    ids=["unknown state", "repos a string", "a field of the wrong type", "deep", "not json"],
)
def test_a_damaged_status_still_takes_its_repos_down(api, hub, status: bytes) -> None:
    """It once forgot them: exit 0, "15 object(s) deleted", the public repo stayed, and the
    only record that named it was deleted. Its bytes still name the repo: the repo is proven
    the bot's by its name, and deleted."""
    storage = open_storage("s3://results/bots")
    publish(storage, hub, "alice")
    storage.put_bytes("alice/status.json", status)
    done = invoke("takedown", "alice", "--output", "s3://results/bots")
    assert done.returncode == 0, done.stderr
    assert "deleted huggingtweets/alice" in done.stdout
    assert hub.state.repos == {} and storage.list("alice/") == []


@pytest.mark.parametrize(
    "named", ["victim/important", "../../etc", "huggingtweets/alice-not-merged"]
)
def test_a_forged_status_cannot_steer_a_deletion(api, hub, named: str) -> None:
    """Whoever can write the output prefix could have the takedown delete any repo with the
    operator's token; now a repo that is not the bot's by its name or its card is reported."""
    storage = open_storage("s3://results/bots")
    publish(storage, hub, "alice")
    hub.state.repos["victim/important"] = {"private": False}
    card_naming(hub, "huggingtweets/alice-not-merged", "bob")  # a card: someone else's
    record = json.loads(storage.get_bytes("alice/status.json"))
    record["hub"]["repos"] = [named, "huggingtweets/alice"]
    storage.put_bytes("alice/status.json", json.dumps(record).encode())
    done = invoke("takedown", "alice", "--output", "s3://results/bots")
    assert done.returncode == 0, done.stderr
    assert "huggingtweets/alice" not in hub.state.repos
    assert {"victim/important", "huggingtweets/alice-not-merged"} <= set(hub.state.repos)
    if named != "../../etc":  # not a repo id at all: read past, with the record's other repos
        assert f"hub: NOT removed {named}" in done.stdout
    assert storage.list("alice/") == []


@pytest.mark.parametrize(
    "record",
    [
        b'{"config": "x"}',
        b'{"wandb": [1]}',
        b'{"inputs": [{"handle": "alice", "source": "archive", "uri": 5}]}',
        b'{"inputs": "s3://results/bots/in/alice.zip"}',
        b"[" * 100_000,
    ],
    ids=["config a string", "wandb a list", "an input's uri 5", "inputs a string", "deep"],
)
def test_a_job_json_of_the_wrong_shape_stops_no_takedown(api, hub, record: bytes) -> None:
    """It once exited 1 and removed nothing. The status names the inputs too: they go."""
    storage = open_storage("s3://results/bots")
    storage.put_bytes("in/alice.zip", b"x")
    given = [{"handle": "alice", "source": "archive", "uri": "s3://results/bots/in/alice.zip"}]
    publish(storage, hub, "alice", inputs=given)
    storage.put_bytes(f"alice/{RUN}/job.json", record)
    done = invoke("takedown", "alice", "--output", "s3://results/bots")
    assert done.returncode == 0, done.stderr
    assert "input: deleted s3://results/bots/in/alice.zip" in done.stdout
    assert storage.list("alice/") == [] and storage.list("in/") == []


# --- An opt-out in any spelling ------------------------------------------------------------


@pytest.mark.parametrize("name", ["SourDough_Sam", "SOURDOUGH_SAM", "sourdough_sam"])
@pytest.mark.parametrize("where", ["local", "s3"])
def test_an_opt_out_written_by_hand_in_any_case_holds(s3, tmp_path, name: str, where) -> None:
    """Twitter's handles are case-insensitive, and so is the opt-out list, however its file is
    named: `_opt-out/SourDough_Sam.json` written by hand was once ignored."""
    if where == "local":
        out = str(tmp_path / "out")
        (tmp_path / "out" / "_opt-out").mkdir(parents=True)
        (tmp_path / "out" / "_opt-out" / f"{name}.json").write_text("{}")
        done = invoke("run", "@sourdough_sam", "--jsonl", str(SAMPLE), "--out", out)
    else:
        out = "s3://results/bots"
        open_storage(out).put_bytes(f"_opt-out/{name}.json", b"{}")
        manifest = f"version: 1\noutput: {out}\nbots:\n  - users: [{{handle: SourDough_Sam}}]\n"
        boto3.client("s3").put_object(Bucket="results", Key="m.yaml", Body=manifest.encode())
        done = invoke("run", "--manifest", "s3://results/m.yaml")
    assert done.returncode == errors.OPTED_OUT, done.stderr
    assert "asked not to be made into a bot" in done.stderr


# --- A public write that races a takedown --------------------------------------------------

# The bot a race is run on: made first, published to S3 only (the push is the race's)
MADE = MANIFEST.replace("push: true", "push: false")


@pytest.mark.integration
@pytest.mark.parametrize("at", ["the repo's creation", "the commit"])
def test_a_takedown_during_publish_wins(s3, hub, monkeypatch, at: str) -> None:
    """`publish` held at the Hub while the person's takedown runs: it once made the repo
    public again (exit 0, a new status naming it), or, held at the commit, said "the Hub said
    404" (exit 10) and left a status. Now its commit is checked against the opt-out list at
    the moment of commit (consent.Guard.public): exit 12, no repo, nothing of the bot."""
    from job.cloud import hub as hub_module

    monkeypatch.setattr(hub_module, "BACKOFF_SECONDS", 0.01)
    client = boto3.client("s3")
    client.upload_file(str(SAMPLE), "results", "inputs/sam.jsonl")
    client.put_object(Bucket="results", Key="jobs/m.yaml", Body=MADE.encode())
    made = invoke("run", "--manifest", "s3://results/jobs/m.yaml")
    assert made.returncode == 0, made.stderr
    hold = hold_at(COMMIT if at == "the commit" else ("POST", "/api/repos/create"), hub=hub)
    publish = ["publish", "sourdough_sam", "--output", "s3://results/bots"]
    with held(hold, [*publish, "--repo", "huggingtweets/sourdough_sam"]) as job:
        done = invoke("takedown", "sourdough_sam", "--output", "s3://results/bots")
    err = job.said
    assert done.returncode == 0, done.stderr
    assert job.returncode == errors.OPTED_OUT, err
    assert "opted out while the bot was being made" in err
    assert "huggingtweets/sourdough_sam" not in hub.state.repos
    assert open_storage("s3://results/bots").list("sourdough_sam/") == []


def test_a_manifest_retry_of_a_published_bot_finds_the_opt_out_first(api, hub) -> None:
    """The retry's already-published branch pushes again (publish_latest): the opt-out list
    is read before, so an opted-out bot is never pushed back."""
    from job.cloud.consent import opt_out
    from job.cloud.publish import publish_latest
    from job.data.handles import Handle

    storage = open_storage("s3://results/bots")
    publish(storage, hub, "alice")
    opt_out(storage, Handle("ALICE"), None, None)
    with pytest.raises(errors.OptedOut):
        publish_latest(storage, "alice", "huggingtweets/alice-again")
    assert "huggingtweets/alice-again" not in hub.state.repos


def test_a_repo_pushed_before_its_status_knew_it_is_still_taken_down(api, hub) -> None:
    """`also`: what a run was writing when it found the opt-out goes with the bot, whatever
    the status says (a status write may not have happened yet)."""
    from job.cloud.consent import Guard, opt_out
    from job.data.handles import Handle

    storage = open_storage("s3://results/bots")
    publish(storage, hub, "alice")
    guard = Guard.of(storage, "alice")
    with pytest.raises(errors.OptedOut), guard.public("a copy", ["me/alice-copy"]):
        hub.state.repos["me/alice-copy"] = {"private": False}  # the write: made public...
        opt_out(storage, Handle("alice"), None, None)  # ...as the takedown comes
    assert hub.state.repos == {}
    assert storage.list("alice/") == []
    write_status(storage, "bob", "succeeded", hub=HubStatus())  # another bot is not touched
    assert storage.list("bob/") == ["bob/status.json"]


@pytest.mark.parametrize(
    "planted",
    [
        "alice/notes.txt",  # beside the bot's files: the folder was left "to check by hand"
        "alice/\x01\x1b[2J",  # a control character: S3's DeleteObjects (XML) failed on it
        f"alice/{RUN}/model/\rREADME.md",  # a CR, which XML reads as a LF: another key
    ],
)
@pytest.mark.parametrize("where", ["s3", "local"])
def test_a_key_planted_in_a_bots_folder_stops_no_takedown(
    api, hub, tmp_path, planted: str, where: str
) -> None:
    """Anyone who can write the output can add a key to a bot's folder; the bot still goes,
    all of it, and the takedown says so."""
    output = "s3://results/bots" if where == "s3" else str(tmp_path / "out")
    storage = open_storage(output)
    publish(storage, hub, "alice")
    storage.put_bytes(planted, b"x")
    result = invoke("takedown", "alice", "--output", output)
    assert result.returncode == 0, result.stderr
    assert "removed 1 bot folder(s): alice" in result.stdout and "left:" not in result.stdout
    assert storage.list("alice/") == []
    assert "huggingtweets/alice" not in hub.state.repos


def test_a_forged_record_cannot_write_to_the_operators_terminal(api, hub, tmp_path) -> None:
    """The takedown quotes the inputs a status names; one forged with an escape sequence (OSC
    52: 'put this command on the clipboard') is printed as text, in the command to paste too."""
    storage = open_storage(str(tmp_path / "out"))
    uri = "s3://other/\x1b]52;c;cm0gLXJmIH4K\x07alice.zip"
    publish(storage, hub, "alice", inputs=[{"handle": "alice", "source": "archive", "uri": uri}])
    result = invoke("takedown", "alice", "--output", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    shown = "s3://other/\\u001b]52;c;cm0gLXJmIH4K\\u0007alice.zip"
    assert f"input: NOT deleted {shown}: outside the output" in result.stdout
    assert "\x1b" not in result.stdout + result.stderr and "\x07" not in result.stdout
