from __future__ import annotations

import json
from pathlib import Path

import pytest

from job.config import CleanConfig, JobConfig, PrepareConfig
from job.data.sources import ArchiveSource, FileSource
from job.errors import BadConfig, InvalidHandle, NotEnoughData
from job.loading import validate
from job.prepare import balance, prepare
from tests.helpers.archives import sentences, write_archive


def jsonl(path: Path, user: str, n: int) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(
                json.dumps(
                    {
                        "id": 10_000 - i,
                        "text": f"{user} wrote tweet {i} with words",
                        # newest first: dates fall as ids fall
                        "created_at": f"2022-01-01T{(999 - i) // 60 // 60:02d}:"
                        f"{(999 - i) // 60 % 60:02d}:{(999 - i) % 60:02d}Z",
                    }
                )
                + "\n"
            )
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.integration
def test_real_archive_stats_hold(real_archive: Path, tmp_path: Path) -> None:
    result = prepare({"andreruffert": ArchiveSource(real_archive)}, tmp_path, JobConfig())
    data = tmp_path / "andreruffert" / "data"
    assert result.data_dir == data
    stats = json.loads((data / "stats.json").read_text())
    u = stats["users"]["andreruffert"]
    assert u["downloaded"] == 1986 and u["retweets"] == 643
    assert u["downloaded"] == (
        u["retweets"] + u["short"] + u["dropped_replies"] + u["duplicates"] + u["kept"]
    )
    assert u["kept"] == u["used"] > 1000
    assert sum(u["languages"].values()) == u["kept"] and {"en", "de"} <= set(u["languages"])
    assert len(read_jsonl(data / "raw.jsonl")) == u["downloaded"]
    clean = read_jsonl(data / "clean.jsonl")
    assert len(clean) == u["used"] == stats["total"]["used"]
    assert set(clean[0]) == {"user", "id", "date", "text"}
    assert sum(len(r["text"]) for r in clean) == u["characters"]
    assert not any("https://" in r["text"] or "&amp;" in r["text"] for r in clean)
    assert u["display_name"] == "André Ruffert"
    assert (data / u["avatar"]).read_bytes() == (
        real_archive / "data" / "profile_media" / "ens-GMMR.jpg"
    ).read_bytes()


def test_balancing_caps_the_prolific_user(tmp_path: Path) -> None:
    sources = {
        "big": FileSource(jsonl(tmp_path / "big.jsonl", "big", 300)),
        "small": FileSource(jsonl(tmp_path / "small.jsonl", "small", 100)),
    }
    config = JobConfig(prepare=PrepareConfig(min_chars=100, warn_chars=0))
    result = prepare(sources, tmp_path / "out", config)
    assert result.bot == "big-small"
    users = result.stats["users"]
    assert (users["big"]["kept"], users["big"]["used"]) == (300, 100)
    assert (users["small"]["kept"], users["small"]["used"]) == (100, 100)
    clean = read_jsonl(tmp_path / "out" / "big-small" / "data" / "clean.jsonl")
    big = [r for r in clean if r["user"] == "big"]
    assert len(big) == 100 and big[0]["id"] == "10000"  # the newest are kept

    doubled = prepare(
        sources,
        tmp_path / "out",
        JobConfig(prepare=PrepareConfig(balance_ratio=2.0, min_chars=100)),
    )
    assert doubled.stats["users"]["big"]["used"] == 200
    off = prepare(
        sources, tmp_path / "out", JobConfig(prepare=PrepareConfig(balance_ratio=0, min_chars=100))
    )
    assert off.stats["users"]["big"]["used"] == 300


def test_balance_leaves_one_user_alone() -> None:
    assert balance({"a": []}, 1.0) == {"a": []}


def test_bad_balance_ratio() -> None:
    with pytest.raises(BadConfig):
        validate(PrepareConfig, {"balance_ratio": 0.5}, "prepare")


def test_not_enough_text_names_the_user_and_writes_nothing(tmp_path: Path) -> None:
    sources = {
        "big": FileSource(jsonl(tmp_path / "big.jsonl", "big", 300)),
        "tiny": FileSource(jsonl(tmp_path / "tiny.jsonl", "tiny", 5)),
    }
    with pytest.raises(NotEnoughData, match="@tiny has 5 usable tweets"):
        prepare(sources, tmp_path / "out", JobConfig())
    assert not (tmp_path / "out" / "big-tiny" / "data").exists()


def test_little_text_is_a_warning(tmp_path: Path) -> None:
    src = {"u": FileSource(jsonl(tmp_path / "u.jsonl", "u", 100))}
    result = prepare(src, tmp_path / "out", JobConfig(prepare=PrepareConfig(min_chars=100)))
    assert result.stats["warnings"] and "repeat" in result.stats["warnings"][0]
    quiet = prepare(
        src, tmp_path / "out", JobConfig(prepare=PrepareConfig(min_chars=100, warn_chars=100))
    )
    assert quiet.stats["warnings"] == []


def test_failed_rerun_keeps_earlier_data_and_success_replaces_it(tmp_path: Path) -> None:
    path = write_archive(tmp_path / "a", sentences(200))
    src = {"sample_user": ArchiveSource(path)}
    out = tmp_path / "out"
    prepare(src, out, JobConfig())
    data = out / "sample_user" / "data"
    before = (data / "clean.jsonl").read_text()

    (path / "data" / "tweets.js").write_text("window.YTD.tweets.part0 = [ broken")
    with pytest.raises(Exception, match="broken JSON"):
        prepare(src, out, JobConfig())
    assert (data / "clean.jsonl").read_text() == before

    write_archive(tmp_path / "a", sentences(150))
    prepare(src, out, JobConfig(clean=CleanConfig(min_words=1)))
    assert len((data / "clean.jsonl").read_text().splitlines()) == 150
    assert sorted(p.name for p in (out / "sample_user").iterdir()) == ["data"]  # no leftovers


def test_handles_are_checked_before_anything_is_read(tmp_path: Path) -> None:
    with pytest.raises(InvalidHandle):
        prepare({"../../etc": FileSource(tmp_path / "x.jsonl")}, tmp_path, JobConfig())
    assert list(tmp_path.iterdir()) == []


def test_a_result_left_aside_by_a_killed_run_is_put_back_first(tmp_path: Path) -> None:
    """A run killed between replace_dir's two renames leaves OUT/.<bot>.old and no OUT/<bot>:
    whichever command next writes the bot (prepare alone, here) puts it back before writing."""
    out = tmp_path / "out"
    aside = out / ".sample_user.old"
    (aside / "model").mkdir(parents=True)
    (aside / "model" / "model.safetensors").write_bytes(b"the earlier model")
    src = {"sample_user": ArchiveSource(write_archive(tmp_path / "a", sentences(200)))}
    prepare(src, out, JobConfig())
    bot = out / "sample_user"
    assert (bot / "model" / "model.safetensors").read_bytes() == b"the earlier model"
    assert (bot / "data" / "clean.jsonl").is_file() and not aside.exists()


def test_an_output_folder_the_user_cannot_write_is_named(tmp_path, monkeypatch) -> None:
    # As root here, nothing is unwritable: the check's view of the folder is stood in for.
    import os

    from job.errors import NotWritable
    from job.workspace import check_out

    mounted = tmp_path / "out"
    mounted.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != mounted and real(p, mode))
    with pytest.raises(NotWritable, match=r"out/bots: .*/out is not writable by uid"):
        check_out(mounted / "bots")
    check_out(tmp_path / "elsewhere")  # its nearest existing parent is writable
