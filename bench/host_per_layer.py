"""Benchmark: the host's time per layer of one training step, when the step's arithmetic is
next to nothing.

On a GPU, the CPU queues every kernel of a step: Python, the dispatcher, the Trainer, the
optimizer's per-tensor work. When that takes longer than the kernels, the GPU waits and the
step's time is the host's, whatever the tokens or FLOPs. This bench measures the host's share
here: the job at batch 1 of 16-token blocks, on random models of GPT-2's depths but 64 wide,
so the kernels are tiny and a step's time is nearly all host work. A line through
(layers, ms per step) gives the host's cost per layer and the fixed cost per step, to hold
against a GPU's step times (docs/benchmarks.md, "Where a default step's time goes").

Steady-state steps only (``result.steady_tokens_per_second``, after the first 5). The CPU's
own kernels still run, so it is an upper bound of this host's dispatch cost, and another host
(the GPU machine's) is faster or slower by its own clock.

    python bench/host_per_layer.py                       # 12 and 48 layers: gpt2, gpt2-xl
    python bench/host_per_layer.py --layers 12,24,36,48
    python bench/host_per_layer.py --compile      # the same, each model compiled (slow)

Written: OUT/host_per_layer.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from common import REPO, SAMPLE, child_env, timed

BLOCK = 16  # tokens a block, batch 1: a kernel's arithmetic is negligible against its launch
WIDTH = {"n_head": 2, "n_embd": 64, "n_positions": 128}  # GPT-2's depth, not its width


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", default="12,48", help="comma-separated; at least two")
    parser.add_argument("--epochs", type=float, default=4.0, help="~150 steps an epoch")
    parser.add_argument("--compile", action="store_true", help="the job's --compile, each run")
    parser.add_argument("--out", type=Path, default=REPO / "bench-out" / "host-per-layer")
    args = parser.parse_args()
    args.out = args.out.resolve()  # the job takes a base folder as /... or ./...
    depths = sorted({int(n) for n in args.layers.split(",")})
    if len(depths) < 2:
        sys.exit("--layers: give at least two depths")

    from job.training.model import build_random

    args.out.mkdir(parents=True, exist_ok=True)
    texts = [json.loads(line)["text"] for line in SAMPLE.read_text().splitlines()]
    runs = []
    for layers in depths:
        base = build_random(
            args.out / f"base-{layers}", texts, None, 42, {"n_layer": layers, **WIDTH}
        )
        out = args.out / f"run-{layers}"
        timed(
            [
                *(sys.executable, "-m", "job", "run", "sourdough_sam", "--jsonl", str(SAMPLE)),
                *("--base-model", str(base), "--batch-size", "1", "--block-size", str(BLOCK)),
                *("--epochs", str(args.epochs), "--out", str(out)),
                *(["--compile"] if args.compile else []),
            ],
            {**child_env(), "HF_HOME": str(args.out / "hf")},  # --compile caches: in OUT
            args.out / f"run-{layers}",
        )
        result = json.loads((out / "sourdough_sam" / "job.json").read_text())["result"]
        ms = 1000 * BLOCK / result["steady_tokens_per_second"]
        runs.append({"layers": layers, "steady_steps": result["steady_steps"], "ms_per_step": ms})
        print(f"{layers:3d} layers: {ms:6.1f} ms a step ({result['steady_steps']} steady steps)")

    # least squares: ms = fixed + per_layer * layers
    per_layer, fixed = statistics.linear_regression(
        [r["layers"] for r in runs], [r["ms_per_step"] for r in runs]
    )
    print(f"host time a step: {fixed:.1f} ms + {per_layer:.2f} ms per layer")
    (args.out / "host_per_layer.json").write_text(
        json.dumps(
            {"compile": args.compile, "runs": runs, "ms_per_layer": per_layer, "ms_fixed": fixed},
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
