"""The job run as its AWS Batch role lets it: moto does not enforce IAM, so an S3 proxy on
loopback answers every request as the template's JobRole would (tests/helpers/iam.py),
missing keys included. Every read, write and "is it there yet?" probe the job really makes is
checked, not a list of them kept by hand."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.helpers import SAMPLE
from tests.helpers.cli import invoke
from tests.helpers.iam import BUCKET, RoleEnforcer
from tests.helpers.jobs import TINY_MANIFEST
from tests.helpers.s3 import FaultProxy

pytestmark = pytest.mark.integration

MANIFEST = f"""
version: 1
output: s3://{BUCKET}/huggingtweets{TINY_MANIFEST}
wandb: {{mode: disabled}}
bots:
  - users: [{{handle: sourdough_sam, source: jsonl, uri: s3://{BUCKET}/inputs/sam.jsonl}}]
    train: {{checkpoint_every: 4}}
"""


def test_a_first_run_and_a_rerun_need_nothing_the_job_role_does_not_allow(s3, monkeypatch) -> None:
    """Once a bot's first run failed with "credentials" (exit 9) on real AWS: its status,
    opt-out and latest.json probes got 403 for keys not there yet, since the role may list
    its prefixes only. Now a 403 is asked again as a listing of that key, which it may."""
    moto = boto3.client("s3")  # straight to moto, for the proxy's own "does it exist?"
    moto.create_bucket(Bucket=BUCKET)
    moto.upload_file(str(SAMPLE), BUCKET, "inputs/sam.jsonl")
    moto.put_object(Bucket=BUCKET, Key="jobs/one.yaml", Body=MANIFEST.encode())

    def exists(key: str) -> bool:
        try:
            moto.head_object(Bucket=BUCKET, Key=key)
            return True
        except ClientError:
            return False

    with FaultProxy(s3.url) as proxy:
        enforcer = RoleEnforcer(exists, proxy)
        proxy.hook = enforcer
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        for attempt in ("first", "rerun"):
            done = invoke("run", "--manifest", f"s3://{BUCKET}/jobs/one.yaml")
            assert done.returncode == 0, (attempt, done.stderr[-3000:])
    refused = [d for d in enforcer.decisions if not d[3]]
    assert refused == [], refused  # nothing the job asked for is outside its role
    # The probes S3 answers 403 under this role, which the job now takes as "not there":
    probed = set(enforcer.absent_denied)
    assert "huggingtweets/sourdough_sam/status.json" in probed
    # the opt-out is found by a listing of its folder (any case: consent.py), which it may make
    listed = {d[2] for d in enforcer.decisions if d[0] == "s3:ListBucket" and d[3]}
    assert "huggingtweets/_opt-out/s" in listed and "huggingtweets/_opt-out/S" in listed
    assert "huggingtweets/sourdough_sam/latest.json" in probed
    actions = {d[0] for d in enforcer.decisions}
    assert {"s3:GetObject", "s3:PutObject", "s3:ListBucket", "s3:DeleteObject"} <= actions
    latest = moto.get_object(Bucket=BUCKET, Key="huggingtweets/sourdough_sam/latest.json")
    assert latest["ContentLength"] > 0  # published, through the role


def test_a_403_that_a_listing_cannot_explain_is_still_credentials(s3, monkeypatch) -> None:
    """The listing that tells a missing key from a forbidden one: an object that exists but
    may not be read is exit 9, and so is a 403 where the listing is refused too."""
    from job import errors
    from job.storage import open_storage

    moto = boto3.client("s3")
    moto.create_bucket(Bucket=BUCKET)
    moto.put_object(Bucket=BUCKET, Key="secret/there.json", Body=b"{}")
    with FaultProxy(s3.url) as proxy:
        proxy.hook = lambda method, path: (
            403 if "/secret/" in path or "prefix=secret" in path else None
        )
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        storage = open_storage(f"s3://{BUCKET}/secret")
        with pytest.raises(errors.CredentialsError, match="access denied"):
            storage.get_bytes("there.json")
        with pytest.raises(errors.CredentialsError):
            storage.get_bytes("missing.json")
        proxy.hook = lambda method, path: 403 if method == "GET" and "/secret/" in path else None
        with pytest.raises(errors.CredentialsError):
            storage.get_bytes("there.json")  # listed: it is there, and forbidden
        assert storage.get_bytes("missing.json") is None  # listed: it is not there
