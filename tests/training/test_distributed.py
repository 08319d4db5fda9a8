"""Several processes and interruptions: ZeRO-2/3 over gloo on CPU, SIGTERM and resume; and the
rank variables of a plain process (unit tier)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest

from job import errors
from job.storage import open_storage
from tests.helpers import SAMPLE, get_json
from tests.helpers.cli import invoke
from tests.helpers.jobs import TINY_FLAGS, TINY_MANIFEST, made_run

# The tiny job; each test says how many epochs (the last --epochs given wins).
JOB = ["run", "sourdough_sam", "--jsonl", str(SAMPLE), *TINY_FLAGS]


def env(**extra: str) -> dict[str, str]:
    # Pretend to be one CPU-only process no matter what launched the tests.
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    return {**base, "WANDB_MODE": "offline", **extra}


@pytest.mark.integration
def test_zero3_in_two_processes_saves_a_whole_model(tmp_path: Path, unused_port: int) -> None:
    # ZeRO-3 is the hard case: each rank holds half of every weight until the save gathers
    # them. ZeRO-2 keeps whole weights; one process covers it (below).
    strategy = "zero3"
    from transformers import pipeline

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            f"--master_port={unused_port}",
            "-m",
            "job",
            *JOB,  # one epoch (TINY_FLAGS): the partitioned save is what is tested, not its length
            "--strategy",
            strategy,
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env(),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"({strategy})" in result.stdout and result.stdout.count("done ") == 1  # rank 0 only
    job = json.loads((tmp_path / "sourdough_sam" / "job.json").read_text())
    assert job["result"]["strategy"] == strategy and job["result"]["processes"] == 2
    assert job["result"]["val_loss"] < job["result"]["base_val_loss"]
    model_dir = tmp_path / "sourdough_sam" / "model"
    generator = pipeline("text-generation", model=str(model_dir), device="cpu")
    weights = generator.model.transformer.h[0].attn.c_attn.weight
    assert weights.shape == (64, 192) and float(weights.detach().abs().sum()) > 0  # not empty
    assert generator("Bread is", max_new_tokens=5)[0]["generated_text"].startswith("Bread is")


ZERO = ("zero2", "zero3", "zero2-offload", "zero3-offload")


@pytest.mark.integration
def test_a_task_of_every_zero_strategy_in_one_plain_process(tmp_path: Path) -> None:
    """No launcher and no rank variables: DeepSpeed went looking for MPI and died (issue 14).
    One bot of each ZeRO strategy, one after another in one task, as a task of mixed sizes
    has them (zero2-offload on one GPU is what `auto` picks for gpt2-xl on a 24 GB card)."""
    from safetensors.torch import load_file

    listed = ""
    for strategy in ZERO:
        handle = strategy.replace("-", "_")  # a bot named for its strategy
        tweets = tmp_path / f"{handle}.jsonl"
        tweets.write_text("".join(
            json.dumps({**json.loads(row), "user": handle}) + "\n"
            for row in SAMPLE.read_text().splitlines()
        ))  # fmt: skip
        # ZeRO-3's weights in memory are partitioned: its browser graph must be the saved model's
        space = "\n    sampling: {space: 'on'}" if strategy == "zero3" else ""
        listed += (
            f"  - users: [{{handle: {handle}, source: jsonl, uri: {tweets}}}]\n"
            f"    train: {{strategy: {strategy}}}{space}\n"
        )
    manifest = tmp_path / "zero.yaml"
    manifest.write_text(
        f"version: 1\noutput: {tmp_path / 'out'}\nwandb: {{mode: offline}}\n"
        f"bots_per_task: {len(ZERO)}{TINY_MANIFEST}bots:\n{listed}"
    )
    ops = tmp_path / "torch-extensions"  # where DeepSpeed would compile an op
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "job", "run", "--manifest", str(manifest), "--index", "0"],
        capture_output=True,
        text=True,
        env=env(TORCH_EXTENSIONS_DIR=str(ops), TMPDIR=str(temporary)),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # Each bot's temporary folder went with it, the process's W&B service's at its exit: the
    # service, which lives across the bots, wrote in the first bot's after it was removed
    assert sorted(p.name for p in temporary.iterdir()) == []
    # DeepSpeed's backend compiles no op for training: its CPU all-reduce op is inference's
    assert not ops.exists() and "built successfully" not in result.stdout + result.stderr
    for strategy in ZERO:
        made = made_run(tmp_path / "out", strategy.replace("-", "_"))
        job = json.loads((made / "job.json").read_text())
        assert job["result"]["strategy"] == strategy and job["result"]["processes"] == 1
        tensors = load_file(made / "model" / "model.safetensors")
        empty = [name for name, t in tensors.items() if not t.abs().sum() > 0]
        assert len(tensors) > 20 and not empty  # ZeRO-3 saving its empty shards shows as zeros
        if strategy == "zero3":
            graph = made / "model" / "onnx" / "model_quantized.onnx"
            assert_graph_is_the_models(made / "model", graph)
        assert job["result"]["val_loss"] < job["result"]["base_val_loss"], strategy


def assert_graph_is_the_models(model_dir: Path, graph: Path) -> None:
    """The int8 graph picks the saved model's next token almost everywhere (a graph of empty
    or other weights would not)."""
    import numpy as np
    import torch

    from job.outputs import browser
    from job.training.model import load

    model, tokenizer = load(str(model_dir), device="cpu", dtype=torch.float32)
    ids = tokenizer("Bread is the best thing I bake on a Sunday morning")["input_ids"]
    logits, _ = browser.run_graph(
        browser.session(graph), np.array([ids]), None, browser.Shape.of(model.config)
    )
    with torch.no_grad():
        expected = model(torch.tensor([ids])).logits.numpy()
    agree = (logits.argmax(-1) == expected.argmax(-1)).mean()
    assert agree >= browser.MIN_AGREEMENT and float(logits.std()) > 0, agree


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_until(cmd: list[str], ready, environ: dict[str, str], timeout: float = 300):
    """Start ``cmd``; send SIGTERM once ``ready()`` holds; return the finished process."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ
    )
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "never reached a checkpoint"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


@pytest.mark.integration
@pytest.mark.parametrize("kind", [[], ["--adapter", "lora"]], ids=["full", "adapter"])
def test_sigterm_checkpoints_and_the_rerun_resumes(tmp_path: Path, kind: list[str]) -> None:
    """A full fine-tune and an adapter bot (whose checkpoint holds the adapter and its
    optimizer state, not the frozen base) alike."""
    # ~4 steps an epoch: the first checkpoint comes at step 4 of ~48, so SIGTERM lands mid-run
    job_args = [*JOB, "--epochs", "12", "--checkpoint-every", "4", *kind]
    args = [sys.executable, "-m", "job", *job_args]
    checkpoints = tmp_path / "a" / ".sourdough_sam" / "checkpoints"

    code, _, err = run_until(
        [*args, "--out", str(tmp_path / "a")],
        lambda: any(checkpoints.glob("checkpoint-*/_COMPLETE")),
        env(),
    )
    assert code == errors.TRANSIENT, err[-3000:]
    line = next(ln for ln in err.splitlines() if ln.startswith("error:"))
    stopped = int(line.split("at step ")[1].split(";")[0])
    assert (checkpoints / f"checkpoint-{stopped}" / "_COMPLETE").is_file()
    saved = {p.name for p in (checkpoints / f"checkpoint-{stopped}").iterdir()}
    assert ("adapter_model.safetensors" in saved) == bool(kind), saved
    assert ("model.safetensors" in saved) != bool(kind), saved
    wandb_run = json.loads((checkpoints / "meta.json").read_text())["wandb_train_run"]
    assert not (tmp_path / "a" / "sourdough_sam" / "job.json").exists()

    def run_to_the_end(out: Path) -> dict:
        """In this process: only the interrupted run needs a process of its own to signal."""
        done = invoke(*job_args, "--out", str(out), env={"WANDB_MODE": "offline"})
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads((out / "sourdough_sam" / "job.json").read_text())

    job = run_to_the_end(tmp_path / "a")  # resumes from the checkpoint
    assert job["result"]["resumed_from_step"] == stopped
    assert job["wandb"]["runs"]["train"] == wandb_run  # the same W&B run goes on
    assert not checkpoints.exists()  # done: checkpoints are cleaned up

    ref = run_to_the_end(tmp_path / "b")["result"]  # the same training, never stopped
    assert job["result"]["steps"] == ref["steps"]  # the step count continued, not restarted
    assert job["result"]["val_loss"] == pytest.approx(ref["val_loss"], rel=1e-5)  # nothing lost


@pytest.mark.integration
def test_spot_interruption_resumes_from_s3_on_a_fresh_machine(s3, tmp_path: Path) -> None:
    boto3.client("s3").put_object(
        Bucket="results",
        Key="jobs/one.yaml",
        Body=f"""
version: 1
output: s3://results/bots{TINY_MANIFEST}
wandb: {{mode: disabled}}
bots:
  - users: [{{handle: sourdough_sam, source: jsonl, uri: {SAMPLE}}}]
    train: {{epochs: 12, checkpoint_every: 4}}  # SIGTERM comes after step 4 of ~48
""".encode(),
    )
    storage = open_storage("s3://results/bots")
    cmd = [sys.executable, "-m", "job", "run", "--manifest", "s3://results/jobs/one.yaml"]

    def checkpoint_in_s3() -> bool:
        return any(k.endswith("/_COMPLETE") for k in storage.list("sourdough_sam/checkpoints/"))

    code, _, err = run_until(cmd, checkpoint_in_s3, env())
    assert code == errors.TRANSIENT, err[-3000:]
    status = get_json(storage, "sourdough_sam/status.json")
    assert status["state"] == "failed" and "SIGTERM" in status["reason"]

    # The retry runs in a new temporary folder: only S3 has the checkpoint. In this process:
    # only the interrupted attempt needs a process of its own to signal.
    retry = invoke(*cmd[3:], env={"AWS_BATCH_JOB_ATTEMPT": "2"})
    assert retry.returncode == 0, retry.stderr[-3000:]
    latest = get_json(storage, "sourdough_sam/latest.json")
    job = json.loads(storage.get_bytes(f"sourdough_sam/{latest['run_id']}/job.json") or b"{}")
    assert job["result"]["resumed_from_step"] >= 4
    assert get_json(storage, "sourdough_sam/status.json")["attempt"] == "2"
    assert storage.list("sourdough_sam/checkpoints/") == []  # cleaned up after success


def test_a_plain_process_becomes_a_group_of_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from job.training.distributed import LAUNCHER_VARIABLES, as_one_process_group, ranks

    # A copy: what the function sets must not outlive the test in this process.
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items()})
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    as_one_process_group()
    assert (ranks().rank, ranks().world, ranks().local_rank) == (0, 1, 0)
    assert os.environ["MASTER_ADDR"] == "127.0.0.1" and int(os.environ["MASTER_PORT"]) > 0
    # Under a launcher its variables stand.
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("MASTER_PORT", "29555")
    as_one_process_group()
    assert ranks().rank == 3 and os.environ["MASTER_PORT"] == "29555"


def test_a_bad_rank_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from job.errors import BadConfig
    from job.training.distributed import ranks

    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(BadConfig, match="WORLD_SIZE='two'"):
        ranks()
