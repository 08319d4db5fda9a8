"""The shipped infrastructure, checked offline: lint, schemas, and agreement with the job."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from job import errors
from tests.helpers import REPO
from tests.helpers.iam import batch_template, job_role

BIN = Path(sys.executable).parent  # the venv's bin: the tools come with the test extras


def tool(name: str) -> str:
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert path, f"{name} is not installed: make install installs it"
    return path


def test_hadolint() -> None:
    result = subprocess.run(
        [tool("hadolint"), "docker/Dockerfile"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck() -> None:
    result = subprocess.run(
        [tool("shellcheck"), ".ci/run", *map(str, sorted(REPO.glob("bench/*.sh")))],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout


# cfn-lint takes ~2 s to start: it starts as this module is collected and runs on the other
# core while the rest of the suite goes on; its test reads the result.
_CFN_LINT = subprocess.Popen(
    [tool("cfn-lint"), "infra/aws-batch/template.yaml"],
    cwd=REPO,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
)


def test_cfn_lint() -> None:
    output, _ = _CFN_LINT.communicate(timeout=120)
    assert _CFN_LINT.returncode == 0, output


def test_multi_node_jobs_go_to_on_demand_in_one_cluster_placement_group() -> None:
    """AWS Batch, "Compute environment considerations for MNP" (docs.aws.amazon.com/batch/latest/
    userguide/mnp-ce.html): multi-node parallel jobs are not supported on Spot (nor UNMANAGED)
    compute environments, and want a cluster placement group in a single Availability Zone.
    Once the multi-node definition could only go to the one queue, Spot first."""
    template = batch_template()
    resources, parameters = template["Resources"], template["Parameters"]
    queue = resources[template["Outputs"]["MultiNodeJobQueue"]["Value"]["Ref"]]
    order = queue["Properties"]["ComputeEnvironmentOrder"]
    assert order, "the multi-node queue has no compute environment"
    for entry in order:
        env = resources[entry["ComputeEnvironment"]["Ref"]]["Properties"]
        compute = env["ComputeResources"]
        assert env["Type"] == "MANAGED" and compute["Type"] in ("EC2",), compute["Type"]
        group = resources[compute["PlacementGroup"]["Ref"]]
        assert group["Type"] == "AWS::EC2::PlacementGroup"
        assert group["Properties"]["Strategy"] == "cluster"
        (subnet,) = compute["Subnets"]  # one subnet: one Availability Zone
        assert parameters[subnet["Ref"]]["Type"] == "AWS::EC2::Subnet::Id"
    # ...and the other queue, Spot first, is never where the multi-node definition is sent.
    spot = resources[template["Outputs"]["JobQueue"]["Value"]["Ref"]]
    first = spot["Properties"]["ComputeEnvironmentOrder"][0]["ComputeEnvironment"]["Ref"]
    assert resources[first]["Properties"]["ComputeResources"]["Type"] == "SPOT"
    assert queue is not spot
    definition = resources["MultiNodeJobDefinition"]["Properties"]
    (nodes,) = definition["NodeProperties"]["NodeRangeProperties"]
    assert nodes["Container"]["Command"][-2:] == ["--index", "Ref::index"]  # one job a task
    assert "index" in definition["Parameters"]


def test_batch_retries_match_the_exit_codes() -> None:
    template = batch_template()
    for name in ("JobDefinition", "MultiNodeJobDefinition"):
        rules = template["Resources"][name]["Properties"]["RetryStrategy"]["EvaluateOnExit"]
        assert {"OnStatusReason": "Host EC2*", "Action": "RETRY"} in rules  # spot reclaim
        assert {"OnExitCode": str(errors.TRANSIENT), "Action": "RETRY"} in rules
        assert rules[-1] == {"OnReason": "*", "Action": "EXIT"}  # bad input: no retry
    queue = template["Resources"]["JobQueue"]["Properties"]["ComputeEnvironmentOrder"]
    assert [q["Order"] for q in queue] == [1, 2]  # spot first, then on-demand


@pytest.mark.parametrize(
    "path",
    [
        "infra/k8s/base/job.yaml",
        "infra/k8s/overlays/shared-cache/cache-pvc.yaml",
        "infra/k8s/overlays/service-account/service-account.yaml",
        *sorted(str(p.relative_to(REPO)) for p in REPO.glob("infra/k8s/overlays/*/resources.yaml")),
    ],
)
def test_kubernetes_schemas(path: str) -> None:
    for doc in yaml.safe_load_all((REPO / path).read_text()):
        kubernetes_validate.validate(doc, "1.33", strict=True)


def test_kustomizations_name_files_that_exist() -> None:
    for kustomization in (REPO / "infra/k8s").rglob("kustomization.yaml"):
        spec = yaml.safe_load(kustomization.read_text())
        for ref in spec.get("resources", []) + [p["path"] for p in spec.get("patches", [])]:
            assert (kustomization.parent / ref).exists(), f"{kustomization}: {ref}"


def test_pod_failure_policy_matches_the_exit_codes() -> None:
    job = yaml.safe_load((REPO / "infra/k8s/base/job.yaml").read_text())
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "Ignore"
    assert rules[0]["onPodConditions"] == [{"type": "DisruptionTarget", "status": "True"}]
    fail = next(r for r in rules if r["action"] == "FailIndex")
    assert sorted(fail["onExitCodes"]["values"]) == sorted(errors.BAD_INPUT_CODES)
    assert errors.TRANSIENT not in fail["onExitCodes"]["values"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_the_kueue_example_admits_the_job_it_is_for() -> None:
    """No offline schema for Kueue's CRDs: what its docs require of each object, and that the
    ClusterQueue covers every resource the base Job's pod requests (else Kueue never admits
    it: "resource ... not covered")."""
    docs = {
        d["kind"]: d for d in yaml.safe_load_all((REPO / "infra/k8s/kueue/queues.yaml").read_text())
    }
    assert set(docs) == {"ResourceFlavor", "ClusterQueue", "LocalQueue"}
    assert {d["apiVersion"] for d in docs.values()} == {"kueue.x-k8s.io/v1beta1"}
    (group,) = docs["ClusterQueue"]["spec"]["resourceGroups"]
    (flavor,) = group["flavors"]
    assert flavor["name"] == docs["ResourceFlavor"]["metadata"]["name"]
    assert [r["name"] for r in flavor["resources"]] == group["coveredResources"]
    assert docs["LocalQueue"]["spec"]["clusterQueue"] == docs["ClusterQueue"]["metadata"]["name"]
    job = yaml.safe_load((REPO / "infra/k8s/base/job.yaml").read_text())
    requests = job["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]
    assert set(requests) <= set(group["coveredResources"])
    assert docs["LocalQueue"]["metadata"]["name"] == "huggingtweets"  # what the docs pass


def test_pytorchjob_structure() -> None:
    # No offline schema exists for the Kubeflow CRD: check what the operator requires.
    job = yaml.safe_load((REPO / "infra/k8s/pytorchjob/pytorchjob.yaml").read_text())
    assert job["apiVersion"] == "kubeflow.org/v1" and job["kind"] == "PyTorchJob"
    specs = job["spec"]["pytorchReplicaSpecs"]
    assert set(specs) == {"Master", "Worker"} and specs["Master"]["replicas"] == 1
    for spec in specs.values():
        (container,) = spec["template"]["spec"]["containers"]
        assert container["name"] == "pytorch"  # the operator injects its env into this one
        assert container["args"][:2] == ["run", "--manifest"]


def test_dockerfile_essentials() -> None:
    text = (REPO / "docker/Dockerfile").read_text()
    assert 'ENTRYPOINT ["huggingtweets"]' in text and "USER 1000:1000" in text
    assert "HF_HOME=/cache/huggingface" in text and 'VOLUME ["/cache"]' in text
    assert "pip wheel" in text
    assert text.count("\nFROM ") == 2  # build and runtime stages
    # DeepSpeed is built for CUDA (a GPU-less build would pick the CPU) and the build fails
    # unless its ops are there: the step the image test cannot show on its CPU stand-in.
    assert "ARG DS_ACCELERATOR=cuda" in text and "export DS_ACCELERATOR" in text
    assert 'RUN python /tmp/check_deepspeed.py "${DS_ACCELERATOR}"' in text
    # Every install takes its versions from the one lock.
    installs = [ln for ln in text.splitlines() if "pip install" in ln]
    assert installs and all("-c /tmp/constraints.txt" in ln for ln in installs), installs
    # torch brings its own CUDA libraries: the runtime base is plain Ubuntu, not CUDA's.
    assert "ARG RUNTIME_BASE=docker.io/library/ubuntu:24.04" in text
    assert "getent passwd 1000" in text  # Ubuntu's own uid-1000 user is renamed, not clashed
    ignore = [
        ln
        for ln in (REPO / ".dockerignore").read_text().splitlines()
        if ln and not ln.startswith("#")
    ]
    assert ignore[:1] == ["*"] and "!job/" in ignore
    assert "!requirements/constraints.txt" in ignore and "!docker/check_deepspeed.py" in ignore


def test_wandb_mode_is_the_manifests_choice_not_the_infras() -> None:
    # Online W&B hard-coded in the infra killed every job without a key (issue 14); the
    # manifest (submit --wandb-mode) decides, and preflight checks the key when it is online.
    for path in ("infra/aws-batch/template.yaml", *map(str, (REPO / "infra/k8s").rglob("*.yaml"))):
        assert "WANDB_MODE" not in (REPO / path).read_text(), path


job_role_allows = job_role().allows  # tests/helpers/iam.py: the template's JobRole, as IAM


def test_every_s3_path_in_the_docs_and_submit_is_one_the_job_role_may_use(s3) -> None:
    """A lint cannot see this: the README's manifest once read s3://my-bucket/archives/, which
    the role may not read (AccessDenied, exit 9, after the job had started)."""
    import re

    import boto3

    from job.cloud.submit import submit
    from job.config import SubmitOptions

    boto3.client("s3").create_bucket(Bucket="my-bucket")  # the dry run reads its opt-out list

    texts = [(REPO / "README.md").read_text()] + [p.read_text() for p in REPO.glob("docs/*.md")]
    uris = {u.rstrip("}),.`") for t in texts for u in re.findall(r"s3://my-bucket/[^\s'\"]+", t)}
    dry = submit(
        ["alice"],
        SubmitOptions(
            output="s3://my-bucket/huggingtweets", dry_run=True, contact="takedown@example.org"
        ),
    )
    assert dry.manifest_uri.startswith("s3://my-bucket/jobs/")
    uris.add(dry.manifest_uri)
    assert len(uris) >= 5, uris
    for uri in sorted(uris):
        key = uri.removeprefix("s3://my-bucket/")
        arn = f"arn:aws:s3:::my-bucket/{key}"
        if key.startswith(("jobs/", "inputs/")):  # manifests and inputs: read
            assert job_role_allows("s3:GetObject", arn), f"the job may not read {uri}"
        else:  # an output prefix: its bots' files, status, latest.json and the preflight probe
            base = key.rstrip("/")
            for rel in ("alice/status.json", "alice/r1/model/model.safetensors", ".preflight/x"):
                for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"):
                    assert job_role_allows(action, f"arn:aws:s3:::my-bucket/{base}/{rel}"), (
                        f"the job may not {action} under {uri}"
                    )
            bucket = "arn:aws:s3:::my-bucket"
            assert job_role_allows("s3:ListBucket", bucket, prefix=f"{base}/alice/"), uri
    # ...and the evaluator says no where the role does.
    assert not job_role_allows("s3:GetObject", "arn:aws:s3:::my-bucket/archives/a.zip")
    assert not job_role_allows("s3:PutObject", "arn:aws:s3:::my-bucket/inputs/a.zip")
    assert not job_role_allows("s3:ListBucket", "arn:aws:s3:::my-bucket", prefix="archives/")


def test_the_hosts_cache_folder_belongs_to_the_images_user_on_every_node() -> None:
    """Every container of every job definition, each node of a multi-node job included, mounts
    the host's cache at /cache (else each node downloads the base again on every attempt), and
    every compute environment makes that folder for uid 1000 at boot."""
    template = batch_template()
    resources = template["Resources"]
    script = resources["CacheLaunchTemplate"]["Properties"]["LaunchTemplateData"]["UserData"]
    containers = [
        (name, part)
        for name, r in resources.items()
        if r["Type"] == "AWS::Batch::JobDefinition"
        for part in [r["Properties"].get("ContainerProperties")]
        + [
            n["Container"]
            for n in r["Properties"].get("NodeProperties", {}).get("NodeRangeProperties", [])
        ]
        if part
    ]
    assert {name for name, _ in containers} == {"JobDefinition", "MultiNodeJobDefinition"}
    for name, container in containers:
        (volume,) = container["Volumes"]
        host = volume["Host"]["SourcePath"]
        assert f"chown 1000:1000 {host}" in script["Fn::Base64"]
        assert {"SourceVolume": volume["Name"], "ContainerPath": "/cache", "ReadOnly": False} in (
            container["MountPoints"]
        ), name
    for name, r in resources.items():
        if r["Type"] == "AWS::Batch::ComputeEnvironment":
            assert "LaunchTemplate" in r["Properties"]["ComputeResources"], name
    assert "USER 1000:1000" in (REPO / "docker/Dockerfile").read_text()
