"""Submitting: check the handles and options once, write the manifest to S3, start the job on
AWS Batch (job/cloud/aws_batch.py) or Kubernetes (job/cloud/kubernetes.py), say how to follow.

- One bot per user (``together=True``: one bot of all of them), each from the Twitter API.
- Everything a platform would refuse is asked before anything is written: the opt-outs, the
  queue and job definition (AWS Batch), the cluster's version and objects (Kubernetes).
- Every bot's status is set to queued before the job starts, and put back as it was when the
  start fails.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import yaml

from job.cloud.aws_batch import MAX_BATCH_ARRAY, plan_batch, start_batch
from job.cloud.consent import check_not_opted_out
from job.cloud.kubernetes import K8S_ONLY, apply_k8s, check_k8s, render_k8s
from job.cloud.status import hub_of, write_status
from job.config import SubmitOptions
from job.data.handles import Handle, handles_of
from job.errors import BadConfig, CredentialsError
from job.loading import validate
from job.records import MAX_RECORD_BYTES
from job.spec import ONLINE, Manifest, jobs, tasks
from job.storage import open_storage


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


def build_manifest(
    handles: list[Handle], options: SubmitOptions
) -> tuple[Manifest, dict[str, Any]]:
    """The manifest of these handles, checked as the job will check it (once), and as the
    plain data that is written to S3."""
    if not handles:
        raise BadConfig("give at least one handle")
    handles = handles_of(handles)  # parsed once: a no-op for Handles
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
        # each person read online from their own network (spec.py ONLINE)
        "bots": [
            {"users": [{"handle": str(h), "source": ONLINE[h.platform]} for h in g]} for g in groups
        ],
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
    handles = handles_of(users)  # once, here: every step below takes these
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
    manifest, data = build_manifest(handles, o)
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
