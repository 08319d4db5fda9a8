from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from job.errors import BadConfig, CorruptInput, InputNotFound
from job.storage import LocalStorage, download, open_storage, put_json
from tests.helpers import get_json


def test_s3_roundtrip(s3, tmp_path: Path) -> None:
    storage = open_storage("s3://results/some/prefix")
    (tmp_path / "f.txt").write_text("hello")
    storage.put_file("bot/run/f.txt", tmp_path / "f.txt")
    put_json(storage, "bot/latest.json", {"run_id": "r1"})
    assert storage.get_bytes("bot/run/f.txt") == b"hello"
    assert get_json(storage, "bot/latest.json") == {"run_id": "r1"}
    assert storage.get_bytes("bot/missing") is None
    assert storage.list("bot/") == ["bot/latest.json", "bot/run/f.txt"]
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="results")["Contents"]]
    assert "some/prefix/bot/run/f.txt" in keys
    got = download(storage, "bot/run/", tmp_path / "down")
    assert [p.read_text() for p in got] == ["hello"]


def test_large_files_go_multipart(s3, tmp_path: Path) -> None:
    storage = open_storage("s3://results/p", multipart_threshold=5 * 1024 * 1024)
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * (11 * 1024 * 1024))
    storage.put_file("big.bin", big)
    head = boto3.client("s3").head_object(Bucket="results", Key="p/big.bin")
    assert head["ETag"].strip('"').endswith("-3")  # three parts of 5, 5 and 1 MiB
    assert storage.get_bytes("big.bin") == big.read_bytes()


def test_missing_bucket(s3) -> None:
    with pytest.raises(InputNotFound, match="no such bucket"):
        open_storage("s3://nope/x").put_bytes("k", b"v")


def test_local_storage(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path / "out"))
    assert isinstance(storage, LocalStorage)
    storage.put_bytes("a/b.json", b"{}")
    assert storage.list("a/") == ["a/b.json"] and storage.get_bytes("a/c") is None


def test_unknown_scheme() -> None:
    with pytest.raises(BadConfig, match="only s3://"):
        open_storage("gs://bucket/x")


def test_download_refuses_keys_that_leave_the_folder(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "out")
    storage.put_bytes("bot/run/model/config.json", b"{}")
    (tmp_path / "out" / "bot" / "run" / "x").mkdir(parents=True)
    # a key as S3 could hold it: "bot/run/model/../../../../tmp/x"
    storage.list = lambda prefix: ["bot/run/model/config.json", "bot/run/model/../../../../evil"]  # type: ignore[method-assign]
    with pytest.raises(CorruptInput, match="a key that leaves its folder"):
        download(storage, "bot/run/model/", tmp_path / "dest")
    assert not (tmp_path / "evil").exists()


def test_download_takes_only_the_marked_files_and_checks_each(tmp_path: Path) -> None:
    import hashlib

    storage = LocalStorage(tmp_path / "out")
    storage.put_bytes("m/config.json", b"{}")
    storage.put_bytes("m/extra.bin", b"slipped in later")
    listed = {"config.json": hashlib.sha256(b"{}").hexdigest()}
    got = download(storage, "m/", tmp_path / "a", expected=listed)
    assert [p.name for p in got] == ["config.json"]
    storage.put_bytes("m/config.json", b'{"changed": true}')  # someone with write access
    with pytest.raises(CorruptInput, match="not the file its run's marker lists"):
        download(storage, "m/", tmp_path / "b", expected=listed)
    storage.delete("m/config.json")
    with pytest.raises(CorruptInput, match="listed in its run's marker, gone"):
        download(storage, "m/", tmp_path / "c", expected=listed)


@pytest.mark.parametrize(
    "uri", ["s3://results/../../etc", "s3://results/a/./b", "s3://Bad_Bucket/x", "s3:///x"]
)
def test_s3_uris_are_checked(uri: str) -> None:
    with pytest.raises(BadConfig):
        open_storage(uri)


def test_an_s3_that_stops_answering_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """A loopback server that accepts and never answers: bounded, then transient."""
    import socket
    import time

    from job import storage as storage_module
    from job.errors import TransientError

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.getsockname()[1]}")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
        monkeypatch.setattr(storage_module, "READ_TIMEOUT", 0.2)
        start = time.monotonic()
        with pytest.raises(TransientError):
            open_storage("s3://results/x").get_bytes("k")
    assert time.monotonic() - start < 5


def test_a_request_s3_cannot_take_is_configuration_not_a_retry(s3) -> None:
    """`run --manifest s3://results` (no key) was exit 75, "Invalid length for parameter Key":
    a typo retried forever, as every botocore parameter error was taken for the network."""
    from job import errors
    from tests.helpers.cli import invoke, one_line

    for uri in ("s3://results", "s3://results/", "s3://results/jobs/"):
        line = one_line(invoke("run", "--manifest", uri), errors.BAD_CONFIG)
        assert "names a folder, not a manifest" in line
    # the class, below read_uri's own check: any request botocore refuses to make
    from job.storage import _errors, s3_client

    with pytest.raises(errors.BadConfig, match="not a request S3 can take"), _errors("s3://x"):
        s3_client().get_object(Bucket="results", Key="")
