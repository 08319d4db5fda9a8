"""The job role of infra/aws-batch/template.yaml, evaluated as IAM would, and an S3 on loopback
that enforces it: moto does not enforce IAM, so this stands between the job and moto.

``JobRole.allows`` evaluates one request against the role's Allow statements (Resource
wildcards; StringLike and StringLikeIfExists on ``s3:prefix``: all the policy uses), for bucket
my-bucket and the default OutputPrefix. A condition on a key the request does not carry is
false, unless it is an ...IfExists one (IAM's "Condition operators": a missing key makes a
condition false).

``RoleEnforcer`` is a FaultProxy hook (tests/helpers/s3.py): it maps each REST request to its
IAM action (docs.aws.amazon.com/AmazonS3/latest/API: the action each operation needs), answers
403 where the role does not allow it, and follows S3's rule for a missing key: "If you don't
have the s3:ListBucket permission, Amazon S3 returns an HTTP status code 403 ("access
denied")" (GetObject's and HeadObject's permissions), that ListBucket asked without a prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fnmatch import fnmatch
from functools import cache
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import yaml

from tests.helpers import REPO

BUCKET = "my-bucket"


class _CfnLoader(yaml.SafeLoader):
    """CloudFormation YAML: !Ref kept as {"Ref": name} (what points at what), !Sub as its
    text, the other short tags (!GetAtt...) as None."""


_CfnLoader.add_constructor("!Ref", lambda loader, node: {"Ref": loader.construct_scalar(node)})
_CfnLoader.add_constructor("!Sub", lambda loader, node: loader.construct_scalar(node))
_CfnLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def batch_template() -> dict[str, Any]:
    """infra/aws-batch/template.yaml, read."""
    return yaml.load((REPO / "infra/aws-batch/template.yaml").read_text(), _CfnLoader)


@cache
def job_role() -> JobRole:
    template = batch_template()
    prefix = template["Parameters"]["OutputPrefix"]["Default"]
    statements = [
        s
        for policy in template["Resources"]["JobRole"]["Properties"]["Policies"]
        for s in policy["PolicyDocument"]["Statement"]
    ]
    return JobRole(statements, prefix)


@dataclass(frozen=True)
class JobRole:
    statements: list[dict[str, Any]]
    output_prefix: str

    def _sub(self, text: str) -> str:
        return text.replace("${BucketName}", BUCKET).replace("${OutputPrefix}", self.output_prefix)

    def allows(self, action: str, arn: str, prefix: str | None = None) -> bool:
        for statement in self.statements:
            if statement.get("Effect") != "Allow":
                continue
            actions = (
                statement["Action"]
                if isinstance(statement["Action"], list)
                else [statement["Action"]]
            )
            resources = statement["Resource"]
            resources = resources if isinstance(resources, list) else [resources]
            if action not in actions or not any(fnmatch(arn, self._sub(r)) for r in resources):
                continue
            if all(
                self._holds(op, test, prefix) for op, test in statement.get("Condition", {}).items()
            ):
                return True
        return False

    def _holds(self, operator: str, test: dict[str, Any], prefix: str | None) -> bool:
        assert set(test) == {"s3:prefix"}, f"the evaluator knows s3:prefix only, not {test}"
        patterns = test["s3:prefix"] if isinstance(test["s3:prefix"], list) else [test["s3:prefix"]]
        if prefix is None:
            return operator.endswith("IfExists")
        assert operator in ("StringLike", "StringLikeIfExists"), operator
        return any(fnmatch(prefix, self._sub(p)) for p in patterns)


@dataclass
class RoleEnforcer:
    """A FaultProxy hook: the job role's answer to each request (None: forward it)."""

    exists: Any  # key -> bool, asked of moto itself (not through the proxy)
    proxy: Any
    role: JobRole = field(default_factory=job_role)
    decisions: list[tuple[str, str, str | None, bool]] = field(default_factory=list)
    absent_denied: list[str] = field(default_factory=list)  # 403s S3 gives for missing keys

    def __call__(self, method: str, path: str) -> int | None:
        url = urlparse(path)
        bucket, _, key = url.path.lstrip("/").partition("/")
        key, query = unquote(key), parse_qs(url.query, keep_blank_values=True)
        bucket_arn = f"arn:aws:s3:::{bucket}"
        if not key:  # bucket operations: ListObjects(V2), HeadBucket
            if method == "POST" and "delete" in query:  # DeleteObjects: each key's DeleteObject
                keys = re.findall(rb"<Key>(.*?)</Key>", self.proxy.body)
                return self._decide(
                    [("s3:DeleteObject", f"{bucket_arn}/{k.decode()}", None) for k in keys]
                )
            prefix = query["prefix"][0] if "prefix" in query else None
            return self._decide([("s3:ListBucket", bucket_arn, prefix)])
        object_arn = f"{bucket_arn}/{key}"
        if method in ("GET", "HEAD"):
            answer = self._decide([("s3:GetObject", object_arn, None)])
            if (
                answer is None
                and not self.exists(key)
                and not self.role.allows("s3:ListBucket", bucket_arn)
            ):
                self.absent_denied.append(key)
                return 403
            return answer
        if method == "DELETE":
            action = "s3:AbortMultipartUpload" if "uploadId" in query else "s3:DeleteObject"
            return self._decide([(action, object_arn, None)])
        return self._decide([("s3:PutObject", object_arn, None)])  # PUT, multipart POSTs

    def _decide(self, asked: list[tuple[str, str, str | None]]) -> int | None:
        for action, arn, prefix in asked:
            allowed = self.role.allows(action, arn, prefix)
            self.decisions.append((action, arn, prefix, allowed))
            if not allowed:
                return 403
        return None
