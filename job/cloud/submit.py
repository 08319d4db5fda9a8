"""Submitting: write a manifest to S3, start the job on AWS Batch or Kubernetes, say how to follow.

- One bot per user (``together=True``: one bot of all of them), each from the Twitter API.
- AWS Batch: ``submit_job`` on the queue and job definition of infra/aws-batch, as an array job
  of one child per task (the child's ``AWS_BATCH_JOB_ARRAY_INDEX`` picks its bots); of a
  multi-node definition, one job per task instead, each given its index, and never on Spot
  (``batch_request_problems``: AWS Batch's rules, which moto does not enforce).
- Kubernetes: the Indexed Job of k8s/base (package data; infra/k8s links to it) with one
  completion per task, checked against the cluster (its version, the objects it needs) and
  applied with ``kubectl apply``; ``dry_run`` prints it instead, as YAML kubectl takes as is.
  ``--queue`` makes it what Kueue admits, ``--service-account`` names the pods' account.
- Every bot's status is set to queued before the job starts.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
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
from job.errors import BadConfig, CredentialsError, TransientError
from job.loading import validate
from job.records import MAX_RECORD_BYTES
from job.spec import Manifest, jobs, tasks
from job.storage import open_storage

# Package data (infra/k8s is a link to it): a wheel or the image submits as a checkout does.
K8S = Path(__file__).resolve().parent / "k8s"
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
    note: str = ""  # what a dry run could not check, said above what it prints

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
            note = f"# {self.note}\n" if self.note else ""
            return note + self._dry()
        bots = len(self.manifest["bots"])
        return (
            f"submitted {bots} bot{'s' if bots > 1 else ''} to {self.target}: {self.job}\n"
            + self.follow()
        )

    def _dry(self) -> str:
        manifest = yaml.safe_dump(self.manifest, sort_keys=False)
        if not self.rendered:
            return f"# manifest, to be written to {self.manifest_uri}\n{manifest}"
        # Kubernetes: only the Job as YAML, so that `| kubectl apply -f -` takes it as is;
        # the manifest it will read, as comments above it.
        said = "".join(f"#   {line}\n" for line in manifest.splitlines())
        return f"# manifest, to be written to {self.manifest_uri}:\n{said}{self.rendered}"


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
    adapter: Literal["none", "lora"] = Field(
        "none", description="lora: each bot a LoRA adapter of the base (as run's --adapter)."
    )
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
    service_account: str | None = Field(
        None,
        description="k8s: the pods' service account: AWS access through its IAM role (IRSA, EKS"
        " Pod Identity) instead of keys in the Secret.",
    )
    queue: str | None = Field(
        None,
        description="k8s: a Kueue LocalQueue; the Job is created suspended and Kueue starts it"
        " when admitted.",
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
        "defaults": {
            "base_model": options.base_model,
            **({"train": {"adapter": options.adapter}} if options.adapter != "none" else {}),
        },
        "hub": {
            "push": options.push,
            "owner": options.hub_owner,
            **({"contact": options.contact} if options.contact else {}),
        },
        "wandb": {"mode": options.wandb_mode},
        "bots": [{"users": [{"handle": str(h), "source": "api"} for h in g]} for g in groups],
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
    if o.target == "batch":  # Kubernetes' own options would be dropped without a word
        given = [f"--{k.replace('_', '-')}" for k in K8S_ONLY if getattr(o, k) is not None]
        if given:
            raise BadConfig(
                f"{', '.join(given)}: for --target k8s only (AWS Batch takes --job-queue and"
                " --job-definition)"
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
    note = ""
    try:  # before anything is written or started, dry run too
        check_not_opted_out(results, handles)
    except CredentialsError:
        if not (o.dry_run and o.target == "k8s"):
            raise
        # the path the docs give where kubectl (or AWS) is missing: print the Job all the same
        note = (
            "opt-outs NOT checked: no AWS credentials here to read the output; the job checks"
            " them again before any download"
        )
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
            service_account=o.service_account,
            queue=o.queue,
        )
        rendered = yaml.safe_dump_all(job, sort_keys=False)
        if o.dry_run:
            return Submission(sid, uri, data, o.target, name, rendered, note)
        check_k8s(o.namespace, o.cache_claim, o.service_account, o.queue)  # before any write
    elif o.dry_run:
        return Submission(sid, uri, data, o.target, "(dry run)")
    else:  # the queue and the definition, before any status is read or written
        batch = plan_batch(uri, n, name, o.job_queue, o.job_definition)

    inputs = open_storage(f"s3://{bucket}")
    inputs.put_bytes(f"jobs/{sid}.yaml", yaml.safe_dump(data, sort_keys=False).encode())
    # each record as it was, to put back should nothing start (bytes, not read: bounded)
    before = {
        bot.bot: results.get_bytes(f"{bot.bot}/status.json", limit=MAX_RECORD_BYTES) for bot in made
    }
    try:
        for bot in made:
            write_status(results, bot.bot, "queued", manifest=uri, hub=hub_of(bot))
        if o.target == "batch":
            return Submission(sid, uri, data, o.target, start_batch(*batch))
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

# AWS Batch's rules for multi-node parallel (MNP) jobs, which moto does not enforce: SubmitJob
# refuses an array of a multinode definition ("Multinode Array Job not supported"), and MNP jobs
# run on neither Spot, Fargate nor UNMANAGED compute environments
# (docs.aws.amazon.com/batch/latest/userguide/mnp-ce.html).
NO_MNP_ON = {"SPOT", "FARGATE", "FARGATE_SPOT", "UNMANAGED"}


def batch_request_problems(
    definition: dict[str, Any], request: dict[str, Any], environments: list[dict[str, Any]]
) -> list[str]:
    """What AWS Batch would refuse, or never run, in ``request`` (a SubmitJob's arguments) of
    ``definition`` (as DescribeJobDefinitions has it) on its queue's ``environments`` (as
    DescribeComputeEnvironments has them), one line each."""
    if definition.get("type") != "multinode":
        return []
    kinds = {
        str(env.get("type") if env.get("type") == "UNMANAGED" else env["computeResources"]["type"])
        for env in environments
    }
    refused = sorted(kinds & NO_MNP_ON)
    checks = [
        (
            "arrayProperties" not in request,
            "a multi-node job definition takes no array job: one job per task",
        ),
        (
            not refused,
            f"AWS Batch runs no multi-node job on {' or '.join(refused)} compute environments:"
            " give --job-queue huggingtweets-multinode (on-demand, in a placement group)",
        ),
    ]
    return [message for ok, message in checks if not ok]


def submit_batch(manifest_uri: str, tasks: int, name: str, queue: str, definition: str) -> str:
    """``tasks`` tasks, one per index: ``plan_batch``, then ``start_batch``; the job id(s)."""
    return start_batch(*plan_batch(manifest_uri, tasks, name, queue, definition))


@contextmanager
def _batch_errors() -> Iterator[None]:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as e:
        raise BadConfig(f"AWS Batch refused the job: {e.response['Error'].get('Code')}") from e
    except BotoCoreError as e:
        raise TransientError(f"cannot reach AWS Batch: {type(e).__name__}") from e


def start_batch(client: Any, requests: list[dict[str, Any]]) -> str:
    """Submit the requests ``plan_batch`` made; the job id(s)."""
    with _batch_errors():
        return " ".join(str(client.submit_job(**r)["jobId"]) for r in requests)


def plan_batch(
    manifest_uri: str, tasks: int, name: str, queue: str, definition: str
) -> tuple[Any, list[dict[str, Any]]]:
    """``tasks`` tasks, one per index (a task makes bots_per_task bots): an array job of a
    single-node definition, or one job per task of a multi-node one, each given its --index;
    the queue and the definition checked, nothing submitted. The client and the requests."""
    import boto3

    client = boto3.client("batch")
    with _batch_errors():
        kind, environments = _batch_targets(client, queue, definition)
        base: dict[str, Any] = {
            "jobName": name,
            "jobQueue": queue,
            "jobDefinition": definition,
            "parameters": {"manifest": manifest_uri},
        }
        if kind.get("type") == "multinode":
            # the definition's command takes the task as Ref::index (infra/aws-batch)
            requests = [
                base
                | {
                    "jobName": f"{name}-{i}" if tasks > 1 else name,
                    "parameters": {"manifest": manifest_uri, "index": str(i)},
                }
                for i in range(tasks)
            ]
        else:  # an array job needs at least 2 children; 1 task runs without an index
            requests = [base | ({"arrayProperties": {"size": tasks}} if tasks > 1 else {})]
        for request in requests:
            problems = batch_request_problems(kind, request, environments)
            if problems:
                raise BadConfig(f"AWS Batch would refuse the job: {problems[0]}")
        return client, requests


def _batch_targets(client: Any, queue: str, definition: str) -> tuple[dict, list[dict]]:
    """The job definition (its newest active revision) and the queue's compute environments."""
    # name:revision or an ARN, else a name (DescribeJobDefinitions takes them differently)
    which: dict[str, Any] = (
        {"jobDefinitions": [definition]} if ":" in definition else {"jobDefinitionName": definition}
    )
    found = client.describe_job_definitions(**which, status="ACTIVE")["jobDefinitions"]
    if not found:
        raise BadConfig(
            f"AWS Batch has no active job definition {definition!r} (infra/aws-batch/template.yaml"
            " makes huggingtweets and huggingtweets-multinode): give --job-definition"
        )
    newest = max(found, key=lambda d: int(d.get("revision", 0)))
    queues = client.describe_job_queues(jobQueues=[queue])["jobQueues"]
    if not queues:
        raise BadConfig(f"AWS Batch has no job queue {queue!r}: give --job-queue")
    arns = [e["computeEnvironment"] for e in queues[0].get("computeEnvironmentOrder", [])]
    environments = (
        client.describe_compute_environments(computeEnvironments=arns)["computeEnvironments"]
        if arns
        else []
    )
    return newest, environments


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


K8S_ONLY = ("overlay", "cache_claim", "service_account", "queue")  # submit's flags for k8s alone
K8S_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")  # an RFC 1123 label
KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
KUEUE_MIN_PARALLELISM = "kueue.x-k8s.io/job-min-parallelism"


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
