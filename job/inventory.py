"""What a bot leaves behind, named once. The writers (run.py, cloud/runs.py, the Hub push)
use these names, and the takedown (cloud/consent.py) reads them, so a new kind of output is
either named here, and then taken down, or not written at all.
tests/cloud/test_inventory.py makes every kind of bot and fails if any file that holds the
person's tweets, model or name survives their takedown.

A bot's **result** (``OUT/<bot>/`` from ``run``; ``OUTPUT/<bot>/<run-id>/`` on an output
prefix)::

    model/             the model folder: weights or the adapter, tokenizer, card, picture, and
                       onnx/ (the browser's graph: sampling.space)
    space/             the static Space's page and README (sampling.space)
    merged/            an adapter bot's merged copy (train.lora_merged)
    base/              the tiny base an adapter of it names (kept beside it)
    data/              raw.jsonl (local only: as downloaded), clean.jsonl, stats.json, avatars
    predictions.json   the sampled predictions
    job.json           config, versions, timings, the inputs (whose tweets, from where)
    card.json          the card's context: a push to another repo renders it again

Beside the results, under ``OUTPUT/<bot>/``: ``status.json``, ``latest.json``,
``checkpoints/`` (a run's, mirrored for the retry on another host). Locally also
``OUT/.<bot>/``: the lock, the work space, checkpoints, W&B's offline files, the staged
result; and ``OUT/.<bot>.old/``, a result a killed run left aside (atomic.replace_dir).

Elsewhere: the person's **inputs** (their URIs are in ``status.json`` and each ``job.json``),
the bot's **W&B runs** (group: the bot's name) and its **Hub repos**: the one it was pushed to,
for a merged copy ``<repo>-merged``, and its Space, a Space repo of the repo's name (every one
recorded in ``status.json``).
"""

from __future__ import annotations

from pathlib import Path

from job.base import is_repo_id

MODEL, MERGED, BASE, DATA, SPACE = "model", "merged", "base", "data", "space"
PREDICTIONS, JOB, CARD = "predictions.json", "job.json", "card.json"
STATUS, LATEST, CHECKPOINTS = "status.json", "latest.json", "checkpoints"

# Folders of a result that are published as they are (everything in them)
PUBLISHED_FOLDERS = (MODEL, MERGED, BASE, SPACE)
# Of data/, only what the card and a retraining need: raw.jsonl is the API's answer as it was
PUBLISHED_DATA = ("data/stats.json", "data/clean.jsonl")
RESULT_FILES = (PREDICTIONS, JOB, CARD)

# What a bot's folder under an output holds; a folder named like a bot that holds anything
# else (an ``inputs/`` at the bucket's root, when a handle is "inputs") is not taken for one.
BOT_FILES = frozenset({STATUS, LATEST, *RESULT_FILES})
BOT_FOLDERS = frozenset({*PUBLISHED_FOLDERS, DATA, CHECKPOINTS})

MERGED_SUFFIX = "-merged"


def scratch(bot: str) -> str:
    """``.<bot>``: a local bot's lock, work space, checkpoints and W&B files."""
    return f".{bot}"


def set_aside(name: str) -> str:
    """``.<name>.old``: a result a killed run left aside (atomic.replace_dir)."""
    return f".{name}.old"


def local_folders(bot: str) -> list[str]:
    """Every folder under a local output that holds something of ``bot``."""
    return [bot, scratch(bot), set_aside(bot)]


def bot_of_folder(folder: str) -> str | None:
    """Which bot's a top-level folder is, by its name: ``<bot>``, ``.<bot>`` or
    ``.<bot>.old``; None for any other name (the caller checks it is a bot's name)."""
    if folder.startswith("."):
        return folder[1:].removesuffix(".old") or None
    return folder


def merged_repo(repo: str) -> str:
    """Where an adapter bot's merged copy (``train.lora_merged``) is pushed: beside it."""
    return f"{repo}{MERGED_SUFFIX}"


# A bot's Space is a Space repo of its model repo's id; records name it ``spaces/<owner>/<name>``
# (the Hub's own path for a Space), so one list holds every repo of a bot whatever its type.
SPACES = "spaces/"


def space_repo(repo: str) -> str:
    """Where the bot of model repo ``repo`` has its Space (sampling.space), as records name it."""
    return f"{SPACES}{repo}"


def repo_ref(ref: str) -> tuple[str, str]:
    """A recorded repo (``owner/name`` or ``spaces/owner/name``) as the Hub's id and type."""
    return (ref[len(SPACES) :], "space") if ref.startswith(SPACES) else (ref, "model")


def is_repo_ref(ref: str) -> bool:
    """Whether ``ref`` names a Hub repo as records do: a model's id, or a Space's."""
    return is_repo_id(repo_ref(ref)[0])


def repo_named_for(repo: str, bot: str) -> bool:
    """Whether ``repo``'s name (any owner) is what the job names ``bot``'s repos: the bot's
    name, or its merged copy's (the Hub's names are case-insensitive)."""
    name = repo.rpartition("/")[2].lower()
    return name in (bot.lower(), merged_repo(bot).lower())


def files_to_publish(result: Path) -> list[Path]:
    """The files of a result that an output prefix keeps (cloud/runs.py uploads them)."""
    folders = [
        p
        for folder in PUBLISHED_FOLDERS
        if (result / folder).is_dir()
        for p in (result / folder).rglob("*")
        if p.is_file()
    ]
    files = [result / rel for rel in (*PUBLISHED_DATA, *RESULT_FILES) if (result / rel).is_file()]
    return sorted(folders) + files
