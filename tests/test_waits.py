"""Every wait has an end: a server that accepts and never answers, one that answers a byte at a
time, SIGTERM and SIGINT while the job waits on either. The job runs as a process, as the
platforms run it; each case asserts the exit code, one ``error:`` line and how long it took."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from job import errors
from job.__main__ import EXIT_GRACE_SECONDS
from tests.helpers import SAMPLE
from tests.helpers.stalls import Stall, wait_for

pytestmark = pytest.mark.integration
IMPORTS = 30.0  # seconds a process may take to start and reach the wait, on a loaded CI machine


def start(tmp: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    """The job as a process; its stderr goes to a file: a child it starts (W&B's service) may
    hold a pipe open after the job itself has ended."""
    command = ["run", "sourdough_sam", "--jsonl", str(SAMPLE), "--min-chars", "10"]
    return subprocess.Popen(
        [sys.executable, "-m", "job", *command, "--out", str(tmp), *args],
        env={**os.environ, "HF_HOME": str(tmp / "hf"), "WANDB_MODE": "disabled", **env},
        stdout=subprocess.DEVNULL,
        stderr=(tmp / "stderr").open("w"),
        text=True,
    )


def ended(job: subprocess.Popen[str], code: int, within: float) -> str:
    started = time.monotonic()
    err_file = Path(job.args[job.args.index("--out") + 1], "stderr")
    try:
        job.wait(timeout=within + 60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running after {within + 60:.0f} s: {err_file.read_text()}")
    finally:
        job.kill()
    took = time.monotonic() - started
    err = err_file.read_text()
    assert job.returncode == code, err
    assert took <= within, f"{took:.0f} s: {err}"
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("drip", [None, 0.5], ids=["never answers", "a byte every 0.5 s"])
def test_a_base_model_download_that_never_ends_meets_its_deadline(tmp_path, drip) -> None:
    with Stall(drip) as hub:
        job = start(
            tmp_path,
            "--base-model",
            "someone/model",
            HF_ENDPOINT=hub.url,
            HUGGINGTWEETS_DEADLINE_BASE_MODEL="4",
        )
        line = ended(job, errors.TRANSIENT, IMPORTS + 4 + EXIT_GRACE_SECONDS)
        assert hub.connections >= 1
    assert "total deadline" in line


@pytest.mark.parametrize(
    ("stop", "drip"),
    [(signal.SIGTERM, None), (signal.SIGINT, None), (signal.SIGTERM, 0.5)],
    ids=["SIGTERM, no answer", "SIGINT, no answer", "SIGTERM, a byte every 0.5 s"],
)
def test_a_signal_while_the_base_model_download_hangs_ends_the_job(tmp_path, stop, drip) -> None:
    """It once sat in recv, SIGTERM ignored, until SIGKILL (864 s)."""
    with Stall(drip) as hub:
        job = start(tmp_path, "--base-model", "someone/model", HF_ENDPOINT=hub.url)
        assert wait_for(lambda: hub.connections >= 1, IMPORTS), "the download never began"
        time.sleep(0.5)
        job.send_signal(stop)
        code = errors.TRANSIENT if stop == signal.SIGTERM else 130
        line = ended(job, code, EXIT_GRACE_SECONDS + 5)
    assert ("SIGTERM" if stop == signal.SIGTERM else "SIGINT") in line


STUCK = """
import sys, threading
import job.__main__ as entry
from job import cli
entry.EXIT_GRACE_SECONDS = float(sys.argv[1])

def swallows():  # a library that takes the stop for its own and waits on
    import tempfile
    tempfile.mkdtemp(prefix="a-session-")  # what a task makes for a bot
    said = False
    while True:
        try:
            if not said:
                said = print("waiting", flush=True) or True  # within the try: the signal may come
            threading.Event().wait()
        except BaseException:
            pass

cli.app = swallows
entry.main()
"""


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("again", [False, True], ids=["once", "twice"])
def test_a_stop_that_is_swallowed_still_ends_the_process(tmp_path, stop, again) -> None:
    """Whatever holds the command, a stop ends the process within the grace with its code and
    a line that says so, and a second stop at once; either way its temporary folder goes
    (job/temporary.py). SIGINT had no such bound (Python's own handler): a Ctrl-C once left
    a job on a stalled download for more than 80 s."""
    grace = 2.0 if not again else 60.0
    job = subprocess.Popen(
        [sys.executable, "-c", STUCK, str(grace)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    try:
        assert job.stdout is not None and job.stdout.readline() == "waiting\n"
        started = time.monotonic()
        job.send_signal(stop)
        if again:
            time.sleep(0.5)
            job.send_signal(stop)
        job.wait(timeout=grace + 30)
        took = time.monotonic() - started
    finally:
        job.kill()
    err = job.stderr.read() if job.stderr else ""
    code = errors.TRANSIENT if stop == signal.SIGTERM else 130
    assert job.returncode == code, err
    assert sorted(tmp_path.iterdir()) == []
    if again:
        assert took < 10, took
    else:
        name = "SIGTERM" if stop == signal.SIGTERM else "SIGINT"
        assert grace <= took < grace + 10, took
        assert err.count("error:") == 1 and name in err, err
        assert err.strip().endswith("; the process did not end by itself"), err


def test_sigterm_while_wandb_starts_is_not_swallowed(tmp_path) -> None:
    """W&B's start, online, against a server that never answers: the stage would go on
    without W&B after 90 s; SIGTERM meanwhile once ended the run with exit 0."""
    with Stall() as wandb:
        job = start(
            tmp_path,
            "--base-model",
            "tiny",
            "--wandb-mode",
            "online",
            WANDB_MODE="online",
            WANDB_BASE_URL=wandb.url,
            WANDB_API_KEY="k" * 40,
        )
        assert wait_for(lambda: wandb.connections >= 1, IMPORTS + 30), "W&B never called"
        time.sleep(0.5)
        job.send_signal(signal.SIGTERM)
        line = ended(job, errors.TRANSIENT, EXIT_GRACE_SECONDS + 5)
    assert "SIGTERM" in line


@pytest.mark.parametrize("at", ["an S3 upload", "the Hub commit"])
def test_sigterm_during_a_stalled_upload_ends_at_once_and_says_so(s3, hub, tmp_path, at) -> None:
    """A stalled upload once held the exit until the 15 s fallback, the status left
    `running`; during the Hub commit the status stayed `succeeded` with the Hub `pending`
    (a push no one will make). Now the command's boundary ends it: exit 75 well inside the
    grace, the status failed (the run) or the push failed (the Hub), never pending."""
    import boto3

    from job.storage import open_storage
    from tests.helpers import get_json
    from tests.helpers.holds import COMMIT, WEIGHTS, held, hold_at
    from tests.helpers.jobs import TINY_MANIFEST
    from tests.helpers.s3 import FaultProxy

    client = boto3.client("s3")
    client.upload_file(str(SAMPLE), "results", "inputs/sam.jsonl")
    manifest = (
        f"version: 1\noutput: s3://results/bots{TINY_MANIFEST}"
        "hub: {push: true, owner: huggingtweets, contact: t@example.org}\n"
        "wandb: {mode: disabled}\nbots:\n"
        "  - users: [{handle: sourdough_sam, source: jsonl, uri: s3://results/inputs/sam.jsonl}]\n"
    )
    client.put_object(Bucket="results", Key="m.yaml", Body=manifest.encode())
    with FaultProxy(s3.url) as proxy:
        hold = hold_at(WEIGHTS, proxy=proxy) if at == "an S3 upload" else hold_at(COMMIT, hub=hub)
        env = {"AWS_ENDPOINT_URL": proxy.url, "HF_HOME": str(tmp_path / "hf")}
        args = ["run", "--manifest", "s3://results/m.yaml"]
        with held(hold, args, env, stderr=tmp_path / "stderr") as job:
            started = time.monotonic()  # still held: the stop may not wait for the release
            job.send_signal(signal.SIGTERM)
            job.wait(timeout=EXIT_GRACE_SECONDS + 30)
            took = time.monotonic() - started
    err = job.said
    assert job.returncode == errors.TRANSIENT, err
    assert took < EXIT_GRACE_SECONDS - 5, f"{took:.1f} s: the fallback, not the boundary"
    assert "stopped by SIGTERM" in err and "did not end by itself" not in err
    status = get_json(open_storage("s3://results/bots"), "sourdough_sam/status.json")
    if at == "an S3 upload":
        assert status["state"] == "failed" and "SIGTERM" in status["reason"]
    else:
        assert status["hub"]["state"] == "failed" and "SIGTERM" in status["hub"]["reason"]
