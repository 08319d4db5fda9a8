"""A task's adapter bots trained as a pack (training/packs.py, run.run_pack, task.packs): each
bot's result is a lone adapter bot's (its folder, card, record), within 2% held-out perplexity
of the same bot trained alone, and a pack that mixed bots' gradients would be caught; SIGTERM
checkpoints every bot and the rerun finishes each as if never stopped; a bot whose loss stops
being finite leaves with its own code while the others go on."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest

from job import errors
from tests.helpers import SAMPLE
from tests.helpers.cli import invoke
from tests.helpers.jobs import made_run

pytestmark = pytest.mark.integration  # trains


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in base folder: the same base for every bot (a tiny base is each bot's own)."""
    from job.training.model import build_random

    texts = [json.loads(line)["text"] for line in SAMPLE.read_text().splitlines()]
    return build_random(tmp_path_factory.mktemp("base"), texts, None, 42)


def manifest(
    tmp: Path,
    base: Path,
    name: str,
    train: str = "",
    bots: int = 2,
    epochs: int = 6,
    pack: bool = True,
) -> Path:
    """``bots`` bots of distinct tweets (the sample as it is; its words in capitals; reversed)
    in one task, adapters of ``base``, packed unless ``pack`` is off."""
    rows = [json.loads(r) for r in SAMPLE.read_text().splitlines()]
    shapes = [lambda t: t, str.upper, lambda t: " ".join(reversed(t.split()))]
    listed = ""
    for i in range(bots):
        tweets = tmp / f"b{i}.jsonl"
        tweets.write_text("".join(
            json.dumps({**r, "user": f"b{i}", "text": shapes[i](r["text"])}) + "\n" for r in rows
        ))  # fmt: skip
        listed += f"  - users: [{{handle: b{i}, source: jsonl, uri: {tweets}}}]\n"
    path = tmp / f"{name}.yaml"
    path.write_text(
        f"version: 1\noutput: {tmp / name}\nwandb: {{mode: disabled}}\nbots_per_task: {bots}\n"
        f"defaults:\n  base_model: {base}\n"
        f"  train: {{epochs: {epochs}, adapter: lora, learning_rate: 3e-3,"
        f" pack: {str(pack).lower()}{train}}}\n"
        f"  sampling: {{per_prompt: 1}}\nbots:\n{listed}"
    )
    return path


def result(out: Path, bot: str) -> dict:
    return json.loads((made_run(out, bot) / "job.json").read_text())["result"]


def test_packed_bots_are_lone_adapter_bots_and_mixed_gradients_would_show(
    base: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.torch import load_file

    from job import task
    from job.training import packed

    caplog.set_level(logging.INFO)
    task.run_manifest(str(manifest(tmp_path, base, "packed")), index=0)
    assert "pack of 2 adapter bots" in caplog.text and "packs of up to 2" not in caplog.text
    assert "packs of up to" in caplog.text  # the plan, with its reason
    task.run_manifest(str(manifest(tmp_path, base, "alone", pack=False)), index=0)

    for bot in ("b0", "b1"):
        together, alone = result(tmp_path / "packed", bot), result(tmp_path / "alone", bot)
        assert together["strategy"] == "packed" and together["packed_with"] == 1
        assert alone["strategy"] == "ddp" and alone["packed_with"] == 0
        assert together["steps"] == alone["steps"]  # its own epochs and steps
        # training moved it: a perplexity within 2% of its lone one is a claim about training
        assert together["perplexity"] < 0.95 * together["base_perplexity"]
        assert together["perplexity"] == pytest.approx(alone["perplexity"], rel=0.02), bot
        # the same outputs as a lone adapter bot's: folder, card, predictions, record
        ours, theirs = made_run(tmp_path / "packed", bot), made_run(tmp_path / "alone", bot)
        assert {p.name for p in (ours / "model").iterdir()} == {
            p.name for p in (theirs / "model").iterdir()
        }
        assert {p.name for p in ours.iterdir()} == {p.name for p in theirs.iterdir()}
        tensors = load_file(ours / "model" / "adapter_model.safetensors")
        assert {str(t.dtype) for t in tensors.values()} == {"torch.bfloat16"}  # auto: bf16
        assert "LoRA adapter of" in (ours / "model" / "README.md").read_text()
        status = json.loads((tmp_path / "packed" / bot / "status.json").read_text())
        assert status["state"] == "succeeded"

    # The test can fail: a pack whose routing sends each bot's rows through the other's
    # adapter trains each on the other's tweets, and a bot's perplexity leaves its own.
    real = packed.rows_of

    def crossed(routes, device):
        return real([(r + 1) % 2 for r in routes], device)  # the pack's two bots, swapped

    monkeypatch.setattr(packed, "rows_of", crossed)
    task.run_manifest(str(manifest(tmp_path, base, "crossed")), index=0)
    alone = {b: result(tmp_path / "alone", b)["perplexity"] for b in ("b0", "b1")}
    drift = [abs(result(tmp_path / "crossed", b)["perplexity"] / alone[b] - 1) for b in alone]
    assert max(drift) > 0.02, drift


def test_a_bot_whose_loss_is_not_finite_leaves_the_pack_with_its_own_code(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bot b1's adapter made NaN (what a diverged bf16 run reaches): it fails with exit 10 and
    its record says why; b0 trains on in the same pack and is published."""
    import torch

    from job import task
    from job.training import packed

    real = packed.Pack.init

    def init(self, bot: int, seed: int) -> None:
        real(self, bot, seed)
        if bot == 1:
            with torch.no_grad():
                self.data[bot].fill_(float("nan"))

    monkeypatch.setattr(packed.Pack, "init", init)
    with pytest.raises(errors.BadConfig, match="b1: training diverged"):
        task.run_manifest(str(manifest(tmp_path, base, "out")), index=0)
    good = result(tmp_path / "out", "b0")
    assert good["perplexity"] < good["base_perplexity"] and good["packed_with"] == 1
    status = json.loads((tmp_path / "out" / "b1" / "status.json").read_text())
    assert status["state"] == "failed" and "diverged" in status["reason"]
    assert not (tmp_path / "out" / "b1" / "latest.json").exists()


def test_sigterm_checkpoints_every_bot_and_the_rerun_makes_what_the_run_would_have(
    base: Path, tmp_path: Path
) -> None:
    """Three bots of different lengths in a pack, a checkpoint every 2 steps; SIGTERM mid-run:
    exit 75, each bot's record failed, each bot's checkpoint at its own step. The rerun
    resumes each from it and ends with the losses of a run never stopped."""
    train = ", checkpoint_every: 2"
    path = manifest(tmp_path, base, "stopped", train, bots=3, epochs=12)
    out = tmp_path / "stopped"
    proc = subprocess.Popen(
        [sys.executable, "-m", "job", "run", "--manifest", str(path), "--index", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not any((out / "b2" / "checkpoints").glob("checkpoint-*/_COMPLETE")):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint"
        time.sleep(0.05)
    proc.terminate()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == errors.TRANSIENT, err[-3000:]
    assert "stopped by SIGTERM" in err
    stopped = {}
    for bot in ("b0", "b1", "b2"):
        status = json.loads((out / bot / "status.json").read_text())
        assert status["state"] == "failed" and "SIGTERM" in status["reason"], status
        steps = [int(p.parent.name.split("-")[1])
                 for p in (out / bot / "checkpoints").glob("checkpoint-*/_COMPLETE")]  # fmt: skip
        stopped[bot] = max(steps)

    rerun = invoke("run", "--manifest", str(path), "--index", "0")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    ref_path = manifest(tmp_path, base, "never", train, bots=3, epochs=12)
    assert invoke("run", "--manifest", str(ref_path), "--index", "0").returncode == 0
    for bot in ("b0", "b1", "b2"):
        resumed, never = result(out, bot), result(tmp_path / "never", bot)
        assert resumed["resumed_from_step"] == stopped[bot] > 0
        assert resumed["steps"] == never["steps"]
        assert resumed["val_loss"] == pytest.approx(never["val_loss"], rel=1e-5), bot
        assert not list((out / bot / "checkpoints").glob("*"))  # done: cleared


def test_packs_group_the_bots_that_share_a_base_and_an_adapter_shape(tmp_path: Path) -> None:
    """A full bot, a tiny base (built from each bot's own tweets), pack off, another rank and
    LoRA dropout train alone; the rest, packed by default, are grouped by base."""
    from job import task
    from job.spec import jobs, load_manifest

    folder = tmp_path / "base"
    folder.mkdir()
    rows = "".join(
        f"  - users: [{{handle: u{i}, source: jsonl, uri: {SAMPLE}}}]\n    train: {t}\n"
        for i, t in enumerate(
            [
                "{adapter: lora}",
                "{adapter: lora}",
                "{adapter: none}",
                "{adapter: lora, pack: false}",
                "{adapter: lora, lora_rank: 4}",
                "{adapter: lora, lora_dropout: 0.1}",
                "{adapter: lora}",
                "{adapter: lora, base_model: tiny}",
                "{adapter: lora, pack: true}",
            ]
        )
    )
    path = tmp_path / "m.yaml"
    path.write_text(
        f"version: 1\noutput: {tmp_path / 'out'}\nbots_per_task: 9\n"
        f"defaults: {{base_model: gpt2}}\nbots:\n{rows}"
    )
    units = task.packs(jobs(load_manifest(str(path), resolve=False), None))
    assert [[j.bot for j in u] for u in units] == [
        ["u0", "u1", "u6", "u8"], ["u2"], ["u3"], ["u4"], ["u5"], ["u7"]
    ]  # fmt: skip


def test_a_pack_holds_what_the_memory_plan_allows() -> None:
    from job.gpt2 import GPT2
    from job.training.packs import PACK_MAX, pack_size

    xl = GPT2["gpt2-xl"]
    base = xl.params * 2  # bf16
    gib = 2**30
    # gpt2-xl, 8 k tokens a bot: ~24 GiB of activations and logits a bot
    size, why = pack_size(xl, 50257, 8192, True, 80 * gib, base)
    assert size == 2 and "GiB free" in why
    small, _ = pack_size(xl, 50257, 2048, True, 80 * gib, base)
    assert small > 2 * size  # a quarter of the tokens a bot: more than twice the bots fit
    assert pack_size(xl, 50257, 8192, True, 8 * gib, base)[0] == 1  # never none
    tiny, why = pack_size(GPT2["gpt2"], 50257, 1024, False, 1024 * gib, 0)
    assert tiny == PACK_MAX and f"at most {PACK_MAX}" in why
