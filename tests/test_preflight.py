"""Preflight: each missing credential or permission stops a manifest run within seconds, with
its own exit code and a failed status, before any tweet is fetched or input downloaded."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import boto3
import pytest

from job import errors
from job.preflight import write_problem
from job.storage import open_storage
from tests.helpers import SAMPLE, get_json
from tests.helpers.cli import Result, invoke
from tests.helpers.s3 import FaultProxy
from tests.helpers.twitter_api import FakeUser, TwitterAPI, v2_tweet

TOKEN = "tw-preflight-token"
MANIFEST = """
version: 1
output: s3://results/bots
defaults: {base_model: tiny}
hub: {push: true, owner: huggingtweets, contact: takedown@example.org}
wandb: {mode: WANDB}
bots:
  - users: [{handle: sourdough_sam, source: jsonl, uri: URI}]
  - users: [{handle: talker, source: api}]
"""


@pytest.fixture
def api(s3, hub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[TwitterAPI]:
    boto3.client("s3").create_bucket(Bucket="inputs")
    boto3.client("s3").upload_file(str(SAMPLE), "inputs", "tweets/sam.jsonl")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc with a W&B key
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    with TwitterAPI(token=TOKEN) as server:
        monkeypatch.setenv("TWITTER_BEARER_TOKEN", TOKEN)
        monkeypatch.setenv("TWITTER_API_URL", server.url)
        yield server


def run(
    uri: str = "s3://inputs/tweets/sam.jsonl", wandb: str = "disabled", manifest: str = MANIFEST
) -> Result:
    manifest = manifest.replace("URI", uri).replace("WANDB", wandb)
    boto3.client("s3").put_object(Bucket="inputs", Key="jobs/m.yaml", Body=manifest.encode())
    return invoke("run", "--manifest", "s3://inputs/jobs/m.yaml", twitter_env=True)


def failed_fast(result: Result, code: int, reason: str, api: TwitterAPI, started: float) -> None:
    assert time.monotonic() - started < 15, "preflight took too long"
    assert result.returncode == code, result.stderr
    assert reason in result.stderr and result.stderr.count("\n") == 1  # one line
    assert api.requests == []  # no tweet asked for
    storage = open_storage("s3://results/bots")
    for bot in ("sourdough_sam", "talker"):
        status = get_json(storage, f"{bot}/status.json")
        assert status["state"] == "failed" and reason in status["reason"]
        assert storage.list(f"{bot}/") == [f"{bot}/status.json"]  # nothing else was made


@pytest.mark.parametrize(
    ("change", "code", "reason"),
    [
        (lambda env, hub: env.delenv("HF_TOKEN"), errors.CREDENTIALS, "needs HF_TOKEN"),
        (
            lambda env, hub: hub.state.whoami["auth"]["accessToken"].update(role="read"),
            errors.CREDENTIALS,
            "read-only token",
        ),
        (
            lambda env, hub: hub.state.whoami.update(orgs=[]),
            errors.CREDENTIALS,
            "is not 'huggingtweets' nor a member of it",
        ),
        (lambda env, hub: env.setenv("HF_TOKEN", "hf_wrong"), errors.CREDENTIALS, "refused"),
        (lambda env, hub: env.delenv("TWITTER_BEARER_TOKEN"), errors.CREDENTIALS, "TWITTER_"),
        (
            lambda env, hub: env.setenv("HF_HOME", str(Path(os.environ["HOME"]) / "f" / "hf")),
            errors.NOT_WRITABLE,
            "is not writable",
        ),
    ],
    ids=["no-hf-token", "read-token", "not-a-member", "bad-hf-token", "no-twitter", "hf-home"],
)
def test_a_missing_credential_stops_the_run_first(
    api, hub, monkeypatch: pytest.MonkeyPatch, change, code: int, reason: str
) -> None:
    (Path(os.environ["HOME"]) / "f").write_text("a file, not a folder")
    change(monkeypatch, hub)
    started = time.monotonic()
    failed_fast(run(), code, reason, api, started)
    assert hub.state.commits == [] and not any("/commit" in p for _, p in hub.state.requests)


def test_wandb_online_needs_a_key(api) -> None:
    started = time.monotonic()
    failed_fast(run(wandb="online"), errors.CREDENTIALS, "W&B is online but no key", api, started)


@pytest.mark.integration  # the other bot trains: not the unit tier
def test_a_missing_input_fails_its_bot_before_any_work_and_not_the_others(api) -> None:
    tweets = [v2_tweet(9000 - i, f"talker thinks thought {i} about the bread") for i in range(150)]
    api.add(FakeUser(id="5", username="talker", tweets=tweets))
    result = run("s3://inputs/tweets/gone.jsonl")
    assert result.returncode == errors.INPUT_NOT_FOUND
    assert "gone.jsonl: no such object" in result.stderr
    storage = open_storage("s3://results/bots")
    status = get_json(storage, "sourdough_sam/status.json")
    assert status["state"] == "failed" and "gone.jsonl: no such object" in status["reason"]
    assert storage.list("sourdough_sam/") == ["sourdough_sam/status.json"]  # nothing made
    # The manifest's other bot, whose input is fine, was made all the same.
    talker = get_json(storage, "talker/status.json")
    assert talker["state"] == "succeeded", talker


def test_an_unwritable_output_and_a_403_input(api, monkeypatch: pytest.MonkeyPatch) -> None:
    with FaultProxy(os.environ["AWS_ENDPOINT_URL"]) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        proxy.hook = lambda m, p: 403 if m == "PUT" and "/.preflight/" in p else None
        started = time.monotonic()
        result = run()
        assert result.returncode == errors.CREDENTIALS and "not writable" in result.stderr
        assert time.monotonic() - started < 15 and api.requests == []
        # A prefix-limited ListBucket makes S3 answer 403 for a missing key: a listing of the
        # key tells which; where the role may not list it either, say both.
        sam = MANIFEST.split("  - users: [{handle: talker")[0]  # the other bot loads torch
        for listing, said in (
            (None, "the job's role may not read it\n"),  # listed: it is there
            (403, "may not read it, or it does not exist"),
        ):
            proxy.hook = lambda m, p, listing=listing: (
                403
                if m == "HEAD" and "sam.jsonl" in p
                else listing
                if "list-type" in p and "sam.jsonl" in p
                else None
            )
            result = run(manifest=sam)
            assert result.returncode == errors.CREDENTIALS and said in result.stderr, result.stderr
            assert not any(
                m == "GET" and urlparse(p).path.endswith("sam.jsonl") for m, p in proxy.requests
            )
        proxy.hook = lambda m, p: None
        # The probe leaves nothing behind.
        assert open_storage("s3://results/bots").list(".preflight/") == []


def test_the_probe_is_removed_and_a_good_setup_passes(
    api, hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    from job.preflight import preflight
    from job.spec import jobs, parse_manifest

    manifest = MANIFEST.replace("URI", "s3://inputs/tweets/sam.jsonl").replace("WANDB", "online")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    storage = open_storage("s3://results/bots")
    preflight(jobs(parse_manifest(manifest, "m.yaml")), storage)
    assert storage.list("") == []
    assert ("GET", "/api/whoami-v2") in hub.state.requests


def test_fine_grained_tokens_need_repo_write_on_the_owner() -> None:
    def token(*scopes: tuple[str, list[str]]) -> dict:
        scoped = [{"entity": {"type": "org", "name": n}, "permissions": p} for n, p in scopes]
        return {
            "name": "tester",
            "orgs": [{"name": "huggingtweets"}],
            "auth": {"accessToken": {"role": "fineGrained", "fineGrained": {"scoped": scoped}}},
        }

    assert (
        write_problem(
            token(("huggingtweets", ["repo.content.read", "repo.write"])), "huggingtweets"
        )
        is None
    )
    assert "repo.write" in (
        write_problem(token(("huggingtweets", ["repo.content.read"])), "huggingtweets") or ""
    )
    assert write_problem(token(("other", ["repo.write"])), "huggingtweets") is not None
    write = {"name": "tester", "orgs": [], "auth": {"accessToken": {"role": "write"}}}
    assert write_problem(write, "tester") is None and write_problem(write, "someone") is not None


def test_a_local_run_checks_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    args = ["run", "sourdough_sam", "--jsonl", str(SAMPLE), "--out", str(tmp_path / "out")]
    result = invoke(*args, "--wandb-mode", "online")
    assert result.returncode == errors.CREDENTIALS and "W&B is online" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.integration  # asks torch about the GPUs
def test_offload_without_the_host_memory_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from job import preflight
    from job.config import JobConfig, TrainConfig
    from job.spec import BotJob, UserSpec
    from job.training import memory

    monkeypatch.setattr(memory, "host_memory_bytes", lambda: 15 * 10**9)  # Batch's 15 GB
    config = JobConfig(train=TrainConfig(base_model="gpt2-xl", strategy="zero3-offload"))
    job = BotJob(bot="alice", users=[UserSpec(handle="alice")], config=config)
    with pytest.raises(errors.BadConfig, match="offload needs ~29 GiB of host memory"):
        preflight.host_memory(job)
    monkeypatch.setattr(memory, "host_memory_bytes", lambda: 64 * 2**30)
    preflight.host_memory(job)  # enough


def fake_gpu_host(tmp_path: Path, driver_cuda: int) -> dict[str, str]:
    """An environment where the driver's libcuda.so.1 (a real shared object, built here)
    says it runs CUDA ``driver_cuda``, and torch's CUDA 13.0 runtime is installed (its
    package metadata, which is what the check reads)."""
    import subprocess

    lib = tmp_path / "lib"
    lib.mkdir(parents=True, exist_ok=True)
    source = tmp_path / "cuda.c"
    source.write_text(f"int cuDriverGetVersion(int *v) {{ *v = {driver_cuda}; return 0; }}\n")
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-o", lib / "libcuda.so.1", source], check=True, timeout=60
    )
    site = tmp_path / "site" / "nvidia_cuda_runtime-13.0.96.dist-info"
    site.mkdir(parents=True, exist_ok=True)
    (site / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: nvidia-cuda-runtime\nVersion: 13.0.96\n"
    )
    return {
        "LD_LIBRARY_PATH": str(lib),
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(site.parent), os.environ.get("PYTHONPATH")])
        ),
    }


@pytest.mark.integration  # builds a shared library and starts the job
def test_a_gpu_hosts_driver_too_old_for_the_images_cuda_is_one_line_before_any_work(
    tmp_path: Path,
) -> None:
    """torch alone would warn that CUDA is unavailable and train on the CPU for hours."""
    import subprocess
    import sys

    old = fake_gpu_host(tmp_path / "old", 12020)  # a 535 driver: CUDA 12.2
    result = subprocess.run(
        [
            *(sys.executable, "-m", "job", "run", "sourdough_sam", "--jsonl", str(SAMPLE)),
            *("--base-model", "tiny", "--out", str(tmp_path / "out"), "--wandb-mode", "disabled"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **old},
        timeout=300,
    )
    assert result.returncode == errors.BAD_CONFIG, result.stderr
    (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert "driver runs CUDA up to 12.2" in line and "CUDA 13.0" in line and "R580" in line
    assert "Traceback" not in result.stderr and not (tmp_path / "out" / "sourdough_sam").exists()
    probe = (
        "from job.preflight import gpu_driver, driver_cuda_version as v; gpu_driver(); print(v())"
    )
    for driver, said in ((13000, "13000"), (13020, "13020")):
        ok = subprocess.run(
            [sys.executable, "-c", probe],
            capture_output=True,
            text=True,
            env={**os.environ, **fake_gpu_host(tmp_path / str(driver), driver)},
            timeout=120,
        )
        assert ok.returncode == 0 and ok.stdout.strip() == said, ok.stderr
    # No driver at all (this machine): a CPU host, nothing to check.
    from job.preflight import driver_cuda_version, gpu_driver

    assert driver_cuda_version() is None
    gpu_driver(runtime="13.0.96")
