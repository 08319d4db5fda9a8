"""The command as users and the platform see it: exit codes, one-line errors, outputs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from job import errors
from tests.helpers import SAMPLE
from tests.helpers.archives import sentences, write_archive
from tests.helpers.cli import Result, one_line, process
from tests.helpers.cli import invoke as cli
from tests.helpers.twitter_api import FakeUser, TwitterAPI, v2_tweet

TOKEN = "secret-bearer-token-123"


@pytest.mark.integration
def test_prepare_real_archive(real_archive: Path, tmp_path: Path) -> None:
    result = cli("prepare", "andreruffert", "--archive", str(real_archive), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("prepared andreruffert: ")
    stats = json.loads((tmp_path / "andreruffert" / "data" / "stats.json").read_text())
    assert stats["users"]["andreruffert"]["downloaded"] == 1986


def test_options_reach_the_cleaning(real_archive: Path, tmp_path: Path) -> None:
    result = cli(
        "prepare",
        "andreruffert",
        "--archive",
        str(real_archive),
        "--out",
        str(tmp_path),
        "--replies",
        "drop",
        "--min-words",
        "5",
        "--no-dedupe",
    )
    assert result.returncode == 0, result.stderr
    stats = json.loads((tmp_path / "andreruffert" / "data" / "stats.json").read_text())
    assert stats["config"]["clean"] == {"min_words": 5, "replies": "drop", "dedupe": False}
    u = stats["users"]["andreruffert"]
    assert u["dropped_replies"] > 0 and u["duplicates"] == 0


def test_several_users_each_with_their_own_source(tmp_path: Path) -> None:
    a = write_archive(tmp_path / "a", sentences(120, user="a"), username="alice")
    b = tmp_path / "b.jsonl"
    b.write_text(
        "".join(json.dumps({"text": f"bob writes line {i} of text"}) + "\n" for i in range(300))
    )
    result = cli(
        "prepare",
        "alice",
        "bob",
        "--archive",
        f"@alice={a}",
        "--jsonl",
        f"bob={b}",
        "--out",
        str(tmp_path / "out"),
        "--min-chars",
        "100",
    )
    assert result.returncode == 0, result.stderr
    stats = json.loads((tmp_path / "out" / "alice-bob" / "data" / "stats.json").read_text())
    assert stats["users"]["alice"]["used"] == stats["users"]["bob"]["used"] == 120


def test_api_source(tmp_path: Path) -> None:
    with TwitterAPI(token=TOKEN) as api:
        api.add(
            FakeUser(
                id="1",
                username="talker",
                tweets=[
                    v2_tweet(5000 - i, f"api tweet number {i} is long enough to count" * 2)
                    for i in range(150)
                ],
            )
        )
        result = cli(
            "prepare",
            "talker",
            "--api",
            "--out",
            str(tmp_path),
            "-v",
            env={"TWITTER_BEARER_TOKEN": TOKEN, "TWITTER_API_URL": api.url},
        )
    assert result.returncode == 0, result.stderr
    assert TOKEN not in result.stderr + result.stdout
    assert TOKEN not in (tmp_path / "talker" / "data" / "stats.json").read_text()
    assert TOKEN not in (tmp_path / "talker" / "data" / "raw.jsonl").read_text()


@pytest.mark.parametrize(
    ("user", "code"), [("nobody", errors.ACCOUNT_NOT_FOUND), ("locked", errors.ACCOUNT_PROTECTED)]
)
def test_api_account_errors(tmp_path: Path, user: str, code: int) -> None:
    with TwitterAPI(token=TOKEN) as api:
        api.add(FakeUser(id="2", username="locked", protected=True))
        result = cli(
            "prepare",
            user,
            "--api",
            "--out",
            str(tmp_path),
            env={"TWITTER_BEARER_TOKEN": TOKEN, "TWITTER_API_URL": api.url},
        )
    line = one_line(result, code)
    assert f"@{user}" in line
    assert not (tmp_path / user).exists()


def test_api_without_token(tmp_path: Path) -> None:
    one_line(cli("prepare", "x", "--api", "--out", str(tmp_path)), errors.CREDENTIALS)


@pytest.mark.parametrize("handle", ["../../etc", "way_too_long_handle", "a b", "s3://x"])
def test_invalid_handle(tmp_path: Path, handle: str) -> None:
    result = cli(
        "prepare", handle, "--jsonl", str(tmp_path / "x.jsonl"), "--out", str(tmp_path / "out")
    )
    one_line(result, errors.INVALID_HANDLE)
    assert not (tmp_path / "out").exists()


def test_missing_archive(tmp_path: Path) -> None:
    result = cli("prepare", "x", "--archive", str(tmp_path / "gone.zip"), "--out", str(tmp_path))
    assert "gone.zip" in one_line(result, errors.INPUT_NOT_FOUND)


@pytest.mark.integration  # a process of its own: not the in-process tier
def test_missing_tweets_file_fails_before_the_heavy_imports(tmp_path: Path) -> None:
    """A wrong path is reported at once, not after importing transformers and DeepSpeed."""
    missing = tmp_path / "gone.jsonl"
    script = f"""
import sys
import job.cli as cli
sys.argv = ["huggingtweets", "run", "x", "--jsonl", {str(missing)!r}, "--out", {str(tmp_path)!r}]
try:
    cli.app()
except SystemExit as e:
    print(e.code, sorted({{"transformers", "deepspeed"}} & set(sys.modules)))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.stdout.split() == [str(errors.INPUT_NOT_FOUND), "[]"], result.stderr
    assert f"tweets file not found: {missing}" in result.stderr


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--base-model", "gpt5"], errors.BAD_CONFIG),
        (["--base-model", "tiny", "--tokenizer", "."], errors.INPUT_NOT_FOUND),
    ],
)
def test_bad_base_model_fails_before_the_tweets_are_prepared(
    tmp_path: Path, args: list[str], code: int
) -> None:
    tweets = tmp_path / "t.jsonl"
    tweets.write_text(json.dumps({"text": "a tweet long enough to keep"}) + "\n")
    result = cli("run", "x", "--jsonl", str(tweets), *args, "--out", str(tmp_path / "out"))
    one_line(result, code)
    assert not (tmp_path / "out").exists()


def test_corrupt_archive(tmp_path: Path) -> None:
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04 not really")
    result = cli("prepare", "x", "--archive", str(tmp_path / "bad.zip"), "--out", str(tmp_path))
    one_line(result, errors.CORRUPT_INPUT)


def test_too_few_tweets(tmp_path: Path) -> None:
    path = write_archive(tmp_path / "a", sentences(10))
    result = cli("prepare", "sample_user", "--archive", str(path), "--out", str(tmp_path / "o"))
    assert "fewer than the 6000 characters" in one_line(result, errors.NOT_ENOUGH_DATA)
    assert not (tmp_path / "o" / "sample_user" / "data").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["--replies", "sometimes", "--jsonl", "x.jsonl"],
        [],  # no source at all
        ["--balance-ratio", "0.5", "--jsonl", "x.jsonl"],
    ],
)
def test_bad_options(tmp_path: Path, args: list[str]) -> None:
    one_line(cli("prepare", "x", *args, "--out", str(tmp_path)), errors.BAD_CONFIG)


def test_two_unnamed_archives_for_two_users(tmp_path: Path) -> None:
    result = cli("prepare", "a", "b", "--archive", "x.zip", "--out", str(tmp_path))
    assert "HANDLE=PATH" in one_line(result, errors.BAD_CONFIG)


@pytest.mark.integration  # a process of its own: not the in-process tier
@pytest.mark.parametrize(
    ("args", "code"),
    [(["prepare", "--help"], 0), (["prepare", "bad handle!"], errors.InvalidHandle.exit_code)],
)
def test_exit_skips_teardown_but_not_exit_handlers(
    tmp_path: Path, args: list[str], code: int
) -> None:
    """main() ends the process with os._exit: the command's exit code, its output and the exit
    handlers that libraries register while it runs (W&B's, torch's) must all survive that."""
    marker = tmp_path / "handler-ran"
    script = f"""
import atexit, sys
import job.cli as cli
command = cli.app
def app():
    atexit.register(lambda: open({str(marker)!r}, "w").write("ran"))
    command()
cli.app = app
sys.argv = ["huggingtweets", *{args!r}]
from job.__main__ import main
main()
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == code, result.stderr
    assert marker.read_text() == "ran"
    assert ("Usage:" in result.stdout) if code == 0 else ("error:" in result.stderr)


@pytest.mark.integration  # a process of its own: not the in-process tier
def test_help_and_version() -> None:
    """--version as a process: the console command's own start-up."""
    assert process("--version").stdout.strip().startswith("huggingtweets ")
    result = cli("prepare", "--help")
    assert result.returncode == 0 and "--archive" in result.stdout


@pytest.mark.integration  # a process of its own: not the in-process tier
def test_sigterm_while_fetching_is_one_line_and_transient(tmp_path: Path) -> None:
    """The platform stops the job while the API is slow to answer: one line, exit 75."""
    import signal
    import time

    from tests.helpers.twitter_api import Fault

    with TwitterAPI(token=TOKEN) as api:
        api.add(FakeUser(id="1", username="slow", tweets=[v2_tweet(1, "a b c d")]))
        api.faults = [Fault(200, stall=3.0)]
        proc = subprocess.Popen(
            [sys.executable, "-m", "job", "prepare", "slow", "--api", "--out", str(tmp_path)],
            env={**os.environ, "TWITTER_BEARER_TOKEN": TOKEN, "TWITTER_API_URL": api.url},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while not api.requests and time.monotonic() < deadline:  # it is waiting on the API
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    result = Result(proc.returncode, "", err)
    assert "stopped by SIGTERM" in one_line(result, errors.TRANSIENT)


@pytest.mark.parametrize(
    "command", ["prepare", "run", "status", "publish", "takedown", "submit", None]
)
def test_every_option_has_help_and_a_placeholder_people_read(command: str | None) -> None:
    import typer.main

    from job.cli import app

    group = typer.main.get_command(app)
    made = group if command is None else group.commands[command]  # type: ignore[attr-defined]
    for param in made.params:
        if param.param_type_name == "option":
            assert param.help, f"{command} --{param.name} has no help"  # type: ignore[attr-defined]
    shown = cli(*([command] if command else []), "--help", env={"COLUMNS": "200"}).stdout
    assert not re.search(r"<(bool|str|int|float|path|list\[\w+\])>", shown), shown
    assert "None:" not in shown  # a default is said in words, not as Python's None


@pytest.mark.integration  # a process of its own: not the in-process tier
def test_status_piped_to_a_reader_that_leaves_ends_quietly(tmp_path: Path) -> None:
    """`status | head -1`: the reader closes the pipe; no 'internal error: BrokenPipeError'."""
    from job.cloud.status import write_status
    from job.storage import LocalStorage

    storage = LocalStorage(tmp_path)
    for i in range(250):  # 250 rows of ~350 bytes: more than a pipe's 64 KiB buffer holds
        write_status(storage, f"bot{i}", "failed", reason="r" * 300)
    script = f"{sys.executable} -m job status --output {tmp_path} | head -1"
    done = subprocess.run(["bash", "-o", "pipefail", "-c", script], capture_output=True, text=True)
    assert done.stdout == "bot\tstate\trun\tupdated\thub\treason\tspace\n"
    assert done.stderr == "" and done.returncode == 0


def test_status_is_a_header_and_a_row_a_bot_with_what_will_happen_on_the_hub(
    tmp_path: Path,
) -> None:
    from job.cloud.status import HubStatus, write_status
    from job.storage import LocalStorage

    storage = LocalStorage(tmp_path)
    pending = HubStatus(repo="huggingtweets/a", state="pending")
    write_status(storage, "a", "queued", hub=pending)  # submit: it will push
    write_status(storage, "b", "failed", hub=pending, reason="bad\tinput\nhere")
    result = cli("status", "--output", str(tmp_path))
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert rows[0] == ["bot", "state", "run", "updated", "hub", "reason", "space"]
    assert [r[:2] + r[4:] for r in rows[1:]] == [
        ["a", "queued", "pending", "", "-"],
        ["b", "failed", "-", "bad input here", "-"],  # a failed bot's push will not happen
    ]


@pytest.mark.parametrize("out", ["s3://results/x", "s3:/results/x", "https://e.vil/x"])
@pytest.mark.parametrize("command", ["prepare", "run"])
def test_out_is_a_local_folder_and_a_uri_there_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, out: str
) -> None:
    monkeypatch.chdir(tmp_path)
    result = cli(command, "alice", "--jsonl", str(SAMPLE), "--out", out)
    one_line(result, errors.BAD_CONFIG)
    assert list(tmp_path.iterdir()) == []  # no folder named `s3:` or `https:`


@pytest.mark.parametrize("output", ["s3:/results/x", "s3:results", "file:///tmp/x"])
def test_a_manifest_output_that_is_not_a_uri_nor_a_folder_is_refused(
    tmp_path: Path, output: str
) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(f"version: 1\noutput: {output}\nbots:\n  - users: [{{handle: a}}]\n")
    result = cli("run", "--manifest", str(manifest))
    assert "only s3:// URIs and local folders" in one_line(result, errors.BAD_CONFIG)


@pytest.mark.parametrize(
    ("written", "value"),
    [("5e-5", 5e-5), ("1E-3", 1e-3), ("3.0e-4", 3e-4), (".5e-2", 0.005), ("2E-1", 0.2)],
)
def test_numbers_as_people_write_them_load_in_config_files_and_manifests(
    tmp_path: Path, written: str, value: float
) -> None:
    from job.options import bot_job_from_args
    from job.spec import parse_manifest

    config = tmp_path / "my-run.yaml"
    config.write_text(f"train: {{epochs: 2, learning_rate: {written}}}\n")
    job = bot_job_from_args(["a"], [], [str(SAMPLE)], [], config, {})
    assert job.config.train.learning_rate == value
    manifest = parse_manifest(
        f"version: 1\noutput: out\ndefaults: {{train: {{learning_rate: {written}}}}}\n"
        "bots:\n  - users: [{handle: a}]\n"
    )
    assert manifest.defaults.train["learning_rate"] == value
    quoted = tmp_path / "quoted.yaml"  # a string stays one: the loader does not guess
    quoted.write_text(f"train: {{learning_rate: '{written}'}}\n")
    with pytest.raises(errors.BadConfig, match="expected a number"):
        bot_job_from_args(["a"], [], [str(SAMPLE)], [], quoted, {})


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        ("run", "[HANDLE]..."), ("prepare", "HANDLE..."), ("publish", "BOT"),
        ("takedown", "HANDLE"), ("submit", "HANDLE..."),
    ],
)  # fmt: skip
def test_usage_lines_name_what_to_type_not_a_template(command: str, shown: str) -> None:
    """`{users}...`, `{bot}`, `{handle}` read as templates left unfilled."""
    out = cli(command, "--help").stdout
    usage = next(line for line in out.splitlines() if "Usage:" in line)
    assert usage.split("[OPTIONS]", 1)[1].strip() == shown
    assert "{" not in out.split("Usage:", 1)[1].splitlines()[0]


def test_every_command_that_reads_an_output_reads_the_one_setting(tmp_path, monkeypatch) -> None:
    """The README tells users to export HUGGINGTWEETS_OUTPUT; submit read it, and status,
    publish and takedown did not."""
    out = tmp_path / "out"
    (out / "sam").mkdir(parents=True)
    (out / "sam" / "status.json").write_text('{"bot": "sam", "state": "queued"}')
    monkeypatch.setenv("HUGGINGTWEETS_OUTPUT", str(out))
    listed = cli("status")
    assert listed.returncode == 0 and "sam\tqueued" in listed.stdout, listed.stderr
    published = cli("publish", "sam")
    assert published.returncode == errors.INPUT_NOT_FOUND, published.stderr
    assert f"no complete run under {out}" in published.stderr
    taken = cli("takedown", "sam")
    assert taken.returncode == 0 and "@sam: opted out" in taken.stdout, taken.stderr
    assert (out / "_opt-out" / "sam.json").is_file()
    # a manifest given beside the variable is what the command reads
    manifest = tmp_path / "m.yaml"
    other = tmp_path / "other"
    manifest.write_text(f"version: 1\noutput: {other}\nbots:\n  - users: [{{handle: kim}}]\n")
    by_manifest = cli("status", "--manifest", str(manifest))
    assert by_manifest.returncode == 0 and "kim\tunknown" in by_manifest.stdout


@pytest.mark.integration
def test_a_bot_made_locally_is_listed_published_and_taken_down(hub, tmp_path) -> None:
    """`publish HANDLE --output out` after `run HANDLE --out out` said "no complete run", and
    `status --output out` showed an empty table beside finished bots. A local run now writes
    the record a manifest's run writes."""
    from tests.helpers.jobs import TINY_FLAGS

    out = tmp_path / "out"
    made = cli(
        *("run", "sourdough_sam", "--jsonl", str(SAMPLE), *TINY_FLAGS, "--out", str(out)),
        *("--contact", "takedown@example.org", "--wandb-mode", "disabled"),
    )
    assert made.returncode == 0, made.stderr
    listed = cli("status", "--output", str(out))
    assert listed.returncode == 0, listed.stderr
    (row,) = [line.split("\t") for line in listed.stdout.splitlines()[1:]]
    assert row[:2] == ["sourdough_sam", "succeeded"] and row[4] == "off"
    before = (out / "sourdough_sam" / "model" / "README.md").read_text()
    pushed = cli("publish", "sourdough_sam", "--output", str(out), "--repo", "me/sam-bot")
    assert pushed.returncode == 0, pushed.stderr
    assert "me/sam-bot" in hub.state.repos and "hub:pushed" in pushed.stdout
    files = hub.state.files("me/sam-bot")
    assert "model.safetensors" in files and b"me/sam-bot" in files["README.md"]
    assert (out / "sourdough_sam" / "model" / "README.md").read_text() == before  # untouched
    # a rerun keeps the record of where it was pushed: the takedown still finds the repo
    again = cli(
        *("run", "sourdough_sam", "--jsonl", str(SAMPLE), *TINY_FLAGS, "--out", str(out)),
        *("--wandb-mode", "disabled"),
    )
    assert again.returncode == 0, again.stderr
    taken = cli("takedown", "sourdough_sam", "--output", str(out))
    assert taken.returncode == 0, taken.stderr
    assert "deleted me/sam-bot" in taken.stdout and "me/sam-bot" not in hub.state.repos


def test_status_tells_an_opted_out_bot_and_a_push_that_will_not_happen(tmp_path) -> None:
    """A bot refused by an opt-out showed `unknown`; a failed bot whose manifest asked for a
    push showed `off`, where docs/batch.md says `-`."""
    out = tmp_path / "out"
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        f"version: 1\noutput: {out}\n"
        "hub: {push: true, owner: huggingtweets, contact: t@example.org}\nbots:\n"
        "  - users: [{handle: alice}]\n"
        f"  - users: [{{handle: bob, source: jsonl, uri: {tmp_path / 'missing.jsonl'}}}]\n"
    )
    (out / "_opt-out").mkdir(parents=True)
    (out / "_opt-out" / "alice.json").write_text("{}")
    done = cli("run", "--manifest", str(manifest))
    assert done.returncode != 0
    shown = cli("status", "--manifest", str(manifest))
    rows = {r[0]: r for r in (line.split("\t") for line in shown.stdout.splitlines()[1:])}
    assert rows["alice"][1] == "opted out" and "asked not to be made" in rows["alice"][5]
    assert rows["bob"][1] == "failed" and rows["bob"][4] == "-"
