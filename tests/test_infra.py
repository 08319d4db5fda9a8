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

BIN = Path(sys.executable).parent  # the venv's bin: the tools come with the test extras


class CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (!Ref, !Sub, !GetAtt) read as plain values."""


CfnLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


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
        [tool("shellcheck"), ".ci/run"], cwd=REPO, capture_output=True, text=True
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


def test_batch_retries_match_the_exit_codes() -> None:
    template = yaml.load((REPO / "infra/aws-batch/template.yaml").read_text(), CfnLoader)
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
        "infra/k8s/base/cache-pvc.yaml",
        "infra/k8s/overlays/gpt2-xl/resources.yaml",
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
    assert "DS_BUILD_FUSED_ADAM=1" in text and "pip wheel" in text
    assert text.count("\nFROM ") == 2  # build and runtime stages
    ignore = [
        ln
        for ln in (REPO / ".dockerignore").read_text().splitlines()
        if ln and not ln.startswith("#")
    ]
    assert ignore[:1] == ["*"] and "!job/" in ignore


def test_wandb_mode_is_the_manifests_choice_not_the_infras() -> None:
    # Online W&B hard-coded in the infra killed every job without a key (issue 14); the
    # manifest (submit --wandb-mode) decides, and preflight checks the key when it is online.
    for path in ("infra/aws-batch/template.yaml", *map(str, (REPO / "infra/k8s").rglob("*.yaml"))):
        assert "WANDB_MODE" not in (REPO / path).read_text(), path
