"""Benchmark: amortized seconds per bot, K bots in one task against K tasks of one bot each.

A task is one process, as AWS Batch or Kubernetes starts it: ``huggingtweets run --manifest M
--index I``. With ``bots_per_task: 1`` each bot pays the whole fixed cost (start-up, imports,
loading); with ``bots_per_task: K`` one process makes K bots in turn and pays it once
(job/task.py, job/training/model.py ``bases_kept``). Both sides make the same K bots, from the
same tweets, into their own local output; each side's figure is its wall time over K. The
sides alternate over ``--repeats`` and each figure is the median.

    python bench/many_bots.py                      # 10 bots, tiny model, CPU, our sample
    python bench/many_bots.py --bots 10 --base-model FOLDER   # a real base, kept in memory

Written: OUT/many_bots.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

from common import REPO, SAMPLE, bakers, child_env, task_manifest


def timed(commands: list[list[str]], env: dict[str, str], log: Path) -> float:
    start = time.perf_counter()
    with open(log, "w") as err:
        for command in commands:
            done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=err)
            if done.returncode != 0:
                sys.exit(f"failed ({done.returncode}): {' '.join(command)}; see {log}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bots", type=int, default=10)
    parser.add_argument("--base-model", default="tiny")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "bench-out" / "many-bots")
    args = parser.parse_args()

    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    tweets = bakers(SAMPLE, args.out / "inputs", args.bots)  # K bots, the same work each
    defaults = {"base_model": args.base_model, "train": {"epochs": args.epochs}}
    env = child_env()
    run = [sys.executable, "-m", "job", "run", "--manifest"]
    seconds: dict[str, list[float]] = {"one task": [], "separate tasks": []}
    for i in range(args.repeats):
        out = args.out / f"together-{i}"
        together = task_manifest(out, tweets, args.bots, defaults)
        seconds["one task"].append(
            timed([[*run, str(together), "--index", "0"]], env, out.with_suffix(".log"))
        )
        out = args.out / f"apart-{i}"
        apart = task_manifest(out, tweets, 1, defaults)
        commands = [[*run, str(apart), "--index", str(k)] for k in range(args.bots)]
        seconds["separate tasks"].append(timed(commands, env, out.with_suffix(".log")))
        for side in ("together", "apart"):  # every bot made, on both sides
            made = [p for p in (args.out / f"{side}-{i}").glob("*/latest.json")]
            assert len(made) == args.bots, (side, made)

    per_bot = {side: median(s) / args.bots for side, s in seconds.items()}
    results = {
        "bots": args.bots,
        "base_model": args.base_model,
        "epochs": args.epochs,
        "repeats": args.repeats,
        "seconds": seconds,
        "seconds_per_bot": per_bot,
        "ratio": per_bot["one task"] / per_bot["separate tasks"],
    }
    (args.out / "many_bots.json").write_text(json.dumps(results, indent=2))
    print(
        f"{args.bots} bots ({args.base_model}, {args.epochs:g} epoch(s)), median of"
        f" {args.repeats}: one task {per_bot['one task']:.2f} s per bot, separate tasks"
        f" {per_bot['separate tasks']:.2f} s per bot: x{results['ratio']:.2f} the seconds"
    )


if __name__ == "__main__":
    main()
