from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from job.cloud.storage import LocalStorage, download, get_json, open_storage, put_json
from job.errors import BadConfig, InputNotFound


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
