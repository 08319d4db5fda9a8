"""Fine-tuning's own logic: the strategy on CPU, the loss measurement, the
result."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest

from job.config import TrainConfig
from job.gpt2 import GPT2
from job.training.model import build_random, load
from job.training.plan import (
    pick_strategy,
)
from job.training.train import TrainResult, mean_loss

HOST = 64 * 2**30  # bytes of host memory: enough for anything these tests pick

# Loads transformers and builds models through it: ~5 s of imports, so not the unit tier.
MODEL = pytest.mark.integration


def sample_model(folder: Path, device: str = "cpu") -> tuple[list[str], Any, Any]:
    """Our sample's tweets, and a tiny random model with its tokenizer built on them."""
    import json

    from tests.helpers import SAMPLE

    texts = [json.loads(line)["text"] for line in SAMPLE.read_text().splitlines()]
    return texts, *load(str(build_random(folder, texts, None, seed=0)), device=device)


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
    assert job["config"]["train"]["compile"] is True and job["result"]["compiled"] is True
    assert "torch.compile on: asked for" in done.stderr
    assert job["result"]["val_loss"] < job["result"]["base_val_loss"]  # it learned
    graphs = list((tmp_path / "hf" / "torchinductor").rglob("*"))
    assert any(p.is_file() for p in graphs), "no compiled graph cached under HF_HOME"


@MODEL
def test_compile_is_regional_one_block_for_all(tmp_path: Path, monkeypatch) -> None:
    """The Trainer's torch_compile goes through accelerate, which compiles each repeated block
    (one graph serves GPT-2's alike blocks) once compile_caches() has asked for it; the
    caches go under HF_HOME."""
    from accelerate.utils import TorchDynamoPlugin

    from job.training.train import compile_caches

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for name in (
        "TORCHINDUCTOR_CACHE_DIR",
        "TRITON_CACHE_DIR",
        "ACCELERATE_DYNAMO_USE_REGIONAL_COMPILATION",
    ):
        monkeypatch.delenv(name, raising=False)
    assert TorchDynamoPlugin(backend="inductor").use_regional_compilation is False
    compile_caches()
    assert TorchDynamoPlugin(backend="inductor").use_regional_compilation is True
    assert Path(os.environ["TORCHINDUCTOR_CACHE_DIR"]).is_relative_to(tmp_path / "hf")


def test_a_resumed_run_keeps_its_checkpoints_batch(tmp_path: Path) -> None:
    """A retry on another GPU would size another batch; the checkpoint's wins, so the Trainer
    skips the blocks it trained and keeps its schedule."""
    import json

    from job.training.checkpoints import MARKER

    checkpoint = tmp_path / "checkpoint-40"
    checkpoint.mkdir()
    (checkpoint / MARKER).write_text(json.dumps({"step": 40, "fingerprint": "f", "batch_size": 32}))
    from job.training.checkpoints import Checkpoints
    from job.training.plan import plan

    def planned(config: TrainConfig, kept: int | None):  # on the CPU, which would take 8
        return plan(
            config,
            GPT2["gpt2"].arch | {"vocab_size": 50257},
            train_blocks=1000,
            world=1,
            gpu_bytes=0,
            host_bytes=HOST,
            bf16_supported=False,
            resumed_batch=kept,
        )

    kept = Checkpoints.batch_of(checkpoint)
    assert kept == 32
    run = planned(TrainConfig(), kept)
    assert (
        run.batch == 32 and "checkpoint" in run.batch_reason and "would take 8" in run.batch_reason
    )
    assert planned(TrainConfig(), 8).batch_reason == "no GPU"  # the same: nothing to keep
    # asked for: it is in the fingerprint, so the checkpoint had it too
    assert planned(TrainConfig(batch_size=8), kept).batch == 8
    (checkpoint / MARKER).write_text(json.dumps({"step": 40, "fingerprint": "f"}))  # older
    assert planned(TrainConfig(), Checkpoints.batch_of(checkpoint)).batch == 8


@MODEL
def test_a_training_step_reads_nothing_back_to_the_host_unless_it_logs(tmp_path: Path) -> None:
    """On a GPU every read of a tensor's value on the host (``.item()``, ``float()``, ``bool()``)
    waits for every queued kernel: the CPU stops running ahead. The steps between two logged
    ones must read nothing back: no nan/inf check of the loss, no per-step agreement on
    checkpoints or SIGTERM. Seen on the CPU as the op every such read goes through. On a GPU
    (bench/gpu_fast_paths.sh runs this test there) CUDA's own count too: a blocking copy to
    the device, any other call that waits for the queue."""
    import itertools
    import traceback
    import warnings

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from job.training.checkpoints import Checkpoints
    from job.training.train import finetune

    def counted() -> bool:
        # Not counted: the data loader's seed for each epoch, drawn from a CPU generator (no
        # sync on any device), and the steady clock's two deliberate syncs (clock.py).
        frames = traceback.extract_stack()
        return not any(
            "torch/utils/data/" in f.filename or f.filename.endswith("training/clock.py")
            for f in frames
        )

    class Reads(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None):
            if func is torch.ops.aten._local_scalar_dense.default and counted():
                self.count += 1
            return func(*args, **(kwargs or {}))

    reads = Reads()

    def on_warning(message: Any, *args: Any, **kw: Any) -> None:
        if "synchroniz" in str(message) and counted():  # torch.cuda.set_sync_debug_mode's
            reads.count += 1

    cuda = torch.cuda.is_available()
    texts, model, tokenizer = sample_model(tmp_path / "m", "cuda" if cuda else "cpu")
    model.config.pad_token_id = tokenizer.eos_token_id  # as many GPT-2 fine-tunes' configs say
    config = TrainConfig(base_model="tiny", epochs=8, batch_size=2)
    marks: list[tuple[str, int, int]] = []
    with reads, warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = on_warning
        if cuda:
            torch.cuda.set_sync_debug_mode("warn")
        try:
            result, _ = finetune(
                model,
                tokenizer,
                texts,
                config,
                tmp_path,
                on_log=lambda logs, step: marks.append(("log", step, reads.count)),
                on_step=lambda step, total: marks.append(("step", step, reads.count)),
                checkpoints=Checkpoints(tmp_path / "checkpoints", "f"),
            )
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode(0)
    steps = [(i, step, count) for i, (kind, step, count) in enumerate(marks) if kind == "step"]
    assert len(steps) == result.steps >= 20
    quiet = [
        (step, count - before)
        for (i0, _, before), (i1, step, count) in itertools.pairwise(steps)
        if all(kind == "step" for kind, _, _ in marks[i0 + 1 : i1])  # no log in between
    ]
    assert len(quiet) >= result.steps // 2, marks  # most steps log nothing
    assert [r for r in quiet if r[1]] == [], "steps that read a value back to the host"
    assert any(kind == "log" for kind, _, _ in marks) and reads.count > 0  # the probe sees reads
    assert model.config.pad_token_id == tokenizer.eos_token_id  # given back for sampling


@MODEL
def test_the_flop_count_walks_the_model_once_not_every_step(tmp_path: Path) -> None:
    """The Trainer counts FLOPs every step; ``num_parameters`` walks every module and parameter
    to do it (host time a GPU's step waits for), so the job counts the parameters once."""
    from job.training.train import finetune

    texts, model, tokenizer = sample_model(tmp_path / "m")
    count = model.num_parameters
    calls: list[bool] = []

    def counted(*args: Any, **kw: Any) -> int:
        calls.append(True)
        return count(*args, **kw)

    model.num_parameters = counted  # type: ignore[method-assign]
    config = TrainConfig(base_model="tiny", epochs=2, batch_size=4)
    result, trainer = finetune(model, tokenizer, texts, config, tmp_path)
    assert result.steps >= 10 and len(calls) == 1
    # the same count the Trainer's own would give: 6 x tokens x non-embedding parameters
    params = count(exclude_embeddings=True)
    assert trainer.state.total_flos == 6 * result.train_tokens * config.epochs * params
    # and what a step does beside: no hunt for unused parameters under DDP, a log (a read
    # back to the host) at most every LOG_EVERY steps
    from job.training.train import LOG_EVERY

    assert trainer.args.ddp_find_unused_parameters is False and trainer.args.ddp_bucket_cap_mb
    assert trainer.args.logging_steps >= LOG_EVERY and result.steps < 20 * LOG_EVERY


@MODEL
def test_after_training_the_model_runs_in_the_precision_it_was_loaded_in(tmp_path: Path) -> None:
    """bf16 mixed precision (here on the CPU, as a GPU run has it): the Trainer's model carries
    accelerate's autocast wrapper while it trains, and none after, so its logits are fp32
    and equal to a plain fp32 forward's."""
    import torch
    from transformers import Trainer, TrainingArguments

    from job.training.blocks import BlockDataset
    from job.training.train import without_autocast

    _, model, _ = sample_model(tmp_path / "m")
    args = TrainingArguments(
        output_dir=str(tmp_path / "t"), bf16=True, use_cpu=True, max_steps=1, report_to="none"
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=BlockDataset(torch.randint(0, 100, (4, 16)))
    )
    trainer.train()
    ids = torch.randint(0, 100, (2, 16))
    model.eval()
    with torch.no_grad():
        wrapped = model(input_ids=ids).logits
        assert "_original_forward" in model.__dict__  # what training leaves: autocast
        without_autocast(trainer)
        assert "_original_forward" not in model.__dict__
        plain = model(input_ids=ids).logits
        with torch.autocast("cpu", enabled=False):
            reference = type(model).forward(model, input_ids=ids).logits
    assert plain.dtype == torch.float32 and torch.equal(plain, reference)
    assert not torch.equal(wrapped, reference)  # bf16's logits were not the model's own
    assert all(p.dtype == torch.float32 for p in model.parameters())
