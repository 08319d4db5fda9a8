"""Bench: hearing many adapter bots. K adapter bots of one base, made in one task by the job,
then heard by `huggingtweets generate` in one call (the base loaded once, the adapters
switched) against one call a bot (each loads the base and imports the libraries again).
Printed: seconds to the first tweet and to the last, each way, and the ratio.
Written: OUT/generate.json.

    python bench/generate.py --bots 10
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import REPO, SAMPLE, bakers, child_env, task_manifest, timed

ASK = ["--prompt", "Bread is", "--n", "1", "--max-new-tokens", "16", "--seed", "7"]


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bots", type=int, default=10)
    parser.add_argument("--out", type=Path, default=REPO / "bench-out" / "generate")
    args = parser.parse_args()
    args.out = args.out.resolve()
    return args


def make_bots(args: argparse.Namespace, env: dict[str, str]) -> list[Path]:
    """K adapter bots of one tiny base (a folder both share), made in one task."""
    from job.training.model import build_random

    texts = [json.loads(line)["text"] for line in SAMPLE.read_text().splitlines()]
    base = build_random(args.out / "base", texts, None, 42)
    tweets = bakers(SAMPLE, args.out / "inputs", args.bots)
    defaults = {
        "base_model": str(base),
        "train": {"epochs": 1, "adapter": "lora", "learning_rate": 3e-3},
        "sampling": {"per_prompt": 1},
    }
    manifest = task_manifest(args.out / "bots", tweets, args.bots, defaults)
    command = [sys.executable, "-m", "job", "run", "--manifest", str(manifest), "--index", "0"]
    timed(command, env, args.out / "made")
    return [args.out / "bots" / f"baker{i}" for i in range(args.bots)]


def heard(commands: list[list[str]], env: dict[str, str]) -> tuple[float, float]:
    """Seconds to the first line of stdout, and to the end of the last command."""
    start = time.perf_counter()
    first = None
    for command in commands:
        with subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        ) as process:
            assert process.stdout is not None
            for _ in process.stdout:
                first = first or time.perf_counter() - start
            if process.wait() != 0:
                sys.exit(f"failed: {' '.join(command[:6])} ...")
    return first or 0.0, time.perf_counter() - start


def main() -> None:
    args = arguments()
    env = child_env()
    bots = [str(b) for b in make_bots(args, env)]
    generate = [sys.executable, "-m", "job", "generate"]
    one_first, one_all = heard([[*generate, *bots, *ASK]], env)
    each_first, each_all = heard([[*generate, bot, *ASK] for bot in bots], env)
    figures = {
        "bots": args.bots,
        "one_call": {"first_s": one_first, "all_s": one_all},
        "a_call_a_bot": {"first_s": each_first, "all_s": each_all},
        "ratio_all": one_all / each_all,
    }
    (args.out / "generate.json").write_text(json.dumps(figures, indent=2))
    print(
        f"{args.bots} adapter bots: one call {one_first:.1f} s to the first tweet,"
        f" {one_all:.1f} s to the last; a call a bot {each_first:.1f} s and {each_all:.1f} s;"
        f" one call x{one_all / each_all:.2f} the time"
    )


if __name__ == "__main__":
    main()
