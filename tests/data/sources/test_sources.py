"""From the command line's --archive/--jsonl/--api to user specs, and from specs to sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from job.data.sources import ArchiveSource, FileSource, sources_for, user_specs
from job.errors import BadConfig, InputNotFound, InvalidHandle
from job.spec import UserSpec


def test_each_user_gets_the_source_named_for_them() -> None:
    specs = user_specs(["alice", "Bob", "carol"], ["@alice=a.zip"], ["bob=b.csv"], api=True)
    assert [(s.handle, s.source, s.uri) for s in specs] == [
        ("alice", "archive", "a.zip"),
        ("Bob", "jsonl", "b.csv"),
        ("carol", "api", None),
    ]


def test_one_unnamed_file_serves_every_user_left() -> None:
    specs = user_specs(["a", "b"], [], ["all.jsonl"], api=False)
    assert [(s.source, s.uri) for s in specs] == [("jsonl", "all.jsonl")] * 2


@pytest.mark.parametrize(
    ("archives", "jsonls", "api", "message"),
    [
        (["x.zip"], [], False, "name each archive"),
        (["dave=x.zip"], [], False, "@dave is not among the users"),
        (["a=x.zip", "a=y.zip"], [], True, "@a is given two sources"),
        ([], [], False, "no source for @a"),
    ],
)
def test_what_cannot_be_assigned(archives, jsonls, api, message) -> None:
    with pytest.raises(BadConfig, match=message):
        user_specs(["a", "b"], archives, jsonls, api)


def test_handles_are_checked_first() -> None:
    with pytest.raises(InvalidHandle):
        user_specs(["../etc"], ["x.zip"], [], api=False)


def test_sources_check_local_files_only_when_they_will_be_read(tmp_path: Path) -> None:
    (tmp_path / "a.zip").write_bytes(b"")
    specs = [
        UserSpec(handle="a", source="archive", uri=str(tmp_path / "a.zip")),
        UserSpec(handle="b", source="jsonl", uri=str(tmp_path / "gone.jsonl")),
    ]
    with pytest.raises(InputNotFound, match="tweets file not found"):
        sources_for(specs)
    lazy = sources_for(specs, fetch=False)  # ranks other than 0 never read them
    assert isinstance(lazy["a"], ArchiveSource) and isinstance(lazy["b"], FileSource)


def test_s3_inputs_need_a_folder_to_go_to() -> None:
    spec = UserSpec(handle="a", source="jsonl", uri="s3://bucket/inputs/a.jsonl")
    with pytest.raises(BadConfig, match="S3 inputs are for manifests"):
        sources_for([spec])
