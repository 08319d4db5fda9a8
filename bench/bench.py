"""Benchmark: time-to-bot and training throughput of the job against the original recipe.

Both run in one go, on the same cleaned tweets and the same base weights, each in its own
process (start-up and imports count: they are part of time-to-bot), interleaved ``--repeats``
times; every figure is the median of its runs (a shared machine's slow spells hit both sides).
Printed: wall time per phase, training tokens/s, MFU on a GPU (6N + attention FLOPs per
token, nanoGPT's estimate, against the GPU's bf16 dense peak), peak memory, the time of
`huggingtweets --help`, and the ratios.
Written: OUT/results.json.

    python bench/bench.py                                  # tiny model, our sample tweets
    python bench/bench.py --archive ../shared/data/archives/andreruffert --handle andreruffert
    python bench/bench.py --base-model gpt2 --archive ... --handle ...   # on a GPU
    python bench/bench.py --base-model gpt2-xl --random-init --tokenizer DIR ...  # no Hub
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
from collections.abc import Callable
from pathlib import Path
from statistics import median
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
H100_BF16_DENSE = 989e12  # FLOP/s, H100 SXM datasheet
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


def bakers(tweets: Path, folder: Path, count: int) -> list[Path]:
    """``count`` copies of the JSON Lines ``tweets``, each under its own handle (baker0,
    baker1, ...) in ``folder``: as many bots that do the same work."""
    rows = [json.loads(line) for line in tweets.read_text().splitlines()]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"baker{i}.jsonl"
        path.write_text("".join(json.dumps({**r, "user": path.stem}) + "\n" for r in rows))
        paths.append(path)
    return paths


def task_manifest(out: Path, tweets: list[Path], per_task: int, defaults: dict[str, Any]) -> Path:
    """A manifest (``out``.yaml) of a bot for each tweets file, output to ``out``, W&B off,
    ``per_task`` bots a task. JSON: YAML reads it as it is."""
    manifest = out.with_suffix(".yaml")
    bots = [{"users": [{"handle": p.stem, "source": "jsonl", "uri": str(p)}]} for p in tweets]
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


def _cell(value: float | None) -> str:
    return f"{value:>10.2f}" if value is not None else f"{'-':>10}"


def summarize(rs: list[dict], mfu: Callable[[float, int], float | None]) -> dict:
    """One side's figures over its interleaved runs: medians, and the peaks."""
    tps = median(r["tokens_per_second"] for r in rs)
    steady = median(r["steady_tokens_per_second"] / r.get("processes", 1) for r in rs)
    phases = {k: median(r["timings"][k] for r in rs) for k in rs[0]["timings"]}
    return {
        "time_to_bot_s": median(r["process_s"] for r in rs),
        "time_to_bot_runs_s": [r["process_s"] for r in rs],
        "phases_s": phases,
        "tokens_per_second": tps,
        "tokens_per_second_runs": [r["tokens_per_second"] for r in rs],
        "mfu": mfu(tps, rs[0]["block_size"]),
        # After the first WARMUP_STEPS (job/training/clock.py), per GPU: the rate sustained.
        "steady_tokens_per_second_per_gpu": steady,
        "steady_mfu": mfu(steady, rs[0]["block_size"]),
        "peak_gpu_bytes": max(r["peak_memory_bytes"] for r in rs),
        "peak_rss_bytes": max(r["rss"] for r in rs),
        "perplexity": median(r["perplexity"] for r in rs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-model", default="tiny")
    parser.add_argument("--tokenizer", type=Path, help="GPT-2 BPE files, for tiny or --random-init")
    parser.add_argument(
        "--random-init",
        action="store_true",
        help="random weights of --base-model's GPT-2 size, for a machine without the Hub",
    )
    parser.add_argument("--archive", type=Path, help="a Twitter archive (else our sample)")
    parser.add_argument("--handle", default="sourdough_sam")
    parser.add_argument("--epochs", type=float, default=4.0)
    parser.add_argument(
        "--learning-rate", type=float, help="for both sides (default: each side's own default)"
    )
    parser.add_argument("--our-learning-rate", type=float, help="for the job's side only")
    parser.add_argument("--peak-tflops", type=float, default=H100_BF16_DENSE / 1e12)
    parser.add_argument("--out", type=Path, default=REPO / "bench-out")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each, interleaved")
    parser.add_argument("--help-runs", type=int, default=5, help="`--help` timings (best of)")
    parser.add_argument(
        "--pretrain-on",
        type=Path,
        nargs="*",
        default=[],
        help="text files (their paragraphs) to pre-train the tiny/random base on first, with"
        " the job itself, so both sides fine-tune a model that already knows some English",
    )
    parser.add_argument("--pretrain-epochs", type=float, default=8.0)
    parser.add_argument(
        "--quality-epochs",
        default="1,2,3",
        help="shorter runs of ours (epochs, comma-separated) for time-to-quality; '' for none",
    )
    args = parser.parse_args()
    args.out = args.out.resolve()  # the job takes a base folder as /... or ./...

    from job.gpt2 import GPT2, GPT2_NAMES
    from job.training.model import build_random

    if args.random_init and (args.base_model not in GPT2_NAMES or args.tokenizer is None):
        parser.error("--random-init needs a GPT-2 size as --base-model, and --tokenizer")
    from job.training.clock import WARMUP_STEPS

    data, train_file, heldout = prepare_split(args.archive, args.handle, args.out)
    base = args.base_model
    if base == "tiny" or args.random_init:  # one base for both: the same starting weights
        arch = GPT2[base].arch if args.random_init else None
        texts = [t.text for t in data.tweets]
        base = str(build_random(args.out / f"base-{base}", texts, args.tokenizer, 42, arch))
    env = child_env()
    if args.pretrain_on:
        base = pretrain(base, args.pretrain_on, args.pretrain_epochs, args.out, env)
    rate = ["--learning-rate", str(args.learning_rate)] if args.learning_rate else []
    ours_rate = ["--learning-rate", str(args.our_learning_rate)] if args.our_learning_rate else rate
    commands = {
        "ours": lambda out: [
            *[sys.executable, "-m", "job", "run", args.handle],
            *["--jsonl", str(train_file), "--base-model", base],
            *["--out", str(out), "--epochs", str(args.epochs), *ours_rate],
        ],
        "baseline": lambda out: [*baseline_command(train_file, base, out, args.epochs), *rate],
    }
    # Interleaved (ours, baseline, ours, ...) so a slow spell of a shared machine hits both;
    # each figure below is the median over the repeats.
    runs: dict[str, list[dict]] = {"ours": [], "baseline": []}
    for i in range(args.repeats):
        for side, command in commands.items():
            out = args.out / f"{side}-{i}"
            seconds, rss = timed(command(out), env, out)
            if side == "ours":
                job = json.loads((out / args.handle / "job.json").read_text())
                figures, timings = job["result"], job["timings"]
            else:
                figures = json.loads((out / "baseline.json").read_text())
                timings = figures["timings"]
            figures["perplexity"] = perplexity(figures["model_dir"], heldout)
            runs[side].append({**figures, "process_s": seconds, "rss": rss, "timings": timings})
    # Time-to-quality: the time-to-bot of the shortest whole run of ours (fewer epochs, the same
    # schedule compressed, as a user would run it) whose held-out perplexity reaches the
    # baseline's final one. The baseline's is its own time-to-bot: it gets there at its end.
    target = median(r["perplexity"] for r in runs["baseline"])
    quality = [
        (
            args.epochs,
            median(r["process_s"] for r in runs["ours"]),
            median(r["perplexity"] for r in runs["ours"]),
        )
    ]
    for epochs in sorted({float(e) for e in args.quality_epochs.split(",") if e.strip()}):
        if epochs >= args.epochs:
            continue
        out = args.out / f"ours-quality-{epochs:g}"
        command = commands["ours"](out)
        command[command.index("--epochs") + 1] = str(epochs)
        seconds, _ = timed(command, env, out)
        job = json.loads((out / args.handle / "job.json").read_text())
        quality.append((epochs, seconds, perplexity(job["result"]["model_dir"], heldout)))
    reached = sorted((s, e, p) for e, s, p in quality if p <= target)
    help_s = min(
        timed([sys.executable, "-m", "job", "--help"], env, args.out / "help")[0]
        for _ in range(args.help_runs)
    )

    ours = runs["ours"][0]
    model_config = json.loads(Path(ours["model_dir"], "config.json").read_text())
    params = flops_per_token(model_config, 1)[1]
    gpu = ours["device"] == "cuda"

    def mfu(tokens_per_second: float, block: int) -> float | None:
        per_token = flops_per_token(model_config, block)[0]  # attention grows with the block
        return tokens_per_second * per_token / (args.peak_tflops * 1e12) if gpu else None

    def summary(side: str) -> dict:
        return summarize(runs[side], mfu)

    results = {
        "model": args.base_model,
        "parameters": params,
        "device": ours["device"],
        "tweets": len(data.tweets),
        "epochs": args.epochs,
        "repeats": args.repeats,
        "ours": {**summary("ours"), "strategy": ours["strategy"], "precision": ours["precision"]},
        "baseline": summary("baseline"),
        "help_s": help_s,
        "pretrained_on": [str(f) for f in args.pretrain_on],
        # (epochs, time-to-bot s, held-out perplexity) of ours at each length tried
        "quality_runs": sorted(quality),
        "time_to_quality_s": reached[0][0] if reached else None,
        "time_to_quality_epochs": reached[0][1] if reached else None,
    }
    o, b = results["ours"], results["baseline"]
    results["ratios"] = {
        "training_tokens_per_second": o["tokens_per_second"] / b["tokens_per_second"],
        "steady_tokens_per_second": o["steady_tokens_per_second_per_gpu"]
        / b["steady_tokens_per_second_per_gpu"],
        "time_to_bot_speedup": b["time_to_bot_s"] / o["time_to_bot_s"],
        "perplexity": o["perplexity"] / b["perplexity"],  # at most 1: no worse a model
        "time_to_quality_speedup": (
            b["time_to_bot_s"] / results["time_to_quality_s"] if reached else None
        ),
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2))

    print(
        f"{args.base_model} ({params / 1e6:.1f} M parameters) on {results['device']}, "
        f"{len(data.tweets)} tweets, {args.epochs:g} epochs; medians of {args.repeats} runs each"
    )
    print(f"{'phase (s)':<12}{'ours':>10}{'baseline':>10}")
    for phase in ("prepare", "load", "tokenize", "train", "predict", "save", "card"):
        a, c = o["phases_s"].get(phase), b["phases_s"].get(phase)
        if a is None and c is None:
            continue
        print(f"{phase:<12}{_cell(a)}{_cell(c)}")
    print(f"{'time-to-bot':<12}{_cell(o['time_to_bot_s'])}{_cell(b['time_to_bot_s'])}   (process)")
    for side, r in (("ours", o), ("baseline", b)):
        spread = ", ".join(f"{s:.1f}" for s in r["time_to_bot_runs_s"])
        rates = ", ".join(f"{t:,.0f}" for t in r["tokens_per_second_runs"])
        print(f"  {side}: time-to-bot runs {spread} s; tokens/s runs {rates}")
    print(f"tokens/s: ours {o['tokens_per_second']:,.0f}, baseline {b['tokens_per_second']:,.0f}")
    print(
        f"steady tokens/s per GPU (after {WARMUP_STEPS} steps): ours"
        f" {o['steady_tokens_per_second_per_gpu']:,.0f},"
        f" baseline {b['steady_tokens_per_second_per_gpu']:,.0f}"
    )
    if gpu:
        print(
            f"MFU whole run: ours {o['mfu']:.1%}, baseline {b['mfu']:.1%}; steady: ours"
            f" {o['steady_mfu']:.1%}, baseline {b['steady_mfu']:.1%};"
            f" peak GPU memory: ours {o['peak_gpu_bytes'] / 2**30:.2f} GiB"
        )
    print(
        f"peak RSS: ours {o['peak_rss_bytes'] / 2**20:,.0f} MiB,"
        f" baseline {b['peak_rss_bytes'] / 2**20:,.0f} MiB"
    )
    print(
        f"held-out perplexity after ({len(heldout)} tweets neither side saw): ours"
        f" {o['perplexity']:.1f}, baseline {b['perplexity']:.1f}"
    )
    for epochs, seconds, ppl in results["quality_runs"]:
        print(f"  ours at {epochs:g} epochs: {seconds:.1f} s, held-out perplexity {ppl:.1f}")
    if reached:
        print(
            f"time-to-quality (the baseline's final perplexity {target:.1f}): ours"
            f" {reached[0][0]:.1f} s at {reached[0][1]:g} epochs, baseline"
            f" {b['time_to_bot_s']:.1f} s"
        )
    else:
        print(f"time-to-quality: ours never reached the baseline's perplexity {target:.1f}")
    print(f"huggingtweets --help: {help_s:.2f} s")
    r = results["ratios"]
    to_quality = r["time_to_quality_speedup"]
    print(
        f"ratios: training tokens/s x{r['training_tokens_per_second']:.2f}, "
        f"time-to-bot x{r['time_to_bot_speedup']:.2f} faster, "
        f"time-to-quality {f'x{to_quality:.2f} faster' if to_quality else 'not reached'}, "
        f"perplexity ours/baseline {r['perplexity']:.2f}"
    )
    assert math.isfinite(r["time_to_bot_speedup"])


if __name__ == "__main__":
    main()
