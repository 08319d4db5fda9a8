"""Bench: adapter bots (``--adapter lora``) against full fine-tunes of the same base, in one run.

Three answers, each a ratio between the two sides of this run:

1. **Quality**: held-out perplexity (bench.py's measurement, the same held-out tweets) of the
   full fine-tune at its default rate and of the adapter at that rate times each of
   ``--factors`` (the sweep that chose the adapter's default factor, training/plan.py
   ``ADAPTER_RATE_FACTOR``). Same base, data, epochs and seed.
2. **Bytes a bot**: the adapter's files against the full model's, measured for this base, and
   computed from the shapes for every GPT-2 size (LoRA adds rank x (in + out) numbers a
   matrix: 16 x width x rank a block over c_attn, both c_proj and c_fc).
3. **Seconds a bot** in a task of ``--bots`` bots (one process, ``bots_per_task``), adapters
   against full fine-tunes of the same base, each bot the same tweets under its own handle.
4. **Packed** (``--parts packed``): the same task of ``--bots`` adapter bots trained packed
   (``train.pack``, the default: training/packs.py) against one after another (``pack: false``),
   and the full fine-tunes', at each width of ``--packed-widths`` (2 layers; GPT-2's
   vocabulary with ``--tokenizer``); and the adapter's held-out perplexity saved in bf16 (the
   adapter default, ``save_precision: auto``) against fp32.

    python bench/adapters.py --archive ../shared/data/archives/andreruffert \\
        --handle andreruffert --pretrain-on README.md docs/*.md
    python bench/adapters.py --parts packed --tokenizer ../shared/tokenizers/gpt2

Written: OUT/adapters.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    bakers,
    perplexity,
    stand_in,
    stand_in_arguments,
    task_manifest,
    timed,
)

FP32 = 4  # bytes a number, as both sides save by default (--save-precision fp32)


def lora_bytes(width: int, layers: int, rank: int) -> int:
    """An adapter of every matrix of a GPT-2 block: c_attn (width -> 3 width), attention's
    c_proj (width -> width), c_fc (width -> 4 width), the MLP's c_proj (4 width -> width)."""
    per_block = rank * ((width + 3 * width) + (width + width) + (width + 4 * width) + (5 * width))
    return per_block * layers * FP32


def sizes_table() -> list[dict]:
    from job.gpt2 import GPT2
    from job.training.adapter import rank_for
    from job.training.strategy import shape_of

    rows = []
    for name, size in GPT2.items():
        width, layers = int(size.arch["n_embd"]), int(size.arch["n_layer"])
        full = shape_of(name).params * FP32
        adapter = lora_bytes(width, layers, rank_for(width))
        rows.append(
            {
                "model": name,
                "full_bytes": full,
                "adapter_bytes": adapter,
                "share": adapter / full,
                "per_1000_bots_gb": {"full": full * 1000 / 1e9, "adapter": adapter * 1000 / 1e9},
            }
        )
    return rows


def folder_bytes(folder: Path, names: tuple[str, ...]) -> int:
    return sum((folder / n).stat().st_size for n in names if (folder / n).is_file())


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    stand_in_arguments(parser, "adapters")
    parser.add_argument("--factors", default="3,10,30", help="adapter rate / full rate")
    parser.add_argument("--bots", type=int, default=10, help="bots in the task of part 3")
    parser.add_argument(
        "--width", type=int, default=64, help="the stand-in base's (64: the job's tiny model)"
    )
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--lora-dropout", help="the adapters' (else the job's default)")
    parser.add_argument(
        "--parts",
        default="quality,seconds",
        help="quality (1, 2), seconds (3) and/or packed (4)",
    )
    parser.add_argument(
        "--packed-widths", default="256,64", help="the stand-in widths part 4 runs at"
    )
    return parser.parse_args()


class Bench:
    """The stand-in base and the data every part runs on, and one run of the job."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dropout = {"lora_dropout": float(args.lora_dropout)} if args.lora_dropout else {}
        drop = ["--lora-dropout", args.lora_dropout] if self.dropout else []
        self.lora = ["--adapter", "lora", *drop]
        arch = {"n_embd": args.width, "n_layer": args.layers, "n_head": max(2, args.width // 64)}
        self.train_file, self.heldout, self.base, self.env = stand_in(
            args, arch | {"n_positions": 128}
        )

    def job(self, name: str, *flags: str) -> dict:
        """One bot made by the job: its rate, held-out perplexity, seconds and model bytes."""
        args, out = self.args, self.args.out / name
        seconds, _ = timed(
            [
                *[sys.executable, "-m", "job", "run", args.handle, "--jsonl", str(self.train_file)],
                *["--base-model", self.base, "--out", str(out), "--epochs", f"{args.epochs:g}"],
                *["--predictions-per-prompt", "1", *flags],
            ],
            self.env,
            out,
        )
        made = json.loads((out / args.handle / "job.json").read_text())
        model = out / args.handle / "model"
        return {
            "learning_rate": made["result"]["learning_rate"],
            "perplexity": perplexity(str(model), self.heldout),
            "process_s": seconds,
            "model_bytes": folder_bytes(
                model, ("model.safetensors", "adapter_model.safetensors", "adapter_config.json")
            ),
        }


def quality(bench: Bench) -> tuple[dict, list[dict]]:
    """1, 2: the full fine-tune, and an adapter at each rate factor: held-out perplexity."""
    full = bench.job("full")
    print(f"full fine-tune: rate {full['learning_rate']:.3g}, held-out perplexity"
          f" {full['perplexity']:.1f}, {full['model_bytes']:,} bytes")  # fmt: skip
    adapters = []
    for factor in [float(f) for f in bench.args.factors.split(",")]:
        rate = full["learning_rate"] * factor
        run = {
            "factor": factor,
            **bench.job(f"lora-{factor:g}", *bench.lora, "--learning-rate", f"{rate:.4g}"),
        }
        adapters.append(run)
        share = run["model_bytes"] / full["model_bytes"]
        times = run["perplexity"] / full["perplexity"]
        print(f"adapter x{factor:g}: rate {rate:.3g}, held-out perplexity"
              f" {run['perplexity']:.1f} ({times:.2f}x the full's),"
              f" {run['model_bytes']:,} bytes ({share:.1%})")  # fmt: skip
    return full, adapters


def task_seconds(bench: Bench, name: str, tweets: list[Path], train: dict[str, Any]) -> float:
    """Seconds a bot of one task (``--bots`` bots, one process) of the stand-in base with
    ``train``, output to ``OUT/<name>``."""
    args = bench.args
    out = args.out / name
    defaults = {"base_model": bench.base, "train": train, "sampling": {"per_prompt": 1}}
    manifest = task_manifest(out, tweets, args.bots, defaults)
    start = time.perf_counter()
    timed([sys.executable, "-m", "job", "run", "--manifest", str(manifest), "--index", "0"],
          bench.env, out.with_suffix(".log"))  # fmt: skip
    return (time.perf_counter() - start) / args.bots


def seconds_a_bot(bench: Bench) -> dict[str, float]:
    """3: seconds a bot, K bots in one task each way."""
    args = bench.args
    tweets = bakers(bench.train_file, args.out / "inputs", args.bots)
    per_bot: dict[str, float] = {}
    for side, adapter in (("full", "none"), ("adapter", "lora")):
        train = {"epochs": 1, "adapter": adapter} | (bench.dropout if adapter == "lora" else {})
        per_bot[side] = task_seconds(bench, f"task-{side}", tweets, train)
    ratio = per_bot["adapter"] / per_bot["full"]
    print(f"{args.bots} bots in one task: {per_bot['adapter']:.2f} s a bot with adapters,"
          f" {per_bot['full']:.2f} s full ({ratio:.2f}x)")  # fmt: skip
    return per_bot


def packed(bench: Bench) -> dict[str, Any]:
    """4: seconds a bot of a task of adapter bots, packed and one after another, and of full
    fine-tunes; and one packed bot's held-out perplexity, its adapter in bf16 and fp32."""
    args = bench.args
    tweets = bakers(bench.train_file, args.out / "inputs", args.bots)
    per_bot: dict[str, float] = {}
    sides = {
        "full": {"adapter": "none"},
        "sequential": {"adapter": "lora", "pack": False} | bench.dropout,
        "packed": {"adapter": "lora", "pack": True},
    }
    for side, train in sides.items():
        train = {"epochs": args.epochs, "learning_rate": 3e-3, **train}
        per_bot[side] = task_seconds(bench, f"pack-{side}", tweets, train)
    ratio, full = per_bot["packed"] / per_bot["sequential"], per_bot["packed"] / per_bot["full"]
    print(f"width {args.width}, {args.bots} adapter bots in one task: packed x{ratio:.2f} the"
          f" sequential seconds a bot ({per_bot['packed']:.2f} against"
          f" {per_bot['sequential']:.2f} s; a full fine-tune {per_bot['full']:.2f} s, packed"
          f" x{full:.2f} of it)")  # fmt: skip
    # One bot alone, the same training saved each way: only the saved numbers differ
    rate = ["--learning-rate", "3e-3"]
    fp32 = bench.job("lora-fp32", *bench.lora, *rate, "--save-precision", "fp32")["perplexity"]
    bf16 = bench.job("lora-bf16", *bench.lora, *rate, "--save-precision", "bf16")["perplexity"]
    print(f"adapter saved in bf16: held-out perplexity {bf16:.3f} against {fp32:.3f} in fp32"
          f" ({bf16 / fp32 - 1:+.3%})")  # fmt: skip
    return {"seconds_per_bot": per_bot, "packed_x_sequential": ratio, "packed_x_full": full,
            "bf16_perplexity": bf16, "fp32_perplexity": fp32}  # fmt: skip


def main() -> None:
    args = arguments()
    parts = set(args.parts.split(","))
    if parts == {"packed"}:  # its own stand-ins, one a width
        rows = []
        root = args.out
        for width in [int(w) for w in args.packed_widths.split(",")]:
            args.width, args.out = width, root / f"width-{width}"
            rows.append({"width": width, **packed(Bench(args))})
        (root / "adapters-packed.json").write_text(json.dumps(rows, indent=2))
        return
    bench = Bench(args)
    full, adapters = quality(bench) if "quality" in parts else (None, [])
    per_bot = seconds_a_bot(bench) if "seconds" in parts else {}
    table = sizes_table()
    for row in table:
        print(f"{row['model']:>11}: adapter {row['adapter_bytes'] / 1e6:7.1f} MB of"
              f" {row['full_bytes'] / 1e9:5.2f} GB ({row['share']:.1%}); 1,000 bots"
              f" {row['per_1000_bots_gb']['adapter']:6.1f} GB against"
              f" {row['per_1000_bots_gb']['full']:7.0f} GB")  # fmt: skip
    figures = {
        "pretrained_on": [str(f) for f in args.pretrain_on],
        "tokenizer": str(args.tokenizer) if args.tokenizer else "the tweets'",
        "width": args.width,
        "layers": args.layers,
        "lora_dropout": bench.dropout.get("lora_dropout", "the job's default"),
        "epochs": args.epochs,
        "full": full,
        "adapters": adapters,
        "seconds_per_bot": per_bot,
        "bots": args.bots,
        "sizes": table,
    }
    (args.out / "adapters.json").write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
