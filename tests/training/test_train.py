"""Fine-tuning's own logic: the strategy on CPU, the loss measurement, the result."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from job.config import TrainConfig
from job.training.model import build_random, load
from job.training.train import ORIGINAL_RATE, TrainResult, learning_rate, mean_loss, pick_strategy

HOST = 64 * 2**30  # bytes of host memory: enough for anything these tests pick

# Loads transformers and builds models through it: ~5 s of imports, so not the unit tier.
MODEL = pytest.mark.integration


def test_cpu_trains_plain_data_parallel() -> None:
    choice = pick_strategy(TrainConfig(base_model="gpt2-xl"), {}, 256, 0, 0, HOST)
    assert choice.strategy == "ddp" and "no GPU" in choice.reason
    asked = pick_strategy(TrainConfig(base_model="gpt2", strategy="zero3"), {}, 256, 0, 0, HOST)
    assert (asked.strategy, asked.reason) == ("zero3", "asked for")


@MODEL
def test_mean_loss_is_the_models_own_loss(tmp_path: Path) -> None:
    import torch

    texts = ["bread is good and rye is better"] * 50
    model, _ = load(str(build_random(tmp_path / "m", texts, None, seed=0)), device="cpu")
    blocks = torch.randint(0, 100, (5, 16))
    model.eval()
    with torch.no_grad():
        expected = float(model(input_ids=blocks, labels=blocks).loss)
    model.train()
    assert mean_loss(model, blocks, batch_size=2) == pytest.approx(expected, rel=1e-5)
    assert model.training  # measured in eval mode, then put back as it was
    assert math.isnan(mean_loss(model, blocks[:0], batch_size=2))


def test_result_reports_both_perplexities() -> None:
    result = TrainResult(
        base_val_loss=2.0,
        val_loss=1.0,
        train_loss=1.2,
        steps=10,
        train_tokens=1000,
        block_size=128,
        seconds=2.0,
        tokens_per_second=500.0,
        precision="fp32",
        device="cpu",
    )
    summary = result.summary()
    assert summary["perplexity"] == pytest.approx(math.e)
    assert summary["base_perplexity"] == pytest.approx(math.e**2)
    assert summary["steps"] == 10 and summary["strategy"] == "ddp"


def test_the_default_rate_is_the_originals_scaled_to_the_tokens_per_step() -> None:
    # The original: batch 1 of one 1024-token block at 1.372e-4. gpt2 here: 8 blocks of 256,
    # twice the tokens per step; tiny: 8 blocks of its whole 128-token context, eight times.
    assert learning_rate(TrainConfig(), 8 * 256, 1024) == pytest.approx(2 * ORIGINAL_RATE)
    assert learning_rate(TrainConfig(), 8 * 128, 128) == pytest.approx(8 * ORIGINAL_RATE)
    assert learning_rate(TrainConfig(), 1024, 1024) == pytest.approx(ORIGINAL_RATE)
    assert learning_rate(TrainConfig(learning_rate=3e-5), 8 * 256, 1024) == 3e-5  # given wins


@MODEL
def test_compile_trains_and_keeps_its_caches_on_hf_home(tmp_path: Path) -> None:
    """--compile on the CPU (slow: ~1 min to compile the tiny model, never worth it here, but
    the same code path as on a GPU): it trains, and Inductor's compiled graphs land under
    HF_HOME, where the next task of a fleet finds them."""
    import json
    import os
    import subprocess
    import sys

    from tests.helpers import REPO, SAMPLE

    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "WANDB_MODE": "disabled"}
    for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        env.pop(name, None)
    done = subprocess.run(
        [
            *(sys.executable, "-m", "job", "run", "sourdough_sam", "--jsonl", str(SAMPLE)),
            *("--base-model", "tiny", "--epochs", "1", "--compile", "--out", str(tmp_path / "o")),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    job = json.loads((tmp_path / "o" / "sourdough_sam" / "job.json").read_text())
    assert job["config"]["train"]["compile"] is True
    assert job["result"]["val_loss"] < job["result"]["base_val_loss"]  # it learned
    graphs = list((tmp_path / "hf" / "torchinductor").rglob("*"))
    assert any(p.is_file() for p in graphs), "no compiled graph cached under HF_HOME"
