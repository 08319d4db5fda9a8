"""Where results go: an S3 prefix or a local folder, behind one small interface.

S3 goes through boto3 with retries (standard mode) and multipart uploads for large files;
``AWS_ENDPOINT_URL`` points it at another S3 (MinIO, moto in the tests). Failures that a retry
of the job can fix (5xx, throttling, the network) raise TransientError; missing buckets and
denied access are configuration errors.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any, Protocol
from urllib.parse import urlparse

from job.atomic import copy_file, json_bytes, write_bytes
from job.errors import BadConfig, CorruptInput, CredentialsError, InputNotFound, TransientError

# S3's bucket naming rules: 3-63 lowercase letters, digits, dots and hyphens.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# A URI's scheme (RFC 3986): what a value that is not a local path starts with.
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
# Seconds to connect, and between bytes: botocore's defaults are 60 and 60. An S3 that stops
# answering then costs at most AWS_MAX_ATTEMPTS x (10 + 60) s before the transient exit code.
CONNECT_TIMEOUT, READ_TIMEOUT = 10.0, 60.0
MULTIPART_THRESHOLD = 64 * 1024 * 1024  # S3's part limits make 8-64 MiB parts the usual choice
MARKER = "_COMPLETE"  # a run, or a checkpoint, is whole once this exists (written last)
DELETE_BATCH = 1000  # the most keys one S3 DeleteObjects request takes
# The keys a DeleteObjects request carries as they are: its body is XML, which holds no control
# character but tab, and whose parser reads a CR as a LF (S3's docs, "XML related object key
# constraints"). A key planted with one of those once failed the whole request, and a takedown
# with it; such a key goes in a DeleteObject of its own, whose key travels in the URL.
_IN_XML = re.compile("[\t\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*")
# What a client is made from: a client made before any of these changed would reach the old
# S3 with the old keys. Credentials a role hands out (IRSA, the instance's) refresh inside one
# client, so they are not part of it.
_CLIENT_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_MAX_ATTEMPTS",
)
_client: tuple[tuple[str | None, ...], Any] | None = None  # (its settings, the client)
_client_lock = threading.Lock()


class Storage(Protocol):
    uri: str

    def put_file(self, key: str, path: Path) -> None: ...
    def where(self, key: str) -> str: ...
    def put_bytes(self, key: str, data: bytes) -> None: ...
    def get_bytes(self, key: str, limit: int | None = None) -> bytes | None: ...
    def list(self, prefix: str) -> list[str]: ...
    def delete(self, *keys: str) -> None: ...
    def head(self, key: str, name: str) -> int: ...


def put_json(storage: Storage, key: str, value: Any) -> None:
    storage.put_bytes(key, json_bytes(value))


def read_uri(uri: str, max_bytes: int | None = None, what: str = "file") -> bytes:
    """The bytes of an ``s3://bucket/key`` object or a local file; one over ``max_bytes`` is
    refused by its size, before any of it is read (CorruptInput: not ``what``)."""
    if uri.startswith("s3://"):
        bucket, _, key = uri[len("s3://") :].partition("/")
        if not key or key.endswith("/"):
            raise BadConfig(f"{uri}: names a folder, not a {what} (s3://bucket/key)")
        storage: Storage = open_storage(f"s3://{bucket}")
        size = storage.head(key, uri) if max_bytes is not None else None
    else:
        path = Path(uri)
        if not path.is_file():
            raise InputNotFound(f"{uri}: no such file")
        storage, key, size = LocalStorage(path.parent), path.name, path.stat().st_size
    if max_bytes is not None and size is not None and size > max_bytes:
        raise CorruptInput(f"{uri}: {size:,} bytes, over {max_bytes >> 20} MiB: not a {what}")
    data = storage.get_bytes(key)
    if data is None:
        raise InputNotFound(f"{uri}: no such object")
    return data


def download(
    storage: Storage, prefix: str, dest: Path, expected: dict[str, str] | None = None
) -> list[Path]:
    """Every object under ``prefix`` into ``dest``, keeping the relative paths.

    A key that would land outside ``dest`` (``..``, an absolute path) is refused. With
    ``expected`` (relative path -> SHA-256, from a run's marker) only the listed files are
    taken, each must match, and none may be missing: whoever can write to the output prefix
    cannot change what is pushed to the Hub.
    """
    root = dest.resolve()
    files, seen = [], set()
    for key in storage.list(prefix):
        rel = key[len(prefix) :].lstrip("/")
        target = dest / rel
        if ".." in PurePosixPath(rel).parts or root not in target.resolve().parents:
            raise CorruptInput(f"{storage.where(key)}: a key that leaves its folder")
        if expected is not None and rel not in expected:
            continue  # not part of the run
        data = storage.get_bytes(key)
        if data is None:
            continue
        if expected is not None and hashlib.sha256(data).hexdigest() != expected[rel]:
            raise CorruptInput(f"{storage.where(key)}: not the file its run's marker lists")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        files.append(target)
        seen.add(rel)
    missing = sorted(set(expected or ()) - seen)
    if missing:
        raise CorruptInput(
            f"{storage.where(prefix + missing[0])}: listed in its run's marker, gone"
        )
    return files


def check_uri(uri: str) -> str:
    """An output or input URI: an s3:// one with a bucket and no ``.``/``..`` segments, or a
    local path. Checked when a manifest is read, so a bad one costs no work."""
    if uri.startswith("s3://"):
        parsed = urlparse(uri)
        if not _BUCKET.fullmatch(parsed.netloc):
            raise BadConfig(f"{uri}: not an S3 bucket name")
        if {".", ".."} & set(parsed.path.split("/")):
            raise BadConfig(f"{uri}: '.' and '..' are not folders on S3")
    elif _SCHEME.match(uri):  # s3:/bucket (one slash), https://, file:...: not a folder
        hint = " (an S3 URI is s3://bucket/prefix)" if uri[:3].lower() == "s3:" else ""
        raise BadConfig(
            f"{uri}: only s3:// URIs and local folders are supported{hint}; a folder whose name"
            " has a ':' is given as ./name"
        )
    return uri


def open_storage(uri: str, multipart_threshold: int = MULTIPART_THRESHOLD) -> Storage:
    check_uri(uri)
    if uri.startswith("s3://"):
        parsed = urlparse(uri)
        return S3Storage(parsed.netloc, parsed.path.strip("/"), multipart_threshold)
    return LocalStorage(Path(uri))


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = str(root)

    def put_file(self, key: str, path: Path) -> None:
        copy_file(path, self.root / key)

    def put_bytes(self, key: str, data: bytes) -> None:
        write_bytes(self.root / key, data)

    def get_bytes(self, key: str, limit: int | None = None) -> bytes | None:
        """``key``'s bytes (at most ``limit + 1`` of them: enough to tell it is over)."""
        path = self.root / key
        if not path.is_file():
            return None
        with path.open("rb") as f:
            return f.read() if limit is None else f.read(limit + 1)

    def where(self, key: str) -> str:
        """``key`` as a person finds it: the folder's path and the key."""
        return str(self.root / key) if key else str(self.root)

    def delete(self, *keys: str) -> None:
        """``keys``, gone; markers first (``markers_first``)."""
        for key in [k for group in markers_first(keys) for k in group]:
            path = self.root / key
            path.unlink(missing_ok=True)
            # As on S3, a folder exists only while it holds something.
            for parent in path.parents:
                if parent == self.root or self.root not in parent.parents:
                    break
                try:
                    parent.rmdir()
                except OSError:  # not empty (or already gone)
                    break

    def head(self, key: str, name: str) -> int:
        """``key``'s size, once it is known to exist and be readable (InputNotFound, or the
        OS's error)."""
        path = self.root / key
        if not path.is_file():
            raise InputNotFound(f"{name}: no such file")
        with path.open("rb"):
            return path.stat().st_size

    def list(self, prefix: str) -> list[str]:
        """Every key that starts with ``prefix``, as S3 lists them: ``a/b`` finds ``a/b.json``
        and ``a/bc/d`` (a prefix, not only a folder)."""
        folder, _, start = prefix.rpartition("/")
        base = self.root / folder
        if not base.is_dir():
            return []
        found = (
            p.relative_to(self.root).as_posix()
            for child in base.iterdir()
            if child.name.startswith(start)
            for p in ([child] if child.is_file() else child.rglob("*"))
        )
        return sorted(k for k in found if (self.root / k).is_file() and not k.endswith(".tmp"))


def s3_client() -> Any:
    """One S3 client a process, for as long as its settings hold: making one costs ~10 ms of
    botocore's model loading, and a takedown or a submit opens storage per bot. boto3's
    clients are thread-safe; making one from the default session is not, hence the lock."""
    import boto3
    from botocore.config import Config

    global _client
    settings = tuple(os.environ.get(name) for name in _CLIENT_ENV)
    with _client_lock:
        if _client is None or _client[0] != settings:  # the first, or the settings changed
            # AWS_MAX_ATTEMPTS is the SDKs' own setting; an explicit Config would otherwise
            # hide it.
            attempts = int(os.environ.get("AWS_MAX_ATTEMPTS") or 5)
            client = boto3.client(
                "s3",
                config=Config(
                    retries={"max_attempts": attempts, "mode": "standard"},
                    connect_timeout=CONNECT_TIMEOUT,
                    read_timeout=READ_TIMEOUT,
                ),
            )
            _client = (settings, client)
        return _client[1]


class S3Storage:
    def __init__(self, bucket: str, prefix: str, multipart_threshold: int) -> None:
        from boto3.s3.transfer import TransferConfig

        self.bucket = bucket
        self.prefix = f"{prefix}/" if prefix else ""
        self.uri = f"s3://{bucket}/{self.prefix}"
        self.client = s3_client()
        self.transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=max(
                multipart_threshold, 5 * 1024 * 1024
            ),  # S3's minimum part size is 5 MiB
        )

    def put_file(self, key: str, path: Path) -> None:
        """Upload ``path`` (multipart past the threshold). boto3's transfer manager waits, on
        its way out, for its threads' requests to end: a SIGTERM (or a deadline) during a
        stalled upload would wait with it, past the platform's grace. So the upload runs in a
        thread of its own and this one waits for it, interruptibly: a stop leaves it behind,
        and the process's exit ends it (__main__.py)."""
        done: list[BaseException | None] = []

        def upload() -> None:
            try:
                self.client.upload_file(
                    str(path), self.bucket, self.prefix + key, Config=self.transfer
                )
                done.append(None)
            except BaseException as e:  # handed to the waiting thread, raised there
                done.append(e)

        thread = threading.Thread(target=upload, name=f"upload-{path.name}", daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(0.5)  # a signal's handler runs between waits: a stop is not held
        with _errors(self.where(key)):
            if done and done[0] is not None:
                raise done[0]

    def put_bytes(self, key: str, data: bytes) -> None:
        with _errors(self.where(key)):
            self.client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data)

    def where(self, key: str) -> str:
        """``key`` as a person finds it: its s3:// URI."""
        return self.uri + key

    def get_bytes(self, key: str, limit: int | None = None) -> bytes | None:
        """``key``'s bytes, or None where it does not exist; with ``limit``, at most ``limit +
        1`` of them (one ranged GET: a record is never read whole). S3 answers a missing key
        with 404 only to a caller that may list the whole bucket; the job's role may list its
        own prefixes only (infra/aws-batch/template.yaml), so its "is it there yet?" reads
        (status, opt-outs, latest.json, checkpoints) get 403. A 403 is then asked again as a
        listing of that one key, which the role may make: absent there, it is absent."""
        from botocore.exceptions import ClientError

        with _errors(self.where(key)):
            ranged = {} if limit is None else {"Range": f"bytes=0-{limit}"}
            try:
                response = self.client.get_object(
                    Bucket=self.bucket, Key=self.prefix + key, **ranged
                )
            except self.client.exceptions.NoSuchKey:
                return None
            except ClientError as e:
                if _status(e) == 403 and self._listed(key) is False:
                    return None
                if _status(e) == 416 and ranged:  # an empty object has no byte 0
                    return b""
                raise  # a 403 the listing cannot explain: credentials (exit 9)
            return bytes(response["Body"].read())

    def _listed(self, key: str) -> bool | None:
        """Whether a listing shows ``key``; None where the listing is refused too."""
        from botocore.exceptions import ClientError

        try:
            listed = self.client.list_objects_v2(
                Bucket=self.bucket, Prefix=self.prefix + key, MaxKeys=1
            )
        except ClientError:
            return None
        return any(o["Key"] == self.prefix + key for o in listed.get("Contents", []))

    def delete(self, *keys: str) -> None:
        """``keys``, gone: DeleteObjects, a thousand keys a request (a takedown of a bot of a
        few runs: 3 requests where it made ~100), markers in requests before the rest
        (``markers_first``); a key alone, or one XML cannot carry (``_IN_XML``), in a
        DeleteObject. S3 answers a key it would not delete inside a 200: that fails as the
        key's own DeleteObject would."""
        from botocore.exceptions import ClientError

        for group in markers_first(keys):
            batched: list[str] = []
            alone: list[str] = []
            for key in group:
                (batched if _IN_XML.fullmatch(self.prefix + key) else alone).append(key)
            if len(batched) == 1:  # one key: a DeleteObject
                alone, batched = [*alone, *batched], []
            for key in alone:
                with _errors(self.where(key)):
                    self.client.delete_object(Bucket=self.bucket, Key=self.prefix + key)
            for start in range(0, len(batched), DELETE_BATCH):
                batch = batched[start : start + DELETE_BATCH]
                shared = os.path.commonprefix(batch)  # noqa: RUF071 (keys, cut at a '/')
                where = f"{self.where(shared[: shared.rfind('/') + 1])} ({len(batch)} objects)"
                with _errors(where):
                    answer = self.client.delete_objects(
                        Bucket=self.bucket,
                        Delete={
                            "Objects": [{"Key": self.prefix + k} for k in batch],
                            "Quiet": True,
                        },
                    )
                    refused = answer.get("Errors") or []
                    if refused:  # the first key's code; their keys are the server's words
                        code = str(refused[0].get("Code", ""))
                        status = 500 if code in ("InternalError", "ServiceUnavailable") else 400
                        meta = {"HTTPStatusCode": status}
                        raise ClientError(
                            {"Error": {"Code": code}, "ResponseMetadata": meta}, "DeleteObjects"
                        )

    def head(self, key: str, name: str) -> int:
        """``key``'s size, once it is known to exist and be readable. A 403 may also mean a
        missing key (get_bytes): a listing that may be made tells which."""
        from botocore.exceptions import ClientError

        with _errors(self.where(key)):
            try:
                head = self.client.head_object(Bucket=self.bucket, Key=self.prefix + key)
                return int(head["ContentLength"])
            except ClientError as e:
                status = _status(e)
                listed = self._listed(key) if status == 403 else None
                if status == 404 or listed is False:
                    raise InputNotFound(f"{name}: no such object") from e
                if listed:
                    raise CredentialsError(
                        f"{name}: access denied (403): the job's role may not read it"
                    ) from e
                if status == 403:
                    raise CredentialsError(
                        f"{name}: access denied (403): the job's role may not read it, or it"
                        " does not exist (S3 answers 403 for a missing key to a role that may"
                        " not list its folder)"
                    ) from e
                raise

    def list(self, prefix: str) -> list[str]:
        keys = []
        with _errors(self.where(prefix)):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix
            )
            for page in pages:
                keys += [o["Key"][len(self.prefix) :] for o in page.get("Contents", [])]
        return sorted(keys)


class S3RangeFile(io.RawIOBase):
    """An S3 object as a read-only, seekable file, fetched by ranged GETs as it is read.

    A Twitter archive export with its media is often several GB; the job needs only
    ``data/*.js`` and one avatar. ``zipfile`` reads the central directory at the end, then
    seeks to each member it opens: through this file, only those bytes cross the network.
    Reads come in blocks of ``BLOCK`` bytes (one GET each), so the many small reads zipfile
    makes cost one request per block, not one each; ``fetched`` counts the bytes moved.
    """

    BLOCK = 1 << 20  # 1 MiB: a few requests per member; small next to a media file

    def __init__(self, uri: str) -> None:
        super().__init__()
        parsed = urlparse(uri)
        storage = open_storage(f"s3://{parsed.netloc}")
        assert isinstance(storage, S3Storage)
        self.uri, self._s3, self._key = uri, storage, parsed.path.lstrip("/")
        self.size = storage.head(self._key, uri)
        self._pos = 0
        self._block: tuple[int, bytes] = (-1, b"")
        self.fetched = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._pos >= self.size or not len(view):
            return 0
        start = self._pos - self._pos % self.BLOCK
        if self._block[0] != start:
            self._block = (start, self._get(start, min(start + self.BLOCK, self.size) - 1))
        data = self._block[1][self._pos - start :][: len(view)]
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def _get(self, first: int, last: int) -> bytes:
        with _errors(self.uri):
            response = self._s3.client.get_object(
                Bucket=self._s3.bucket, Key=self._key, Range=f"bytes={first}-{last}"
            )
            data = bytes(response["Body"].read())
        self.fetched += len(data)
        return data


def _status(error: Any) -> int:
    """A botocore ClientError's HTTP status."""
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


@contextmanager
def _errors(where: str) -> Iterator[None]:
    """Turn botocore's errors into the job's: transient, credentials or configuration."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import (
        BotoCoreError,
        ChecksumError,
        ClientError,
        ConnectionError,
        HTTPClientError,
        IncompleteReadError,
        NoCredentialsError,
    )

    try:
        yield
    except NoCredentialsError as e:
        raise CredentialsError(f"{where}: no AWS credentials") from e
    except ClientError as e:
        code = str(e.response.get("Error", {}).get("Code", ""))
        # the server's own word, shown only when it has the form of S3's codes (AccessDenied)
        code = code if re.fullmatch(r"[A-Za-z][A-Za-z0-9.]{0,63}", code) else "?"
        status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        if code == "NoSuchBucket":
            raise InputNotFound(f"{where}: no such bucket") from e
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise CredentialsError(f"{where}: access denied ({code})") from e
        if status >= 500 or code in ("SlowDown", "RequestTimeout", "Throttling"):
            raise TransientError(f"{where}: S3 error {code or status}") from e
        raise BadConfig(f"{where}: S3 error {code or status}") from e
    except S3UploadFailedError as e:  # wraps the ClientError in its message
        if "NoSuchBucket" in str(e):
            raise InputNotFound(f"{where}: no such bucket") from e
        if "AccessDenied" in str(e) or "InvalidAccessKeyId" in str(e):
            raise CredentialsError(f"{where}: access denied") from e
        raise TransientError(f"{where}: upload failed") from e
    except (ConnectionError, HTTPClientError, IncompleteReadError, ChecksumError) as e:
        raise TransientError(f"{where}: {e}") from e  # the network: refused, timeouts, cut off
    except BotoCoreError as e:  # the request itself (a parameter, the region): never retried
        raise BadConfig(f"{where}: not a request S3 can take ({type(e).__name__})") from e


def markers_first(keys: Iterable[str]) -> tuple[list[str], list[str]]:
    """``keys`` as two groups to delete in turn: the markers (``_COMPLETE``: a run's, a
    checkpoint's), then the rest. A deletion stopped halfway leaves no folder that claims to
    be whole."""
    keys = list(keys)
    return [k for k in keys if PurePosixPath(k).name == MARKER], [
        k for k in keys if PurePosixPath(k).name != MARKER
    ]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
