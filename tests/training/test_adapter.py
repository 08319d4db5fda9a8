"""Adapter bots (train.adapter: lora): megabytes a bot in the ecosystem's format, loadable by
transformers and peft from the output folder and the Hub, many on one base in a task with the
base left bit-identical."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from job.config import TrainConfig
from job.gpt2 import GPT2
from job.training.memory import GIB
from job.training.plan import ADAPTER_RATE_FACTOR, plan
from tests.helpers import SAMPLE
from tests.helpers.cli import invoke
from tests.helpers.jobs import made_run

# A tiny GPT-2 served on the loopback Hub under a name of its own: a GPT-2 size's name must
# be that size (training/model.py check_shape), and a tiny model is none.
STAND_IN = "stand-ins/tiny-gpt2"

MODEL = pytest.mark.integration  # trains, and loads transformers and peft


def run_adapter(out: Path, *flags: str) -> Path:
    result = invoke(
        "run", "sourdough_sam", "--jsonl", str(SAMPLE), "--epochs", "2", "--adapter", "lora",
        "--wandb-mode", "disabled", "--predictions-per-prompt", "1", "--out", str(out), *flags,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out / "sourdough_sam"


@MODEL
def test_a_tiny_adapter_bot_is_a_few_percent_of_its_base_and_loads_as_the_hub_shows(
    tmp_path: Path,
) -> None:
    from peft import AutoPeftModelForCausalLM
    from transformers import pipeline

    bot = run_adapter(tmp_path, "--base-model", "tiny")
    model = bot / "model"
    assert {p.name for p in model.iterdir()} >= {
        "adapter_model.safetensors", "adapter_config.json", "generation_config.json",
        "tokenizer.json", "README.md",
    }  # fmt: skip
    assert not (model / "model.safetensors").exists()
    adapter, full = (
        (model / "adapter_model.safetensors").stat().st_size,
        (bot / "base" / "model.safetensors").stat().st_size,
    )
    assert adapter < 0.05 * full, (adapter, full)
    config = json.loads((model / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str((bot / "base").resolve())  # outlives scratch
    assert config["r"] == 2 and config["lora_alpha"] == 4  # tiny's width 64: rank 64/32
    card = (model / "README.md").read_text()
    assert "library_name: peft" in card and "LoRA adapter of" in card
    # its size as measured ("a few megabytes" was said of 18 KB), and the prefix to prepend
    from job.outputs.card import size

    assert f": {size(adapter)} that load onto the base" in card and "megabytes" not in card
    assert "does not add <|endoftext|> itself" in card
    job = json.loads((bot / "job.json").read_text())
    assert job["config"]["train"]["adapter"] == "lora" and job["result"]["strategy"] == "ddp"
    generator = pipeline("text-generation", model=str(model))
    assert hasattr(generator.model, "peft_config")  # the adapter, on its base
    assert generator("<|endoftext|>Bread", max_new_tokens=4)[0]["generated_text"]
    merged = AutoPeftModelForCausalLM.from_pretrained(str(model)).merge_and_unload()
    assert type(merged).__name__ == "GPT2LMHeadModel"


@MODEL
def test_an_adapter_saved_in_bf16_is_half_the_bytes_and_is_heard(tmp_path: Path) -> None:
    """save_precision bf16 (an adapter's default, auto) on an adapter bot: its conversion read a
    config.json an adapter's folder has not (FileNotFoundError); now the adapter's own tensors
    are bf16, half those of --save-precision fp32, and it loads."""
    from safetensors.torch import load_file

    half = run_adapter(tmp_path / "bf16", "--base-model", "tiny")  # auto: bf16 for an adapter
    whole = run_adapter(tmp_path / "fp32", "--base-model", "tiny", "--save-precision", "fp32")
    tensors = load_file(half / "model" / "adapter_model.safetensors")
    assert {str(t.dtype) for t in tensors.values()} == {"torch.bfloat16"}
    size = lambda bot: (bot / "model" / "adapter_model.safetensors").stat().st_size  # noqa: E731
    assert size(half) < 0.6 * size(whole)
    heard = invoke("generate", str(half), "--n", "1", "--max-new-tokens", "5", "--seed", "1")
    assert heard.returncode == 0 and heard.stdout.strip(), heard.stderr


@MODEL
def test_a_moved_adapter_bot_is_heard_from_its_own_base(tmp_path: Path) -> None:
    """A bot of a local base names it by the path of the machine that made it; moved (copied
    elsewhere, or mounted into a container), `generate` loads the base kept beside it."""
    import shutil

    made = run_adapter(tmp_path / "made", "--base-model", "tiny")
    named = json.loads((made / "model" / "adapter_config.json").read_text())
    moved = tmp_path / "elsewhere" / "sourdough_sam"
    shutil.move(str(made.parent), str(moved.parent))
    assert not Path(named["base_model_name_or_path"]).exists()  # where it was made: gone
    heard = invoke("generate", str(moved), "--n", "1", "--max-new-tokens", "5", "--seed", "1")
    assert heard.returncode == 0 and heard.stdout.strip(), heard.stderr


@MODEL
def test_an_adapter_of_a_hub_base_names_it_and_loads_from_the_hub(hub, tmp_path: Path) -> None:
    """The base on the loopback Hub (a tiny GPT-2 served as a Hub model, through the
    real from_pretrained download); the bot's adapter then served as its own repo: pipeline()
    takes both from the Hub."""
    from transformers import pipeline

    from job.training.model import build_random

    texts = [json.loads(line)["text"] for line in SAMPLE.read_text().splitlines()]
    hub.serve(STAND_IN, build_random(tmp_path / "gpt2", texts, None, 42))
    bot = run_adapter(tmp_path / "out", "--base-model", STAND_IN, "--learning-rate", "1e-3")
    config = json.loads((bot / "model" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == STAND_IN
    assert not (bot / "base").exists()  # a Hub base is named, not copied
    assert f"base_model: {STAND_IN}" in (bot / "model" / "README.md").read_text()
    hub.serve("huggingtweets/sourdough_sam", bot / "model")
    # as the card says: the adapter's repo holds its tokenizer (no GPT-2 to fall back on here)
    bot_repo = "huggingtweets/sourdough_sam"
    generator = pipeline("text-generation", model=bot_repo, tokenizer=bot_repo)
    assert ", tokenizer=" in (bot / "model" / "README.md").read_text()
    assert hasattr(generator.model, "peft_config")
    assert generator("<|endoftext|>Bread", max_new_tokens=4)[0]["generated_text"]


@MODEL
def test_a_task_of_adapter_bots_keeps_one_base_on_the_device_bit_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three adapter bots and a full fine-tune of the same base in one task: the base is loaded
    once for the adapters, and after each adapter bot it is, bit for bit, the weights on disk;
    the full fine-tune still trains every weight."""
    import torch
    from safetensors.torch import load_file

    from job import task
    from job.training import adapter
    from job.training.model import build_random

    texts = [json.loads(line)["text"] for line in SAMPLE.read_text().splitlines()]
    base = build_random(tmp_path / "base", texts, None, 42)
    on_disk = load_file(base / "model.safetensors")

    def digest(state: dict) -> str:
        h = hashlib.sha256()
        for name in sorted(on_disk):
            h.update(state[name].detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    released: list[tuple[int, str]] = []
    real = adapter.release

    def release(model):
        base_model = real(model)
        released.append((id(base_model), digest(base_model.state_dict())))
        return base_model

    monkeypatch.setattr(adapter, "release", release)
    bots = "".join(
        f"  - users: [{{handle: b{i}, source: jsonl, uri: {tmp_path / f'b{i}.jsonl'}}}]\n"
        for i in range(3)
    )
    for i in range(4):
        rows = [{**json.loads(r), "user": f"b{i}"} for r in SAMPLE.read_text().splitlines()]
        (tmp_path / f"b{i}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        f"version: 1\noutput: {tmp_path / 'out'}\nwandb: {{mode: disabled}}\nbots_per_task: 4\n"
        f"defaults:\n  base_model: {base}\n  train: {{epochs: 1, adapter: lora}}\n"
        f"  sampling: {{per_prompt: 1}}\nbots:\n{bots}"
        f"  - users: [{{handle: b3, source: jsonl, uri: {tmp_path / 'b3.jsonl'}}}]\n"
        "    train: {adapter: none}\n"
    )
    task.run_manifest(str(manifest), index=0)
    expected = digest({k: v for k, v in on_disk.items()})
    assert [d for _, d in released] == [expected] * 3  # the same weights after every bot
    assert len({i for i, _ in released}) == 1  # the same model object: loaded once
    for i in range(3):
        adapter = made_run(tmp_path / "out", f"b{i}") / "model" / "adapter_model.safetensors"
        assert adapter.exists()
    weights = load_file(made_run(tmp_path / "out", "b3") / "model" / "model.safetensors")
    assert not torch.equal(weights["transformer.h.0.attn.c_attn.weight"],
                           on_disk["transformer.h.0.attn.c_attn.weight"])  # fmt: skip


def test_an_adapter_plans_plain_data_parallel_and_fits_gpt2_xl_on_one_24_gb_gpu() -> None:
    from job.errors import BadConfig

    def planned(gpu_gib: float, **config):
        return plan(
            TrainConfig(base_model="gpt2-xl", **config),
            GPT2["gpt2-xl"].arch | {"vocab_size": 50257},
            train_blocks=2000,
            world=1,
            gpu_bytes=int(gpu_gib * GIB),
            host_bytes=512 * GIB,
            bf16_supported=gpu_gib > 0,
        )

    full, lora = planned(24), planned(24, adapter="lora")
    assert full.strategy == "zero2-offload" and lora.strategy == "ddp"
    assert "no optimizer state" in lora.choice.reason
    assert lora.learning_rate == pytest.approx(full.learning_rate * ADAPTER_RATE_FACTOR)
    with pytest.raises(BadConfig, match="ZeRO partitions the optimizer state"):
        planned(24, adapter="lora", strategy="zero3")
    with pytest.raises(BadConfig, match="with an adapter need"):
        planned(8, adapter="lora")  # 6 GB of base and the activations: not on 8 GB


def test_an_adapter_of_a_base_the_hub_lacks_is_not_pushed(tmp_path: Path) -> None:
    """The Hub loads an adapter's base by the name adapter_config.json gives: a tiny base or a
    local folder is no name it knows. The manifest is refused before any work."""
    from job import errors
    from tests.helpers.cli import one_line

    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        f"version: 1\noutput: {tmp_path / 'out'}\nwandb: {{mode: disabled}}\n"
        "hub: {push: true, owner: huggingtweets, contact: takedown@example.org}\n"
        "defaults: {base_model: tiny, train: {adapter: lora}}\n"
        f"bots:\n  - users: [{{handle: sam, source: jsonl, uri: {SAMPLE}}}]\n"
    )
    line = one_line(invoke("run", "--manifest", str(manifest)), errors.BAD_CONFIG)
    assert "an adapter is published with the Hub id of its base" in line
    assert not (tmp_path / "out").exists()


def test_publish_refuses_an_adapter_whose_base_the_hub_lacks(hub, tmp_path: Path) -> None:
    """A stored adapter run of a local base (a tiny one, or a folder) pushed with `publish`:
    refused with one line and exit 10 before any call to the Hub; the status is unchanged."""
    from job import errors
    from job.cloud.runs import upload_run
    from job.cloud.status import HubStatus, write_status
    from job.storage import open_storage
    from tests.helpers import get_json
    from tests.helpers.cli import one_line

    storage = open_storage(str(tmp_path / "out"))
    for bot, base in (("sam", str(tmp_path / "out" / "sam" / "base")), ("kim", "./my-gpt2")):
        run = tmp_path / bot
        (run / "model").mkdir(parents=True)
        (run / "model" / "README.md").write_text("---\ntags: [x]\n---\ncard\n")
        (run / "model" / "adapter_model.safetensors").write_bytes(b"w")
        (run / "model" / "adapter_config.json").write_text(
            json.dumps({"base_model_name_or_path": base, "peft_type": "LORA"})
        )
        (run / "data").mkdir()
        for name in ("predictions.json", "job.json", "data/stats.json", "data/clean.jsonl"):
            (run / name).write_text("{}")
        upload_run(storage, bot, "20261201T120000123456Z-abcdef12", run, "fp")
        write_status(storage, bot, "succeeded", hub=HubStatus(repo=f"huggingtweets/{bot}"))
        hub.state.requests.clear()
        result = invoke("publish", bot, "--output", str(tmp_path / "out"))
        line = one_line(result, errors.BAD_CONFIG)
        assert f"an adapter of {base!r}, which is no Hub model" in line
        assert hub.state.requests == [] and hub.state.commits == []
        assert get_json(storage, f"{bot}/status.json")["hub"]["state"] != "failed"


@MODEL
def test_an_adapter_bot_with_its_merged_copy_is_pushed_to_two_repos_and_taken_down_from_both(
    hub, tmp_path: Path
) -> None:
    """``--lora-merged``: beside the adapter, the base with the adapter added, a full model that
    loads alone from the Hub and generates what base + adapter generate; `publish` pushed it to
    <repo>-merged and recorded that repo, so a takedown removes both."""
    import torch
    from peft import AutoPeftModelForCausalLM
    from safetensors.torch import load, load_file
    from transformers import AutoModelForCausalLM

    from job.outputs.card import inert
    from job.storage import open_storage
    from job.training.model import build_random
    from tests.helpers import get_json

    texts = [json.loads(line)["text"] for line in SAMPLE.read_text().splitlines()]
    hub.serve(STAND_IN, build_random(tmp_path / "gpt2", texts, None, 42))
    out = tmp_path / "out"
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        f"version: 1\noutput: {out}\nwandb: {{mode: disabled}}\n"
        "hub: {push: true, owner: huggingtweets, contact: takedown@example.org}\n"
        f"defaults: {{base_model: {STAND_IN}, train: {{epochs: 2, learning_rate: 0.001,"
        " adapter: lora, lora_merged: true}, sampling: {per_prompt: 1}}\n"
        f"bots:\n  - users: [{{handle: sourdough_sam, source: jsonl, uri: {SAMPLE}}}]\n"
    )
    result = invoke("run", "--manifest", str(manifest))
    assert result.returncode == 0, result.stderr
    assert set(hub.state.repos) >= {
        "huggingtweets/sourdough_sam",
        "huggingtweets/sourdough_sam-merged",
    }
    merged_files = hub.state.files("huggingtweets/sourdough_sam-merged")
    assert "model.safetensors" in merged_files and "adapter_config.json" not in merged_files
    base_names = set(load_file(tmp_path / "gpt2" / "model.safetensors"))
    assert set(load(merged_files["model.safetensors"])) == base_names  # tied: saved once
    card = merged_files["README.md"].decode()
    assert inert("huggingtweets/sourdough_sam merged into its base") in card  # names the adapter
    assert "library_name: transformers" in card and "huggingtweets/sourdough_sam-merged" in card
    assert (
        inert("huggingtweets/sourdough_sam-merged")
        in hub.state.files("huggingtweets/sourdough_sam")["README.md"].decode()
    )
    status = get_json(open_storage(str(out)), "sourdough_sam/status.json")
    assert status["hub"]["repos"] == [
        "huggingtweets/sourdough_sam",
        "huggingtweets/sourdough_sam-merged",
    ]

    merged = AutoModelForCausalLM.from_pretrained("huggingtweets/sourdough_sam-merged")  # no peft
    assert not hasattr(merged, "peft_config")
    adapted = AutoPeftModelForCausalLM.from_pretrained("huggingtweets/sourdough_sam")
    ids = torch.tensor([[50256 % merged.config.vocab_size, 5, 9, 14]])
    torch.testing.assert_close(merged(ids).logits, adapted(input_ids=ids).logits)
    assert not torch.equal(  # and the adapter did change something
        merged(ids).logits,
        AutoModelForCausalLM.from_pretrained(STAND_IN)(ids).logits,
    )

    result = invoke("takedown", "sourdough_sam", "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert "deleted huggingtweets/sourdough_sam-merged" in result.stdout
    assert not {"huggingtweets/sourdough_sam", "huggingtweets/sourdough_sam-merged"} & set(
        hub.state.repos
    )


def test_lora_merged_needs_an_adapter_and_a_repo_name_with_room_for_its_suffix(
    tmp_path: Path,
) -> None:
    from job import errors
    from tests.helpers.cli import one_line

    line = one_line(
        invoke("run", "sam", "--jsonl", str(SAMPLE), "--base-model", "tiny", "--lora-merged",
               "--out", str(tmp_path)),
        errors.BAD_CONFIG,
    )  # fmt: skip
    assert "--lora-merged merges an adapter into its base: it needs --adapter lora" in line
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        f"version: 1\noutput: {tmp_path / 'out'}\nwandb: {{mode: disabled}}\n"
        "hub: {push: true, owner: huggingtweets, contact: takedown@example.org}\n"
        "defaults: {base_model: gpt2, train: {adapter: lora, lora_merged: true}}\n"
        f"bots:\n  - hub_repo: huggingtweets/{'s' * 96}\n"
        f"    users: [{{handle: sam, source: jsonl, uri: {SAMPLE}}}]\n"
    )
    line = one_line(invoke("run", "--manifest", str(manifest)), errors.BAD_CONFIG)
    assert "the merged copy's repo (<repo>-merged)" in line
    assert not (tmp_path / "out").exists()
