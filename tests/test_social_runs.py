"""Bots of Bluesky and Mastodon people, end to end on loopback servers shaped like theirs: the
run as docs/usage.md shows it, the card in the network's words, consent under any of the
person's names, a server that stalls, and a takedown that leaves nothing of them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from job import errors
from tests.helpers import SAMPLE
from tests.helpers.cli import invoke, one_line
from tests.helpers.jobs import TINY_FLAGS
from tests.helpers.social import (
    Bluesky,
    BlueskyPerson,
    Fault,
    Mastodon,
    MastodonPerson,
    bsky_post,
    toot,
)

pytestmark = pytest.mark.integration

# The sample's words (job/samples), posted by fictional people of each network
TEXTS = [json.loads(line)["text"] for line in SAMPLE.read_text().splitlines()]
ALICE, DID = "alice.example.org", "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
BOB = "@bob@social.example"


@pytest.fixture
def bluesky():
    with Bluesky() as server:
        alice = server.add(BlueskyPerson(ALICE, did=DID))
        alice.posts = [bsky_post(alice, n, text) for n, text in enumerate(TEXTS)]
        alice.posts.insert(
            0, bsky_post(alice, 999, "a repost of someone", repost_of=DID[:-1] + "a")
        )
        yield server


@pytest.fixture
def mastodon():
    with Mastodon() as server:
        bob = server.add(MastodonPerson("bob"))
        bob.statuses = [toot(n, f"<p>{text}</p>") for n, text in enumerate(TEXTS)]
        bob.statuses.insert(0, toot(-1, "a boosted post", boost=True))
        yield server


def run(person: str, flag: str, out: Path, url_env: dict[str, str]):
    return invoke("run", person, flag, *TINY_FLAGS, "--out", str(out), env=url_env)


def left_of(out: Path, words: list[str]) -> list[str]:
    """Every file under ``out`` whose path or bytes hold one of ``words`` (but the opt-out
    records, which name the person by design)."""
    found = []
    for path in out.rglob("*"):
        if "_opt-out" in path.parts:
            continue
        text = str(path.relative_to(out)).lower()
        if path.is_file():
            text += path.read_bytes().decode("utf-8", "replace").lower()
        found += [f"{w} in {path}" for w in words if w.lower() in text]
    return found


def test_a_bluesky_bot_is_made_carded_and_taken_down_by_its_did(bluesky, tmp_path) -> None:
    out = tmp_path / "out"
    env = {"BLUESKY_APPVIEW_URL": bluesky.url}
    done = run(ALICE, "--bluesky", out, env)
    assert done.returncode == 0, done.stderr
    bot = out / ALICE
    card = (bot / "model" / "README.md").read_text()
    assert "fine-tuned on the posts on Bluesky of" in card and "| Reposts | 1 |" in card
    assert "(https://bsky.app/profile/alice.example.org)" in card  # a link to their profile
    assert "their public posts on Bluesky" in card and "Tweets downloaded" not in card
    stats = json.loads((bot / "data" / "stats.json").read_text())
    assert stats["users"][ALICE]["avatar"] == f"avatars/{ALICE}.jpg"  # fetched, bounded
    assert (bot / "data" / "avatars" / f"{ALICE}.jpg").read_bytes() == bluesky.avatar
    # The person asks by their DID: the AppView gives their handle, and both go.
    taken = invoke("takedown", DID, "--output", str(out), env=env)
    assert taken.returncode == 0, taken.stderr
    # the bot and its scratch (the tiny base kept there), found under the handle
    assert f"@{ALICE}: opted out; removed 2 bot folder(s): .{ALICE}, {ALICE}" in taken.stdout
    assert f"{DID}: opted out" in taken.stdout
    words = [ALICE, TEXTS[0][:40], TEXTS[5][:40]]
    assert left_of(out, words) == []  # the opt-out records are named by key, below
    names = sorted(p.name for p in (out / "_opt-out").iterdir())
    assert names == ["alice.example.org.json", "did_plc_ewvi7nxzyoun6zhxrhs64oiz.json"]


def test_an_opt_out_under_the_other_name_refuses_before_any_post(bluesky, tmp_path) -> None:
    """Opted out by DID (the AppView unreachable then: the takedown says so and goes on), a
    run by handle reads the profile, finds the DID opted out, and reads no post."""
    out = tmp_path / "out"
    taken = invoke("takedown", DID, "--output", str(out))  # BLUESKY_APPVIEW_URL: closed
    assert taken.returncode == 0 and "run takedown with it too" in taken.stderr
    done = run(ALICE, "--bluesky", out, {"BLUESKY_APPVIEW_URL": bluesky.url})
    line = one_line(done, errors.OPTED_OUT)
    assert f"{DID} asked not to be made into a bot; nothing of it was published" in line
    assert not any(path.endswith("getAuthorFeed") for path, _ in bluesky.requests)
    assert not (out / ALICE).exists()


def test_a_mastodon_bot_is_made_carded_and_taken_down_by_its_address(mastodon, tmp_path):
    out = tmp_path / "out"
    env = {"MASTODON_URL": mastodon.url}
    done = run(BOB, "--mastodon", out, env)
    assert done.returncode == 0, done.stderr
    bot = out / "bob._.social.example"
    card = (bot / "model" / "README.md").read_text()
    assert "fine-tuned on the posts on Mastodon of" in card and "| Boosts | 1 |" in card
    assert "(https://social.example/@bob)" in card and "@bob&#64;social&#46;example" in card
    front = card.split("---")[1]
    assert "bob._.social.example" in front  # the proof a takedown reads (cloud/hub.py)
    taken = invoke("takedown", "https://social.example/@Bob", "--output", str(out), env=env)
    assert taken.returncode == 0, taken.stderr
    assert "@bob@social.example: opted out; removed 2 bot folder(s)" in taken.stdout
    assert left_of(out, ["bob._.social", TEXTS[0][:40]]) == []
    again = run(BOB, "--mastodon", out, env)  # and it is refused from now on
    assert one_line(again, errors.OPTED_OUT)


def test_a_stalled_server_meets_the_total_deadline(bluesky, tmp_path) -> None:
    bluesky.faults = [Fault(stall=3.0, status=200)] * 3
    env = {"BLUESKY_APPVIEW_URL": bluesky.url, "HUGGINGTWEETS_DEADLINE_POSTS_API": "1"}
    done = run(ALICE, "--bluesky", tmp_path / "out", env)
    line = one_line(done, errors.TRANSIENT)
    assert "reading @alice.example.org's posts took over 1 s (its total deadline)" in line


@pytest.mark.parametrize(
    ("given", "flag"),
    [
        ("alice..example.org", "--bluesky"),
        ("@bob@", "--mastodon"),
        ("did:plc:tooshort", "--bluesky"),
        ("@bo b@social.example", "--mastodon"),
    ],
)
def test_a_malformed_handle_is_exit_3_before_any_request(bluesky, given, flag, tmp_path):
    env = {"BLUESKY_APPVIEW_URL": bluesky.url, "MASTODON_URL": bluesky.url}
    done = run(given, flag, tmp_path / "out", env)
    assert "invalid handle" in one_line(done, errors.INVALID_HANDLE)
    assert bluesky.requests == []


def test_a_handle_without_its_networks_flag_names_the_flag(tmp_path) -> None:
    done = invoke("run", ALICE, "--api", "--out", str(tmp_path))
    assert "no source for @alice.example.org: give --archive, --jsonl or --bluesky" in one_line(
        done, errors.BAD_CONFIG
    )


def test_a_manifest_of_bluesky_and_mastodon_people_makes_each_bot(bluesky, mastodon, tmp_path):
    """A task of a Bluesky bot and a Mastodon bot, each user's source their network's own by
    default; a DID opted out beforehand refuses its bot when its profile is read (no post
    read, no status of it left), and the other bot is made."""
    from tests.helpers.jobs import TINY_MANIFEST

    out = tmp_path / "out"
    env = {"BLUESKY_APPVIEW_URL": bluesky.url, "MASTODON_URL": mastodon.url}
    assert invoke("takedown", DID, "--output", str(out)).returncode == 0
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        f"version: 1\noutput: {out}\n{TINY_MANIFEST}"
        f"bots:\n  - users: [{{handle: {ALICE}}}]\n  - users: [{{handle: '{BOB}'}}]\n"
    )
    done = invoke("run", "--manifest", str(manifest), env=env)
    assert done.returncode == errors.OPTED_OUT, done.stderr  # the first failed bot's code
    assert not any(path.endswith("getAuthorFeed") for path, _ in bluesky.requests)
    assert not (out / ALICE).exists()
    status = invoke("status", "--manifest", str(manifest))
    assert "bob._.social.example\tsucceeded" in status.stdout
    assert f"{ALICE}\tunknown\t-" in status.stdout  # no record of the refused bot is kept
