"""Submitting: write a manifest to S3, start the job on AWS Batch or Kubernetes, say how to follow.

- One bot per user (``together=True``: one bot of all of them), each from the Twitter API.
- AWS Batch: ``submit_job`` on the queue and job definition of infra/aws-batch, as an array job
  of one child per bot (the child's ``AWS_BATCH_JOB_ARRAY_INDEX`` picks its bot).
- Kubernetes: the Indexed Job of infra/k8s/base with one completion per bot, applied with
  ``kubectl apply`` (``dry_run`` prints it instead).
- Every bot's status is set to queued before the job starts.
"""

from __future__ import annotations

import copy
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from job.cloud.status import hub_of, write_status
from job.data.handles import validate_handle
from job.errors import BadConfig, InputNotFound, TransientError
from job.spec import jobs, parse_manifest, tasks
from job.storage import open_storage

K8S = Path(__file__).resolve().parents[2] / "infra" / "k8s"
K8S_JOB = K8S / "base" / "job.yaml"
K8S_OVERLAYS = K8S / "overlays"
TARGETS = ("batch", "k8s")


@dataclass
class Submission:
    id: str
    manifest_uri: str
    manifest: dict[str, Any]
    target: str
    job: str  # the Batch job id, or the Kubernetes Job's name
    rendered: str = ""  # the Kubernetes YAML (dry run)

    def follow(self) -> str:
        how = [f"huggingtweets status --manifest {self.manifest_uri}"]
        if self.target == "batch":
            how.append(f"aws batch describe-jobs --jobs {self.job}")
        else:
            how.append(
                f"kubectl logs -f job/{self.job}  # or: kubectl get pods -l job-name={self.job}"
            )
        return "follow with:\n  " + "\n  ".join(how)

    def lines(self, dry_run: bool) -> str:
        """What ``huggingtweets submit`` prints: what it would submit, or what it did."""
        if dry_run:
            manifest = yaml.safe_dump(self.manifest, sort_keys=False)
            text = f"# manifest, to be written to {self.manifest_uri}\n{manifest}"
            return text + (f"---\n{self.rendered}" if self.rendered else "")
        bots = len(self.manifest["bots"])
        return (
            f"submitted {bots} bot{'s' if bots > 1 else ''} to {self.target}: {self.job}\n"
            + self.follow()
        )


def build_manifest(
    users: list[str],
    output: str,
    *,
    base_model: str,
    together: bool,
    hub_owner: str | None,
    wandb_mode: str = "offline",
    contact: str | None = None,
    bots_per_task: int = 1,
) -> dict[str, Any]:
    handles = [validate_handle(u) for u in users]
    if not handles:
        raise BadConfig("give at least one Twitter handle")
    groups = [handles] if together else [[h] for h in handles]
    manifest = {
        "version": 1,
        "output": output,
        "defaults": {"base_model": base_model},
        "hub": {
            "push": hub_owner is not None,
            "owner": hub_owner or "huggingtweets",
            **({"contact": contact} if contact else {}),
        },
        # The manifest says whether W&B is online, not the infra: online needs the key
        # (preflight checks it before any work).
        "wandb": {"mode": wandb_mode},
        "bots": [{"users": [{"handle": h, "source": "api"} for h in g]} for g in groups],
        **({"bots_per_task": bots_per_task} if bots_per_task != 1 else {}),
    }
    parse_manifest(yaml.safe_dump(manifest))  # the same checks the job will make
    return manifest


def submit(
    users: list[str],
    *,
    target: str,
    output: str,
    base_model: str = "gpt2",
    together: bool = False,
    hub_owner: str | None = "huggingtweets",
    job_queue: str = "huggingtweets",
    job_definition: str = "huggingtweets",
    image: str | None = None,
    namespace: str = "default",
    overlay: str | None = None,
    cache_claim: str | None = None,
    wandb_mode: str = "offline",
    contact: str | None = None,
    bots_per_task: int = 1,
    dry_run: bool = False,
) -> Submission:
    if target not in TARGETS:
        raise BadConfig(f"--target must be batch or k8s, not {target!r}")
    if target == "k8s" and not image:
        # A cluster cannot pull the local default (huggingtweets:latest): the pods would sit
        # in ImagePullBackOff. AWS Batch's image is the job definition's.
        raise BadConfig(
            "--target k8s needs --image (or HUGGINGTWEETS_IMAGE): the image in a registry the"
            " cluster can pull (make push REGISTRY=...)"
        )
    if not output.startswith("s3://"):
        raise BadConfig("submit needs an s3:// output (--output or HUGGINGTWEETS_OUTPUT)")
    handles = [validate_handle(u) for u in users]
    if hub_owner is not None and not contact:
        raise BadConfig(
            "a public Hub push needs a contact for removal requests, named on every card: give"
            " --contact EMAIL_OR_URL (or set HUGGINGTWEETS_CONTACT; make submit ... CONTACT=...),"
            " or --no-push"
        )
    from job.cloud.consent import check_not_opted_out

    results = open_storage(output)
    check_not_opted_out(results, handles)  # before anything is written or started, dry run too
    manifest = build_manifest(
        users,
        output,
        base_model=base_model,
        together=together,
        hub_owner=hub_owner,
        wandb_mode=wandb_mode,
        contact=contact,
        bots_per_task=bots_per_task,
    )
    sid = f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
    bucket = output[len("s3://") :].split("/", 1)[0]
    uri = f"s3://{bucket}/jobs/{sid}.yaml"
    n = tasks(parse_manifest(yaml.safe_dump(manifest)))  # array size: bots / bots per task
    if target == "batch" and n > MAX_BATCH_ARRAY:
        need = -(-len(manifest["bots"]) // MAX_BATCH_ARRAY)
        raise BadConfig(
            f"{len(manifest['bots'])} bots at {bots_per_task} per task is {n:,} tasks; an AWS"
            f" Batch array holds at most {MAX_BATCH_ARRAY:,}: give --bots-per-task {need} or more"
        )
    name = f"huggingtweets-{sid}"
    if target == "k8s":
        assert image is not None
        job = render_k8s(
            uri,
            n,
            name=name,
            image=image,
            namespace=namespace,
            overlay=overlay,
            cache_claim=cache_claim,
        )
        rendered = yaml.safe_dump_all(job, sort_keys=False)
        if dry_run:
            return Submission(sid, uri, manifest, target, name, rendered)
        check_k8s(namespace, cache_claim)  # before anything is written
    elif dry_run:
        return Submission(sid, uri, manifest, target, "(dry run)")

    text = yaml.safe_dump(manifest, sort_keys=False).encode()
    inputs = open_storage(f"s3://{bucket}")
    inputs.put_bytes(f"jobs/{sid}.yaml", text)
    made = jobs(parse_manifest(text.decode()))
    before = {bot.bot: results.get_bytes(f"{bot.bot}/status.json") for bot in made}
    try:
        for bot in made:
            write_status(results, bot.bot, "queued", manifest=uri, hub=hub_of(bot))
        if target == "batch":
            job_id = submit_batch(uri, n, name, job_queue, job_definition)
            return Submission(sid, uri, manifest, target, job_id)
        apply_k8s(rendered)
        return Submission(sid, uri, manifest, target, name, rendered)
    except BaseException:
        # Nothing was started: put each bot's record back as it was and drop the manifest, so
        # `status` does not show bots queued forever for a job that never ran.
        for name, record in before.items():
            if record is None:
                results.delete(f"{name}/status.json")
            else:
                results.put_bytes(f"{name}/status.json", record)
        inputs.delete(f"jobs/{sid}.yaml")
        raise


# AWS Batch's limit on an array job's size (arrayProperties.size: 2 to 10,000).
MAX_BATCH_ARRAY = 10_000


def submit_batch(manifest_uri: str, bots: int, name: str, queue: str, definition: str) -> str:
    """``bots``: the array's size, one task per index (a task makes bots_per_task bots)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    request: dict[str, Any] = {
        "jobName": name,
        "jobQueue": queue,
        "jobDefinition": definition,
        "parameters": {"manifest": manifest_uri},
    }
    if bots > 1:  # an array job needs at least 2 children; 1 bot runs without an index
        request["arrayProperties"] = {"size": bots}
    try:
        return str(boto3.client("batch").submit_job(**request)["jobId"])
    except ClientError as e:
        raise BadConfig(f"AWS Batch refused the job: {e.response['Error'].get('Message')}") from e
    except BotoCoreError as e:
        raise TransientError(f"cannot reach AWS Batch: {e}") from e


def overlays() -> list[str]:
    """The sizes ``--overlay`` takes: infra/k8s/overlays/ that patch the Job's resources."""
    return sorted(p.parent.name for p in K8S_OVERLAYS.glob("*/resources.yaml"))


def render_k8s(
    manifest_uri: str,
    bots: int,
    *,
    name: str,
    image: str,
    namespace: str,
    overlay: str | None = None,
    cache_claim: str | None = None,
) -> list[dict[str, Any]]:
    """The base Indexed Job, filled in for this submission: an overlay's resources and
    scheduling (``gpt2-xl``), and the cache on a shared claim instead of the pod's own disk."""
    if not K8S_JOB.is_file():
        raise InputNotFound(f"{K8S_JOB} not found: submit to Kubernetes from a checkout")
    job = copy.deepcopy(yaml.safe_load(K8S_JOB.read_text()))
    job["metadata"]["name"] = name
    job["metadata"]["namespace"] = namespace
    job["spec"]["completions"] = bots
    job["spec"]["parallelism"] = bots
    job["spec"]["maxFailedIndexes"] = bots
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
    problems = indexed_job_problems(job)
    if problems:
        raise BadConfig(f"the Kubernetes Job would be refused: {problems[0]}")
    return [job]


# The API server's own rules for Indexed Jobs (batch/v1 validation), which a schema check does
# not see: a Job that breaks one is refused at apply time.
MAX_INDEXED_COMPLETIONS = 100_000  # with backoffLimitPerIndex


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


SECRET = "huggingtweets"  # what the Job's envFrom names


def check_k8s(namespace: str, cache_claim: str | None) -> None:
    """What the Job needs and does not bring: its Secret, and a shared cache claim if named.
    Missing, the Job's pods would sit in CreateContainerConfigError or Pending."""
    needed = [("secret", SECRET)] + ([("pvc", cache_claim)] if cache_claim else [])
    for kind, name in needed:
        result = _kubectl("get", kind, name, "--namespace", namespace, "-o", "name")
        if result.returncode != 0:
            how = (
                f"kubectl create secret generic {SECRET} --namespace {namespace}"
                " --from-literal=TWITTER_BEARER_TOKEN=... --from-literal=HF_TOKEN=..."
                if kind == "secret"
                else "apply infra/k8s/overlays/shared-cache/cache-pvc.yaml (a ReadWriteMany"
                " class) or leave --cache-claim out"
            )
            raise BadConfig(f"the Job needs the {kind} {name!r} in namespace {namespace}: {how}")


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
    result = _kubectl("apply", "-f", "-", stdin=rendered)
    if result.returncode != 0:
        raise BadConfig(f"kubectl apply failed: {' '.join(result.stderr.split())}")
