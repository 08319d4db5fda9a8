"""Sweep: held-out perplexity of the job at several tokens per step and learning rates.

What it answers: when an optimizer step holds more tokens (a larger batch, as a GPU's
memory would allow), how must the learning rate follow for the fine-tuned model to be no
worse? Each run is the job at its defaults except ``--batch-size B`` and a rate: the
original's 1.372e-4 scaled by (tokens per step / context) to the power 0 (none), 0.5
(square root) or 1 (linear), or a rate given outright. The bench's held-out tweets and
perplexity (bench/bench.py) measure every run alike; the baseline runs once, as the mark.

    python bench/rate_sweep.py --archive ../shared/data/archives/andreruffert \
        --handle andreruffert --pretrain-on README.md docs/*.md --batch-sizes 8,32

Written: OUT/rate_sweep.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common import (
    baseline_command,
    perplexity,
    stand_in,
    stand_in_arguments,
    timed,
)

SCALINGS = {"none": 0.0, "sqrt": 0.5, "linear": 1.0}


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    stand_in_arguments(parser, "rate-sweep")
    parser.add_argument("--batch-sizes", default="8,32", help="comma-separated")
    parser.add_argument(
        "--rates", default="none,sqrt,linear", help="none|sqrt|linear or a number, comma-separated"
    )
    return parser.parse_args()


def rate_of(name: str, tokens: int, context: int) -> float:
    """The original's rate scaled to ``tokens`` a step by ``name`` (SCALINGS), or a number."""
    from job.training.plan import ORIGINAL_RATE

    return ORIGINAL_RATE * (tokens / context) ** SCALINGS[name] if name in SCALINGS else float(name)


def one_run(
    args: argparse.Namespace,
    made: tuple[Path, list[str], str, dict],
    batch: int,
    rate: float,
    name: str,
) -> dict:
    """The job at ``batch`` blocks a step and ``rate``: its steps and held-out perplexity."""
    train_file, heldout, base, env = made
    out = args.out / f"b{batch}-{name}"
    seconds, _ = timed(
        [
            *[sys.executable, "-m", "job", "run", args.handle],
            *["--jsonl", str(train_file), "--base-model", base, "--out", str(out)],
            *["--epochs", str(args.epochs), "--batch-size", str(batch)],
            *["--learning-rate", f"{rate:.4g}"],
        ],
        env,
        out,
    )
    result = json.loads((out / args.handle / "job.json").read_text())["result"]
    return {
        "batch_size": batch,
        "learning_rate": rate,
        "steps": result["steps"],
        "perplexity": perplexity(result["model_dir"], heldout),
        "process_s": seconds,
    }


def main() -> None:
    from job.config import JobConfig

    args = arguments()
    made = stand_in(args)
    train_file, heldout, base, env = made
    context = json.loads(Path(base, "config.json").read_text())["n_positions"]
    block = min(JobConfig().train.block_size, context)

    out = args.out / "baseline"
    timed(baseline_command(train_file, base, out, args.epochs), env, out)
    mark = perplexity(json.loads((out / "baseline.json").read_text())["model_dir"], heldout)
    print(f"baseline: held-out perplexity {mark:.1f}")
    runs = []
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        for name in args.rates.split(","):
            tokens = batch * block
            run = one_run(args, made, batch, rate_of(name, tokens, context), name)
            runs.append({**run, "tokens_per_step": tokens, "scaling": name})
            print(
                f"batch {batch:>3} ({tokens:>5} tokens/step, {run['steps']:>3} steps), rate"
                f" {run['learning_rate']:.3g} ({name}): held-out perplexity {run['perplexity']:.1f}"
            )
    figures = {
        "baseline_perplexity": mark,
        "pretrained_on": [str(f) for f in args.pretrain_on],
        "runs": runs,
    }
    (args.out / "rate_sweep.json").write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
