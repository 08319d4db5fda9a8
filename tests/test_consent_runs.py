"""Consent end to end: a takedown during a run, and what a takedown leaves of a person's tweets.

A run is stopped at a known point (a request held by the loopback S3 proxy or the fake Hub, or
the run's own progress hook), the takedown runs, then the run goes on: it must publish nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from job import errors
from job.cloud.consent import Guard, takedown
from job.data.handles import Handle
from job.data.sources import FileSource
from job.run import run
from job.storage import LocalStorage, open_storage
from tests.helpers import REPO, SAMPLE
from tests.helpers.cli import invoke
from tests.helpers.holds import COMMIT, MARKER, held, hold_at
from tests.helpers.jobs import TINY_FLAGS, TINY_MANIFEST, tiny_job
from tests.helpers.s3 import FaultProxy

pytestmark = pytest.mark.integration

MANIFEST = f"""
version: 1
output: s3://results/bots{TINY_MANIFEST}
hub: {{push: true, owner: huggingtweets, contact: takedown@example.org}}
wandb: {{mode: disabled}}
bots:
  - users: [{{handle: sourdough_sam, source: jsonl, uri: s3://results/inputs/sam.jsonl}}]
"""


@pytest.mark.parametrize("point", ["the run's marker", "the Hub push"])
def test_a_takedown_during_a_run_always_wins(s3, hub, monkeypatch, point) -> None:
    from job.cloud import hub as hub_module

    monkeypatch.setattr(hub_module, "BACKOFF_SECONDS", 0.01)
    client = boto3.client("s3")
    client.upload_file(str(SAMPLE), "results", "inputs/sam.jsonl")
    client.put_object(Bucket="results", Key="jobs/m.yaml", Body=MANIFEST.encode())
    with FaultProxy(s3.url) as proxy:
        if point == "the run's marker":
            hold = hold_at(MARKER, proxy=proxy)
        else:
            hold = hold_at(COMMIT, hub=hub)
        run = ["run", "--manifest", "s3://results/jobs/m.yaml"]
        with held(hold, run, {"AWS_ENDPOINT_URL": proxy.url}) as job:
            done = invoke("takedown", "sourdough_sam", "--output", "s3://results/bots")
    err = job.said
    assert done.returncode == 0, done.stderr
    assert "sourdough_sam: was running" in done.stdout
    assert job.returncode == errors.OPTED_OUT, err
    assert "opted out while the bot was being made" in err
    storage = open_storage("s3://results/bots")
    # Nothing of the bot stays, not even a record of why (it would name them); its input is
    # gone; the Hub has no repo.
    assert storage.list("sourdough_sam/") == []
    assert open_storage("s3://results").list("inputs/") == []
    assert "huggingtweets/sourdough_sam" not in hub.state.repos


def test_a_takedown_during_a_local_run_wins_too(tmp_path: Path) -> None:
    out = tmp_path / "out"
    storage = LocalStorage(out)

    def progress(phase: str):
        def step(done: int, total: int) -> None:
            if phase == "training" and done == 1:  # the run is mid-training: a known point
                takedown(storage, Handle("sourdough_sam"))

        return step

    guard = Guard(storage, "sourdough_sam", [Handle("sourdough_sam")])
    with pytest.raises(errors.OptedOut, match="opted out while the bot was being made"):
        run(
            tiny_job(),
            {"sourdough_sam": FileSource(SAMPLE)},
            out,
            progress=progress,
            guard=guard.check,
        )
    assert sorted(p.name for p in out.iterdir()) == ["_opt-out"]


def test_after_a_takedown_no_copy_of_a_tweet_is_left_anywhere_the_job_wrote(tmp_path: Path) -> None:
    """A local run as the README's first command makes it, W&B offline, with its home, caches,
    HF_HOME and temporary folder in one place; then the takedown; then every file there is
    read for the person's tweets."""
    root = tmp_path / "everything"
    env = {
        **os.environ,
        "HOME": str(root / "home"),
        "XDG_CACHE_HOME": str(root / "home" / ".cache"),
        "XDG_DATA_HOME": str(root / "home" / ".local" / "share"),
        "XDG_CONFIG_HOME": str(root / "home" / ".config"),
        "HF_HOME": str(root / "hf"),
        "TMPDIR": str(root / "tmp"),
        "WANDB_MODE": "offline",
    }
    for var in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_ARTIFACT_DIR"):
        env.pop(var, None)
    for folder in ("home", "hf", "tmp"):
        (root / folder).mkdir(parents=True)
    out = root / "out"

    def job(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "job", *args],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr
        return done

    made = job("run", "sourdough_sam", "--jsonl", str(SAMPLE), *TINY_FLAGS, "--out", str(out))
    logged = [line for line in made.stderr.splitlines() if line.startswith("INFO")]
    assert len(logged) == len(set(logged)), logged  # no line twice (the load phase was)
    tweets = [json.loads(line)["text"] for line in SAMPLE.read_text().splitlines()]
    probes = [t[:40] for t in tweets if len(t) >= 40][:20]

    def copies() -> list[str]:
        found = []
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                if any(p.encode() in data for p in probes):
                    found.append(str(path.relative_to(root)))
        return found

    before = copies()
    assert any("wandb" in f for f in before), before  # W&B staged them: it is tested here
    assert not [f for f in before if not f.startswith("out/")], before  # all under the output
    job("takedown", "sourdough_sam", "--output", str(out))
    assert copies() == []
    assert sorted(p.name for p in out.iterdir()) == ["_opt-out"]
    # and nothing of either process is left in the temporary folder (W&B's service's own, ...)
    assert sorted(p.name for p in (root / "tmp").iterdir()) == []
    # nor in the home, where W&B stages by default (~/.local/share/wandb)
    assert [str(p) for p in (root / "home").rglob("*") if p.is_file()] == []
