from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from job.data.sources.files import FileSource
from job.errors import CorruptInput, InputNotFound


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_jsonl_minimal_records(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "t.jsonl",
        [{"text": "hello there world"}, {"text": "RT @a: x"}, {"text": "@b thanks a lot"}],
    )
    got = FileSource(path).fetch("me").tweets
    assert [t.text for t in got] == ["hello there world", "RT @a: x", "@b thanks a lot"]
    assert [t.is_retweet for t in got] == [False, True, False]
    assert [t.is_reply for t in got] == [False, False, True]
    assert len({t.id for t in got}) == 3 and all(t.user == "me" for t in got)


def test_jsonl_optional_fields(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "t.jsonl",
        [
            {
                "text": "@x not a reply here",
                "id": 5,
                "name": "Me Myself",
                "created_at": "2021-05-01T12:00:00+02:00",
                "lang": "de",
                "is_reply": False,
                "is_retweet": "false",
            }
        ],
    )
    got = FileSource(path).fetch("me")
    assert got.profile.display_name == "Me Myself"
    (t,) = got.tweets
    assert (t.id, t.created_at, t.lang, t.is_reply, t.is_retweet) == (
        "5",
        "2021-05-01T10:00:00Z",
        "de",
        False,
        False,
    )


def test_one_file_many_users_is_filtered(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "t.jsonl",
        [
            {"user": "alice", "text": "from alice one"},
            {"user": "@Bob", "text": "from bob one"},
            {"user": "ALICE", "text": "from alice two"},
        ],
    )
    assert [t.text for t in FileSource(path).fetch("alice").tweets] == [
        "from alice one",
        "from alice two",
    ]
    assert [t.text for t in FileSource(path).fetch("bob").tweets] == ["from bob one"]


def test_csv(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["id", "text", "date", "is_retweet"])
        w.writeheader()
        w.writerow(
            {
                "id": "1",
                "text": "a tweet, with a comma\nand a newline",
                "date": "2020-01-01",
                "is_retweet": "0",
            }
        )
        w.writerow({"id": "2", "text": "another one", "date": "", "is_retweet": "1"})
    got = FileSource(path).fetch("me").tweets
    assert got[0].text == "a tweet, with a comma\nand a newline"
    assert got[0].created_at == "2020-01-01T00:00:00Z"
    assert [t.is_retweet for t in got] == [False, True]


def test_csv_without_text_column(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("id,body\n1,hello\n")
    with pytest.raises(CorruptInput, match="no 'text' column"):
        FileSource(tmp_path / "t.csv").fetch("me")


def test_bad_jsonl_line_is_named(tmp_path: Path) -> None:
    (tmp_path / "t.jsonl").write_text('{"text": "ok fine good"}\n{"text": broken\n')
    with pytest.raises(CorruptInput, match=r"t\.jsonl:2"):
        FileSource(tmp_path / "t.jsonl").fetch("me")


def test_record_without_text(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "t.jsonl", [{"id": 1}])
    with pytest.raises(CorruptInput, match="no 'text'"):
        FileSource(tmp_path / "t.jsonl").fetch("me")


def test_unknown_format_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "t.xml").write_text("<x/>")
    with pytest.raises(CorruptInput, match="unknown format"):
        FileSource(tmp_path / "t.xml").fetch("me")
    with pytest.raises(InputNotFound):
        FileSource(tmp_path / "none.jsonl").fetch("me")
