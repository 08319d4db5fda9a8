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


# --- Deleting many keys -----------------------------------------------------------------------

RUN_KEYS = [
    "bot/r1/_COMPLETE",
    "bot/r1/model/model.safetensors",
    "bot/r1/model/config.json",
    "bot/checkpoints/checkpoint-10/_COMPLETE",
    "bot/checkpoints/checkpoint-10/optimizer.pt",
    "bot/checkpoints/checkpoint-10/trainer_state.json",
    "bot/r1/job.json",
]


@pytest.mark.parametrize("where", ["local", "s3"])
def test_delete_takes_any_number_of_keys_and_leaves_the_rest(
    where: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if where == "s3":
        request.getfixturevalue("s3")
    storage = open_storage("s3://results/p" if where == "s3" else str(tmp_path / "out"))
    for key in [*RUN_KEYS, "other/latest.json"]:
        storage.put_bytes(key, b"x")
    storage.delete()  # nothing: nothing asked, nothing gone
    storage.delete("bot/r1/job.json", "bot/never-was")  # a missing key is no error
    assert "bot/r1/job.json" not in storage.list("bot/")
    storage.delete(*RUN_KEYS)  # again the one gone before: still no error
    assert storage.list("") == ["other/latest.json"]
    if where == "local":  # as on S3, no folder stays that holds nothing
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["other"]


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_key_no_xml_can_carry_is_deleted_too_and_stops_no_other(
    where: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Anyone who can write the output can plant a key: one with a control character failed
    S3's DeleteObjects (an XML body) for every key in it, and so the takedown; a CR would be
    read as a LF there, and another key deleted. Each goes on its own."""
    if where == "s3":
        request.getfixturevalue("s3")
    storage = open_storage("s3://results/p" if where == "s3" else str(tmp_path / "out"))
    planted = ["bot/a\x01b", "bot/cr\r", "bot/mid\rdle", "bot/\x7f&<x>", "bot/tab\t\u2028"]
    if where == "local":  # moto's server cannot store a key that ends in a LF (S3 can)
        planted.append("bot/lf\n")
    for key in [*RUN_KEYS, *planted]:
        storage.put_bytes(key, b"x")
    assert sorted(storage.list("bot/")) == sorted([*RUN_KEYS, *planted])
    storage.delete(*storage.list("bot/"))
    assert storage.list("") == []


def test_many_keys_go_a_batch_a_request_with_the_markers_first(
    s3, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A takedown of a bot of a few runs made a request a file (~100); now a request a
    thousand, and a folder stopped halfway never keeps its marker without its files."""
    import re

    from job import storage as storage_module
    from tests.helpers.s3 import FaultProxy

    monkeypatch.setattr(storage_module, "DELETE_BATCH", 3)
    storage = open_storage("s3://results/p")
    for key in RUN_KEYS:
        storage.put_bytes(key, b"x")
    asked: list[tuple[str, list[bytes]]] = []
    with FaultProxy(s3.url) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        proxy.hook = lambda method, path: asked.append(
            (method, re.findall(rb"<Key>p/(.*?)</Key>", proxy.body))
        )
        open_storage("s3://results/p").delete(*RUN_KEYS)
    markers = [k.encode() for k in RUN_KEYS if k.endswith("/_COMPLETE")]
    assert [method for method, _ in asked] == ["POST"] * 3  # 2 markers; 5 files, 3 and 2
    assert sorted(asked[0][1]) == sorted(markers)
    assert sorted(k for _, keys in asked[1:] for k in keys) == sorted(
        k.encode() for k in RUN_KEYS if not k.endswith("/_COMPLETE")
    )
    assert storage.list("") == []


@pytest.mark.parametrize(
    ("code", "error", "said"),
    [
        ("AccessDenied", "CredentialsError", "access denied (AccessDenied)"),
        ("InternalError", "TransientError", "S3 error InternalError"),
        ("SlowDown", "TransientError", "S3 error SlowDown"),
        ("AccessDenied token=hf_secret", "BadConfig", "S3 error ?"),
    ],
)
def test_a_key_s3_refuses_inside_a_200_fails_as_its_own_delete_would(
    s3, monkeypatch: pytest.MonkeyPatch, code: str, error: str, said: str
) -> None:
    """DeleteObjects answers 200 and lists the keys it did not delete: read as errors, never
    as done. The answer's own keys and words (a server's) stay out of the line."""
    from job import errors
    from tests.helpers.s3 import FaultProxy

    storage = open_storage("s3://results/p")
    for key in RUN_KEYS:
        storage.put_bytes(key, b"x")
    refused = (
        '<?xml version="1.0" encoding="UTF-8"?><DeleteResult><Error>'
        f"<Key>p/../../etc/passwd</Key><Code>{code}</Code><Message>ask hf_secret</Message>"
        "</Error></DeleteResult>"
    )
    with FaultProxy(s3.url) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        proxy.hook = lambda method, path: (200, refused.encode()) if method == "POST" else None
        with pytest.raises(getattr(errors, error)) as raised:
            open_storage("s3://results/p").delete(*RUN_KEYS)
    line = str(raised.value)
    assert line == f"s3://results/p/bot/ (2 objects): {said}"  # the markers' request, first
    assert "passwd" not in line and "secret" not in line
