"""Benchmark: time-to-bot and training throughput of the job against the original recipe.

Both run in one go, on the same cleaned tweets and the same base weights, each in its own
process (start-up and imports count: they are part of time-to-bot). Printed: wall time per
phase, training tokens/s, MFU on a GPU (6N + attention FLOPs per token, nanoGPT's estimate,
against the GPU's bf16 dense peak), peak memory, `huggingtweets --help` time, and the ratios.
Written: OUT/results.json.

    python bench/bench.py                                  # tiny model, our sample tweets
    python bench/bench.py --archive ../shared/data/archives/andreruffert --handle andreruffert
    python bench/bench.py --base-model gpt2 --archive ... --handle ...   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
H100_BF16_DENSE = 989e12  # FLOP/s, H100 SXM datasheet


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


def flops_per_token(config: dict, block: int) -> tuple[float, int]:
    """nanoGPT's estimate: 6N for the weights plus 12 L d T for attention (PaLM, appendix B)."""
    d, layers, vocab, pos = (config[k] for k in ("n_embd", "n_layer", "vocab_size", "n_positions"))
    n = 12 * layers * d * d + vocab * d + pos * d
    return 6 * n + 12 * layers * d * block, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-model", default="tiny")
    parser.add_argument("--tokenizer", type=Path, help="GPT-2 BPE files for the tiny model")
    parser.add_argument("--archive", type=Path, help="a Twitter archive (else our sample)")
    parser.add_argument("--handle", default="sourdough_sam")
    parser.add_argument("--epochs", type=float, default=4.0)
    parser.add_argument("--learning-rate", type=float, default=1.372e-4)
    parser.add_argument("--peak-tflops", type=float, default=H100_BF16_DENSE / 1e12)
    parser.add_argument("--out", type=Path, default=REPO / "bench-out")
    args = parser.parse_args()

    from job.model import build_tiny
    from job.prepare import PrepareConfig, prepare
    from job.sources import ArchiveSource, FileSource

    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    source = (
        ArchiveSource(args.archive)
        if args.archive
        else FileSource(REPO / "job" / "samples" / "sourdough_sam.jsonl")
    )
    data = prepare({args.handle: source}, args.out / "prepared", PrepareConfig())
    base = args.base_model
    if base == "tiny":  # one tiny base for both, so they start from the same weights
        base = str(
            build_tiny(
                args.out / "base-tiny", [t.text for t in data.tweets], args.tokenizer, seed=42
            )
        )
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}
    common = ["--epochs", str(args.epochs), "--learning-rate", str(args.learning_rate)]

    ours_s, ours_rss = timed(
        [
            sys.executable,
            "-m",
            "job",
            "run",
            args.handle,
            "--jsonl",
            str(data.data_dir / "clean.jsonl"),
            "--base-model",
            base,
            "--out",
            str(args.out / "ours"),
            *common,
        ],
        env,
        args.out / "ours",
    )
    base_s, base_rss = timed(
        [
            sys.executable,
            str(REPO / "bench" / "baseline.py"),
            "--data",
            str(data.data_dir),
            "--base-model",
            base,
            "--out",
            str(args.out / "baseline"),
            *common,
        ],
        env,
        args.out / "baseline",
    )
    help_s = min(
        timed([sys.executable, "-m", "job", "--help"], env, args.out / "help")[0] for _ in range(5)
    )

    job = json.loads((args.out / "ours" / args.handle / "job.json").read_text())
    ours, baseline = (
        job["result"],
        json.loads((args.out / "baseline" / "baseline.json").read_text()),
    )
    model_config = json.loads(Path(ours["model_dir"], "config.json").read_text())
    per_token, params = flops_per_token(model_config, ours["block_size"])
    gpu = ours["device"] == "cuda"

    def mfu(tokens_per_second: float) -> float | None:
        return tokens_per_second * per_token / (args.peak_tflops * 1e12) if gpu else None

    results = {
        "model": args.base_model,
        "parameters": params,
        "device": ours["device"],
        "tweets": len(data.tweets),
        "epochs": args.epochs,
        "ours": {
            "time_to_bot_s": ours_s,
            "phases_s": job["timings"],
            "tokens_per_second": ours["tokens_per_second"],
            "mfu": mfu(ours["tokens_per_second"]),
            "peak_gpu_bytes": ours["peak_memory_bytes"],
            "peak_rss_bytes": ours_rss,
            "perplexity": ours["perplexity"],
            "strategy": ours["strategy"],
            "precision": ours["precision"],
        },
        "baseline": {
            "time_to_bot_s": base_s,
            "phases_s": baseline["timings"],
            "tokens_per_second": baseline["tokens_per_second"],
            "mfu": mfu(baseline["tokens_per_second"]),
            "peak_gpu_bytes": baseline["peak_memory_bytes"],
            "peak_rss_bytes": base_rss,
            "perplexity": baseline["perplexity"],
        },
        "help_s": help_s,
    }
    results["ratios"] = {
        "training_tokens_per_second": ours["tokens_per_second"] / baseline["tokens_per_second"],
        "time_to_bot_speedup": base_s / ours_s,
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2))

    print(
        f"{args.base_model} ({params / 1e6:.1f} M parameters) on {ours['device']}, "
        f"{len(data.tweets)} tweets, {args.epochs:g} epochs"
    )
    print(f"{'phase (s)':<12}{'ours':>10}{'baseline':>10}")
    for phase in ("prepare", "load", "tokenize", "train", "predict", "save", "card"):
        a, b = job["timings"].get(phase), baseline["timings"].get(phase)
        if a is None and b is None:
            continue
        print(
            f"{phase:<12}{a if a is not None else '-':>10}"
            f"{round(b, 3) if b is not None else '-':>10}"
        )
    print(f"{'time-to-bot':<12}{ours_s:>10.2f}{base_s:>10.2f}   (whole process)")
    print(
        f"tokens/s: ours {ours['tokens_per_second']:,.0f}, baseline "
        f"{baseline['tokens_per_second']:,.0f}"
    )
    if gpu:
        print(
            f"MFU: ours {results['ours']['mfu']:.1%}, baseline {results['baseline']['mfu']:.1%};"
            f" peak GPU memory: ours {ours['peak_memory_bytes'] / 2**30:.2f} GiB"
        )
    print(f"peak RSS: ours {ours_rss / 2**20:,.0f} MiB, baseline {base_rss / 2**20:,.0f} MiB")
    print(f"perplexity after: ours {ours['perplexity']:.1f}, baseline {baseline['perplexity']:.1f}")
    print(f"huggingtweets --help: {help_s:.2f} s")
    r = results["ratios"]
    print(
        f"ratios: training tokens/s x{r['training_tokens_per_second']:.1f}, "
        f"time-to-bot x{r['time_to_bot_speedup']:.1f} faster"
    )
    assert math.isfinite(r["time_to_bot_speedup"])


if __name__ == "__main__":
    main()
