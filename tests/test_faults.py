"""Bad input and faults, through the command as a user meets them: each case ends in one line
on stderr and its documented exit code, never a traceback, and no secret in any output.

Inputs are built here: damaged zips, archives with fields of the wrong type or links out of
them, oversized records, UTF-16 files, stalled and hostile loopback servers."""

from __future__ import annotations

import errno
import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from job import errors
from tests.helpers.archives import sentences, write_archive
from tests.helpers.cli import Result
from tests.helpers.cli import invoke as cli
from tests.helpers.twitter_api import FakeUser, Fault, TwitterAPI, v2_tweet

TOKEN = "tw-secret-token-0451"


def one_line(result: Result, code: int) -> str:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr and TOKEN not in result.stderr + result.stdout
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def archive(tmp: Path, **changes: object) -> Path:
    """A good archive folder, then ``changes`` to its tweets.js entries or other files."""
    return write_archive(tmp / "a", sentences(200), **changes)  # type: ignore[arg-type]


def corrupt_deflate(tmp: Path) -> Path:
    """A zip whose listing is whole but whose tweets.js does not inflate (zlib.error)."""
    tmp.mkdir()
    path = write_archive(tmp / "a", sentences(200), as_zip=True, username="x")
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("data/tweets.js")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for i in range(start + 20, start + 60):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))
    return path


def retype(path: Path, name: str, change: Callable[[str], str]) -> Path:
    target = path / name
    target.write_text(change(target.read_text()))
    return path


def case_files(tmp: Path) -> dict[str, tuple[list[str], int, str]]:
    """name -> (prepare's arguments, exit code, a part of the line)."""
    (tmp / "utf16.jsonl").write_text('{"text": "hello there friend"}\n', encoding="utf-16")
    (tmp / "long.jsonl").write_text(json.dumps({"text": "x" * 200_000}) + "\n")
    (tmp / "big.csv").write_text('text\n"' + "y" * 140_000 + '"\n')
    (tmp / "shared.jsonl").write_text(
        "".join(json.dumps({"user": u, "text": "a tweet of some words"}) + "\n" for u in "ab")
    )
    (tmp / "afile").write_text("not a folder")
    unreadable = write_archive(tmp / "a", sentences(200), username="x")
    retype(unreadable, "data/tweets.js", lambda t: t.replace('"full_text"', '"fulltext"'))
    return {
        "zip with a damaged deflate stream": (
            ["--archive", str(corrupt_deflate(tmp / "z"))],
            errors.CORRUPT_INPUT,
            "cannot read data/tweets.js",
        ),
        "UTF-16 file": (
            ["--jsonl", str(tmp / "utf16.jsonl")],
            errors.CORRUPT_INPUT,
            "utf16.jsonl:1: not UTF-8 text (UTF-16? save it as UTF-8)",
        ),
        "a 200,000-character JSONL record": (
            ["--jsonl", str(tmp / "long.jsonl")],
            errors.CORRUPT_INPUT,
            "long.jsonl:1: a record of 200,012 characters",
        ),
        "a CSV field over 128 KiB": (
            ["--jsonl", str(tmp / "big.csv")],
            errors.CORRUPT_INPUT,
            "unreadable CSV",
        ),
        "a handle the shared file does not hold": (
            ["--jsonl", str(tmp / "shared.jsonl")],
            errors.NOT_ENOUGH_DATA,
            "shared.jsonl has no tweets of @x; it holds @a, @b",
        ),
        "every entry unreadable": (
            ["--archive", str(unreadable)],
            errors.CORRUPT_INPUT,
            "none of its 200 tweet entries has an id and a text",
        ),
        "--out is a file": (
            ["--jsonl", str(tmp / "shared.jsonl"), "--out", str(tmp / "afile")],
            errors.BAD_CONFIG,
            "a file is there, not a folder",
        ),
    }


CASES = [
    "zip with a damaged deflate stream",
    "UTF-16 file",
    "a 200,000-character JSONL record",
    "a CSV field over 128 KiB",
    "a handle the shared file does not hold",
    "every entry unreadable",
    "--out is a file",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_and_its_code(case: str, tmp_path: Path) -> None:
    args, code, part = case_files(tmp_path)[case]
    out = ["--out", str(tmp_path / "out")] if "--out" not in args else []
    line = one_line(cli("prepare", "x", *args, *out, "--min-chars", "10"), code)
    assert part in line


@pytest.mark.parametrize(
    "change",
    [
        lambda t: t.replace('"entities": {', '"entities": "oops", "x": {'),
        lambda t: t.replace('"id_str": "1200"', '"id_str": "²"'),
        lambda t: t.replace(
            '"created_at": "Mon Jan 02 10:00:00 +0000 2023"',
            '"created_at": "0001-01-01T00:00:00+01:00"',
            1,
        ),
    ],
    ids=["entities-not-an-object", "id-superscript-two", "date-before-year-one"],
)
def test_fields_of_the_wrong_type_are_read_around(tmp_path: Path, change) -> None:
    path = retype(archive(tmp_path), "data/tweets.js", change)
    result = cli("prepare", "sample_user", "--archive", str(path), "--out", str(tmp_path / "o"))
    assert result.returncode == 0, result.stderr


def test_account_and_manifest_fields_of_the_wrong_type(tmp_path: Path) -> None:
    path = archive(tmp_path)
    retype(path, "data/account.js", lambda t: t.replace('"sample_user"', "12345"))
    retype(path, "data/manifest.js", lambda t: t.replace('"tweets": {', '"tweets": "x", "y": {'))
    result = cli("prepare", "sample_user", "--archive", str(path), "--out", str(tmp_path / "o"))
    assert result.returncode == 0, result.stderr


def test_a_link_out_of_the_archive_is_not_followed(tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG private")
    path = archive(tmp_path)
    avatar = path / "data" / "profile_media" / "avatar-1.png"
    avatar.unlink()
    avatar.symlink_to(secret)
    result = cli("prepare", "sample_user", "--archive", str(path), "--out", str(tmp_path / "o"))
    assert result.returncode == 0, result.stderr
    data = tmp_path / "o" / "sample_user" / "data"
    assert not (data / "avatars").exists()
    assert json.loads((data / "stats.json").read_text())["users"]["sample_user"]["avatar"] is None


def test_yaml_nested_too_deep(tmp_path: Path) -> None:
    # 1,500 levels: deeper than libyaml's bound (1,000) and the pure parser's
    # (config.YAML_FRAMES); 1,000,000 ends the same, in 0.02 s
    (tmp_path / "deep.yaml").write_text("a: " + "[" * 1500 + "]" * 1500 + "\n")
    result = cli("run", "x", "--api", "--config", str(tmp_path / "deep.yaml"))
    assert "nest" in one_line(result, errors.BAD_CONFIG)


@pytest.mark.parametrize(
    ("fault", "code", "part"),
    [
        (Fault(403, echo_auth=True), errors.CREDENTIALS, "refused access (403)"),
        (Fault(400), errors.BAD_CONFIG, "invalid (400)"),
    ],
    ids=["403-echoing-the-token", "400"],
)
def test_hostile_api_answers(tmp_path: Path, fault: Fault, code: int, part: str) -> None:
    """(Answers that are retried, then transient, are in tests/data/sources/test_api.py.)"""
    with TwitterAPI(token=TOKEN) as api:
        api.add(FakeUser(id="1", username="x", tweets=[v2_tweet(1, "a b c")]))
        api.faults = [fault]
        env = {"TWITTER_BEARER_TOKEN": TOKEN, "TWITTER_API_URL": api.url}
        result = cli("prepare", "x", "--api", "--out", str(tmp_path), env=env)
    assert part in one_line(result, code)


def test_an_unexpected_error_names_its_place_not_its_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exit 1 (a bug: never retried), one line, and not the exception's own words: a foreign
    exception may quote a server's body, and with it a token."""
    import job.prepare

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"server said: Authorization: Bearer {TOKEN}")

    monkeypatch.setattr(job.prepare, "clean", boom)
    (tmp_path / "t.jsonl").write_text('{"text": "a tweet of words"}\n')
    result = cli("prepare", "x", "--jsonl", str(tmp_path / "t.jsonl"), "--out", str(tmp_path))
    line = one_line(result, errors.INTERNAL)
    assert line.startswith("error: internal error: RuntimeError in prepare.py:")


def test_a_full_disk_is_transient(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC, injected where the data folder is written: the platform retries elsewhere."""
    import job.prepare

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "raw.jsonl")

    monkeypatch.setattr(job.prepare, "write_json", full)
    (tmp_path / "t.jsonl").write_text(
        "".join(json.dumps({"text": f"tweet {i} of some words"}) + "\n" for i in range(50))
    )
    result = cli(
        "prepare", "x", "--jsonl", str(tmp_path / "t.jsonl"), "--out", str(tmp_path / "o"),
        "--min-chars", "10",
    )  # fmt: skip
    assert "no space left on the device" in one_line(result, errors.TRANSIENT)
    assert not (tmp_path / "o" / "x" / "data").exists()  # nothing half-written


def test_hub_offline_at_push_time_is_a_configuration_error() -> None:
    from huggingface_hub.errors import OfflineModeIsEnabled

    error = errors.classify(OfflineModeIsEnabled("offline"))
    assert error.exit_code == errors.BAD_CONFIG and "HF_HUB_OFFLINE" in str(error)


def bomb(path: Path, inflated: int) -> Path:
    """An archive whose tweets.js is ``inflated`` bytes of spaces, deflated to ~1/1000."""
    good = write_archive(path.with_name("good"), sentences(5), username="x", as_zip=True)
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for info in src.infolist():
            if info.filename != "data/tweets.js":
                z.writestr(info, src.read(info))
        with z.open("data/tweets.js", "w", force_zip64=True) as member:
            member.write(b"window.YTD.tweets.part0 = ")
            chunk = b" " * (1 << 20)
            for _ in range(inflated >> 20):
                member.write(chunk)
    return path


@pytest.mark.integration  # deflates 300 MB to write the bomb: seconds, not the unit tier
def test_a_zip_bomb_is_refused_while_it_inflates(tmp_path: Path) -> None:
    path = bomb(tmp_path / "bomb.zip", 300 << 20)
    assert path.stat().st_size < 2 << 20
    result = cli("prepare", "x", "--archive", str(path), "--out", str(tmp_path / "o"))
    assert "a zip bomb?" in one_line(result, errors.CORRUPT_INPUT)


def test_an_avatar_that_is_not_a_picture_is_left_out(tmp_path: Path) -> None:
    path = archive(tmp_path)
    (path / "data" / "profile_media" / "avatar-1.png").write_bytes(b"MZ not a picture" * 100)
    result = cli("prepare", "sample_user", "--archive", str(path), "--out", str(tmp_path / "o"))
    assert result.returncode == 0, result.stderr
    assert "not a usable picture" in result.stderr
    assert not (tmp_path / "o" / "sample_user" / "data" / "avatars").exists()


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 256 KiB tmpfs: a real full disk, where the machine lets the tests mount one (root, as
    on the dev machines and CI); test_a_full_disk_is_transient injects ENOSPC everywhere."""
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def test_a_real_full_disk_is_transient_and_leaves_nothing_half_written(
    small_disk: Path, real_archive: Path
) -> None:
    result = cli(
        "prepare", "andreruffert", "--archive", str(real_archive), "--out", str(small_disk)
    )
    assert "no space left on the device" in one_line(result, errors.TRANSIENT)
    assert not (small_disk / "andreruffert").exists()
    assert [p.name for p in small_disk.iterdir()] == [".andreruffert"]  # the lock's folder
    assert list((small_disk / ".andreruffert").iterdir()) == []  # and no lock left


@pytest.mark.integration  # imports torch
def test_safetensors_on_a_full_disk_is_transient(small_disk: Path) -> None:
    """safetensors raises its own error for ENOSPC, with no OSError under it: it was exit 1."""
    import torch
    from safetensors.torch import save_file

    with pytest.raises(Exception) as raised:
        save_file({"w": torch.zeros(1_000_000)}, str(small_disk / "model.safetensors"))
    assert not isinstance(raised.value, OSError)  # the case: a library's own type
    error = errors.classify(raised.value)
    assert error.exit_code == errors.TRANSIENT and "no space left" in str(error)
