"""AWS Batch: ``submit_job`` on the queue and job definition of infra/aws-batch, as an array
job of one child per task (the child's ``AWS_BATCH_JOB_ARRAY_INDEX`` picks its bots); of a
multi-node definition, one job per task instead, each given its index, and never on Spot
(``batch_request_problems``: AWS Batch's rules, which moto does not enforce). The queue and the
definition are read (``plan_batch``) before anything is written (``start_batch``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from job.errors import BadConfig, TransientError

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
