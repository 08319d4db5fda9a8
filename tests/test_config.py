from __future__ import annotations

import json
from pathlib import Path

import pytest

from job import errors
from job.errors import BadConfig, InvalidHandle
from job.spec import jobs
from job.spec import parse_manifest as parse
from tests.helpers import REPO

BASE = """
version: 1
output: s3://results/bots
defaults:
  base_model: tiny
  train: {epochs: 2, learning_rate: 0.003}
  sampling: {per_prompt: 1}
hub: {push: true, owner: bots-org, private: true}
wandb: {project: tweets, mode: disabled}
bots:
  - users: [{handle: alice, source: api}]
    train: {epochs: 5}
  - users:
      - {handle: bob, source: archive, uri: s3://inputs/bob.zip}
      - {handle: carol, source: jsonl, uri: carol.jsonl}
    base_model: gpt2-medium
    hub_repo: someone/custom
    clean: {replies: drop}
"""


def test_defaults_merge_and_bot_keys_win() -> None:
    a, bc = jobs(parse(BASE))
    assert a.bot == "alice" and bc.bot == "bob-carol"
    assert (a.config.train.epochs, a.config.train.learning_rate) == (5.0, 0.003)
    assert a.config.train.base_model == "tiny" and bc.config.train.base_model == "gpt2-medium"
    assert bc.config.train.epochs == 2.0 and bc.config.sampling.per_prompt == 1
    assert bc.config.clean.replies == "drop" and a.config.clean.replies == "keep"
    assert (a.hub_repo, bc.hub_repo, a.hub_private) == ("bots-org/alice", "someone/custom", True)
    assert a.config.wandb.mode == "disabled" and a.config.wandb.project == "tweets"
    assert [u.source for u in bc.users] == ["archive", "jsonl"]


def test_json_manifests_too() -> None:
    text = json.dumps({"version": 1, "output": "out", "bots": [{"users": [{"handle": "x"}]}]})
    (job,) = jobs(parse(text))
    assert job.bot == "x" and job.hub_repo is None  # push is off unless asked for
    assert not job.hub_push


def test_fingerprint_tracks_the_work_not_the_tracking() -> None:
    a = jobs(parse(BASE))[0]
    assert jobs(parse(BASE))[0].fingerprint() == a.fingerprint()
    assert jobs(parse(BASE.replace("mode: disabled", "mode: offline")))[0].fingerprint() == (
        a.fingerprint()
    )
    assert jobs(parse(BASE.replace("epochs: 5", "epochs: 6")))[0].fingerprint() != a.fingerprint()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("version: 1", "version: 2"), "version: this huggingtweets reads version 1"),
        (("output: s3://results/bots\n", ""), "manifest.output: required"),
        (
            ("train: {epochs: 5}", "train: {epochs: five}"),
            "manifest.bots[0].train.epochs: expected a number, got 'five'",
        ),
        (("train: {epochs: 5}", "train: {epoch: 5}"), "manifest.bots[0].train.epoch: unknown key"),
        (("train: {epochs: 5}", "train: {epochs: true}"), "expected a number, got True"),
        (("hub: {push: true,", "hub: {push: 'yes',"), "manifest.hub.push: expected true or false"),
        (
            ("wandb: {project: tweets,", "wandb: {project: tweets, api_key: abc,"),
            "manifest.wandb.api_key: unknown key (secrets come from the environment)",
        ),
        (
            ("clean: {replies: drop}", "clean: {replies: sometimes}"),
            "manifest.bots[1].clean.replies: must be one of",
        ),
        (
            ("source: archive, uri: s3://inputs/bob.zip", "source: archive"),
            "manifest.bots[1].users[0]: source 'archive' needs a uri",
        ),
        (
            ("sampling: {per_prompt: 1}", "sampling: {top_p: 3}"),
            "manifest.bots[0].sampling.top_p: Input should be less than or equal to 1",
        ),
        (
            ("users: [{handle: alice, source: api}]", "users: []"),
            "manifest.bots[0].users: List should have at least 1 item",
        ),
        (
            ("users: [{handle: alice, source: api}]", "users: [{handle: Bob}, {handle: carol}]"),
            "manifest.bots[1]: bot bob-carol appears twice",
        ),
        (("bots:", "bots: 3\nold_bots:"), "manifest.old_bots: unknown key"),
        # checked when the manifest is read, for every bot, before the first one starts
        (("train: {epochs: 5}", "train: {lr_scheduler: bogus}"), "bots[0].train.lr_scheduler"),
        (("base_model: gpt2-medium", "base_model: gpt5"), "bots[1].train.base_model: 'gpt5'"),
        (("owner: bots-org", "owner: ../../evil"), "manifest.bots[0].hub_repo: '../../evil/"),
        (("hub_repo: someone/custom", "hub_repo: a/b/../c"), "bots[1].hub_repo: 'a/b/../c'"),
        (("output: s3://results/bots", "output: s3://results/../../etc"), "manifest.output:"),
        (("uri: s3://inputs/bob.zip", "uri: s3://inputs/../x.zip"), "bots[1].users[0].uri"),
    ],
)
def test_errors_name_the_field(change: tuple[str, str], message: str) -> None:
    with pytest.raises(BadConfig) as info:
        parse(BASE.replace(*change))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_invalid_handle_keeps_its_exit_code_and_path() -> None:
    with pytest.raises(InvalidHandle, match=r"manifest\.bots\[0\]\.users\[0\]"):
        parse(BASE.replace("handle: alice", "handle: ../alice"))


def test_not_yaml() -> None:
    with pytest.raises(BadConfig, match="not valid JSON or YAML"):
        parse("{{{")
    with pytest.raises(BadConfig, match="expected a mapping"):
        parse("- just\n- a list\n")


def test_secret_values_are_not_echoed() -> None:
    secret = "hf_abcdefghijklmnopqrstuvwxyz123456"
    with pytest.raises(BadConfig) as info:
        parse(BASE.replace("train: {epochs: 5}", f"train: {{epochs: {secret}}}"))
    assert secret not in str(info.value)


def test_options_page_is_generated_from_the_config() -> None:
    from job.options_page import options_markdown

    page = (REPO / "docs" / "options.md").read_text()
    assert page == options_markdown(), "docs/options.md is stale: run make docs"


def test_a_new_field_reaches_the_cli_the_manifest_and_the_docs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Adding an option is one field in config.py: every front end sees it."""
    import importlib

    from pydantic import Field, create_model
    from typer.testing import CliRunner

    import job.cli
    import job.config as config
    import job.run

    train = create_model(
        "TrainConfig",
        __base__=config.TrainConfig,
        label_noise=(float, Field(0.25, ge=0, description="A field this test adds.")),
    )
    root = create_model(
        "JobConfig", __base__=config.JobConfig, train=(train, Field(default_factory=train))
    )
    monkeypatch.setattr(config, "JobConfig", root)
    seen = []
    monkeypatch.setattr(job.run, "run", lambda bot, *a, **k: seen.append(bot))  # no training
    cli = importlib.reload(job.cli)  # its options are generated from config.JobConfig
    try:
        runner = CliRunner()
        assert "--label-noise" in runner.invoke(cli.app, ["run", "--help"]).stdout
        tweets = tmp_path / "t.jsonl"
        tweets.write_text('{"text": "a tweet"}\n')
        args = ["run", "x", "--jsonl", str(tweets), "--base-model", "tiny", "--label-noise", "0.5"]
        result = runner.invoke(cli.app, args)
        assert result.exit_code == 0, result.output
        assert seen[0].config.train.label_noise == 0.5
        bad = runner.invoke(cli.app, [*args[:-1], "-1"])
        assert bad.exit_code == errors.BAD_CONFIG and "--label-noise:" in bad.stderr  # its flag

        manifest = parse(BASE.replace("train: {epochs: 5}", "train: {label_noise: 0.75}"))
        assert jobs(manifest)[0].config.train.label_noise == 0.75

        from job.options_page import options_markdown

        page = options_markdown()
        assert (
            "| `--label-noise` | `train.label_noise` | `0.25` | A field this test adds. |" in page
        )
    finally:
        monkeypatch.undo()
        importlib.reload(job.cli)


def test_a_public_push_without_a_contact_is_refused() -> None:
    from job.errors import BadConfig
    from job.spec import BotJob, UserSpec

    with pytest.raises(ValueError, match="contact for removal requests"):
        BotJob(bot="a", users=[UserSpec(handle="a")], hub_push=True, hub_repo="o/a")
    BotJob(bot="a", users=[UserSpec(handle="a")], hub_push=True, hub_repo="o/a", hub_private=True)
    manifest = "version: 1\noutput: out\nhub: {push: true}\nbots: [{users: [{handle: a}]}]\n"
    from job.spec import parse_manifest

    with pytest.raises(BadConfig, match=r"manifest\.hub\.contact"):
        parse_manifest(manifest)


@pytest.mark.parametrize("target", ["does_not_exist", ".*", "ln_1", "", "c_attn|c_fc"])
def test_lora_targets_are_gpt2s_matrices_checked_before_the_data(target: str, tmp_path) -> None:
    """They were checked at training time: exit 1 after the data stage."""
    from job import errors
    from tests.helpers import SAMPLE
    from tests.helpers.cli import invoke, one_line

    out = tmp_path / "out"
    done = invoke(
        *("run", "sam", "--jsonl", str(SAMPLE), "--base-model", "tiny", "--adapter", "lora"),
        *("--lora-targets", target, "--out", str(out)),
    )
    line = one_line(done, errors.BAD_CONFIG)
    assert "lora" in line.lower() and "c_attn" in line
    assert not out.exists()
