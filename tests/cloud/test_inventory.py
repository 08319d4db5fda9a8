"""What a bot leaves behind (job/inventory.py) is what its takedown removes: every kind of bot
is made, locally and through a manifest to S3 and the Hub, the person asks for removal in a
form of their handle the job did not write, and nothing that holds their tweets, their model
or their name is left anywhere: the output folder, the bucket, the Hub."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from job.inventory import BOT_FILES, BOT_FOLDERS, PUBLISHED_FOLDERS, files_to_publish
from tests.helpers import SAMPLE
from tests.helpers.cli import invoke
from tests.helpers.jobs import TINY_FLAGS, TINY_MANIFEST

pytestmark = pytest.mark.integration

PERSON = "sourdough_sam"
# Some of the person's tweets (job/samples), long enough to be theirs alone
TWEETS = [
    t for line in SAMPLE.read_text().splitlines() if len(t := json.loads(line)["text"]) >= 60
][:8]


def pal_tweets(folder: Path) -> Path:
    """A second person's tweets (the sample under another name), for a bot of two people."""
    path = folder / "pal.jsonl"
    lines = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    for t in lines:  # their own words: the sample's, each tweet's words in reverse order
        t.update(user="pal_9", text="pal: " + " ".join(reversed(t["text"].split())))
    path.write_text("".join(json.dumps(t) + "\n" for t in lines))
    return path


def traces(name: str, data: bytes) -> list[str]:
    """What in a file (its path and bytes) is the person's: their name, or one of their tweets."""
    found = [f"name in {name}"] if PERSON in name.lower() else []
    text = data.decode("utf-8", "replace")
    if PERSON in text.lower():
        found.append(f"{PERSON} in {name}")
    found += [f"a tweet in {name}" for t in TWEETS if t[:40] in text]
    return found


def test_every_kind_of_local_bot_is_taken_down_by_any_form_of_the_handle(tmp_path) -> None:
    """A full bot, an adapter bot with its merged copy and the tiny base kept beside it, a bot
    of two people, a killed run's scratch and its set-aside result: `takedown @SourDough_Sam`
    (a spelling the job never wrote) leaves nothing of theirs under the output."""
    out = tmp_path / "out"
    inputs = out / "inputs"
    inputs.mkdir(parents=True)
    mine = inputs / "sam.jsonl"
    mine.write_bytes(SAMPLE.read_bytes())
    pal = pal_tweets(tmp_path)
    runs = [
        ["run", PERSON, "--jsonl", str(mine)],
        [
            *("run", "pal_9", PERSON, "--jsonl", f"pal_9={pal}", "--jsonl", f"{PERSON}={mine}"),
            *("--adapter", "lora", "--lora-merged"),
        ],
    ]
    for args in runs:
        done = invoke(*args, *TINY_FLAGS, "--out", str(out), "--wandb-mode", "offline")
        assert done.returncode == 0, done.stderr
    made = out / f"pal_9-{PERSON}"
    assert {"model", "merged", "base"} <= {p.name for p in made.iterdir()}  # every kind here
    # a killed run's leftovers: its result set aside (atomic.replace_dir) and its scratch
    (out / f".{PERSON}.old" / "model").mkdir(parents=True)
    (out / f".{PERSON}.old" / "model" / "README.md").write_text(f"@{PERSON}")
    other = out / "someone_else"  # a bot of another person stays
    other.mkdir()
    (other / "job.json").write_text("{}")

    done = invoke("takedown", "@SourDough_Sam", "--output", str(out))
    assert done.returncode == 0, done.stderr
    assert "removed" in done.stdout and "no bot of theirs" not in done.stdout
    assert f"input: deleted {mine.resolve()}" in done.stdout
    left = [p for p in out.rglob("*") if p.is_file()]
    found = [
        t
        for p in left
        if not p.relative_to(out).as_posix().startswith("_opt-out/")
        for t in traces(p.relative_to(out).as_posix(), p.read_bytes())
    ]
    assert found == [], found
    assert (other / "job.json").is_file()
    assert (out / "_opt-out" / f"{PERSON}.json").is_file()  # the one record of them kept

    # ...and every later run refuses them, whatever the form
    for form in (PERSON, "@SOURDOUGH_SAM", "https://x.com/SourDough_Sam"):
        again = invoke("run", form, "--jsonl", str(SAMPLE), *TINY_FLAGS, "--out", str(out))
        assert again.returncode == 12, (form, again.stderr)


def test_every_kind_of_published_bot_is_taken_down_from_s3_and_the_hub(s3, hub, tmp_path) -> None:
    """Through a manifest: a full bot pushed to the Hub, a copy of it pushed to another repo
    with `publish --repo`, an adapter bot with its merged copy on S3 (a tiny base has no Hub
    id to push an adapter of), its inputs on S3. The person's profile address removes it all."""
    client = boto3.client("s3")
    client.upload_file(str(SAMPLE), "results", "inputs/sam.jsonl")
    client.upload_file(str(pal_tweets(tmp_path)), "results", "inputs/pal.jsonl")
    sam = "{handle: sourdough_sam, source: jsonl, uri: s3://results/inputs/sam.jsonl}"
    pal = "{handle: pal_9, source: jsonl, uri: s3://results/inputs/pal.jsonl}"
    for name, hub_line, bot in [
        ("full", "hub: {push: true, owner: huggingtweets, contact: t@example.org}", f"[{sam}]"),
        (
            "adapter",
            "hub: {push: false}",
            f"[{pal}, {sam}]\n    train: {{adapter: lora, lora_merged: true}}",
        ),
    ]:
        manifest = (
            f"version: 1\noutput: s3://results/bots{TINY_MANIFEST}{hub_line}\n"
            f"wandb: {{mode: disabled}}\nbots:\n  - users: {bot}\n"
        )
        client.put_object(Bucket="results", Key=f"jobs/{name}.yaml", Body=manifest.encode())
        done = invoke("run", "--manifest", f"s3://results/jobs/{name}.yaml")
        assert done.returncode == 0, done.stderr
    copy = invoke("publish", PERSON, "--output", "s3://results/bots", "--repo", "me/sams-copy")
    assert copy.returncode == 0, copy.stderr
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="results")["Contents"]]
    adapter_run = [k for k in keys if k.startswith(f"bots/pal_9-{PERSON}/") and "/merged/" in k]
    assert adapter_run, keys  # the merged copy is part of the published run (a redo needs it)
    assert {"huggingtweets/sourdough_sam", "me/sams-copy"} <= set(hub.state.repos)

    done = invoke("takedown", "https://x.com/SourDough_Sam", "--output", "s3://results/bots")
    assert done.returncode == 0, done.stderr
    left = [o["Key"] for o in client.list_objects_v2(Bucket="results").get("Contents", [])]
    found = [
        t
        for k in left
        if not k.startswith("bots/_opt-out/") and not k.startswith("jobs/")
        for t in traces(k, client.get_object(Bucket="results", Key=k)["Body"].read())
    ]
    assert found == [], found
    assert [k for k in left if k.startswith("inputs/")] == ["inputs/pal.jsonl"]  # not theirs
    assert not [r for r in hub.state.repos if PERSON in r or "sams" in r], hub.state.repos


def test_the_published_files_are_the_inventory(tmp_path) -> None:
    """What an output prefix keeps of a result is what job/inventory.py names: every folder it
    publishes whole (the merged copy and the kept base too: `publish` of a merged bot redoes
    both pushes from S3 alone), the data the card needs, never the API's raw answer."""
    result = tmp_path / "result"
    for rel in [
        *(f"{folder}/f.bin" for folder in PUBLISHED_FOLDERS),
        "data/raw.jsonl",
        "data/clean.jsonl",
        "data/stats.json",
        "predictions.json",
        "job.json",
        "card.json",
        "stray.txt",
    ]:
        (result / rel).parent.mkdir(parents=True, exist_ok=True)
        (result / rel).write_text("x")
    published = {p.relative_to(result).as_posix() for p in files_to_publish(result)}
    assert published == {
        "model/f.bin",
        "merged/f.bin",
        "base/f.bin",
        "space/f.bin",
        "data/clean.jsonl",
        "data/stats.json",
        "predictions.json",
        "job.json",
        "card.json",
    }
    # and what a bot's folder may hold is every name a result or its records use
    assert {"model", "merged", "base", "data", "checkpoints"} <= BOT_FOLDERS
    assert {"status.json", "latest.json", "job.json", "card.json"} <= BOT_FILES
