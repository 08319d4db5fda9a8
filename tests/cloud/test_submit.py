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

from job import errors
from job.cloud.kubernetes import render_k8s
from job.cloud.submit import build_manifest
from job.config import SubmitOptions
from job.errors import BadConfig
from job.spec import jobs
from job.spec import parse_manifest as parse
from job.storage import open_storage
from tests.helpers import REPO, get_json
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


@pytest.mark.integration  # a process of its own: not the in-process tier
def test_make_submit_says_the_commands_own_code(s3) -> None:
    """After a takedown, `make submit USER=__wmww` exits 2 ("Error 12" in make's words): GNU
    make exits 0, 1 or 2 whatever its recipe's code. It says the command's code in one line,
    and how a script gets it: the command itself, which exits 12."""
    from job.cloud.consent import opt_out
    from job.data.handles import Handle

    opt_out(open_storage("s3://results/bots"), Handle("__wmww"), None, None)
    flags = "SUBMIT_FLAGS=--dry-run --output s3://results/bots --no-push"
    result = make("submit", "USER=__wmww", flags)
    assert result.returncode == 2
    assert "huggingtweets submit exited 12 (docs/exit-codes.md)" in result.stderr
    command = [str(REPO / ".venv" / "bin" / "huggingtweets"), "submit", "__wmww"]
    direct = subprocess.run(
        [*command, "--dry-run", "--output", "s3://results/bots", "--no-push"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert direct.returncode == errors.OPTED_OUT, direct.stderr


def dry_run(stdout: str) -> tuple[dict, list[dict]]:
    """A Kubernetes dry run's output: the manifest (its comments) and the YAML documents."""
    said = "\n".join(line[4:] for line in stdout.splitlines() if line.startswith("#   "))
    return yaml.safe_load(said), [d for d in yaml.safe_load_all(stdout) if d is not None]


@pytest.mark.integration  # a process of its own: not the in-process tier
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
    manifest, (job,) = dry_run(result.stdout)
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
    _, (job,) = dry_run(rendered.stdout)
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
    assert bot.config.train.base_model == "gpt2-xl" and not bot.config.train.lora
    typed, data = build_manifest(
        ["a"],
        SubmitOptions(output="s3://results/p", base_model="gpt2-xl", adapter="lora", push=False),
    )
    assert data["defaults"]["train"] == {"adapter": "lora"}  # written where run reads it
    assert (
        jobs(typed)[0].config.train.lora and jobs(parse(yaml.safe_dump(data)))[0].config.train.lora
    )


@pytest.mark.parametrize("bots", [1, 3, 150])
@pytest.mark.parametrize("overlay", [None, "gpt2-xl", "gpt2-xl-lora"])
def test_rendered_jobs_follow_the_api_servers_rules_for_indexed_jobs(bots, overlay) -> None:
    """Beyond the schema: maxFailedIndexes <= completions and the rest of batch/v1's checks,
    for the base and every overlay, with the cache per pod or on a shared claim."""
    from job.cloud.kubernetes import indexed_job_problems

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


@pytest.mark.parametrize(
    "flag", [["--queue", "gpus"], ["--service-account", "ht"], ["--overlay", "gpt2-xl"]]
)
def test_kubernetes_only_options_are_refused_for_aws_batch(s3, flag: list[str]) -> None:
    result = invoke("submit", "alice", "--output", "s3://results/bots", "--no-push", *flag)
    assert result.returncode == 10, result.stderr
    assert f"{flag[0]}: for --target k8s only" in result.stderr


def test_kubernetes_needs_an_image_a_cluster_can_pull(s3) -> None:
    result = invoke("submit", "alice", "--target", "k8s", "--output", "s3://results/bots")
    assert result.returncode == 10 and "--target k8s needs --image" in result.stderr


def fake_kubectl(tmp_path, monkeypatch, has: set[str], server: str = "31") -> Path:
    """A kubectl on PATH that knows the objects in ``has``, answers ``version`` as an API
    server of Kubernetes 1.``server`` would, and logs every call."""
    log = tmp_path / "kubectl.log"
    script = tmp_path / "bin" / "kubectl"
    script.parent.mkdir()
    version = json.dumps({"serverVersion": {"major": "1", "minor": f"{server}+"}})
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {log}\n'
        f"if [ \"$1\" = version ]; then echo '{version}'; exit 0; fi\n"
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
    assert calls[0].startswith("version -o json")  # the cluster's version, before the rest
    assert calls[-1].startswith("apply -f - --request-timeout=60s")
    assert get_json(open_storage("s3://results/bots"), "alice/status.json")["state"] == "queued"


def test_kubernetes_submit_checks_the_clusters_version_the_account_and_the_queue(
    s3, tmp_path, monkeypatch
) -> None:
    """backoffLimitPerIndex and FailIndex need Kubernetes 1.29 (KEP-3850: beta, on by default,
    from 1.29); a named service account and Kueue LocalQueue must exist in the namespace."""
    from job.cloud.kubernetes import MIN_KUBERNETES

    assert MIN_KUBERNETES == (1, 29)
    args = ["submit", "alice", "--target", "k8s", "--output", "s3://results/bots", "--no-push"]
    args += ["--image", "reg/ht:1", "--service-account", "ht", "--queue", "gpus"]
    for server, has, said in (
        ("28", {"secret/huggingtweets"}, "the cluster runs Kubernetes 1.28; the Job needs 1.29"),
        ("29", {"secret/huggingtweets"}, "needs the serviceaccount 'ht' in namespace default"),
        (
            "33",
            {"secret/huggingtweets", "serviceaccount/ht"},
            "needs the localqueues.kueue.x-k8s.io 'gpus' in namespace default",
        ),
    ):
        shutil.rmtree(tmp_path / "bin", ignore_errors=True)
        log = fake_kubectl(tmp_path, monkeypatch, has=has, server=server)
        result = invoke(*args)
        assert result.returncode == 10 and said in result.stderr, result.stderr
        assert "apply" not in log.read_text()
        log.unlink()
    assert open_storage("s3://results/bots").get_bytes("alice/status.json") is None


def test_an_unreachable_cluster_is_said_as_that_not_as_a_missing_secret(
    s3, tmp_path, monkeypatch
) -> None:
    """The real kubectl, its context an API server on a loopback port nothing listens on:
    once "connection refused" blamed a missing Secret (exit 10); it is exit 75, try again."""
    import socket

    from job import errors

    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("needs kubectl on PATH (the real client's words are what is checked)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    config = tmp_path / "kubeconfig"
    config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{port}"}}],
                "users": [{"name": "u", "user": {"token": "kube-token-not-to-be-shown"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(config))
    result = invoke(
        *("submit", "alice", "--target", "k8s", "--output", "s3://results/bots", "--no-push"),
        *("--image", "reg/ht:1"),
    )
    assert result.returncode == errors.TRANSIENT, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: the Kubernetes cluster is unreachable")
    assert "secret" not in line and "kube-token" not in line
    assert open_storage("s3://results/bots").get_bytes("alice/status.json") is None


@pytest.mark.integration  # builds and installs the wheel: packaging, end to end
def test_a_wheel_outside_the_checkout_submits_and_its_dry_run_is_appliable(
    s3, tmp_path: Path
) -> None:
    """The templates are package data: the wheel, installed away from the checkout, renders the
    Job. The dry run's output is YAML that `kubectl apply -f -` takes as it is (the manifest
    rides along as comments); with --queue and --service-account it carries what Kueue and
    IRSA expect. And the dry run checks the opt-out list as a submit does."""
    from job import errors
    from job.cloud.consent import opt_out
    from job.cloud.kubernetes import KUEUE_MIN_PARALLELISM, KUEUE_QUEUE
    from job.data.handles import Handle

    pip = [str(REPO / ".venv" / "bin" / "pip"), "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", tmp_path / "dist", REPO], check=True)
    (wheel,) = (tmp_path / "dist").glob("huggingtweets-*.whl")
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", site, wheel], check=True)
    env = {**os.environ, "PYTHONPATH": str(site)}

    def submit(*handles: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                *(site / "bin" / "huggingtweets", "submit", *handles, "--target", "k8s"),
                *("--image", "reg/ht:1", "--dry-run", "--output", "s3://results/bots"),
                *("--no-push", "--queue", "huggingtweets", "--service-account", "huggingtweets"),
            ],
            cwd=tmp_path,  # away from the checkout: infra/ is not there
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    done = submit("alice", "bob")
    assert done.returncode == 0, done.stderr
    said, docs = dry_run(done.stdout)
    assert [d["kind"] for d in docs] == ["Job"]  # nothing kubectl would refuse to apply
    for doc in docs:
        kubernetes_validate.validate(doc, "1.33", strict=True)
    (job,) = docs
    assert job["metadata"]["labels"][KUEUE_QUEUE] == "huggingtweets"
    assert job["metadata"]["annotations"][KUEUE_MIN_PARALLELISM] == "1"
    assert job["spec"]["suspend"] is True and job["spec"]["completions"] == 2
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "huggingtweets"
    assert [b["users"][0]["handle"] for b in said["bots"]] == ["alice", "bob"]

    opt_out(open_storage("s3://results/bots"), Handle("bob"), "asked", None)
    refused = submit("alice", "bob")
    assert refused.returncode == errors.OPTED_OUT and "bob" in refused.stderr


def test_the_base_job_follows_them_too_and_the_rules_catch_the_old_one() -> None:
    from job.cloud.kubernetes import K8S_JOB, indexed_job_problems

    base = yaml.safe_load(K8S_JOB.read_text())
    assert indexed_job_problems(base) == []
    old = {**base, "spec": {**base["spec"], "maxFailedIndexes": 100}}  # as shipped before
    assert indexed_job_problems(old) == ["maxFailedIndexes (100) must be <= completions (1)"]
    broken = {**base, "spec": {**base["spec"], "backoffLimitPerIndex": None}}
    assert "a FailIndex rule needs backoffLimitPerIndex" in indexed_job_problems(broken)


@pytest.fixture
def multinode(batch):
    """The template's multi-node pieces in moto: an on-demand environment and its queue, a
    Spot one and its queue, and a multinode job definition of two nodes."""
    ec2, iam = boto3.client("ec2"), boto3.client("iam")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="g", Description="g", VpcId=vpc)["GroupId"]
    role = iam.get_role(RoleName="batch")["Role"]["Arn"]
    profile = iam.create_instance_profile(InstanceProfileName="p")["InstanceProfile"]["Arn"]
    for queue, kind in (("huggingtweets-multinode", "EC2"), ("spot", "SPOT")):
        env = batch.create_compute_environment(
            computeEnvironmentName=f"{queue}-env",
            type="MANAGED",
            state="ENABLED",
            serviceRole=role,
            computeResources={
                "type": kind,
                "minvCpus": 0,
                "maxvCpus": 192,
                "instanceTypes": ["p4d.24xlarge"],
                "subnets": [subnet],
                "securityGroupIds": [group],
                "instanceRole": profile,
            },
        )
        batch.create_job_queue(
            jobQueueName=queue,
            state="ENABLED",
            priority=1,
            computeEnvironmentOrder=[
                {"order": 1, "computeEnvironment": env["computeEnvironmentArn"]}
            ],
        )
    container = {
        "image": "huggingtweets:0.1.0",
        "command": ["run", "--manifest", "Ref::manifest", "--index", "Ref::index"],
        "resourceRequirements": [
            {"type": "VCPU", "value": "90"},
            {"type": "MEMORY", "value": "700000"},
        ],
    }
    batch.register_job_definition(
        jobDefinitionName="huggingtweets-multinode",
        type="multinode",
        parameters={"manifest": "s3://b/none.yaml", "index": "0"},
        nodeProperties={
            "numNodes": 2,
            "mainNode": 0,
            "nodeRangeProperties": [{"targetNodes": "0:", "container": container}],
        },
    )
    return batch


def test_multi_node_jobs_are_one_job_a_task_on_demand_never_an_array_nor_on_spot(multinode) -> None:
    """AWS Batch refuses an array job of a multinode definition ("Multinode Array Job not
    supported") and runs none on Spot (userguide/mnp-ce.html); moto enforces neither, so
    submit checks both itself (batch_request_problems): 3 bots at 1 a task are 3 jobs, each
    with its task's --index, on the on-demand queue; the Spot and unmanaged queues are refused."""
    from job.cloud.aws_batch import batch_request_problems

    args = ["submit", "a_one", "b_two", "c_three", "--target", "batch", "--no-push"]
    args += ["--output", "s3://results/bots", "--job-definition", "huggingtweets-multinode"]
    for queue, kind in (("spot", "SPOT"), ("huggingtweets", "UNMANAGED")):
        result = invoke(*args, "--job-queue", queue)
        assert result.returncode == 10, result.stderr
        assert f"AWS Batch runs no multi-node job on {kind} compute environments" in result.stderr
        assert multinode.list_jobs(jobQueue=queue)["jobSummaryList"] == []
    result = invoke(*args, "--job-queue", "huggingtweets-multinode")
    assert result.returncode == 0, result.stderr
    ids = result.stdout.split("\n")[0].rsplit(": ", 1)[1].split()
    jobs_ = multinode.describe_jobs(jobs=ids)["jobs"]
    assert len(jobs_) == 3 and not any("arrayProperties" in j for j in jobs_)
    assert sorted(j["parameters"]["index"] for j in jobs_) == ["0", "1", "2"]  # Ref::index
    assert {j["parameters"]["manifest"] for j in jobs_} == {jobs_[0]["parameters"]["manifest"]}
    # The rule itself, on what submit sent before: an array of the multinode definition.
    (definition,) = multinode.describe_job_definitions(jobDefinitionName="huggingtweets-multinode")[
        "jobDefinitions"
    ]
    old = {"jobName": "x", "arrayProperties": {"size": 3}}
    on_demand = [{"type": "MANAGED", "computeResources": {"type": "EC2"}}]
    assert batch_request_problems(definition, old, on_demand) == [
        "a multi-node job definition takes no array job: one job per task"
    ]
    assert batch_request_problems({"type": "container"}, old, [{"type": "UNMANAGED"}]) == []


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--namespace", "Kube-System"),
        ("--namespace", "../etc"),
        ("--queue", "gpus;kubectl delete ns default"),
        ("--queue", "q" * 64),
        ("--service-account", "ht\nkind: Secret"),
        ("--cache-claim", "-leading-dash"),
    ],
)
def test_a_name_kubernetes_would_refuse_is_one_line_before_anything_is_written(
    s3, flag: str, value: str
) -> None:
    """Whatever goes into the Job's names is an RFC 1123 label, checked before the YAML is
    made: nothing a flag carries can add a line, a document or a path to it."""
    result = invoke(
        *("submit", "alice", "--target", "k8s", "--image", "reg/ht:1", "--no-push"),
        *("--output", "s3://results/bots", "--dry-run", flag, value),
    )
    assert result.returncode == 10, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {flag}:") and "is no Kubernetes name" in line
    assert result.stdout == ""


def test_aws_batch_is_checked_before_any_status_is_read_or_written(batch) -> None:
    """A queue that does not exist once cost 38.6 s of 2,000 statuses read, written and put
    back first; now it is the first thing asked, and nothing is written."""
    from tests.helpers.s3 import FaultProxy

    users = [f"user_{i}" for i in range(200)]
    with FaultProxy(os.environ["AWS_ENDPOINT_URL"]) as proxy:
        done = invoke(
            *("submit", *users, "--output", "s3://results/bots", "--no-push"),
            *("--job-queue", "no-such-queue"),
            env={"AWS_ENDPOINT_URL": proxy.url},
        )
    assert done.returncode == errors.BAD_CONFIG, done.stderr
    assert "no job queue 'no-such-queue'" in done.stderr
    touched = [p for m, p in proxy.requests if m in ("GET", "PUT", "DELETE") and "/bots/" in p]
    assert touched == []  # no status read, written or put back
    assert open_storage("s3://results").list("") == []  # and no manifest


@pytest.mark.integration  # a process of its own: not the in-process tier
def test_a_kubernetes_dry_run_without_aws_credentials_prints_the_job(tmp_path) -> None:
    """The path the docs give where kubectl is missing once failed on the opt-out check: it
    says the opt-outs were not checked, and that the job checks them before any download."""
    import subprocess
    import sys

    env = {
        k: v for k, v in os.environ.items() if not k.startswith("AWS_") or k == "AWS_ENDPOINT_URL"
    }
    env |= {
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_DEFAULT_REGION": "us-east-1",
    }

    def submit(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "job", "submit", "alice", "--dry-run", "--no-push"]
        return subprocess.run(
            [*command, "--output", "s3://results/bots", *args],
            env=env, capture_output=True, text=True, timeout=120, cwd=REPO,
        )  # fmt: skip

    done = submit("--target", "k8s", "--image", "reg/ht:1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("# opt-outs NOT checked: no AWS credentials here")
    jobs = [d for d in yaml.safe_load_all(done.stdout) if d]
    assert [d["kind"] for d in jobs] == ["Job"]
    # AWS Batch has no such dry run to fall back to: there it is the credentials' error
    batch = submit()
    assert batch.returncode == errors.CREDENTIALS, batch.stderr
