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
from job.data.handles import Handle, handles_of
from job.storage import Storage, open_storage
from tests.helpers import get_json
from tests.helpers.cli import invoke
from tests.helpers.twitter_api import TwitterAPI
from tests.helpers.wandb_api import FAULT_BODY, FakeWandb

TOKEN = "tw-consent-token"


RUN = "20261201T120000123456Z-abcdef12"  # as runs.new_run_id makes them


def publish(
    storage: Storage,
    hub,
    bot: str,
    manifest: str | None = None,
    inputs: list[dict] | None = None,
    state: str = "succeeded",
) -> None:
    """A bot as a finished run leaves it: a run with its marker, latest.json, checkpoints,
    a status naming its Hub repo (and the manifest and inputs it came from), and the repo on
    the Hub."""
    for key in (
        f"{RUN}/model/model.safetensors",
        f"{RUN}/_COMPLETE",
        "latest.json",
        "checkpoints/c",
    ):
        storage.put_bytes(f"{bot}/{key}", b"x")
    repo = f"huggingtweets/{bot}"
    hub.state.repos[repo] = {"private": False}
    pushed = HubStatus(repo=repo, state="pushed", run_id=RUN)
    write_status(
        storage, bot, state, run_id=RUN, hub=pushed, manifest=manifest, inputs=inputs or []
    )


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
    # The manifest that made them gave alice's archive and carol's tweets as inputs.
    inputs = "s3://results/bots/inputs"
    made = (
        "version: 1\noutput: s3://results/bots\nbots:\n"
        f"  - users: [{{handle: Alice, source: archive, uri: {inputs}/alice.zip}}]\n"
        f"  - users: [{{handle: carol, source: jsonl, uri: {inputs}/carol.jsonl}},"
        f" {{handle: alice, source: archive, uri: {inputs}/alice.zip}}]\n"
    )
    storage.put_bytes("jobs/made.yaml", made.encode())
    for name in ("alice.zip", "carol.jsonl", "bob.zip"):
        storage.put_bytes(f"inputs/{name}", b"x")
    for bot in ("alice", "carol-alice", "bob"):
        publish(storage, hub, bot, manifest="s3://results/bots/jobs/made.yaml")

    result = invoke(
        *("takedown", "Alice", "--output", "s3://results/bots"),
        *("--reason", "asked by email", "--requested-by", "alice herself"),
    )
    assert result.returncode == 0, result.stderr
    assert "removed 2 bot folder(s): alice, carol-alice" in result.stdout
    assert "deleted huggingtweets/alice" in result.stdout
    assert "input: deleted s3://results/bots/inputs/alice.zip" in result.stdout
    # Nothing of theirs remains, on S3 or the Hub; bob's bot and carol's input are untouched.
    left = storage.list("")
    assert not [k for k in left if k.startswith(("alice/", "carol-alice/"))], left
    assert set(hub.state.repos) == {"huggingtweets/bob"}
    assert "bob/latest.json" in left
    assert [k for k in left if k.startswith("inputs/")] == ["inputs/bob.zip", "inputs/carol.jsonl"]
    record = get_json(storage, opt_out_key(Handle("alice")))
    assert record["reason"] == "asked by email" and record["requested_by"] == "alice herself"

    # Again: idempotent, and it says there was nothing left.
    again = invoke("takedown", "alice", "--output", "s3://results/bots")
    assert again.returncode == 0 and "nothing to remove" in again.stdout
    assert (
        get_json(storage, opt_out_key(Handle("alice"))) == record
    )  # the first request's date stays

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


WANDB_KEY = "wandbconsentkey" + "0" * 25  # W&B keys are 40 letters and digits


@pytest.fixture(scope="module")
def _wandb_server() -> Iterator[FakeWandb]:
    with FakeWandb(WANDB_KEY) as server:
        yield server


@pytest.fixture
def wandb_api(_wandb_server: FakeWandb, monkeypatch: pytest.MonkeyPatch) -> FakeWandb:
    _wandb_server.reset()
    monkeypatch.setenv("WANDB_BASE_URL", _wandb_server.url)
    monkeypatch.setenv("WANDB_API_KEY", WANDB_KEY)
    monkeypatch.delenv("WANDB_ENTITY", raising=False)
    return _wandb_server


def logged_online(storage: Storage, bot: str, project: str) -> None:
    """The published run's job.json, as a run with W&B online writes it."""
    record = {"config": {"wandb": {"project": project}}, "wandb": {"mode": "online"}}
    storage.put_bytes(f"{bot}/{RUN}/job.json", json.dumps(record).encode())


def test_takedown_deletes_the_bots_wandb_runs_with_their_artifacts(api, hub, wandb_api) -> None:
    storage = open_storage("s3://results/bots")
    for bot in ("alice", "carol-alice", "bob"):
        publish(storage, hub, bot)
    logged_online(storage, "alice", "tweets-eu")
    state = wandb_api.state
    state.add("tweets-eu", "alice", "prepare", ["raw-alice", "dataset-alice"])
    state.add("tweets-eu", "alice", "train", ["model-alice"])
    # A failed attempt's run (no job.json names it), in the default project.
    state.add("huggingtweets", "carol-alice", "prepare", ["raw-carol-alice"])
    state.add("huggingtweets", "bob", "train", ["model-bob"])

    result = invoke("takedown", "alice", "--output", "s3://results/bots")
    assert result.returncode == 0, result.stderr
    assert [(r.group, r.project) for r in state.runs.values()] == [("bob", "huggingtweets")]
    assert state.deleted == [("run0", True), ("run1", True), ("run2", True)]  # with artifacts
    assert "wandb: deleted tester/tweets-eu/run0 and its artifacts" in result.stdout
    assert "wandb: deleted tester/huggingtweets/run2 and its artifacts" in result.stdout
    assert WANDB_KEY not in result.stdout + result.stderr


def test_without_a_wandb_key_an_online_bot_is_refused_before_anything_goes(
    api, hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    storage = open_storage("s3://results/bots")
    publish(storage, hub, "alice")
    logged_online(storage, "alice", "huggingtweets")
    result = invoke("takedown", "alice", "--output", "s3://results/bots")
    assert result.returncode == errors.CREDENTIALS
    assert "logged to W&B online" in result.stderr and "WANDB_API_KEY" in result.stderr
    assert "huggingtweets/alice" in hub.state.repos and f"alice/{RUN}/job.json" in storage.list("")
    assert get_json(storage, opt_out_key(Handle("alice"))) is not None  # the opt-out holds already


@pytest.mark.parametrize(
    ("fault", "key", "code"),
    [
        ({"DeleteRun": 403}, WANDB_KEY, errors.TRANSIENT),
        ({}, "nottheright" + "x" * 29, errors.CREDENTIALS),
    ],
)
def test_a_wandb_failure_leaves_what_a_rerun_finishes(
    api, hub, wandb_api, monkeypatch: pytest.MonkeyPatch, fault, key, code
) -> None:
    storage = open_storage("s3://results/bots")
    publish(storage, hub, "alice")
    logged_online(storage, "alice", "huggingtweets")
    wandb_api.state.add("huggingtweets", "alice", "train", ["model-alice"])
    wandb_api.state.faults.update(fault)
    result = invoke(
        "takedown", "alice", "--output", "s3://results/bots", env={"WANDB_API_KEY": key}
    )
    assert result.returncode == code, result.stderr
    assert FAULT_BODY not in result.stderr and key not in result.stderr  # no server words, no key
    assert "alice/status.json" in storage.list("alice/") and wandb_api.state.runs
    wandb_api.state.faults.clear()
    result = invoke("takedown", "alice", "--output", "s3://results/bots")
    assert result.returncode == 0, result.stderr
    assert storage.list("alice/") == [] and not wandb_api.state.runs


# --- Which folders are a person's bots ---------------------------------------------------------


def test_a_takedown_takes_the_pointer_then_the_markers_then_the_files_then_the_status(
    api, hub, s3, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped anywhere, what is left reads as a bot partly gone, never as a whole one:
    latest.json first, then every run's and checkpoint's marker, then the files (a request a
    thousand), and the status, which names what a rerun must still remove, last."""
    import re

    from tests.helpers.s3 import FaultProxy

    storage = open_storage("s3://results/bots")
    publish(storage, hub, "alice")
    storage.put_bytes("alice/checkpoints/checkpoint-10/_COMPLETE", b"x")
    asked: list[list[str]] = []

    def watch(method: str, path: str) -> None:
        if method == "DELETE":
            asked.append([path.partition("/results/bots/alice/")[2]])
        elif method == "POST" and "delete" in path:
            asked.append(
                sorted(k.decode() for k in re.findall(rb"<Key>bots/alice/(.*?)</Key>", proxy.body))
            )

    with FaultProxy(s3.url) as proxy:
        proxy.hook = watch
        result = invoke(
            *("takedown", "alice", "--output", "s3://results/bots"),
            env={"AWS_ENDPOINT_URL": proxy.url},
        )
    assert result.returncode == 0, result.stderr
    assert asked == [
        ["latest.json"],
        sorted([f"{RUN}/_COMPLETE", "checkpoints/checkpoint-10/_COMPLETE"]),
        sorted([f"{RUN}/model/model.safetensors", "checkpoints/c"]),
        ["status.json"],
    ]
    assert storage.list("alice/") == []


@pytest.mark.parametrize("handle", ["__wmww", "_x", "a_", "_"])
def test_takedown_finds_handles_that_start_with_an_underscore_on_s3(api, hub, handle) -> None:
    """README's own @__wmww: `_opt-out` is the job's folder, but a handle may start with '_'."""
    storage = open_storage("s3://results/bots")
    for bot in (handle, f"dril-{handle}", "dril"):
        publish(storage, hub, bot)
    result = invoke("takedown", handle, "--output", "s3://results/bots")
    assert result.returncode == 0, result.stderr
    assert f"removed 2 bot folder(s): {handle}, dril-{handle}" in result.stdout
    assert sorted({k.split("/")[0] for k in storage.list("")}) == ["_opt-out", "dril"]
    assert set(hub.state.repos) == {"huggingtweets/dril"}


def test_takedown_finds_a_local_bots_result_scratch_and_a_killed_runs_leftover(
    api, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    for folder in ("__wmww/model", ".__wmww/work", ".__wmww.old/model", "dril/model"):
        (out / folder).mkdir(parents=True)
        (out / folder / "f").write_text("a tweet")
    result = invoke("takedown", "__wmww", "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert "removed 3 bot folder(s): .__wmww, .__wmww.old, __wmww" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["_opt-out", "dril"]


def test_the_jobs_own_folders_and_other_files_are_never_taken_for_a_bot(api, hub) -> None:
    # The opt-out folder is `_opt-out`: the name of a bot of @_opt and @out, were it allowed.
    with pytest.raises(errors.InvalidHandle, match="folder of the job's own"):
        from job.data.handles import bot_name

        bot_name(["_opt", "out"])
    storage = open_storage("s3://results")  # an output at the bucket's root
    assert invoke("takedown", "status", "--output", "s3://results").returncode == 0
    assert storage.list("_opt-out/") == ["_opt-out/status.json"]  # @status opted out
    storage.put_bytes("inputs/alice.zip", b"alice's archive")  # where docs/batch.md puts them
    result = invoke("takedown", "out", "--output", "s3://results")  # `_opt-out` holds "out"
    assert result.returncode == 0 and "nothing to remove" in result.stdout
    result = invoke("takedown", "inputs", "--output", "s3://results")
    assert result.returncode == 0, result.stderr
    assert "left: inputs/ is named like a bot of @inputs but holds other files" in result.stdout
    assert storage.get_bytes("inputs/alice.zip") == b"alice's archive"
    assert storage.list("_opt-out/") == [
        "_opt-out/inputs.json",
        "_opt-out/out.json",
        "_opt-out/status.json",
    ]


# --- The person's inputs ---------------------------------------------------------------------


def test_takedown_deletes_the_inputs_it_may_and_names_those_it_may_not(
    api, hub, tmp_path: Path
) -> None:
    """Inputs are recorded in the status whatever made the bot (a manifest, an --index, a CLI
    run): those under the output or the bucket's inputs/ go; any other is named, with the
    command that removes it, quoted for a shell."""
    import boto3

    client = boto3.client("s3")
    client.create_bucket(Bucket="elsewhere")
    storage = open_storage("s3://results/bots")
    kept_local = tmp_path / "alice's archive.zip"
    kept_local.write_bytes(b"x")
    inputs = {
        "s3://results/bots/in/alice.jsonl": "deleted",  # under the output
        "s3://results/inputs/alice.zip": "deleted",  # the bucket's inputs/, as docs/batch.md
        "s3://results/secret/alice.zip": "NOT deleted",  # elsewhere in the bucket
        "s3://elsewhere/alice.zip": "NOT deleted",  # another bucket
        str(kept_local): "NOT deleted",  # a local file
    }
    for uri in inputs:
        if uri.startswith("s3://"):
            bucket, key = uri[5:].split("/", 1)
            client.put_object(Bucket=bucket, Key=key, Body=b"x")
    client.put_object(Bucket="results", Key="inputs/carol.zip", Body=b"x")
    given = [{"handle": "alice", "source": "archive", "uri": u} for u in inputs]
    given.append({"handle": "carol", "source": "archive", "uri": "s3://results/inputs/carol.zip"})
    publish(storage, hub, "alice-carol", inputs=given)

    result = invoke("takedown", "ALICE", "--output", "s3://results/bots")
    assert result.returncode == 0, result.stderr
    for uri, what in inputs.items():
        assert f"input: {what} {uri}" in result.stdout
    assert "aws s3 rm s3://elsewhere/alice.zip" in result.stdout
    assert f"rm -- '{kept_local}'".replace("'s", "'\"'\"'s") in result.stdout
    left = {o["Key"] for o in client.list_objects_v2(Bucket="results").get("Contents", [])}
    assert "inputs/alice.zip" not in left and "bots/in/alice.jsonl" not in left
    assert {"inputs/carol.zip", "secret/alice.zip"} <= left  # carol's, and what it may not
    assert kept_local.exists()


def test_an_input_the_takedown_may_not_delete_is_named_and_the_exit_says_so(
    api, hub, s3, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = open_storage("s3://results/bots")
    storage.put_bytes("in/alice.zip", b"x")
    publish(
        storage,
        hub,
        "alice",
        inputs=[{"handle": "alice", "source": "archive", "uri": "s3://results/bots/in/alice.zip"}],
    )
    from tests.helpers.s3 import FaultProxy

    with FaultProxy(s3.url) as proxy:
        proxy.hook = lambda method, path: 403 if method == "DELETE" and "in/alice" in path else None
        result = invoke(
            "takedown",
            "alice",
            "--output",
            "s3://results/bots",
            env={"AWS_ENDPOINT_URL": proxy.url},
        )
    # everything else is removed; the exit says what was not (the person's tweets stay)
    assert result.returncode == errors.CREDENTIALS, result.stderr
    assert "input: NOT deleted s3://results/bots/in/alice.zip: access denied" in result.stdout
    assert "could not be deleted (access denied)" in result.stderr
    assert storage.list("alice/") == []


# --- Every repo it was pushed to, and a run in progress ---------------------------------------


def card_naming(hub, repo: str, *handles: str) -> None:
    """``repo`` on the fake Hub, with a card whose front matter names ``handles`` as its bot's
    people, as the job writes it (outputs/card.py)."""
    from tests.helpers.hub import Commit

    hub.state.repos[repo] = {"private": False}
    meta = f"---\ntags: [huggingtweets]\nhuggingtweets:\n  handles: [{', '.join(handles)}]\n---\n"
    hub.state.commits.append(Commit(repo, "card", {"README.md": meta.encode()}, "0" * 40))


def test_takedown_removes_every_repo_the_bot_was_pushed_to(api, hub) -> None:
    """A repo is the bot's by its name (any owner), or by its card's word: a `publish --repo`
    copy. A record that names any other repo is reported, never obeyed: whoever can write
    the output prefix cannot steer deletions with the operator's token."""
    storage = open_storage("s3://results/bots")
    publish(storage, hub, "alice")
    card_naming(hub, "someone/alice-moved", "Alice")  # publish --repo: its card says whose
    hub.state.repos["other/ALICE"] = {"private": False}  # the bot's name: no card needed
    hub.state.repos["victim/important"] = {"private": False}  # no card: not alice's
    card_naming(hub, "victim/carols", "carol")  # a card, of someone else's bot
    for repo in ("someone/alice-moved", "other/ALICE", "victim/important", "victim/carols"):
        pushed = HubStatus(repo=repo, state="pushed", run_id=RUN)
        write_status(storage, "alice", "succeeded", hub=pushed)  # `publish --repo` does this
    result = invoke("takedown", "@ALICE", "--output", "s3://results/bots")
    assert result.returncode == 0, result.stderr
    for repo in ("huggingtweets/alice", "someone/alice-moved", "other/ALICE"):
        assert f"deleted {repo}" in result.stdout
    for repo in ("victim/important", "victim/carols"):
        assert f"hub: NOT removed {repo}" in result.stdout
    assert set(hub.state.repos) == {"victim/important", "victim/carols"}


def test_takedown_says_a_bot_is_running(api, hub) -> None:
    storage = open_storage("s3://results/bots")
    publish(storage, hub, "alice", state="running")
    result = invoke("takedown", "alice", "--output", "s3://results/bots")
    assert result.returncode == 0, result.stderr
    assert f"alice: was running (run {RUN}" in result.stdout
    assert "finds the opt-out before it publishes" in result.stdout


def test_publish_refuses_an_opted_out_bot(api, hub) -> None:
    storage = open_storage("s3://results/bots")
    storage.put_bytes(opt_out_key(Handle("alice")), b"{}")  # even an empty record opts out
    result = invoke("publish", "carol-alice", "--output", "s3://results/bots")
    assert result.returncode == errors.OPTED_OUT, result.stderr
    assert "@alice asked not to be made into a bot" in result.stderr


def test_many_handles_are_checked_against_one_listing_of_the_opt_outs(api, hub) -> None:
    from job.cloud.consent import LIST_ABOVE, check_not_opted_out

    storage = open_storage("s3://results/bots")
    storage.put_bytes(opt_out_key(Handle("user_17")), b'{"at": "2026-12-01"}')
    handles = handles_of(f"user_{i}" for i in range(LIST_ABOVE + 10))
    with pytest.raises(errors.OptedOut, match="@user_17 asked not to be made"):
        check_not_opted_out(storage, handles)
    check_not_opted_out(storage, handles[:17] + handles[18:])  # the others may be made


@pytest.mark.parametrize("target", [["--target", "batch"], ["--target", "k8s", "--image", "r/i:1"]])
def test_a_dry_run_of_submit_checks_the_opt_outs_like_a_real_one(api, hub, target) -> None:
    storage = open_storage("s3://results/bots")
    storage.put_bytes(opt_out_key(Handle("alice")), b'{"at": "2026-12-01"}')
    result = invoke(
        *("submit", "bob", "Alice", "--output", "s3://results/bots", "--no-push", "--dry-run"),
        *target,
    )
    assert result.returncode == errors.OPTED_OUT, result.stdout
    assert result.stdout == "" and "@Alice asked not to be made" in result.stderr
