"""Submitting jobs: make submit's USER check, the Kubernetes Job, and AWS Batch (moto)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import boto3
import kubernetes_validate
import pytest
import requests
import yaml

from job.cloud.submit import SubmitOptions, build_manifest, render_k8s
from job.errors import BadConfig
from job.spec import jobs
from job.spec import parse_manifest as parse
from job.storage import get_json, open_storage
from tests.helpers import REPO
from tests.helpers.cli import invoke


def make(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
    )


def test_make_submit_refuses_the_login_user() -> None:
    result = make("submit", USER="someone")  # as a login shell sets it
    assert result.returncode != 0
    assert "make submit needs the Twitter handle on the command line" in result.stderr
    assert "USER=someone here comes from your login environment" in result.stderr


def test_make_submit_with_users_on_the_command_line(s3) -> None:
    result = make(
        "submit",
        "USER=__wmww dril",
        "TARGET=k8s",
        "BASE_MODEL=gpt2-xl",
        "SUBMIT_FLAGS=--dry-run --output s3://results/bots --image reg/ht:1 --overlay gpt2-xl",
        USER="someone",
        HUGGINGTWEETS_CONTACT="takedown@example.org",
    )
    assert result.returncode == 0, result.stderr
    docs = list(yaml.safe_load_all(result.stdout.split("\n", 1)[1]))
    manifest, job = docs[0], docs[1]
    assert [b["users"][0]["handle"] for b in manifest["bots"]] == ["__wmww", "dril"]
    assert manifest["defaults"]["base_model"] == "gpt2-xl"
    assert manifest["hub"]["contact"] == "takedown@example.org"
    assert job["kind"] == "Job" and job["spec"]["completions"] == 2
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "reg/ht:1"


def test_kubernetes_job_for_three_users_is_valid() -> None:
    (job,) = render_k8s(
        "s3://b/jobs/x.yaml", 3, name="huggingtweets-x", image="reg/ht:1", namespace="bots"
    )
    kubernetes_validate.validate(job, "1.33", strict=True)
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 3
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["run", "--manifest", "s3://b/jobs/x.yaml"]
    assert container["image"] == "reg/ht:1" and job["metadata"]["namespace"] == "bots"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["envFrom"] == [{"secretRef": {"name": "huggingtweets"}}]


@pytest.fixture
def batch(s3):
    """moto's Batch API in server mode, with jobs recorded but never run in Docker."""
    requests.post(f"{s3.url}/moto-api/config", json={"batch": {"use_docker": False}}, timeout=10)
    client = boto3.client("batch")
    iam = boto3.client("iam")
    role = iam.create_role(RoleName="batch", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    env = client.create_compute_environment(
        computeEnvironmentName="gpu", type="UNMANAGED", state="ENABLED", serviceRole=role
    )
    client.create_job_queue(
        jobQueueName="huggingtweets",
        state="ENABLED",
        priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": env["computeEnvironmentArn"]}],
    )
    client.register_job_definition(
        jobDefinitionName="huggingtweets",
        type="container",
        parameters={"manifest": "s3://b/none.yaml"},
        containerProperties={
            "image": "huggingtweets:0.1.0",
            "vcpus": 4,
            "memory": 15000,
            "command": ["run", "--manifest", "Ref::manifest"],
        },
    )
    return client


def test_submit_three_users_to_aws_batch(batch) -> None:
    result = invoke(
        *("submit", "a_one", "b_two", "c_three", "--target", "batch"),
        *("--contact", "takedown@example.org"),
        *("--output", "s3://results/bots", "--base-model", "gpt2-medium"),
    )
    assert result.returncode == 0, result.stderr
    first, follow = result.stdout.split("\n", 1)
    job_id = first.rsplit(": ", 1)[1]
    assert first.startswith("submitted 3 bots to batch: ")
    assert "huggingtweets status --manifest s3://results/jobs/" in follow

    (job,) = batch.describe_jobs(jobs=[job_id])["jobs"]
    assert job["arrayProperties"]["size"] == 3
    uri = job["parameters"]["manifest"]
    assert uri.startswith("s3://results/jobs/") and uri in follow
    key = uri[len("s3://results/") :]
    text = boto3.client("s3").get_object(Bucket="results", Key=key)["Body"].read().decode()
    bots = jobs(parse(text))
    assert [b.bot for b in bots] == ["a_one", "b_two", "c_three"]
    assert bots[0].config.train.base_model == "gpt2-medium"
    assert bots[0].hub_repo == "huggingtweets/a_one"
    storage = open_storage("s3://results/bots")
    for b in bots:
        status = get_json(storage, f"{b.bot}/status.json")
        assert status["state"] == "queued" and status["manifest"] == uri
        # it will push: `status` says pending, not off
        assert status["hub"]["state"] == "pending" and status["hub"]["repo"] == b.hub_repo


def test_bots_per_task_sizes_the_array_and_goes_in_the_manifest(batch) -> None:
    users = [f"baker_{i}" for i in range(5)]
    result = invoke(
        *("submit", *users, "--target", "batch", "--bots-per-task", "2", "--no-push"),
        *("--output", "s3://results/bots"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("submitted 5 bots to batch: ")
    (job,) = batch.describe_jobs(jobs=[result.stdout.split("\n")[0].rsplit(": ", 1)[1]])["jobs"]
    assert job["arrayProperties"]["size"] == 3  # 5 bots at 2 per task: tasks 0, 1 and 2
    key = job["parameters"]["manifest"][len("s3://results/") :]
    text = boto3.client("s3").get_object(Bucket="results", Key=key)["Body"].read().decode()
    assert parse(text).bots_per_task == 2
    # Kubernetes: one index per task too.
    _, manifest = build_manifest(
        users, SubmitOptions(output="s3://results/bots", base_model="tiny", push=False)
    )
    assert "bots_per_task" not in manifest  # 1, the default, is not written
    rendered = invoke(
        *("submit", *users, "--target", "k8s", "--image", "reg/ht:1", "--no-push"),
        *("--bots-per-task", "4", "--output", "s3://results/bots", "--dry-run"),
    )
    assert rendered.returncode == 0, rendered.stderr
    job = next(iter(yaml.safe_load_all(rendered.stdout.split("---\n", 1)[1])))
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 2


def test_an_array_over_aws_batchs_limit_asks_for_more_bots_per_task(s3) -> None:
    users = [f"b{i}" for i in range(10_001)]
    result = invoke(
        *("submit", *users, "--target", "batch", "--no-push", "--output", "s3://results/bots")
    )
    assert result.returncode == 10
    assert "at most 10,000: give --bots-per-task 2 or more" in result.stderr


def test_a_failed_submit_leaves_no_queued_bots_nor_manifest(batch) -> None:
    storage = open_storage("s3://results/bots")
    earlier = {"bot": "a_one", "state": "succeeded", "run_id": "r1"}
    storage.put_bytes("a_one/status.json", json.dumps(earlier).encode())
    result = invoke(
        *("submit", "a_one", "b_two", "--target", "batch", "--output", "s3://results/bots"),
        *("--job-queue", "no-such-queue", "--no-push"),
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert get_json(storage, "a_one/status.json") == earlier  # as it was
    assert storage.get_bytes("b_two/status.json") is None  # never queued
    assert boto3.client("s3").list_objects_v2(Bucket="results", Prefix="jobs/")["KeyCount"] == 0


def test_submit_says_whether_wandb_is_online() -> None:
    typed, manifest = build_manifest(
        ["a"], SubmitOptions(output="s3://bucket/p", push=False, wandb_mode="online")
    )
    assert jobs(typed)[0].config.wandb.mode == "online"
    assert jobs(parse(yaml.safe_dump(manifest)))[0].config.wandb.mode == "online"  # as written
    _, default = build_manifest(["a"], SubmitOptions(output="s3://bucket/p", push=False))
    assert default["wandb"] == {"mode": "offline"}


def test_a_public_push_needs_a_removal_contact(s3) -> None:
    result = invoke("submit", "alice", "--output", "s3://results/bots", "--dry-run")
    assert result.returncode == 10, result.stderr
    # The line names every way to give one: the flag, the variable and make's.
    for way in ("--contact", "HUGGINGTWEETS_CONTACT", "CONTACT=", "--no-push"):
        assert way in result.stderr
    private = invoke("submit", "alice", "--output", "s3://results/bots", "--dry-run", "--no-push")
    assert private.returncode == 0, private.stderr


def test_submit_checks_its_input(s3) -> None:
    result = invoke("submit", "not a handle", "--output", "s3://results/bots")
    assert result.returncode == 3
    result = invoke("submit", "x", "--output", "/tmp/x")
    assert result.returncode == 10 and "s3:// output" in result.stderr


def test_one_bot_per_user_or_one_for_all() -> None:
    _, apart = build_manifest(["a", "b"], SubmitOptions(output="s3://results/p", push=False))
    assert [[u["handle"] for u in b["users"]] for b in apart["bots"]] == [["a"], ["b"]]
    assert apart["hub"]["push"] is False
    typed, together = build_manifest(
        ["a", "b"],
        SubmitOptions(
            output="s3://results/p",
            base_model="gpt2-xl",
            together=True,
            hub_owner="me",
            contact="https://example.org/takedown",
        ),
    )
    (bot,) = jobs(typed)
    assert jobs(parse(yaml.safe_dump(together))) == [bot]  # what is written reads the same
    assert bot.bot == "a-b" and bot.hub_repo == "me/a-b"
    assert bot.contact == "https://example.org/takedown"
    assert bot.config.train.base_model == "gpt2-xl"


@pytest.mark.parametrize("bots", [1, 3, 150])
@pytest.mark.parametrize("overlay", [None, "gpt2-xl", "gpt2-xl-lora"])
def test_rendered_jobs_follow_the_api_servers_rules_for_indexed_jobs(bots, overlay) -> None:
    """Beyond the schema: maxFailedIndexes <= completions and the rest of batch/v1's checks,
    for the base and every overlay, with the cache per pod or on a shared claim."""
    from job.cloud.submit import indexed_job_problems

    for claim in (None, "shared-cache"):
        (job,) = render_k8s(
            "s3://b/jobs/x.yaml",
            bots,
            name="n",
            image="i",
            namespace="d",
            overlay=overlay,
            cache_claim=claim,
        )
        kubernetes_validate.validate(job, "1.33", strict=True)
        assert indexed_job_problems(job) == []
        assert job["spec"]["maxFailedIndexes"] == job["spec"]["completions"] == bots
        pod = job["spec"]["template"]["spec"]
        (cache,) = [v for v in pod["volumes"] if v["name"] == "cache"]
        assert cache == (
            {"name": "cache", "persistentVolumeClaim": {"claimName": claim}}
            if claim
            else {"name": "cache", "emptyDir": {"sizeLimit": "50Gi"}}
        )
        limits = pod["containers"][0]["resources"]["limits"]
        assert (
            limits["memory"] == {None: "16Gi", "gpt2-xl": "64Gi", "gpt2-xl-lora": "32Gi"}[overlay]
        )
        if overlay:  # any GPU of a size or more (MiB), not one exact GPU model
            (term,) = pod["affinity"]["nodeAffinity"][
                "requiredDuringSchedulingIgnoredDuringExecution"
            ]["nodeSelectorTerms"]
            (match,) = term["matchExpressions"]
            assert match["operator"] == "Gt"
            # an L4 (23,034 MiB) passes the adapter's; a full gpt2-xl needs over 40 GB
            assert int(match["values"][0]) == {"gpt2-xl": 40000, "gpt2-xl-lora": 22000}[overlay]
    with pytest.raises(BadConfig, match="--overlay must be one of gpt2-xl, gpt2-xl-lora"):
        render_k8s("s3://b/jobs/x.yaml", 1, name="n", image="i", namespace="d", overlay="huge")


def test_kubernetes_needs_an_image_a_cluster_can_pull(s3) -> None:
    result = invoke("submit", "alice", "--target", "k8s", "--output", "s3://results/bots")
    assert result.returncode == 10 and "--target k8s needs --image" in result.stderr


def fake_kubectl(tmp_path, monkeypatch, has: set[str]) -> Path:
    """A kubectl on PATH that knows the objects in ``has`` and logs every call."""
    log = tmp_path / "kubectl.log"
    script = tmp_path / "bin" / "kubectl"
    script.parent.mkdir()
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {log}\n'
        'if [ "$1" = get ]; then\n'
        f'  case " {" ".join(sorted(has))} " in *" $2/$3 "*) echo "$2/$3"; exit 0;; esac\n'
        '  echo "Error from server (NotFound): $2 "$3" not found" >&2; exit 1\n'
        "fi\n"
        "cat > /dev/null; echo applied\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{script.parent}:{os.environ['PATH']}")
    return log


def test_kubernetes_submit_checks_what_the_job_needs_first(s3, tmp_path, monkeypatch) -> None:
    args = ["submit", "alice", "--target", "k8s", "--output", "s3://results/bots", "--no-push"]
    args += ["--image", "reg/ht:1", "--namespace", "bots", "--cache-claim", "shared"]
    log = fake_kubectl(tmp_path, monkeypatch, has={"secret/huggingtweets"})
    result = invoke(*args)
    assert result.returncode == 10 and "needs the pvc 'shared' in namespace bots" in result.stderr
    assert "apply" not in log.read_text()  # refused before anything was applied or written
    assert open_storage("s3://results/bots").get_bytes("alice/status.json") is None

    log.unlink()
    fake_kubectl_dir = tmp_path / "bin"
    shutil.rmtree(fake_kubectl_dir)
    log = fake_kubectl(tmp_path, monkeypatch, has={"secret/huggingtweets", "pvc/shared"})
    result = invoke(*args)
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    assert calls[-1].startswith("apply -f - --request-timeout=60s")
    assert get_json(open_storage("s3://results/bots"), "alice/status.json")["state"] == "queued"


def test_the_base_job_follows_them_too_and_the_rules_catch_the_old_one() -> None:
    from job.cloud.submit import K8S_JOB, indexed_job_problems

    base = yaml.safe_load(K8S_JOB.read_text())
    assert indexed_job_problems(base) == []
    old = {**base, "spec": {**base["spec"], "maxFailedIndexes": 100}}  # as shipped before
    assert indexed_job_problems(old) == ["maxFailedIndexes (100) must be <= completions (1)"]
    broken = {**base, "spec": {**base["spec"], "backoffLimitPerIndex": None}}
    assert "a FailIndex rule needs backoffLimitPerIndex" in indexed_job_problems(broken)
