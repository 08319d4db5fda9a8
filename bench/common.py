"""What the bench scripts share: the one preamble (the checkout on ``sys.path``, so a script run
as ``python bench/<script>`` imports the job from here), our sample tweets, a timed child
process, the stand-in bases and the inputs of a many-bot task. A script imports it by name
(``from common import ...``): Python puts the script's own folder, bench/, first on the path.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


SAMPLE = REPO / "job" / "samples" / "sourdough_sam.jsonl"  # our own sample tweets


def timed(cmd: list[str], env: dict[str, str], logs: Path) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one child process (wait4: its own rusage)."""
    start = time.perf_counter()
    with open(logs.with_suffix(".out"), "w") as out, open(logs.with_suffix(".err"), "w") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{logs.with_suffix('.err').read_text()[-3000:]}")
    return seconds, usage.ru_maxrss * 1024  # Linux reports KiB


HELDOUT = 0.1  # share of the cleaned tweets that neither side trains on


def split_tweets(clean: Path, out: Path, share: float) -> tuple[Path, list[str]]:
    """Whole tweets held out at random (seed 0): a training file for both sides, and the
    held-out texts."""
    lines = clean.read_text().splitlines()
    order = list(range(len(lines)))
    random.Random(0).shuffle(order)
    cut = max(1, int(len(lines) * share))
    train = out / "train.jsonl"
    train.write_text("".join(lines[i] + "\n" for i in sorted(order[cut:])))
    return train, [json.loads(lines[i])["text"] for i in order[:cut]]


def prepare_split(archive: Path | None, handle: str, out: Path) -> tuple[Any, Path, list[str]]:
    """A fresh ``out`` with the tweets cleaned by the job (``archive``, else our sample), and
    a training file for both sides with HELDOUT of them held out, unseen by either: both final
    models are measured on those alike. Returns the prepared data, the file, the held-out."""
    from job.config import JobConfig
    from job.data.sources import ArchiveSource, FileSource
    from job.prepare import prepare

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    source = ArchiveSource(archive) if archive else FileSource(SAMPLE)
    data = prepare({handle: source}, out / "prepared", JobConfig())
    train_file, heldout = split_tweets(data.data_dir / "clean.jsonl", out, HELDOUT)
    return data, train_file, heldout


def child_env() -> dict[str, str]:
    """The environment of the runs: W&B off, this checkout importable (a caller's path kept)."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": path}


def baseline_command(train_file: Path, base: str, out: Path, epochs: float) -> list[str]:
    """The original recipe (bench/baseline.py) on the bench's training tweets: its epochs are
    whole copies of the tweets, so ``epochs`` is rounded."""
    return [
        *[sys.executable, str(REPO / "bench" / "baseline.py"), "--tweets", str(train_file)],
        *["--base-model", base, "--out", str(out), "--epochs", str(round(epochs))],
    ]


def perplexity(model_dir: str, texts: list[str]) -> float:
    """One measurement for both sides: the job's own loss (training/train.py ``mean_loss``)
    over the held-out tweets packed into blocks of 128 tokens, fp32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from job.training.blocks import make_blocks
    from job.training.train import mean_loss

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(model_dir).to(device)
    blocks = make_blocks(texts, AutoTokenizer.from_pretrained(model_dir), 128, 0.0, 0)
    loss = mean_loss(model, blocks.train, 8)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return math.exp(loss)


def pretrain(base: str, files: list[Path], epochs: float, out: Path, env: dict[str, str]) -> str:
    """``base`` trained first on other text (the paragraphs of ``files``), by the job itself:
    a stand-in, where no pretrained GPT-2 can be had, for fine-tuning pretrained weights."""
    paragraphs = [
        " ".join(p.split())
        for f in files
        for p in f.read_text(encoding="utf-8").split("\n\n")
        if len(p.split()) >= 5
    ]
    corpus = out / "pretrain.jsonl"
    corpus.write_text(
        "".join(json.dumps({"user": "pretrain", "text": p}) + "\n" for p in paragraphs)
    )
    command = [
        *[sys.executable, "-m", "job", "run", "pretrain", "--jsonl", str(corpus)],
        *["--base-model", base, "--out", str(out / "pretrained"), "--epochs", str(epochs)],
        *["--no-dedupe", "--min-words", "1"],
    ]
    seconds, _ = timed(command, env, out / "pretrain")
    print(f"pre-trained the base on {len(paragraphs)} paragraphs in {seconds:.1f} s")
    return str(out / "pretrained" / "pretrain" / "model")


def stand_in_arguments(parser: argparse.ArgumentParser, out: str) -> None:
    """The options of a bench that trains on cleaned tweets from a stand-in base: whose tweets,
    how long, and what the base is pre-trained on first."""
    parser.add_argument("--archive", type=Path, help="a Twitter archive (else our sample)")
    parser.add_argument("--handle", default="sourdough_sam")
    parser.add_argument("--epochs", type=float, default=4.0)
    parser.add_argument("--pretrain-on", type=Path, nargs="*", default=[])
    parser.add_argument("--pretrain-epochs", type=float, default=8.0)
    parser.add_argument(
        "--tokenizer", type=Path, help="GPT-2's BPE files (its 50,257 tokens), else the tweets'"
    )
    parser.add_argument(
        "--pretrain-share",
        type=float,
        default=0.0,
        help="this share of the training tweets pre-trains the base instead (a base that knows"
        " the tweets' words, as GPT-2 does), and is not fine-tuned on",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench-out" / out)


def stand_in(
    args: argparse.Namespace, arch: dict[str, Any] | None = None
) -> tuple[Path, list[str], str, dict[str, str]]:
    """The bench's data split (prepare_split), a random base of ``arch`` (the tiny one unless
    it says) with a vocabulary from the tweets (GPT-2's with ``--tokenizer``), pre-trained on
    ``--pretrain-on`` where given, and on ``--pretrain-share`` of the training tweets (moved
    out of the training file: a base that has learned the tweets' words, where the docs alone
    leave most of their embeddings untrained); and the runs' environment. Returns the training
    file, the held-out texts, the base, env."""
    from job.training.model import build_random

    args.out = args.out.resolve()  # the job takes a base folder as /... or ./...
    data, train_file, heldout = prepare_split(args.archive, args.handle, args.out)
    texts = [t.text for t in data.tweets]
    base = str(build_random(args.out / "base", texts, args.tokenizer, 42, arch))
    env = child_env()
    corpus = list(args.pretrain_on)
    if args.pretrain_share > 0:
        lines = train_file.read_text().splitlines()
        random.Random(0).shuffle(lines)  # as split_tweets: the same draw every run
        moved = round(len(lines) * args.pretrain_share)
        tweets = args.out / "pretrain-tweets.txt"  # a paragraph each, as pretrain() reads them
        tweets.write_text("\n\n".join(json.loads(line)["text"] for line in lines[:moved]))
        train_file.write_text("".join(line + "\n" for line in lines[moved:]))
        corpus.append(tweets)
        print(f"pre-training on {moved} of the {len(lines)} training tweets, not trained on")
    if corpus:
        base = pretrain(base, corpus, args.pretrain_epochs, args.out, env)
    return train_file, heldout, base, env


def made_run(out: Path, bot: str) -> Path:
    """The folder of the run a task published for ``bot`` under ``out`` (its latest.json)."""
    return out / bot / json.loads((out / bot / "latest.json").read_text())["run_id"]


def bakers(tweets: Path, folder: Path, count: int, copies: int = 1) -> list[Path]:
    """``count`` copies of the JSON Lines ``tweets``, each under its own handle (baker0,
    baker1, ...) in ``folder``: as many bots that do the same work. ``copies``: each bot's
    tweets that many times over, each copy its own tweets (ids and texts told apart: the
    job's cleaning drops a repeated text), for a bot of a larger archive's size."""
    rows = [json.loads(line) for line in tweets.read_text().splitlines()]
    rows = [r if k == 0 else r | {"id": f"{r.get('id', i)}{k:04d}", "text": f"{r['text']} ({k})"}
            for k in range(copies) for i, r in enumerate(rows)]  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"baker{i}.jsonl"
        path.write_text("".join(json.dumps({**r, "user": path.stem}) + "\n" for r in rows))
        paths.append(path)
    return paths


def task_manifest(
    out: Path,
    tweets: list[Path],
    per_task: int,
    defaults: dict[str, Any],
    own: list[dict[str, Any]] | None = None,
) -> Path:
    """A manifest (``out``.yaml) of a bot for each tweets file, output to ``out``, W&B off,
    ``per_task`` bots a task; ``own``: each bot's own sections (``{"train": {...}}``) over the
    defaults. JSON: YAML reads it as it is."""
    manifest = out.with_suffix(".yaml")
    sections = own or [{}] * len(tweets)
    bots = [
        {"users": [{"handle": p.stem, "source": "jsonl", "uri": str(p)}], **mine}
        for p, mine in zip(tweets, sections, strict=True)
    ]
    spec = {
        "version": 1,
        "output": str(out),
        "wandb": {"mode": "disabled"},
        "bots_per_task": per_task,
        "defaults": defaults,
        "bots": bots,
    }
    manifest.write_text(json.dumps(spec, indent=1) + "\n")
    return manifest


def flops_per_token(config: dict, block: int) -> tuple[float, int]:
    """nanoGPT's estimate: 6N for the weights plus 12 L d T for attention (PaLM, appendix B)."""
    from job.training.strategy import shape_of

    shape = shape_of("model", config)  # N from the config, as the strategy sizes it
    n = shape.params
    return 6 * n + 12 * shape.n_layer * shape.n_embd * block, n


# moto's credentials: any will do, and these are what its documentation and the tests use
MOTO_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip


def s3_client(url: str) -> Any:
    """A boto3 S3 client of moto's server at ``url``."""
    import boto3

    given = MOTO_CREDENTIALS
    return boto3.client("s3", endpoint_url=url, region_name=given["AWS_DEFAULT_REGION"],
                        aws_access_key_id=given["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=given["AWS_SECRET_ACCESS_KEY"])  # fmt: skip


@contextmanager
def s3_on_loopback(bucket: str) -> Iterator[tuple[str, dict[str, str]]]:
    """moto's S3 server on 127.0.0.1 (tests/helpers/s3.py) with ``bucket`` made: its URL, and
    the environment a job reaches it with (its credentials; AWS_ENDPOINT_URL is the caller's:
    straight, or through a proxy). Stopped at the end."""
    from tests.helpers.s3 import MotoS3

    moto = MotoS3().start().wait()
    try:
        s3_client(moto.url).create_bucket(Bucket=bucket)
        yield moto.url, dict(MOTO_CREDENTIALS)
    finally:
        moto.stop()
