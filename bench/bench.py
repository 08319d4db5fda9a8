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
import sys
from collections.abc import Callable
from pathlib import Path
from statistics import median
from typing import Any

from common import (
    REPO,
    baseline_command,
    child_env,
    flops_per_token,
    perplexity,
    prepare_split,
    pretrain,
    timed,
)

H100_BF16_DENSE = 989e12  # FLOP/s, H100 SXM datasheet


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


def arguments() -> argparse.Namespace:
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
    from job.gpt2 import GPT2_NAMES

    if args.random_init and (args.base_model not in GPT2_NAMES or args.tokenizer is None):
        parser.error("--random-init needs a GPT-2 size as --base-model, and --tokenizer")
    return args


def base_of(args: argparse.Namespace, data: Any, env: dict[str, str]) -> str:
    """One base for both sides, the same starting weights: a Hub name, or built here (tiny,
    --random-init), pre-trained first where --pretrain-on asks."""
    from job.gpt2 import GPT2
    from job.training.model import build_random

    base = args.base_model
    if base == "tiny" or args.random_init:
        arch = GPT2[base].arch if args.random_init else None
        texts = [t.text for t in data.tweets]
        base = str(build_random(args.out / f"base-{base}", texts, args.tokenizer, 42, arch))
    if args.pretrain_on:
        base = pretrain(base, args.pretrain_on, args.pretrain_epochs, args.out, env)
    return base


def side_commands(
    args: argparse.Namespace, train_file: Path, base: str
) -> dict[str, Callable[[Path], list[str]]]:
    """Each side's command, given the folder it writes."""
    rate = ["--learning-rate", str(args.learning_rate)] if args.learning_rate else []
    ours_rate = ["--learning-rate", str(args.our_learning_rate)] if args.our_learning_rate else rate
    return {
        "ours": lambda out: [
            *[sys.executable, "-m", "job", "run", args.handle],
            *["--jsonl", str(train_file), "--base-model", base],
            *["--out", str(out), "--epochs", str(args.epochs), *ours_rate],
        ],
        "baseline": lambda out: [*baseline_command(train_file, base, out, args.epochs), *rate],
    }


def run_sides(
    args: argparse.Namespace,
    commands: dict[str, Callable[[Path], list[str]]],
    env: dict[str, str],
    heldout: list[str],
) -> dict[str, list[dict]]:
    """Each side ``--repeats`` times, interleaved (ours, baseline, ours, ...) so a slow spell
    of a shared machine hits both; each figure reported is the median over the repeats."""
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
    return runs


def quality_runs(
    args: argparse.Namespace,
    runs: dict[str, list[dict]],
    command: Callable[[Path], list[str]],
    env: dict[str, str],
    heldout: list[str],
) -> list[tuple[float, float, float]]:
    """(epochs, time-to-bot s, held-out perplexity) of ours at each length tried: the whole
    run's, and shorter whole runs (the same schedule compressed, as a user would run it)."""
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
        shorter = command(out)
        shorter[shorter.index("--epochs") + 1] = str(epochs)
        seconds, _ = timed(shorter, env, out)
        job = json.loads((out / args.handle / "job.json").read_text())
        quality.append((epochs, seconds, perplexity(job["result"]["model_dir"], heldout)))
    return sorted(quality)


def results_of(
    args: argparse.Namespace,
    runs: dict[str, list[dict]],
    quality: list[tuple[float, float, float]],
    tweets: int,
    help_s: float,
) -> dict[str, Any]:
    """What OUT/results.json holds: each side's medians, MFU on a GPU, time-to-quality (the
    time-to-bot of the shortest run of ours whose held-out perplexity reaches the baseline's
    final one; the baseline's own is its time-to-bot), and the ratios."""
    ours = runs["ours"][0]
    model_config = json.loads(Path(ours["model_dir"], "config.json").read_text())
    gpu = ours["device"] == "cuda"

    def mfu(tokens_per_second: float, block: int) -> float | None:
        per_token = flops_per_token(model_config, block)[0]  # attention grows with the block
        return tokens_per_second * per_token / (args.peak_tflops * 1e12) if gpu else None

    target = median(r["perplexity"] for r in runs["baseline"])
    reached = sorted((s, e, p) for e, s, p in quality if p <= target)
    o, b = summarize(runs["ours"], mfu), summarize(runs["baseline"], mfu)
    return {
        "model": args.base_model,
        "parameters": flops_per_token(model_config, 1)[1],
        "device": ours["device"],
        "tweets": tweets,
        "epochs": args.epochs,
        "repeats": args.repeats,
        "ours": {**o, "strategy": ours["strategy"], "precision": ours["precision"]},
        "baseline": b,
        "help_s": help_s,
        "pretrained_on": [str(f) for f in args.pretrain_on],
        "quality_runs": quality,
        "quality_target": target,
        "time_to_quality_s": reached[0][0] if reached else None,
        "time_to_quality_epochs": reached[0][1] if reached else None,
        "ratios": {
            "training_tokens_per_second": o["tokens_per_second"] / b["tokens_per_second"],
            "steady_tokens_per_second": o["steady_tokens_per_second_per_gpu"]
            / b["steady_tokens_per_second_per_gpu"],
            "time_to_bot_speedup": b["time_to_bot_s"] / o["time_to_bot_s"],
            "perplexity": o["perplexity"] / b["perplexity"],  # at most 1: no worse a model
            "time_to_quality_speedup": (b["time_to_bot_s"] / reached[0][0] if reached else None),
        },
    }


def report(results: dict[str, Any], heldout: int) -> None:
    """The results, as a person reads them."""
    from job.training.clock import WARMUP_STEPS

    o, b = results["ours"], results["baseline"]
    print(
        f"{results['model']} ({results['parameters'] / 1e6:.1f} M parameters) on"
        f" {results['device']}, {results['tweets']} tweets, {results['epochs']:g} epochs;"
        f" medians of {results['repeats']} runs each"
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
    if results["device"] == "cuda":
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
        f"held-out perplexity after ({heldout} tweets neither side saw): ours"
        f" {o['perplexity']:.1f}, baseline {b['perplexity']:.1f}"
    )
    for epochs, seconds, ppl in results["quality_runs"]:
        print(f"  ours at {epochs:g} epochs: {seconds:.1f} s, held-out perplexity {ppl:.1f}")
    target = results["quality_target"]
    if results["time_to_quality_s"] is not None:
        print(
            f"time-to-quality (the baseline's final perplexity {target:.1f}): ours"
            f" {results['time_to_quality_s']:.1f} s at {results['time_to_quality_epochs']:g}"
            f" epochs, baseline {b['time_to_bot_s']:.1f} s"
        )
    else:
        print(f"time-to-quality: ours never reached the baseline's perplexity {target:.1f}")
    print(f"huggingtweets --help: {results['help_s']:.2f} s")
    r = results["ratios"]
    to_quality = r["time_to_quality_speedup"]
    print(
        f"ratios: training tokens/s x{r['training_tokens_per_second']:.2f}, "
        f"time-to-bot x{r['time_to_bot_speedup']:.2f} faster, "
        f"time-to-quality {f'x{to_quality:.2f} faster' if to_quality else 'not reached'}, "
        f"perplexity ours/baseline {r['perplexity']:.2f}"
    )


def main() -> None:
    args = arguments()
    env = child_env()
    data, train_file, heldout = prepare_split(args.archive, args.handle, args.out)
    commands = side_commands(args, train_file, base_of(args, data, env))
    runs = run_sides(args, commands, env, heldout)
    quality = quality_runs(args, runs, commands["ours"], env, heldout)
    help_s = min(
        timed([sys.executable, "-m", "job", "--help"], env, args.out / "help")[0]
        for _ in range(args.help_runs)
    )
    results = results_of(args, runs, quality, len(data.tweets), help_s)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    report(results, len(heldout))
    assert math.isfinite(results["ratios"]["time_to_bot_speedup"])


if __name__ == "__main__":
    main()
