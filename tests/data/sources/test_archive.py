from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path

import pytest

from job.data.sources.archive import ArchiveSource, parse_js
from job.errors import CorruptInput, InputNotFound, InvalidHandle
from tests.helpers.archives import AVATAR_JPEG, AVATAR_PNG, sentences, tweet, write_archive


def fetch(path: Path, handle: str = "sample_user"):
    return ArchiveSource(path).fetch(handle)


@pytest.mark.parametrize("file_name", ["tweets", "tweet"])
@pytest.mark.parametrize("wrapped", [True, False])
@pytest.mark.parametrize("manifest", ["thar", "ytd", None])
def test_reads_every_layout(tmp_path: Path, file_name, wrapped, manifest) -> None:
    tweets = sentences(5)
    path = write_archive(
        tmp_path / "a", tweets, file_name=file_name, wrapped=wrapped, manifest=manifest
    )
    got = fetch(path)
    assert [t.id for t in got.tweets] == [t["id_str"] for t in tweets]
    assert got.tweets[0].text == tweets[0]["full_text"]
    assert got.profile.display_name == "Sample User"


@pytest.mark.parametrize("manifest", ["thar", None])
def test_split_parts_are_all_read_in_order(tmp_path: Path, manifest) -> None:
    tweets = sentences(10)
    path = write_archive(tmp_path / "a", tweets, parts=3, manifest=manifest)
    assert {n.name for n in (path / "data").glob("tweets*.js")} == {
        "tweets.js",
        "tweets-part1.js",
        "tweets-part2.js",
    }
    got = fetch(path)
    assert [t.id for t in got.tweets] == [t["id_str"] for t in tweets]


@pytest.mark.parametrize("prefix", ["", "twitter-2023-01-01-abc/"])
def test_zip_with_or_without_top_folder(tmp_path: Path, prefix: str) -> None:
    tweets = sentences(4)
    path = write_archive(tmp_path / "a", tweets, as_zip=True, zip_prefix=prefix)
    got = fetch(path)
    assert len(got.tweets) == 4
    assert got.profile.avatar is not None and got.profile.avatar.image == (AVATAR_PNG)


def test_data_folder_itself_is_accepted(tmp_path: Path) -> None:
    path = write_archive(tmp_path / "a", sentences(3))
    assert len(fetch(path / "data").tweets) == 3


def test_fields_are_parsed(tmp_path: Path) -> None:
    tweets = [
        tweet(3, "RT @someone: their words here", created_at="Thu Nov 03 08:50:26 +0000 2022"),
        tweet(
            2,
            "@friend yes &amp; no https://t.co/abc",
            reply_to="1",
            urls=["https://t.co/abc"],
            lang="de",
        ),
    ]
    got = fetch(write_archive(tmp_path / "a", tweets)).tweets
    assert got[0].is_retweet and not got[0].is_reply
    assert got[0].created_at == "2022-11-03T08:50:26Z"
    assert got[1].is_reply and not got[1].is_retweet
    assert got[1].urls == ("https://t.co/abc",)
    assert got[1].lang == "de"
    assert got[1].text == "@friend yes &amp; no https://t.co/abc"  # raw: as downloaded


def test_avatar_as_url_finds_the_stored_file(tmp_path: Path) -> None:
    got = fetch(write_archive(tmp_path / "a", sentences(2), avatar="url"))
    assert got.profile.avatar is not None
    assert got.profile.avatar.url == "https://pbs.twimg.com/profile_images/1/old_avatar.jpg"
    assert got.profile.avatar.image == AVATAR_JPEG


def test_note_tweets_give_long_posts_their_full_text(tmp_path: Path) -> None:
    long_text = "This is a long post " + "with many words " * 30 + "and an ending."
    truncated = long_text[:270] + "… https://t.co/note"
    tweets = [
        tweet(
            2, truncated, created_at="Mon Jan 02 10:00:00 +0000 2023", urls=["https://t.co/note"]
        ),
        tweet(1, "A short tweet that stays as it is", created_at="Sun Jan 01 10:00:00 +0000 2023"),
    ]
    notes = [
        {
            "noteTweetId": "999",
            "createdAt": "2023-01-02T10:00:00.000Z",
            "core": {"text": long_text, "urls": [], "mentions": [], "hashtags": []},
        }
    ]
    got = fetch(write_archive(tmp_path / "a", tweets, notes=notes)).tweets
    assert got[0].text == long_text
    assert got[1].text == "A short tweet that stays as it is"


def test_real_archive(real_archive: Path) -> None:
    got = ArchiveSource(real_archive).fetch("andreruffert")
    raw = parse_js("tweets.js", (real_archive / "data" / "tweets.js").read_bytes())
    assert len(got.tweets) == len(raw) == 1986
    assert sum(t.is_retweet for t in got.tweets) == 643
    assert got.profile.display_name == "André Ruffert"
    assert got.profile.avatar is not None
    assert (
        got.profile.avatar.image
        == (real_archive / "data" / "profile_media" / "ens-GMMR.jpg").read_bytes()
    )
    assert all(t.id.isdigit() and t.created_at for t in got.tweets)


def test_handle_must_match_the_archive(real_archive: Path) -> None:
    with pytest.raises(InvalidHandle, match="belongs to @andreruffert"):
        ArchiveSource(real_archive).fetch("someone_else")
    # Case differs: same account.
    assert ArchiveSource(real_archive).fetch("AndreRuffert").profile.handle == "andreruffert"


def test_missing_archive(tmp_path: Path) -> None:
    with pytest.raises(InputNotFound):
        fetch(tmp_path / "nope.zip")


def test_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    path.write_bytes(b"this is not a zip")
    with pytest.raises(CorruptInput, match="not a readable zip"):
        fetch(path)


def test_zip_without_tweets(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("hello.txt", "hi")
    with pytest.raises(CorruptInput, match="not a Twitter archive"):
        fetch(path)


def test_truncated_zip(tmp_path: Path) -> None:
    path = write_archive(tmp_path / "a", sentences(300), as_zip=True)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptInput):
        fetch(path)


def test_broken_json(tmp_path: Path) -> None:
    path = write_archive(tmp_path / "a", sentences(3))
    target = path / "data" / "tweets.js"
    target.write_text(target.read_text()[:-20])
    with pytest.raises(CorruptInput, match=r"tweets\.js: broken JSON"):
        fetch(path)


def test_not_a_data_file(tmp_path: Path) -> None:
    path = write_archive(tmp_path / "a", sentences(3))
    (path / "data" / "tweets.js").write_text(json.dumps([]))
    with pytest.raises(CorruptInput, match=r"no 'window\.YTD' assignment"):
        fetch(path)


def test_folder_without_tweets(tmp_path: Path) -> None:
    path = write_archive(tmp_path / "a", sentences(3), manifest=None)
    (path / "data" / "tweets.js").unlink()
    with pytest.raises(CorruptInput, match="no tweets file"):
        fetch(path)


@pytest.mark.integration  # writes a 200 MB zip: seconds, a stage end to end
def test_an_archive_on_s3_is_read_by_ranges_without_its_media(
    s3, real_archive: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The real export zipped with 200 MB of (incompressible) media beside its data/*.js: the
    job reads the tweets and the avatar through ranged GETs, under 5% of the object's bytes,
    and leaves the media on S3."""
    import os

    import boto3

    from job.storage import S3RangeFile

    path = tmp_path / "export.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for file in sorted(real_archive.rglob("*")):
            if file.is_file():
                z.write(file, file.relative_to(real_archive).as_posix())
        for i in range(8):  # 8 x 25 MB: 200 MB of media
            z.writestr(
                f"data/tweets_media/video{i}.mp4", os.urandom(25_000_000), zipfile.ZIP_STORED
            )
    boto3.client("s3").create_bucket(Bucket="inputs")
    boto3.client("s3").upload_file(str(path), "inputs", "archives/export.zip")

    remote = S3RangeFile("s3://inputs/archives/export.zip")
    with caplog.at_level(logging.INFO, logger="job"):
        got = ArchiveSource(remote).fetch("andreruffert")
    local = ArchiveSource(path).fetch("andreruffert")
    assert [t.text for t in got.tweets] == [t.text for t in local.tweets]
    assert got.profile.avatar is not None and local.profile.avatar is not None
    assert got.profile.avatar.image == local.profile.avatar.image
    assert remote.size == path.stat().st_size > 200_000_000
    assert remote.fetched < 0.05 * remote.size, remote.fetched  # the media stayed on S3
    assert f"read {remote.fetched / 1e6:.1f} MB of its {remote.size / 1e6:.1f} MB" in caplog.text
    with pytest.raises(InputNotFound):
        S3RangeFile("s3://inputs/archives/gone.zip")
