"""From the command line's --archive/--jsonl and online flags (--api, --bluesky, --mastodon) to
user specs, and from specs to sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from job.data.sources import ArchiveSource, FileSource, sources_for, user_specs
from job.errors import BadConfig, InputNotFound, InvalidHandle
from job.spec import UserSpec


def test_each_user_gets_the_source_named_for_them() -> None:
    specs = user_specs(["alice", "Bob", "carol"], ["@alice=a.zip"], ["bob=b.csv"], ["api"])
    assert [(s.handle, s.source, s.uri) for s in specs] == [
        ("alice", "archive", "a.zip"),
        ("Bob", "jsonl", "b.csv"),
        ("carol", "api", None),
    ]


def test_one_unnamed_file_serves_every_user_left() -> None:
    specs = user_specs(["a", "b"], [], ["all.jsonl"], [])
    assert [(s.source, s.uri) for s in specs] == [("jsonl", "all.jsonl")] * 2


@pytest.mark.parametrize(
    ("archives", "jsonls", "api", "message"),
    [
        (["x.zip"], [], [], "name each archive"),
        (["dave=x.zip"], [], [], "@dave is not among the users"),
        (["a=x.zip", "a=y.zip"], [], ["api"], "@a is given two sources"),
        ([], [], [], "no source for @a: give --archive, --jsonl or --api"),
        ([], [], ["bluesky", "mastodon"], "no source for @a: .* or --api"),  # a's network's
    ],
)
def test_what_cannot_be_assigned(archives, jsonls, api, message) -> None:
    with pytest.raises(BadConfig, match=message):
        user_specs(["a", "b"], archives, jsonls, api)


def test_each_network_covers_its_own_people_and_files_name_anyone() -> None:
    """--api, --bluesky and --mastodon each cover the users of their network left over; a
    file is named for anyone by any form of their handle."""
    users = ["ann", "alice.bsky.social", "@bob@social.example", "did:plc:ewvi7nxzyoun6zhxrhs64oiz"]
    specs = user_specs(
        users, [], ["https://bsky.app/profile/did:plc:ewvi7nxzyoun6zhxrhs64oiz=p.jsonl"],
        ["api", "bluesky", "mastodon"],
    )  # fmt: skip
    assert [(s.handle.platform, s.source, s.uri) for s in specs] == [
        ("twitter", "api", None),
        ("bluesky", "bluesky", None),
        ("mastodon", "mastodon", None),
        ("bluesky", "jsonl", "p.jsonl"),
    ]
    with pytest.raises(BadConfig, match=r"no source for @bob@social\.example: .* or --mastodon"):
        user_specs(["@bob@social.example"], [], [], ["api", "bluesky"])


@pytest.mark.parametrize(
    ("user", "source", "message"),
    [
        ({"handle": "ann", "source": "bluesky"}, None, "twitter handle: its source is api"),
        ({"handle": "alice.bsky.social", "source": "api"}, None, "its source is bluesky"),
        ({"handle": "@bob@social.example", "source": "bluesky"}, None, "source is mastodon"),
        ({"handle": "alice.bsky.social", "source": "bluesky", "uri": "x"}, None, "takes no uri"),
        ({"handle": "alice.bsky.social"}, "bluesky", None),  # its own network's by default
        ({"handle": "@bob@social.example"}, "mastodon", None),
        ({"handle": "ann"}, "api", None),
    ],
)
def test_a_manifests_user_reads_from_their_own_network(user, source, message) -> None:
    from job.errors import BadConfig
    from job.loading import validate

    if message is None:
        assert validate(UserSpec, user, "user").source == source
    else:
        with pytest.raises(BadConfig, match=message):
            validate(UserSpec, user, "user")


def test_handles_are_checked_first() -> None:
    with pytest.raises(InvalidHandle):
        user_specs(["../etc"], ["x.zip"], [], [])


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
