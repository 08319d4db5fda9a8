"""The whole job on a tiny model: sample data, the real archive, reload, card, reproducibility."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from job.data.sources import ArchiveSource, FileSource
from job.outputs.card import inert
from job.run import run
from tests.helpers import SAMPLE
from tests.helpers.jobs import SECRETS, TINY_FLAGS, tiny_job

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("sample")
    with pytest.MonkeyPatch.context() as mp:
        for k, v in SECRETS.items():
            mp.setenv(k, v)
        result = run(tiny_job(), {"sourdough_sam": FileSource(SAMPLE)}, out)
    return out, result


@pytest.fixture(scope="module")
def archive_run(tmp_path_factory: pytest.TempPathFactory, real_archive: Path, shared: Path):
    out = tmp_path_factory.mktemp("archive")
    job = tiny_job(
        "andreruffert",
        real_archive,
        "archive",
        train={
            "epochs": 0.25,  # the card's numbers, not a good model: a quarter of the archive
            "learning_rate": None,  # the default: the original's, scaled to 8 x 128 tokens (x8)
            "tokenizer": str(shared / "tokenizers" / "gpt2"),
        },
        wandb={"mode": "disabled"},  # W&B has its own tests; this run is for the card
    ).model_copy(update={"contact": "https://example.org/takedown"})
    return out, run(job, {"andreruffert": ArchiveSource(real_archive)}, out)


def test_outputs(sample_run) -> None:
    out, result = sample_run
    bot = out / "sourdough_sam"
    assert result.model_dir == bot / "model"
    names = {p.name for p in (bot / "model").iterdir()}
    assert {
        "README.md",
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "predictions.png",
        "tokenizer.json",
    } <= names
    # the model users load keeps its key/value cache (training turned it off in memory)
    assert json.loads((bot / "model" / "config.json").read_text())["use_cache"] is True
    job = json.loads((bot / "job.json").read_text())
    assert set(job["timings"]) == {"prepare", "load", "train", "predict", "save", "card", "total"}
    assert job["config"]["train"]["seed"] == 42 and job["versions"]["torch"]
    assert job["result"]["steps"] > 0 and job["result"]["tokens_per_second"] > 0
    preds = json.loads((bot / "predictions.json").read_text())
    assert len(preds["predictions"]) == 10 and preds["memorized"] == result.flagged
    assert all({"prompt", "text", "memorized"} <= set(p) for p in preds["predictions"])
    scratch = out / ".sourdough_sam"  # the lock, work, checkpoints and W&B's files
    # work and lock are gone; W&B's run files, and its staged and cached artifacts (which a
    # takedown removes with the scratch: not under ~/.local/share/wandb)
    assert sorted(p.name for p in scratch.iterdir()) == ["wandb", "wandb-files"]
    assert sorted(p.name for p in bot.iterdir()) == [
        "card.json",  # the card's context: a push to another repo renders it for that repo
        "data",
        "job.json",
        "model",
        "predictions.json",
    ]  # the result, put in place as one unit
    # The Trainer's pickled arguments are nobody's business (and the Hub flags pickles).
    assert not [p for p in (bot / "model").rglob("*") if p.suffix in (".bin", ".pkl", ".pt")]
    assert job["inputs"] == [{"handle": "sourdough_sam", "source": "jsonl", "uri": str(SAMPLE)}]


def test_the_cards_own_code_runs_at_the_default_length(tmp_path: Path) -> None:
    """The default 160 tokens exceed the tiny model's 128 positions: the generation config, the
    card and job.json say the length that was used, and the card's "How to use" code runs."""
    job = tiny_job(train={"epochs": 1}, sampling={"max_length": 160}, wandb={"mode": "disabled"})
    result = run(job, {"sourdough_sam": FileSource(SAMPLE)}, tmp_path)
    config = json.loads((result.model_dir / "config.json").read_text())
    generation = json.loads((result.model_dir / "generation_config.json").read_text())
    assert generation["max_length"] == config["n_positions"] == 128
    made = json.loads((result.model_dir.parent / "job.json").read_text())
    assert made["config"]["sampling"]["max_length"] == 128
    card = (result.model_dir / "README.md").read_text()
    assert "at most 128 tokens" in card
    snippet = card.split("```python", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(snippet, "card-snippet", "exec"), namespace)  # as a reader would run it
    assert namespace["generator"] is not None


def test_fine_tuning_lowers_validation_loss(sample_run) -> None:
    t = sample_run[1].train
    assert t.val_loss < t.base_val_loss - 0.5
    assert math.isclose(t.perplexity, math.exp(t.val_loss))


def test_model_reloads_through_pipeline_with_sampling_settings(sample_run) -> None:
    from transformers import pipeline

    generator = pipeline("text-generation", model=str(sample_run[1].model_dir), device="cpu")
    assert generator.prefix == "<|endoftext|>"
    config = json.loads((sample_run[1].model_dir / "config.json").read_text())
    assert config["task_specific_params"]["text-generation"]["top_p"] == 0.95
    gen = generator.model.generation_config
    assert gen.do_sample and gen.top_p == 0.95 and gen.max_length == 48
    out = generator("My dream is", max_new_tokens=10)
    assert out[0]["generated_text"].startswith("My dream is")


def card_table(card: str) -> dict[str, list[str]]:
    section = card.split("## Training data", 1)[1].split("##", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 1:
            rows[cells[0]] = cells[1:]
    return rows


def test_card_numbers_match_stats_and_card_is_valid(archive_run) -> None:
    from huggingface_hub import ModelCard

    from job.outputs.card import ROWS, WORDS

    out, result = archive_run
    stats = json.loads((out / "andreruffert" / "data" / "stats.json").read_text())
    user = stats["users"]["andreruffert"]
    card = ModelCard.load(result.model_dir / "README.md")
    table = card_table(card.text)
    for label, key in ROWS:
        label = label.format(**WORDS["twitter"])
        assert table[label] == [str(user[key])], label
    assert table["Tweets downloaded"] == ["1986"]
    meta = card.data.to_dict()
    assert "huggingtweets" in meta["tags"] and meta["widget"] == [{"text": "My dream is"}]
    assert meta["language"] == "en" or "en" in meta["language"]
    assert meta["pipeline_tag"] == "text-generation"
    assert f"{result.train.base_perplexity:.1f}" in card.text
    assert f"{result.train.perplexity:.1f}" in card.text
    assert f"{result.flagged} of the {len(result.predictions)} sampled predictions" in card.text
    # tiny: 8 blocks of its whole 128-token context per step, 8x the original's 1024/1024
    assert result.train.learning_rate == pytest.approx(8 * 1.372e-4)
    assert "| Learning rate | 0.0011 (the original's 1.372e-4 scaled" in card.text
    assert result.train.batch_size == 8  # no GPU: the default batch, not sized to one
    assert "| Batch size | 8 × 1 accumulation, blocks of 128 tokens |" in card.text
    assert "André Ruffert" in card.text and "avatar-andreruffert.jpg" in card.text
    snippet = card.text.split("```python", 1)[1].split("```", 1)[0]
    compile(snippet, "card-snippet", "exec")  # the How-to-use code is valid Python
    assert str(result.model_dir) in snippet
    assert (result.model_dir / "avatar-andreruffert.jpg").is_file()
    # Where the tweets came from, when they were written, and whom to ask for removal.
    assert user["provenance"] == "archive" and (user["first"], user["last"]) == (
        "2010-10-25",
        "2022-11-02",
    )
    assert "@andreruffert: their own Twitter archive export" in card.text
    assert "tweets written from 2010-10-25 to 2022-11-02" in card.text
    assert f"write to **{inert('https://example.org/takedown')}**" in card.text
    assert "not written by the person" in card.text
    # Markdown tables end each row at its last cell: no trailing separator or space.
    rows = [ln for ln in card.text.splitlines() if ln.startswith("|")]
    assert rows and all(ln.endswith("|") and not ln.endswith("| |") for ln in rows), rows


def test_card_escapes_hostile_display_names(tmp_path: Path) -> None:
    hostile = '<img src=x onerror=alert(1)> | "Evil"'
    lines = [json.loads(x) for x in SAMPLE.read_text().splitlines()]
    lines[0]["name"] = hostile
    path = tmp_path / "evil.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    job = tiny_job(path=path, train={"epochs": 1}, wandb={"mode": "disabled"})
    result = run(job, {"sourdough_sam": FileSource(path)}, tmp_path)
    card = (result.model_dir / "README.md").read_text()
    assert "<img src=x" not in card and inert("<img src=x onerror=alert(1)>") in card
    assert not (tmp_path / ".sourdough_sam" / "wandb").exists()  # W&B disabled: no files
    header = card_table(card)["Data"]
    assert header == [inert(hostile)]


def test_same_seed_reproduces_the_loss(sample_run, tmp_path: Path) -> None:
    _, first = sample_run
    again = run(
        tiny_job(wandb={"mode": "disabled"}), {"sourdough_sam": FileSource(SAMPLE)}, tmp_path
    )
    assert again.train.train_loss == first.train.train_loss
    assert again.train.val_loss == first.train.val_loss
    assert [p.text for p in again.predictions] == [p.text for p in first.predictions]
    other = run(
        tiny_job(train={"seed": 7}, wandb={"mode": "disabled"}),
        {"sourdough_sam": FileSource(SAMPLE)},
        tmp_path / "o",
    )
    assert other.train.train_loss != first.train.train_loss


def test_wandb_offline_artifacts_and_no_secrets(sample_run) -> None:
    out, _ = sample_run
    bot = out / "sourdough_sam"
    runs = sorted((out / ".sourdough_sam" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2  # prepare, then train
    job = json.loads((bot / "job.json").read_text())
    assert set(job["wandb"]["runs"]) == {"prepare", "train"} and job["wandb"]["mode"] == "offline"
    folders = (bot, out / ".sourdough_sam")  # the result, and W&B's local files
    blobs = b"".join(p.read_bytes() for d in folders for p in d.rglob("*") if p.is_file())
    for name in ("raw-sourdough_sam", "dataset-sourdough_sam", "model-sourdough_sam"):
        assert name.encode() in blobs, name
    for secret in SECRETS.values():
        assert secret.encode() not in blobs


def test_cli_run_end_to_end(tmp_path: Path) -> None:
    env = {**os.environ, **SECRETS, "WANDB_MODE": "offline"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "job",
            "run",
            "sourdough_sam",
            "--jsonl",
            str(SAMPLE),
            *TINY_FLAGS,
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert re.match(
        r"done sourdough_sam: validation perplexity [\d.]+ -> [\d.]+, \d+/1 ", result.stdout
    )
    for secret in SECRETS.values():
        assert secret not in result.stdout + result.stderr
    # The libraries' warnings that every CPU run used to print (see model.load, run.py)
    assert "loss_type" not in result.stderr and "Setting accelerator" not in result.stderr
    preds = json.loads((tmp_path / "sourdough_sam" / "predictions.json").read_text())
    assert [p["prompt"] for p in preds["predictions"]] == ["Bread is"]
    # The process ends without the interpreter's teardown (cli._exit_without_teardown): the
    # W&B runs must be complete by then, the model artifact and the final metrics included.
    runs = sorted((tmp_path / ".sourdough_sam" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2
    train_log = b"".join(p.read_bytes() for p in runs[1].glob("*.wandb"))
    assert b"model-sourdough_sam" in train_log and b"base_perplexity" in train_log


def snapshot(folder: Path) -> dict[str, str]:
    import hashlib

    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_kill_9_at_prepare_train_or_card_leaves_the_previous_result(tmp_path: Path) -> None:
    """A run killed at any point leaves OUT/<bot>/ as the previous complete result, never a
    mix; the next run takes over the dead run's lock and puts its own result in place."""
    import shutil
    import signal
    import threading

    from tests.helpers.cli import invoke

    run(
        tiny_job(train={"epochs": 1}, wandb={"mode": "disabled"}),
        {"sourdough_sam": FileSource(SAMPLE)},
        tmp_path / "first",
    )
    before = snapshot(tmp_path / "first" / "sourdough_sam")
    # The three runs go at once (each in a copy of the output): a log line says where it is.
    points = {"prepare": "prepare:", "train": "strategy ", "card": "predict:"}
    args = [*TINY_FLAGS, "--seed", "7", "--wandb-mode", "disabled", "--jsonl", str(SAMPLE)]
    command = [sys.executable, "-m", "job", "run", "sourdough_sam", *args]
    procs = {}
    for name in points:
        shutil.copytree(tmp_path / "first", tmp_path / name)
        procs[name] = subprocess.Popen(
            [*command, "--out", str(tmp_path / name)],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )

    def kill_at(name: str) -> None:
        proc = procs[name]
        assert proc.stderr is not None
        for line in proc.stderr:
            if points[name] in line:
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(timeout=300)

    watchers = [threading.Thread(target=kill_at, args=(n,)) for n in points]
    for w in watchers:
        w.start()
    for w in watchers:
        w.join(timeout=300)
    for name, proc in procs.items():
        assert proc.returncode == -signal.SIGKILL, name  # killed, not finished
        assert snapshot(tmp_path / name / "sourdough_sam") == before, name

    again = invoke("run", "sourdough_sam", *args, "--out", str(tmp_path / "card"))
    assert again.returncode == 0, again.stderr
    assert "taking over the lock of pid" in again.stderr
    job = json.loads((tmp_path / "card" / "sourdough_sam" / "job.json").read_text())
    assert job["config"]["train"]["seed"] == 7
    assert snapshot(tmp_path / "card" / "sourdough_sam") != before


def test_a_full_disk_mid_training_leaves_no_half_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC while a checkpoint is being written: the error is transient (another host has
    its own disk), and the scratch space and the half checkpoint are gone, not left to fill
    the disk; the previous result stays."""
    import errno
    import os

    import job.run
    from job.errors import TransientError, classify

    scratch = tmp_path / ".sourdough_sam"

    def full(model, tokenizer, texts, config, workdir, **kwargs):
        half = scratch / "checkpoints" / "checkpoint-4"
        half.mkdir(parents=True)
        (half / "model.safetensors").write_bytes(b"\0" * 1024)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(job.run, "finetune", full)  # as run() calls it
    with pytest.raises(OSError) as info:
        run(tiny_job(wandb={"mode": "disabled"}), {"sourdough_sam": FileSource(SAMPLE)}, tmp_path)
    assert isinstance(classify(info.value), TransientError)
    assert sorted(p.name for p in scratch.iterdir()) == ["checkpoints"]  # no work, no result
    assert list((scratch / "checkpoints").glob("checkpoint-*")) == []
    assert not (tmp_path / "sourdough_sam").exists()


def test_a_german_bot_gets_german_prompts_and_widget(tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    from job.config import START_TEXTS_BY_LANGUAGE

    lines = [json.loads(x) for x in SAMPLE.read_text().splitlines()]
    for i, line in enumerate(lines):
        line["lang"] = "de" if i % 5 else "en"  # mostly German, as the archive's fields say
    path = tmp_path / "de.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    job = tiny_job(path=path, train={"epochs": 1}, wandb={"mode": "disabled"})
    assert "start_texts" not in job.config.sampling.model_fields_set  # the defaults
    result = run(job, {"sourdough_sam": FileSource(path)}, tmp_path / "out")
    german = START_TEXTS_BY_LANGUAGE["de"]
    assert {p.prompt for p in result.predictions} == set(german)
    card = ModelCard.load(result.model_dir / "README.md")
    assert card.data.to_dict()["widget"] == [{"text": german[0]}]
    saved = json.loads((tmp_path / "out" / "sourdough_sam" / "job.json").read_text())
    assert saved["config"]["sampling"]["start_texts"] == german


def test_weights_saved_in_bf16_are_half_the_size_and_load(
    sample_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Written once, in bf16, from the weights in memory: the fp32 file's conversion
    (to_bf16, which ZeRO-3's gathered save still takes) is not called."""
    from safetensors.torch import load_file
    from transformers import pipeline

    from job.outputs import model_folder

    def no_second_write(folder):
        raise AssertionError("the fp32 file was written, read back and written again")

    monkeypatch.setattr(model_folder, "to_bf16", no_second_write)
    out, _ = sample_run
    fp32 = out / "sourdough_sam" / "model" / "model.safetensors"
    job = tiny_job(train={"save_precision": "bf16"}, wandb={"mode": "disabled"})
    result = run(job, {"sourdough_sam": FileSource(SAMPLE)}, tmp_path)
    bf16 = result.model_dir / "model.safetensors"
    assert {str(t.dtype) for t in load_file(bf16).values()} == {"torch.bfloat16"}
    assert set(load_file(bf16)) == set(load_file(fp32))  # the tied output embedding: once
    assert bf16.stat().st_size < 0.55 * fp32.stat().st_size
    generator = pipeline("text-generation", model=str(result.model_dir), device="cpu")
    assert str(generator.model.dtype) == "torch.bfloat16"
    assert generator("Bread is", max_new_tokens=5)[0]["generated_text"].startswith("Bread is")
    assert result.predictions  # sampled before the save's conversion, in training precision


def test_a_bots_rest_plans_the_weights_it_has_still_to_write(tmp_path: Path) -> None:
    """make() stops before the rest (run.py ``Rest``): a full model's weights are on the host,
    not yet in its folder, and what the rest will hold of the host's memory (the task plans
    it, memory.fits_beside) counts them and its Space's export of that many parameters; the
    rest then writes them and makes the bot a lone run makes."""
    from job.data.handles import Handle
    from job.outputs.browser import export_host_bytes
    from job.run import Request, make

    job = tiny_job(train={"epochs": 1}, sampling={"space": "on", "per_prompt": 1})
    out = tmp_path / "out"
    rest = make(Request(job, {Handle("sourdough_sam"): FileSource(SAMPLE)}, out))
    assert rest is not None and rest.weights is not None
    assert not (rest.weights.folder / "model.safetensors").exists()
    params, held = rest.weights.params, rest.weights.bytes
    assert params > 100_000 and rest.host_bytes() == held + export_host_bytes(params)
    made = rest()
    assert (made.model_dir / "model.safetensors").is_file()
    assert (made.model_dir / "onnx").is_dir() and (out / "sourdough_sam" / "space").is_dir()
    assert "save" in made.timings and "space" in made.timings
