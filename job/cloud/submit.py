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
from typing import Any, Literal

import yaml
from pydantic import Field

from job.cloud.consent import check_not_opted_out
from job.cloud.status import hub_of, write_status
from job.config import Section
from job.data.handles import validate_handle
from job.errors import BadConfig, InputNotFound, TransientError
from job.loading import validate
from job.spec import Manifest, jobs, tasks
from job.storage import open_storage

K8S = Path(__file__).resolve().parents[2] / "infra" / "k8s"
K8S_JOB = K8S / "base" / "job.yaml"
K8S_OVERLAYS = K8S / "overlays"


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


class SubmitOptions(Section):
    """``huggingtweets submit``'s options besides the handles. Each field is its flag, with its
    default and help, once (job/options.py makes the flags); ``envvar`` names a variable
    that gives it too."""

    target: Literal["batch", "k8s"] = Field(
        "batch", description="batch (AWS Batch) | k8s (Kubernetes)."
    )
    output: str = Field(
        "",
        description="The output prefix, s3://bucket/prefix.",
        json_schema_extra={"envvar": "HUGGINGTWEETS_OUTPUT"},
    )
    base_model: str = Field("gpt2", description="The base of every bot (as run's --base-model).")
    together: bool = Field(False, description="One bot of all the users.")
    hub_owner: str = Field("huggingtweets", description="Hub owner of the repos.")
    push: bool = Field(True, description="Push the models to the Hub.")
    contact: str | None = Field(
        None,
        description="Where people ask for a bot's removal (e-mail or URL): needed to push"
        " publicly.",
        json_schema_extra={"envvar": "HUGGINGTWEETS_CONTACT"},
    )
    # The manifest says whether W&B is online, not the infra: online needs the key (preflight
    # checks it before any work).
    wandb_mode: Literal["online", "offline", "disabled"] = Field(
        "offline", description="online (needs WANDB_API_KEY in the job) | offline | disabled."
    )
    bots_per_task: int = Field(
        1, ge=1, le=1000, description="Bots each array task makes in turn (small models: 10+)."
    )
    job_queue: str = Field(
        "huggingtweets",
        description="batch: the AWS Batch job queue.",
        json_schema_extra={"envvar": "HUGGINGTWEETS_JOB_QUEUE"},
    )
    job_definition: str = Field(
        "huggingtweets",
        description="batch: the AWS Batch job definition.",
        json_schema_extra={"envvar": "HUGGINGTWEETS_JOB_DEFINITION"},
    )
    image: str | None = Field(
        None,
        description="k8s: the image, in a registry.",
        json_schema_extra={"envvar": "HUGGINGTWEETS_IMAGE"},
    )
    namespace: str = Field("default", description="k8s: the namespace of the Job.")
    overlay: str | None = Field(
        None, description="k8s: resources of infra/k8s/overlays/NAME (gpt2-xl)."
    )
    cache_claim: str | None = Field(
        None, description="k8s: a ReadWriteMany claim for the model cache (default: per pod)."
    )
    dry_run: bool = Field(False, description="Print what would be submitted.")


def build_manifest(users: list[str], options: SubmitOptions) -> tuple[Manifest, dict[str, Any]]:
    """The manifest of these handles, checked as the job will check it (once), and as the
    plain data that is written to S3."""
    handles = [validate_handle(u) for u in users]
    if not handles:
        raise BadConfig("give at least one Twitter handle")
    groups = [handles] if options.together else [[h] for h in handles]
    data = {
        "version": 1,
        "output": options.output,
        "defaults": {"base_model": options.base_model},
        "hub": {
            "push": options.push,
            "owner": options.hub_owner,
            **({"contact": options.contact} if options.contact else {}),
        },
        "wandb": {"mode": options.wandb_mode},
        "bots": [{"users": [{"handle": h, "source": "api"} for h in g]} for g in groups],
        **({"bots_per_task": options.bots_per_task} if options.bots_per_task != 1 else {}),
    }
    return validate(Manifest, data, "manifest"), data


def submit(users: list[str], options: SubmitOptions) -> Submission:
    o = options
    if o.target == "k8s" and not o.image:
        # A cluster cannot pull the local default (huggingtweets:latest): the pods would sit
        # in ImagePullBackOff. AWS Batch's image is the job definition's.
        raise BadConfig(
            "--target k8s needs --image (or HUGGINGTWEETS_IMAGE): the image in a registry the"
            " cluster can pull (make push REGISTRY=...)"
        )
    if not o.output.startswith("s3://"):
        raise BadConfig("submit needs an s3:// output (--output or HUGGINGTWEETS_OUTPUT)")
    handles = [validate_handle(u) for u in users]
    if o.push and not o.contact:
        raise BadConfig(
            "a public Hub push needs a contact for removal requests, named on every card: give"
            " --contact EMAIL_OR_URL (or set HUGGINGTWEETS_CONTACT; make submit ... CONTACT=...),"
            " or --no-push"
        )

    results = open_storage(o.output)
    check_not_opted_out(results, handles)  # before anything is written or started, dry run too
    manifest, data = build_manifest(users, o)
    made = jobs(manifest)  # every bot resolved, once: what the job will make
    sid = f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
    bucket = o.output[len("s3://") :].split("/", 1)[0]
    uri = f"s3://{bucket}/jobs/{sid}.yaml"
    n = tasks(manifest)  # array size: bots / bots per task
    if o.target == "batch" and n > MAX_BATCH_ARRAY:
        need = -(-len(made) // MAX_BATCH_ARRAY)
        raise BadConfig(
            f"{len(made)} bots at {o.bots_per_task} per task is {n:,} tasks; an AWS"
            f" Batch array holds at most {MAX_BATCH_ARRAY:,}: give --bots-per-task {need} or more"
        )
    name = f"huggingtweets-{sid}"
    rendered = ""
    if o.target == "k8s":
        assert o.image is not None
        job = render_k8s(
            uri,
            n,
            name=name,
            image=o.image,
            namespace=o.namespace,
            overlay=o.overlay,
            cache_claim=o.cache_claim,
        )
        rendered = yaml.safe_dump_all(job, sort_keys=False)
        if o.dry_run:
            return Submission(sid, uri, data, o.target, name, rendered)
        check_k8s(o.namespace, o.cache_claim)  # before anything is written
    elif o.dry_run:
        return Submission(sid, uri, data, o.target, "(dry run)")

    inputs = open_storage(f"s3://{bucket}")
    inputs.put_bytes(f"jobs/{sid}.yaml", yaml.safe_dump(data, sort_keys=False).encode())
    before = {bot.bot: results.get_bytes(f"{bot.bot}/status.json") for bot in made}
    try:
        for bot in made:
            write_status(results, bot.bot, "queued", manifest=uri, hub=hub_of(bot))
        if o.target == "batch":
            job_id = submit_batch(uri, n, name, o.job_queue, o.job_definition)
            return Submission(sid, uri, data, o.target, job_id)
        apply_k8s(rendered)
        return Submission(sid, uri, data, o.target, name, rendered)
    except BaseException:
        # Nothing was started: put each bot's record back as it was and drop the manifest, so
        # `status` does not show bots queued forever for a job that never ran.
        for bot_name, record in before.items():
            if record is None:
                results.delete(f"{bot_name}/status.json")
            else:
                results.put_bytes(f"{bot_name}/status.json", record)
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
