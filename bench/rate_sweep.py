"""Sweep: held-out perplexity of the job at several tokens per step and learning rates.

What it answers: when an optimizer step holds more tokens (a larger batch, as a GPU's
memory would allow), how must the learning rate follow for the fine-tuned model to be no
worse? Each run is the job at its defaults except its batch size and a rate (each a bot of
one task, of the same tweets: the job's many-bot path, one process): the original's
1.372e-4 scaled by (tokens per step / context) to the power 0 (none), 0.5 (square root) or 1
(linear), or a rate given outright. The bench's held-out tweets and perplexity
(bench/bench.py) measure every run alike; the baseline runs once, as the mark.

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
    bakers,
    baseline_command,
    made_run,
    perplexity,
    stand_in,
    stand_in_arguments,
    task_manifest,
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


def sweep(
    args: argparse.Namespace, made: tuple[Path, list[str], str, dict], runs: list[dict]
) -> None:
    """Each of ``runs`` (its batch_size and learning_rate) as a bot of one task, the same
    tweets under a handle of its own: the job's many-bot path, one process; each run gets its
    steps, held-out perplexity and job.json."""
    train_file, heldout, base, env = made
    tweets = bakers(train_file, args.out / "inputs", len(runs))
    own = [{"train": {"batch_size": r["batch_size"], "learning_rate": r["learning_rate"]}}
           for r in runs]  # fmt: skip
    defaults = {"base_model": base, "train": {"epochs": args.epochs}}
    manifest = task_manifest(args.out / "runs", tweets, len(runs), defaults, own)
    command = [sys.executable, "-m", "job", "run", "--manifest", str(manifest), "--index", "0"]
    timed(command, env, args.out / "runs")
    for run, path in zip(runs, tweets, strict=True):
        folder = made_run(args.out / "runs", path.stem)
        result = json.loads((folder / "job.json").read_text())["result"]
        run.update(steps=result["steps"], perplexity=perplexity(str(folder / "model"), heldout),
                   job=str(folder / "job.json"))  # fmt: skip


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
    runs = [
        {"batch_size": batch, "learning_rate": rate_of(name, batch * block, context),
         "tokens_per_step": batch * block, "scaling": name}
        for batch in [int(b) for b in args.batch_sizes.split(",")]
        for name in args.rates.split(",")
    ]  # fmt: skip
    sweep(args, made, runs)
    for run in runs:
        print(
            f"batch {run['batch_size']:>3} ({run['tokens_per_step']:>5} tokens/step,"
            f" {run['steps']:>3} steps), rate {run['learning_rate']:.3g} ({run['scaling']}):"
            f" held-out perplexity {run['perplexity']:.1f}"
        )
    figures = {
        "baseline_perplexity": mark,
        "pretrained_on": [str(f) for f in args.pretrain_on],
        "runs": runs,
    }
    (args.out / "rate_sweep.json").write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
