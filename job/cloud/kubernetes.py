"""Kubernetes: the Indexed Job of k8s/base (package data; infra/k8s links to it) with one
completion per task, checked against the cluster (its version, the objects it needs) and
applied with ``kubectl apply``; a dry run prints it instead, as YAML kubectl takes as is.
``--queue`` makes it what Kueue admits, ``--service-account`` names the pods' account.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from job.errors import BadConfig, TransientError

# Package data (infra/k8s is a link to it): a wheel or the image submits as a checkout does.
K8S = Path(__file__).resolve().parent / "k8s"
K8S_JOB = K8S / "base" / "job.yaml"
K8S_OVERLAYS = K8S / "overlays"
K8S_ONLY = ("overlay", "cache_claim", "service_account", "queue")  # submit's flags for k8s alone
K8S_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")  # an RFC 1123 label
KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
KUEUE_MIN_PARALLELISM = "kueue.x-k8s.io/job-min-parallelism"
# The API server's own rules for Indexed Jobs (batch/v1 validation), which a schema check does
# not see: a Job that breaks one is refused at apply time.
MAX_INDEXED_COMPLETIONS = 100_000  # with backoffLimitPerIndex
SECRET = "huggingtweets"  # what the Job's envFrom names
# The oldest Kubernetes that runs the Job as written: backoffLimitPerIndex and podFailurePolicy's
# FailIndex are beta and on by default from 1.29 (KEP-3850: alpha 1.28, GA 1.33). An older API
# server drops the fields it does not know, and one bot's failures would fail them all.
MIN_KUBERNETES = (1, 29)
# What kubectl says when it reaches no API server (client-go's words: refused, DNS, timeouts).
UNREACHABLE = re.compile(
    r"connection refused|was refused|unable to connect to the server|no such host|i/o timeout"
    r"|tls handshake timeout|network is unreachable|no route to host|dial tcp",
    re.IGNORECASE,
)
# What each object the Job needs is, and how to make it when it is missing.
NEEDED = {
    "secret": "kubectl create secret generic {name} --namespace {namespace}"
    " --from-literal=TWITTER_BEARER_TOKEN=... --from-literal=HF_TOKEN=...",
    "pvc": "apply infra/k8s/overlays/shared-cache/cache-pvc.yaml (a ReadWriteMany class) or leave"
    " --cache-claim out",
    "serviceaccount": "kubectl create serviceaccount {name} --namespace {namespace}, annotated"
    " with its IAM role (docs/deploy.md), or leave --service-account out",
    "localqueues.kueue.x-k8s.io": "apply a LocalQueue of that name (infra/k8s/kueue/queues.yaml)"
    " or leave --queue out",
}


def overlays() -> list[str]:
    """The sizes ``--overlay`` takes: infra/k8s/overlays/ that patch the Job's resources."""
    return sorted(p.parent.name for p in K8S_OVERLAYS.glob("*/resources.yaml"))


def render_k8s(
    manifest_uri: str,
    tasks: int,
    *,
    name: str,
    image: str,
    namespace: str,
    overlay: str | None = None,
    cache_claim: str | None = None,
    service_account: str | None = None,
    queue: str | None = None,
) -> list[dict[str, Any]]:
    """The base Indexed Job, filled in for this submission: an overlay's resources and
    scheduling (``gpt2-xl``), the cache on a shared claim instead of the pod's own disk, the
    pods' service account, and what Kueue needs to admit it from ``queue``."""
    for what, value in (
        ("--namespace", namespace),
        ("--service-account", service_account),
        ("--queue", queue),
        ("--cache-claim", cache_claim),
    ):
        if value is not None and not K8S_NAME.fullmatch(value):
            raise BadConfig(f"{what}: {value!r} is no Kubernetes name (a-z, 0-9 and -, <= 63)")
    job = copy.deepcopy(yaml.safe_load(K8S_JOB.read_text()))
    job["metadata"]["name"] = name
    job["metadata"]["namespace"] = namespace
    job["spec"]["completions"] = tasks
    job["spec"]["parallelism"] = tasks
    job["spec"]["maxFailedIndexes"] = tasks
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    container["image"] = image
    container["args"] = ["run", "--manifest", manifest_uri]
    if overlay is not None:
        if overlay not in overlays():
            raise BadConfig(f"--overlay must be one of {', '.join(overlays())}, not {overlay!r}")
        patch = yaml.safe_load((K8S_OVERLAYS / overlay / "resources.yaml").read_text())
        patched = patch["spec"]["template"]["spec"]
        for key, value in patched.items():  # affinity, nodeSelector...: the overlay's own
            if key != "containers":
                pod[key] = value
        for part in patched.get("containers", []):
            if part["name"] == container["name"]:
                container.update({k: v for k, v in part.items() if k != "name"})
    if cache_claim is not None:
        (cache,) = [v for v in pod["volumes"] if v["name"] == "cache"]
        cache.clear()
        cache.update({"name": "cache", "persistentVolumeClaim": {"claimName": cache_claim}})
    if service_account is not None:
        pod["serviceAccountName"] = service_account
    if queue is not None:
        # Kueue (kueue.sigs.k8s.io, "Run a Kubernetes Job"): the queue-name label puts it in
        # the LocalQueue, and a Job created suspended starts only when Kueue admits it (its
        # webhook would suspend it too; created so, no pod starts before). Partial admission
        # (beta since Kueue 0.5): admitted at a smaller parallelism when the queue's quota
        # holds fewer GPUs than bots, instead of waiting for all of them at once.
        job["metadata"]["labels"][KUEUE_QUEUE] = queue
        job["metadata"].setdefault("annotations", {})[KUEUE_MIN_PARALLELISM] = "1"
        job["spec"]["suspend"] = True
    problems = indexed_job_problems(job)
    if problems:
        raise BadConfig(f"the Kubernetes Job would be refused: {problems[0]}")
    return [job]


def indexed_job_problems(job: dict[str, Any]) -> list[str]:
    """What the API server would refuse in this Indexed Job, one line each."""
    spec = job.get("spec", {})
    template = spec.get("template", {}).get("spec", {})
    completions, parallelism = spec.get("completions"), spec.get("parallelism", 1)
    per_index, max_failed = spec.get("backoffLimitPerIndex"), spec.get("maxFailedIndexes")
    rules = (spec.get("podFailurePolicy") or {}).get("rules", [])
    checks = [
        (spec.get("completionMode") == "Indexed", "completionMode must be Indexed"),
        (isinstance(completions, int) and completions >= 1, "completions must be set, >= 1"),
        (isinstance(parallelism, int) and parallelism >= 0, "parallelism must be >= 0"),
        (
            max_failed is None or per_index is not None,
            "maxFailedIndexes needs backoffLimitPerIndex",
        ),
        (
            max_failed is None or (isinstance(completions, int) and 0 <= max_failed <= completions),
            f"maxFailedIndexes ({max_failed}) must be <= completions ({completions})",
        ),
        (
            per_index is None
            or (isinstance(completions, int) and completions <= MAX_INDEXED_COMPLETIONS),
            f"with backoffLimitPerIndex, completions must be <= {MAX_INDEXED_COMPLETIONS:,}",
        ),
        (
            not rules or template.get("restartPolicy") == "Never",
            "podFailurePolicy needs restartPolicy: Never",
        ),
        (
            per_index is not None or all(r.get("action") != "FailIndex" for r in rules),
            "a FailIndex rule needs backoffLimitPerIndex",
        ),
    ]
    return [message for ok, message in checks if not ok]


def check_k8s(
    namespace: str,
    cache_claim: str | None,
    service_account: str | None = None,
    queue: str | None = None,
) -> None:
    """Before anything is written: the cluster answers and is new enough, and what the Job
    needs and does not bring is there: its Secret, and the shared cache claim, service account
    and Kueue LocalQueue where named. Missing, the pods would sit in
    CreateContainerConfigError or Pending, or the Job would never be admitted."""
    version = _cluster("version", "-o", "json")
    try:
        server = json.loads(version.stdout or "{}").get("serverVersion")
    except (ValueError, AttributeError):
        server = None
    if not isinstance(server, dict):  # kubectl said no more than that it failed
        raise BadConfig(
            f"kubectl version could not read the cluster's version (exit {version.returncode});"
            " check kubectl's context and credentials (kubectl cluster-info)"
        )
    found = tuple(
        int(re.sub(r"\D", "", str(server.get(k, "")))[:3] or 0) for k in ("major", "minor")
    )
    if found < MIN_KUBERNETES:
        need = ".".join(map(str, MIN_KUBERNETES))
        raise BadConfig(
            f"the cluster runs Kubernetes {'.'.join(map(str, found))}; the Job needs {need} or"
            " newer (backoffLimitPerIndex, podFailurePolicy FailIndex)"
        )
    needed = [
        ("secret", SECRET),
        ("pvc", cache_claim),
        ("serviceaccount", service_account),
        ("localqueues.kueue.x-k8s.io", queue),
    ]
    for kind, name in needed:
        if name is None:
            continue
        result = _cluster("get", kind, name, "--namespace", namespace, "-o", "name")
        if result.returncode != 0:
            how = NEEDED[kind].format(name=name, namespace=namespace)
            raise BadConfig(f"the Job needs the {kind} {name!r} in namespace {namespace}: {how}")


def _cluster(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """kubectl, with a cluster it cannot reach said as that (exit 75: try again), whatever
    the command: not as a missing object or a refused Job."""
    result = _kubectl(*args, stdin=stdin)
    if result.returncode != 0 and UNREACHABLE.search(result.stderr):
        raise TransientError(
            "the Kubernetes cluster is unreachable: kubectl's current context has no API server"
            " that answers (kubectl config current-context; kubectl cluster-info)"
        )
    return result


def _kubectl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise BadConfig("kubectl is not installed; use --dry-run and apply the YAML yourself")
    try:
        return subprocess.run(
            [kubectl, *args, "--request-timeout=60s"],
            input=stdin,
            text=True,
            capture_output=True,
            timeout=120,  # kubectl's own timeout covers each request, not a stuck process
        )
    except subprocess.TimeoutExpired as e:
        raise TransientError(f"kubectl {args[0]} did not finish in 120 s") from e


def apply_k8s(rendered: str) -> None:
    result = _cluster("apply", "-f", "-", stdin=rendered)
    if result.returncode != 0:
        raise BadConfig(f"kubectl apply failed: {' '.join(result.stderr.split())}")
