"""Benchmark: amortized seconds per bot, K bots in one task against K tasks of one bot each.

A task is one process, as AWS Batch or Kubernetes starts it: ``huggingtweets run --manifest M
--index I``. With ``bots_per_task: 1`` each bot pays the whole fixed cost (start-up, imports,
loading); with ``bots_per_task: K`` one process makes K bots in turn and pays it once
(job/task.py, job/training/model.py ``bases_kept``). Both sides make the same K bots, from the
same tweets, into their own local output; each side's figure is its wall time over K. The
sides alternate over ``--repeats`` and each figure is the median.

    python bench/many_bots.py                      # 10 bots, tiny model, CPU, our sample
    python bench/many_bots.py --bots 10 --base-model FOLDER   # a real base, kept in memory

With ``--s3-delay SECONDS`` it measures slow storage instead: the same task of K bots, output
to S3 (moto on loopback), once straight to it and once through a proxy that holds each bot's
upload back SECONDS (at its run marker, the upload's last request; no bandwidth cap: the
delay stands for a large upload's time). A bot's upload runs behind the next bot's training
(job/behind.py), so the task should take little more than with instant storage: the last
bot's upload, not every bot's.

    python bench/many_bots.py --bots 10 --s3-delay 5

Written: OUT/many_bots.json (or OUT/slow_storage.json).
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

from common import REPO, SAMPLE, bakers, child_env, s3_on_loopback, task_manifest


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
    parser.add_argument(
        "--s3-delay", type=float, help="seconds each bot's upload is held back: the S3 side"
    )
    args = parser.parse_args()
    if args.s3_delay is not None:
        slow_storage(args)
        return

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


def slow_storage(args: argparse.Namespace) -> None:
    """One task of ``--bots`` bots to S3, straight and through the delaying proxy."""
    from tests.helpers.s3 import FaultProxy

    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    tweets = bakers(SAMPLE, args.out / "inputs", args.bots)
    defaults = {"base_model": args.base_model, "train": {"epochs": args.epochs}}
    held: list[str] = []

    def hold(method: str, path: str) -> None:
        if method == "PUT" and path.endswith("/_COMPLETE") and "checkpoint" not in path:
            held.append(path)
            time.sleep(args.s3_delay)  # this request, and so this bot's upload, waits

    with s3_on_loopback("results") as (url, credentials), FaultProxy(url) as proxy:
        proxy.hook = hold  # type: ignore[assignment]
        env = child_env() | credentials
        seconds = {}
        for side, endpoint in (("instant", url), ("slow", proxy.url)):
            local = args.out / side
            manifest = task_manifest(local, tweets, args.bots, defaults)
            spec = json.loads(manifest.read_text())
            spec["output"] = f"s3://results/{side}"
            manifest.write_text(json.dumps(spec, indent=1) + "\n")
            run = [sys.executable, "-m", "job", "run", "--manifest", str(manifest)]
            seconds[side] = timed([[*run, "--index", "0"]],
                                  env | {"AWS_ENDPOINT_URL": endpoint},
                                  local.with_suffix(".log"))  # fmt: skip
    assert len(held) == args.bots, held  # every bot's upload was held on the slow side
    ratio = seconds["slow"] / seconds["instant"]
    (args.out / "slow_storage.json").write_text(json.dumps(
        {"bots": args.bots, "base_model": args.base_model, "epochs": args.epochs,
         "s3_delay": args.s3_delay, "seconds": seconds, "ratio": ratio}, indent=2))  # fmt: skip
    print(f"{args.bots} bots ({args.base_model}, {args.epochs:g} epoch(s)), each upload held"
          f" {args.s3_delay:g} s: {seconds['slow']:.1f} s against {seconds['instant']:.1f} s;"
          f" slow storage x{ratio:.2f} the seconds of instant storage")  # fmt: skip


if __name__ == "__main__":
    main()
