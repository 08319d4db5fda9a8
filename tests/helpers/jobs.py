"""The tiny job: one definition of a fast, real run for every test that trains.

A 2-layer GPT-2 built locally, trained for a few seconds on our sample tweets, through the same
code path as a real run. ``TINY`` is its config; ``tiny_job`` its BotJob; ``TINY_FLAGS`` the
same thing on a command line; ``TINY_MANIFEST`` as a manifest's defaults.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from job.config import JobConfig
from job.loading import validate
from job.spec import BotJob, UserSpec
from tests.helpers import SAMPLE

# A random-init model needs a far higher learning rate than fine-tuning a pretrained one.
TINY_SECTIONS: dict[str, dict[str, Any]] = {
    "train": {"base_model": "tiny", "epochs": 8, "learning_rate": 3e-3},
    "sampling": {"per_prompt": 2, "max_length": 48},
    "wandb": {"mode": "offline"},
}
SECRETS = {
    "TWITTER_BEARER_TOKEN": "tw-secret-1234567",
    "HF_TOKEN": "hf_secret_1234567",
    "WANDB_API_KEY": "wandb-secret-1234567",
}


def tiny_config(**changes: dict[str, Any]) -> JobConfig:
    """The tiny config with ``changes`` merged section by section (``train={"epochs": 1}``)."""
    sections = {k: {**v} for k, v in TINY_SECTIONS.items()}
    for section, values in changes.items():
        sections[section] = {**sections.get(section, {}), **values}
    return validate(JobConfig, sections, "tiny")


def tiny_job(
    handle: str = "sourdough_sam",
    path: Path = SAMPLE,
    source: str = "jsonl",
    **changes: dict[str, Any],
) -> BotJob:
    user = UserSpec.model_validate({"handle": handle, "source": source, "uri": str(path)})
    return BotJob(bot=handle, users=[user], config=tiny_config(**changes))


TINY_FLAGS = [
    *("--base-model", "tiny", "--epochs", "1", "--learning-rate", "3e-3"),
    *("--predictions-per-prompt", "1", "--max-length", "32", "--start-text", "Bread is"),
]
TINY_MANIFEST = """
defaults:
  base_model: tiny
  train: {epochs: 1, learning_rate: 0.003}
  sampling: {per_prompt: 1, max_length: 24, start_texts: [Bread is]}
"""


def made_run(out: Path, bot: str) -> Path:
    """The folder of the run published for ``bot`` under the local output ``out`` (the run
    its latest.json names)."""
    return out / bot / json.loads((out / bot / "latest.json").read_text())["run_id"]
