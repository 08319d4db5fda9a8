"""The README's and the docs' commands, run exactly as printed, against the stand-ins: the
Twitter API and the Hub on loopback (the Hub serving a random model of gpt2's shape as
`openai-community/gpt2`, through the same from_pretrained download a real run makes), moto's
S3 and Batch."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import boto3
import pytest

from tests.cloud.test_submit import batch  # noqa: F401 (a fixture: moto's Batch, as deployed)
from tests.helpers import REPO, SAMPLE
from tests.helpers.twitter_api import FakeUser, TwitterAPI, v2_tweet

pytestmark = pytest.mark.integration
VENV_BIN = REPO / ".venv" / "bin"


def printed(page: str, first: str) -> list[str]:
    """The lines of the fenced code block of ``page`` that holds a line starting ``first``,
    from that line to the block's end, as printed."""
    lines = (REPO / page).read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first))
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("```"))
    return lines[start:end]


def shell(lines: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = "set -e\n" + "\n".join(lines) + "\n"
    return subprocess.run(
        ["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


@pytest.fixture
def stand_ins(hub, tmp_path: Path, gpt2_stand_in: Path):
    """The Twitter API with @__wmww (its token is the README's own `...`), and gpt2 on the Hub
    (a random model of its shape and vocabulary: a base named gpt2 must be one)."""
    texts = [json.loads(line)["text"] for line in SAMPLE.read_text().splitlines()]
    hub.serve("openai-community/gpt2", gpt2_stand_in)
    tweets = [v2_tweet(10_000 - i, f"{text} #{i}") for i, text in enumerate(texts)]
    with TwitterAPI(token="...") as api:
        api.add(FakeUser(id="42", username="__wmww", name="wmww", tweets=tweets))
        env = {
            **os.environ,
            "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
            "TWITTER_API_URL": api.url,
            "TWITTER_BEARER_TOKEN": "...",
            "HF_HOME": str(tmp_path / "hf"),
            "WANDB_MODE": "offline",
        }
        yield env


def test_the_config_example_and_the_readmes_second_use_run_as_printed(
    stand_ins: dict[str, str], tmp_path: Path
) -> None:
    usage = printed("docs/usage.md", "# Options from a YAML file")
    readme = printed("README.md", "# 2. From the Twitter API v2")[:3]
    assert readme[1].startswith("printf") and "> my-run.yaml" in readme[1]  # made, not assumed
    assert any("5e-5" in line for line in usage)  # the number YAML 1.1 read as a string
    # The same two lines in both places (the README's with the token it needs in front, which
    # the environment here holds as printed): trained once, a GPT-2-sized run of ~40 s.
    token = "TWITTER_BEARER_TOKEN=... "
    assert stand_ins["TWITTER_BEARER_TOKEN"] == "..."
    assert [line.removeprefix(token) for line in readme[1:]] == usage[1:]
    work = tmp_path / "work"
    work.mkdir()
    done = shell(readme, work, stand_ins)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("done __wmww: validation perplexity") == 1
    made = json.loads((work / "out" / "__wmww" / "job.json").read_text())
    assert made["config"]["train"]["learning_rate"] == 5e-5
    assert made["config"]["train"]["epochs"] == 1  # the README's flag wins over the file (2)
    assert made["config"]["sampling"]["per_prompt"] == 5


def test_the_readmes_cloud_use_runs_as_printed(batch, stand_ins: dict[str, str]) -> None:  # noqa: F811
    boto3.client("s3").create_bucket(Bucket="my-bucket")
    lines = printed("README.md", "# 3. In the cloud")
    assert "make submit USER=__wmww" in lines
    done = shell(lines, REPO, stand_ins)
    assert done.returncode == 0, done.stderr
    assert "submitted 1 bot to batch: " in done.stdout
    header, row = done.stdout.strip().splitlines()[-2:]
    assert header.split("\t")[:2] == ["bot", "state"]
    assert row.split("\t")[:2] == ["__wmww", "queued"] and row.split("\t")[4] == "pending"
    job_id = done.stdout.split("submitted 1 bot to batch: ", 1)[1].split()[0]
    (job,) = batch.describe_jobs(jobs=[job_id])["jobs"]
    assert job["jobQueue"].endswith("huggingtweets")
    assert job["parameters"]["manifest"].startswith("s3://my-bucket/jobs/")


def test_the_readmes_first_command_runs_in_a_clone(tmp_path: Path) -> None:
    """`make demo`, as printed, in a clone of this checkout (its .venv shared: the install is
    the slow part, and CI's own run is a fresh clone's `make install`), with a home of its
    own: it makes the bot, with no network and no Hub, and says how long it took."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    (clone / ".venv").symlink_to(REPO / ".venv")
    for made_from in ("pyproject.toml", "requirements/constraints.txt"):  # installed already
        os.utime(clone / made_from, (0, 0))
    lines = printed("README.md", "make demo")
    assert lines[0].startswith("make demo") and lines[2].startswith(".venv/bin/huggingtweets gen")
    env = {**os.environ, "HOME": str(tmp_path / "home"), "HF_HOME": str(tmp_path / "hf")}
    env.pop("WANDB_MODE", None)  # the demo's own default: offline
    done = shell([lines[0], lines[2]], clone, {**env, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "done sourdough_sam: validation perplexity" in done.stdout
    assert "hear it: .venv/bin/huggingtweets generate out/sourdough_sam" in done.stdout
    assert "not their words" in done.stderr  # and it was heard
    bot = clone / "out" / "sourdough_sam"
    assert {"README.md", "predictions.png", "model.safetensors"} <= {
        p.name for p in (bot / "model").iterdir()
    }
    assert (bot / "predictions.json").is_file() and (bot / "job.json").is_file()


def test_a_local_bots_life_runs_as_printed(hub, tmp_path: Path) -> None:
    """docs/usage.md's local bot: made, listed, published, taken down."""
    lines = printed("docs/usage.md", "huggingtweets run sourdough_sam --jsonl")
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "samples").symlink_to(REPO / "job" / "samples")
    hub.state.token = "..."  # the page's own token
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
        "HF_HOME": str(tmp_path / "hf"),
        "WANDB_MODE": "offline",
    }
    done = shell(lines, tmp_path, env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sourdough_sam\tsucceeded" in done.stdout
    assert "@sourdough_sam's tweets, not their words" in done.stderr  # generate heard it
    assert "hub:pushed" in done.stdout and "deleted me/sourdough-bot" in done.stdout
    assert "me/sourdough-bot" not in hub.state.repos
    assert not (tmp_path / "out" / "sourdough_sam").exists()


def test_the_bluesky_and_mastodon_commands_run_as_printed(tmp_path: Path) -> None:
    """docs/usage.md's two networks, as printed, against loopback servers holding the page's
    fictional people: never a real account's posts."""
    from tests.helpers.social import (
        Bluesky,
        BlueskyPerson,
        Mastodon,
        MastodonPerson,
        bsky_post,
        toot,
    )  # fmt: skip

    lines = printed("docs/usage.md", "# Bluesky: from the public AppView")
    assert [line.split()[:2] for line in lines if not line.startswith("#")] == [
        ["huggingtweets", "prepare"], ["huggingtweets", "prepare"]
    ]  # fmt: skip
    texts = [json.loads(line)["text"] for line in SAMPLE.read_text().splitlines()]
    with Bluesky() as bluesky, Mastodon() as mastodon:
        sam = bluesky.add(BlueskyPerson("sourdough-sam.bsky.social"))
        sam.posts = [bsky_post(sam, n, text) for n, text in enumerate(texts)]
        toots = [toot(n, f"<p>{text}</p>") for n, text in enumerate(texts)]
        mastodon.add(MastodonPerson("sourdough_sam", host="mastodon.social", statuses=toots))
        env = {
            **os.environ,
            "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
            "BLUESKY_APPVIEW_URL": bluesky.url,
            "MASTODON_URL": mastodon.url,
        }
        done = shell(lines, tmp_path, env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("prepared ") == 2
    for bot in ("sourdough_sam.bsky.social", "sourdough_sam._.mastodon.social"):
        stats = json.loads((tmp_path / "out" / bot / "data" / "stats.json").read_text())
        assert stats["total"]["used"] > 100


def test_the_space_is_served_from_a_bots_own_folder_as_printed(tmp_path: Path) -> None:
    """usage.md's way to serve a bot's Space from one's own machine, run as printed (in the
    background, until the page answers), on a bot folder of the run's shape."""
    import signal
    import time
    import urllib.request

    (line,) = printed("docs/usage.md", "python3 -m http.server 8000")
    command = line.split("   #", 1)[0]
    bot = tmp_path / "out" / "sourdough_sam"
    (bot / "space").mkdir(parents=True)
    (bot / "model" / "onnx").mkdir(parents=True)
    (bot / "space" / "index.html").write_text("<main id='app'>the page</main>")
    (bot / "model" / "onnx" / "model_quantized.onnx").write_bytes(b"graph")
    server = subprocess.Popen(
        ["bash", "-c", f"exec {command}"], cwd=tmp_path, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                page = urllib.request.urlopen("http://127.0.0.1:8000/space/", timeout=2).read()
                graph = urllib.request.urlopen(
                    "http://127.0.0.1:8000/model/onnx/model_quantized.onnx", timeout=2
                ).read()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=10)
    assert b"the page" in page and graph == b"graph"  # the page, and ../model beside it
