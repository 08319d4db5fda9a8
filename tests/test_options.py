"""The command line's side of the config: a flag per field, and the job a command line makes."""

from __future__ import annotations

from pathlib import Path

import pytest

from job.config import RUN_SECTIONS, JobConfig
from job.errors import BadConfig, InputNotFound
from job.options import bot_job_from_args, config_flags


def test_every_field_has_one_flag_and_no_two_share_one() -> None:
    flags = [flag for _, _, flag, _ in config_flags(RUN_SECTIONS)]
    fields = sum(len(JobConfig.model_fields[s].annotation.model_fields) for s in RUN_SECTIONS)
    assert len(flags) == len(set(flags)) == fields
    assert {"start-text", "predictions-per-prompt", "memorization-ngram", "wandb-mode"} <= set(
        flags
    )


def test_flags_win_over_the_config_file_which_wins_over_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("train: {epochs: 2, seed: 7}\nsampling: {per_prompt: 5}\n")
    job = bot_job_from_args(
        ["alice"], [], ["t.jsonl"], False, path, {"train": {"epochs": 3.0}}, "me/alice-bot"
    )
    train = job.config.train
    assert (train.epochs, train.seed, train.learning_rate) == (3.0, 7, None)  # None: scaled
    assert job.config.sampling.per_prompt == 5
    assert (job.bot, job.hub_repo, job.hub_push) == ("alice", "me/alice-bot", False)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train: {epoch: 2}\n", r"run\.yaml\.train\.epoch: unknown key"),
        ("- a list\n", "expected a mapping of config sections"),
        ("train: {epochs: [}\n", "not valid JSON or YAML"),
    ],
)
def test_a_bad_config_file_names_the_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(BadConfig, match=message):
        bot_job_from_args(["alice"], [], ["t.jsonl"], False, path, {})


def test_a_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(InputNotFound, match="no such file"):
        bot_job_from_args(["alice"], [], ["t.jsonl"], False, tmp_path / "nope.yaml", {})


def test_a_bad_hub_repo_is_refused_before_anything_runs() -> None:
    with pytest.raises(BadConfig, match="not a Hub repo id"):
        bot_job_from_args(["alice"], [], ["t.jsonl"], False, None, {}, "a/b/../c")


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--replies", "bogus"], "--replies: must be one of 'keep', 'drop', 'strip'"),
        (["--lora-merged"], "--lora-merged merges an adapter into its base: it needs --adapter"),
        (["--adapter", "lora", "--lora-targets", "ln_1"], "--lora-targets: must be one of"),
        (["--epochs", "-1"], "--epochs:"),
    ],
)  # fmt: skip
def test_an_error_names_the_flag_the_user_typed(flags, said, tmp_path) -> None:
    """`--replies bogus` said `options.clean.replies: ...`; a flag is named as a flag."""
    from job import errors
    from tests.helpers import SAMPLE
    from tests.helpers.cli import invoke, one_line

    done = invoke("run", "sam", "--jsonl", str(SAMPLE), *flags, "--out", str(tmp_path))
    line = one_line(done, errors.BAD_CONFIG)
    assert said in line and "options." not in line


def test_an_error_in_a_file_names_its_key(tmp_path) -> None:
    from job import errors
    from tests.helpers import SAMPLE
    from tests.helpers.cli import invoke, one_line

    config = tmp_path / "c.yaml"
    config.write_text("train: {lora_merged: true}\nclean: {replies: keep}\n")
    done = invoke("run", "sam", "--jsonl", str(SAMPLE), "--config", str(config))
    line = one_line(done, errors.BAD_CONFIG)
    assert f"{config}.train: lora_merged merges" in line and "needs adapter: lora" in line


def test_preflight_checks_the_inputs_it_can_see(tmp_path) -> None:
    """`run andreruffert --archive missing.zip` logged "preflight passed", then "archive not
    found"."""
    from job import errors
    from tests.helpers.cli import invoke, one_line

    done = invoke("run", "andreruffert", "--archive", str(tmp_path / "missing.zip"))
    assert "archive not found" in one_line(done, errors.INPUT_NOT_FOUND)
    assert "preflight passed" not in done.stderr
