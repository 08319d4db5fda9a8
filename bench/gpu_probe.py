"""The GPU probe: the figures a device session is for, in one call of under 8 minutes.

Each phase runs the job as it runs in production (``python -m job run``, its own process) and
appends its figures to ``OUT/probe.jsonl`` and a line to ``OUT/probe.txt`` as soon as it ends,
so a call cut short still returns what it measured. A phase that fails writes the end of its
log instead, and the next one runs. Phases, in order of what they tell:

1. ``fixed``: the fixed cost of a task, split: imports, the CUDA context, loading the base.
2. ``large``: gpt2-xl eager at the default step, profiled over 5 steady steps (GPU-busy ms
   against wall ms a step: how host-bound the step is), with steady tokens/s and MFU.
3. ``many``: gpt2, 10 bots in one task, as production makes them: each of about
   ``--bot-tokens`` training tokens (a typical archive's 0.3 M: the tweets repeated, each copy
   its own), W&B offline with the model logged, the output on S3 (moto on loopback: make
   gpu-kit carries both; where either is missing the phase says what it did instead): seconds
   a bot, and the memory between bots.
4. ``large-8k``: gpt2-xl at 8 x 1,024 tokens a step.
5. ``lora-2k``, ``lora-4k``: gpt2-xl adapter bots at 2 k and 4 k tokens a step (MFU counted
   with an adapter's FLOPs, 4N: no gradient for the frozen weights); ``lora-2k-24g``,
   ``lora-4k-24g``: the same as a 24 GB card plans and holds them (HUGGINGTWEETS_GPU_GIB).
6. ``packed-4``, ``packed-8``: 4 and 8 gpt2-xl adapter bots in one task, trained packed
   (training/packs.py): seconds a bot, and each adapter's bytes in bf16 (saved) and fp32.
7. ``large-compile``: the default step compiled (regional), on cold caches.
8. ``large-noclip``: the default step without gradient clipping.

Last, one table: each goal, its figure, met or not, and the card it ran on.

A phase is skipped when its time limit would take the probe past ``--budget`` seconds (420 by
default: 7 minutes, with a machine's start inside the call's 8).

    bash bench/gpu_probe.sh                           # on the device (carry .gpu and .whl)
    python bench/gpu_probe.py --small tiny --large tiny --bots 3 --out /tmp/probe   # CPU check

On a CPU with the tiny model the figures mean nothing; the run checks the probe itself.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from common import (
    SAMPLE,
    bakers,
    child_env,
    flops_per_token,
    made_run,
    s3_client,
    s3_on_loopback,
    task_manifest,
)

# Seconds each phase may take at most (gpt2-xl on one H100/H200: see docs/benchmarks.md).
LIMITS = {
    "setup": 90,  # gpt2-xl's random weights, built and saved once (6.2 GB)
    "fixed": 60,
    "large": 100,
    "many": 120,
    "large-8k": 80,
    "lora-2k": 70,
    "lora-4k": 70,
    "lora-2k-24g": 70,
    "lora-4k-24g": 70,
    "packed-4": 100,
    "packed-8": 130,
    "large-compile": 150,
    "large-noclip": 70,
}
PHASES = list(LIMITS)[1:]
BETWEEN = re.compile(r"between bots: ([\d.]+) GiB of host memory .*?, ([\d.]+) GiB allocated")


class Probe:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out: Path = args.out
        self.work = self.out / "work"
        self.started = time.monotonic()
        self.env = {**child_env(), "WANDB_MODE": "disabled", "HF_HOME": str(self.work / "hf")}
        first = json.loads(args.tweets.read_text().splitlines()[0])
        self.handle = first.get("user") or args.tweets.stem  # whose tweets: the job checks

    def record(self, phase: str, figures: dict[str, Any], line: str) -> None:
        """One phase's figures, appended as soon as they are known."""
        with open(self.out / "probe.jsonl", "a") as f:
            f.write(json.dumps({"phase": phase, **figures}) + "\n")
        with open(self.out / "probe.txt", "a") as f:
            f.write(line + "\n")
        print(line, flush=True)

    def fits(self, phase: str) -> bool:
        left = self.args.budget - (time.monotonic() - self.started)
        if LIMITS[phase] <= left:
            return True
        self.record(phase, {"skipped": "budget"}, f"{phase}: skipped ({left:.0f} s left)")
        return False

    def job(self, phase: str, base: str, *flags: str, env: dict[str, str] | None = None) -> dict:
        """One run of the job on the probe's tweets; its job.json."""
        out = self.work / phase
        shutil.rmtree(out, ignore_errors=True)
        command = [
            sys.executable,
            "-m",
            "job",
            "run",
            self.handle,
            "--jsonl",
            str(self.args.tweets),
        ]
        command += ["--base-model", base, "--out", str(out), "--predictions-per-prompt", "1"]
        self.run(phase, [*command, *flags], env)
        job = json.loads((out / self.handle / "job.json").read_text())
        # an adapter's folder has no config.json: its base's (kept beside it, or the folder)
        configs = [out / self.handle / d / "config.json" for d in ("model", "base")]
        found = next((c for c in configs if c.is_file()), Path(base) / "config.json")
        job["model_config"] = json.loads(found.read_text())
        shutil.rmtree(out / self.handle / "model", ignore_errors=True)  # gpt2-xl: 6 GB a run
        return job

    def run(
        self, phase: str, command: list[str], env: dict[str, str] | None = None
    ) -> tuple[str, str]:
        """The command's stdout and stderr (its log, ``OUT/<phase>.log``)."""
        log = self.out / f"{phase}.log"
        with open(log, "w") as err:
            done = subprocess.run(
                command,
                env={**self.env, **(env or {})},
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                timeout=LIMITS[phase],
            )
        if done.returncode != 0:
            raise RuntimeError(f"exit {done.returncode}")
        return done.stdout, log.read_text()

    def phase(self, name: str, measure: Any) -> None:
        if not self.fits(name):
            return
        start = time.monotonic()
        try:
            figures, line = measure()
        except Exception as e:  # the next phase still runs; this one says why
            tail = "".join((self.out / f"{name}.log").read_text().splitlines(True)[-8:])
            self.record(name, {"failed": str(e)[:200]}, f"{name}: failed ({e})\n{tail}")
            return
        figures["phase_seconds"] = round(time.monotonic() - start, 1)
        self.record(name, figures, f"{name}: {line} [{figures['phase_seconds']} s]")


def installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def copies_for(tweets: Path, tokens: int) -> int:
    """How many copies of ``tweets`` make a bot of about ``tokens`` training tokens at the
    job's default epochs (GPT-2's BPE: ~4 characters a token of English tweets)."""
    from job.config import TrainConfig

    chars = sum(len(json.loads(line)["text"]) for line in tweets.read_text().splitlines())
    per_copy = chars / 4 * TrainConfig().epochs
    return max(1, round(tokens / per_copy))


@contextmanager
def output_on_s3(local: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """An output on S3, as production's: moto's server on loopback, where moto is installed
    (the bots' uploads, behind the next bot's training, are then real uploads); else ``local``.
    Yields the output and the environment that reaches it."""
    if not (installed("moto") and installed("boto3")):
        yield str(local), {}
        return
    with s3_on_loopback("probe") as (url, credentials):
        yield "s3://probe/many", credentials | {"AWS_ENDPOINT_URL": url}


def read_job(output: str, bot: str, env: dict[str, str]) -> dict:
    """A published bot's job.json, from its latest run, wherever the output is."""
    if not output.startswith("s3://"):
        return json.loads((made_run(Path(output), bot) / "job.json").read_text())
    s3 = s3_client(env["AWS_ENDPOINT_URL"])
    bucket, _, prefix = output[len("s3://") :].partition("/")

    def get(key: str) -> dict:
        return json.loads(s3.get_object(Bucket=bucket, Key=f"{prefix}/{key}")["Body"].read())

    return get(f"{bot}/{get(f'{bot}/latest.json')['run_id']}/job.json")


def base_of(probe: Probe, name: str) -> str:
    """A base of GPT-2 ``name``'s shape at random weights (a folder), or the job's tiny."""
    if name == "tiny":
        return "tiny"
    folder = probe.work / f"base-{name}"
    if not (folder / "config.json").exists():
        from job.gpt2 import GPT2
        from job.training.model import build_random

        texts = [json.loads(line)["text"] for line in probe.args.tweets.read_text().splitlines()]
        build_random(folder, texts, probe.args.tokenizer, 42, GPT2[name].arch)
    return str(folder)


def steady(job: dict, peak_tflops: float | None, adapter: bool = False) -> dict[str, Any]:
    """A run's training figures: the clock's (training/clock.py) and MFU from them, against
    ``peak_tflops`` where given, else the device's own peak (training/peaks.py), on which
    card."""
    from job.training.peaks import peak_tflops as peak_of

    r = job["result"]
    per_token, n = flops_per_token(job["model_config"], r["block_size"])
    if adapter:  # no gradient for the frozen weights: 4N, not 6N (callbacks.flops_per_token)
        per_token -= 2 * n
    card = r.get("gpu_name", "")
    gpu = r["device"] == "cuda"
    peak = peak_tflops if peak_tflops is not None else peak_of(card)[0]
    return {
        "card": card or "cpu",
        "steps": r["steps"],
        "batch": r["batch_size"],
        "block": r["block_size"],
        "steady_steps": r["steady_steps"],
        "steady_tokens": r["steady_tokens"],
        "steady_tokens_per_second": round(r["steady_tokens_per_second"]),
        "tokens_per_second": round(r["tokens_per_second"]),
        "steady_mfu": r["steady_tokens_per_second"] * per_token / (peak * 1e12)
        if gpu and peak
        else None,
        "peak_memory_gib": r["peak_memory_bytes"] / 2**30,
        "train_seconds": job["timings"]["train"],
        "compiled": r.get("compiled", False),
    }


def describe(f: dict[str, Any]) -> str:
    mfu = f"{f['steady_mfu']:.1%}" if f["steady_mfu"] is not None else "n/a (no known peak)"
    return (
        f"on {f['card']}: {f['batch']} x {f['block']} tokens, {f['steps']} steps, steady"
        f" {f['steady_tokens_per_second']:,} tok/s over {f['steady_steps']} steps"
        f" ({f['steady_tokens']:,} tokens), MFU {mfu}, train {f['train_seconds']:.1f} s,"
        f" peak {f['peak_memory_gib']:.1f} GiB"
    )


FIXED = """
import json, sys, time
t = time.perf_counter(); import torch; imports = time.perf_counter() - t
t = time.perf_counter()
cuda = torch.cuda.is_available()
if cuda:
    torch.zeros(1, device="cuda"); torch.cuda.synchronize()
context = time.perf_counter() - t
t = time.perf_counter(); from job.training.model import load; imports += time.perf_counter() - t
t = time.perf_counter()
model, _ = load(sys.argv[1], device="cuda" if cuda else "cpu")
if cuda: torch.cuda.synchronize()
load = time.perf_counter() - t
card = torch.cuda.get_device_name(0) if cuda else "cpu"
print(json.dumps({"imports_s": imports, "cuda_context_s": context, "load_s": load, "card": card}))
"""


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "probe-out")))
    parser.add_argument("--tweets", type=Path, default=SAMPLE, help="a JSON Lines tweets file")
    parser.add_argument("--tokenizer", type=Path, help="GPT-2's BPE files, for random bases")
    parser.add_argument("--large", default="gpt2-xl")
    parser.add_argument("--small", default="gpt2")
    parser.add_argument("--bots", type=int, default=10)
    parser.add_argument(
        "--bot-tokens", type=int, default=300_000, help="many: each bot's training tokens, about"
    )
    parser.add_argument("--epochs", type=float, default=4.0, help="per run of the large model")
    parser.add_argument(
        "--peak-tflops", type=float, help="dense bf16 peak; default: the card's (training/peaks.py)"
    )
    parser.add_argument("--budget", type=float, default=420.0, help="seconds for every phase")
    parser.add_argument("--skip", nargs="*", default=[], choices=PHASES)
    return parser.parse_args()


class Measures:
    """Each phase's measure: its figures and its line. The bases ``setup`` builds are kept
    for the phases after it."""

    def __init__(self, probe: Probe, args: argparse.Namespace) -> None:
        self.probe, self.args = probe, args
        self.epochs = ["--epochs", f"{args.epochs:g}"]
        self.large: str | None = None  # what the large phases train: a name or a folder
        self.small = ""

    def setup(self) -> tuple[dict, str]:
        args = self.args
        self.large = base_of(self.probe, args.large)
        small = base_of(self.probe, args.small)
        if small == "tiny":  # the fixed phase loads a folder: the tiny one, built as the job does
            from job.training.model import build_random

            texts = [json.loads(ln)["text"] for ln in args.tweets.read_text().splitlines()]
            small = str(build_random(self.probe.work / "base-tiny", texts, None, 42))
        self.small = small
        return {"large": args.large, "small": args.small}, f"bases {args.large}, {args.small}"

    def fixed(self) -> tuple[dict, str]:
        printed, _ = self.probe.run("fixed", [sys.executable, "-c", FIXED, self.small])
        figures = json.loads(printed.strip().splitlines()[-1])
        line = ", ".join(f"{k[:-2]} {v:.2f} s" for k, v in figures.items() if k.endswith("_s"))
        return figures, f"on {figures['card']}: {self.args.small}: {line}"

    def profiled(self) -> tuple[dict, str]:
        folder = self.probe.work / "profile"
        env = {"HUGGINGTWEETS_PROFILE": str(folder)}
        job = self.probe.job("large", str(self.large), *self.epochs, env=env)
        figures = steady(job, self.args.peak_tflops)
        profile = json.loads((folder / "profile.json").read_text())
        figures["profile"] = profile
        return figures, (
            f"{describe(figures)}; a step: {profile['wall_ms_per_step']:.1f} ms wall,"
            f" {profile['gpu_busy_ms_per_step']:.1f} ms GPU-busy,"
            f" {profile['aten_ops_per_step']:.0f} aten ops"
        )

    def many(self) -> tuple[dict, str]:
        args, work = self.args, self.probe.work
        out = work / "many"
        copies = copies_for(args.tweets, args.bot_tokens)
        tweets = bakers(args.tweets, work / "inputs", args.bots, copies)
        defaults = {"base_model": self.small, "sampling": {"per_prompt": 1}}
        manifest = task_manifest(out, tweets, args.bots, defaults)
        spec = json.loads(manifest.read_text())
        wandb = installed("wandb")
        if wandb:  # as production logs: offline here, the model logged as an artifact
            spec["wandb"] = {"mode": "offline", "log_model": True}
        with output_on_s3(out) as (output, env):
            spec["output"] = output
            manifest.write_text(json.dumps(spec, indent=1) + "\n")
            start = time.monotonic()
            command = [sys.executable, "-m", "job", "run", "--manifest", str(manifest),
                       "--index", "0"]  # fmt: skip
            _, log = self.probe.run("many", command, env | {"WANDB_MODE": spec["wandb"]["mode"]})
            seconds = time.monotonic() - start
            jobs = [read_job(output, f"baker{i}", env) for i in range(args.bots)]
        totals = [job["timings"]["total"] for job in jobs]
        card = next((n for j in jobs if (n := j["result"].get("gpu_name"))), "cpu")
        between = [(float(h), float(g)) for h, g in BETWEEN.findall(log)]
        figures = {
            "card": card,
            "bots": args.bots,
            "seconds": seconds,
            "seconds_per_bot": seconds / args.bots,
            "bot_seconds": totals,  # each bot's own, from its job.json (after the first: no load)
            "between_bots_gib": between,  # (host, GPU) after each bot
            "trained_tokens": [job["result"]["trained_tokens"] for job in jobs],
            "wandb": "offline, the model logged" if wandb else "disabled: wandb not installed",
            "output": "s3 (moto on loopback)" if output.startswith("s3://") else "a local folder",
        }
        gpu, host = [g for _, g in between] or [0.0], [h for h, _ in between] or [0.0]
        rest = sorted(totals[1:]) or [0.0]
        return figures, (
            f"on {card}: {args.bots} bots of {args.small} in one task"
            f" ({figures['trained_tokens'][0]:,} training tokens each; W&B {figures['wandb']};"
            f" output {figures['output']}): {seconds / args.bots:.2f} s a bot"
            f" ({seconds:.1f} s), first {totals[0]:.1f} s then median {rest[len(rest) // 2]:.1f}"
            f" s; between bots {min(gpu):.2f}-{max(gpu):.2f} GiB on the GPU, host"
            f" {host[0]:.1f}-{host[-1]:.1f} GiB"
        )

    def variant(self, name: str, *flags: str, cap: float | None = None) -> Any:
        """A run of the large base with ``flags``; ``cap``: as a card of that many GiB."""

        def measure() -> tuple[dict, str]:
            env = {"HUGGINGTWEETS_GPU_GIB": f"{cap:g}"} if cap else None
            job = self.probe.job(name, str(self.large), *self.epochs, *flags, env=env)
            figures = steady(job, self.args.peak_tflops, adapter="lora" in flags)
            figures["gpu_cap_gib"] = cap
            return figures, describe(figures) + (f" (as a {cap:g} GiB card)" if cap else "")

        return measure

    def packed(self, bots: int) -> Any:
        """``bots`` adapter bots of the large base in one task: packed by default."""

        def measure() -> tuple[dict, str]:
            from safetensors import safe_open

            work, name = self.probe.work, f"packed-{bots}"
            out = work / name
            tweets = bakers(self.args.tweets, work / f"inputs-{bots}", bots)
            # a base folder: a tiny base is built per bot from its tweets, and is not packed
            base = self.small if self.large == "tiny" else str(self.large)
            defaults = {
                "base_model": base,
                "train": {"adapter": "lora", "epochs": self.args.epochs, "pack": True},
                "sampling": {"per_prompt": 1},
            }
            manifest = task_manifest(out, tweets, bots, defaults)
            start = time.monotonic()
            self.probe.run(name, [sys.executable, "-m", "job", "run", "--manifest",
                                  str(manifest), "--index", "0"])  # fmt: skip
            seconds = time.monotonic() - start
            run = made_run(out, "baker0")
            job = json.loads((run / "job.json").read_text())
            with safe_open(run / "model" / "adapter_model.safetensors", "pt") as f:
                numbers = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118
            saved = (run / "model" / "adapter_model.safetensors").stat().st_size
            figures = {
                "bots": bots,
                "seconds": seconds,
                "seconds_per_bot": seconds / bots,
                "card": job["result"].get("gpu_name") or "cpu",
                "strategy": job["result"]["strategy"],
                "adapter_bytes_saved": saved,  # bf16, the adapter's default
                "adapter_bytes_fp32": 4 * numbers,
                "adapter_bytes_bf16": 2 * numbers,
            }
            shutil.rmtree(out, ignore_errors=True)
            return figures, (
                f"on {figures['card']}: {bots} adapter bots of {self.args.large} in one task"
                f" ({figures['strategy']}): {seconds / bots:.2f} s a bot ({seconds:.1f} s);"
                f" an adapter {saved / 1e6:.1f} MB saved (bf16), {4 * numbers / 1e6:.1f} MB"
                " in fp32"
            )

        return measure


# The goals the probe answers, each from a phase's figures: (goal, phase, figure, met).
GOALS: list[tuple[str, str, Any, Any]] = [
    ("gpt2: at most 5 s a bot in a task of 10", "many",
     lambda f: f"{f['seconds_per_bot']:.2f} s a bot", lambda f: f["seconds_per_bot"] <= 5),
    ("gpt2-xl full fine-tune: at least 45% steady MFU at the planner's step", "large",
     lambda f: f"{f['steady_mfu']:.1%}" if f.get("steady_mfu") is not None else "n/a",
     lambda f: f.get("steady_mfu") is not None and f["steady_mfu"] >= 0.45),
    ("gpt2-xl adapter bots: 10,000 a GPU-day (8.64 s a bot at most)", "packed-8",
     lambda f: f"{86400 / f['seconds_per_bot']:,.0f} a day ({f['seconds_per_bot']:.2f} s a bot)",
     lambda f: 86400 / f["seconds_per_bot"] >= 10_000),
    ("gpt2-xl adapter bots: 50 MB or less a bot", "packed-8",
     lambda f: f"{f['adapter_bytes_saved'] / 1e6:.1f} MB",
     lambda f: f["adapter_bytes_saved"] <= 50e6),
]  # fmt: skip


def goals_table(out: Path) -> str:
    """The table the probe prints last, from what probe.jsonl holds."""
    figures = {}
    for line in (out / "probe.jsonl").read_text().splitlines():
        row = json.loads(line)
        figures[row["phase"]] = row
    rows = ["| goal | figure | met | card |", "| --- | --- | --- | --- |"]
    for goal, phase, figure, met in GOALS:
        f = figures.get(phase, {})
        if "skipped" in f or "failed" in f or not f:
            why = f.get("skipped") or f.get("failed") or "not run"
            rows.append(f"| {goal} | ({phase}: {str(why)[:60]}) | not measured | |")
            continue
        rows.append(f"| {goal} | {figure(f)} | {'yes' if met(f) else 'no'} | {f.get('card', '')} |")
    return "\n".join(rows)


def main() -> None:
    args = arguments()
    args.out.mkdir(parents=True, exist_ok=True)
    probe = Probe(args)
    shutil.rmtree(probe.work, ignore_errors=True)
    probe.work.mkdir()
    measures = Measures(probe, args)
    probe.phase("setup", measures.setup)
    if measures.large is None:
        return
    phases = {
        "fixed": measures.fixed,
        "large": measures.profiled,
        "many": measures.many,
        "large-8k": measures.variant("large-8k", "--block-size", "1024", "--batch-size", "8"),
        "lora-2k": measures.variant("lora-2k", "--adapter", "lora", "--batch-size", "8"),
        "lora-4k": measures.variant("lora-4k", "--adapter", "lora", "--batch-size", "16"),
        "lora-2k-24g": measures.variant(
            "lora-2k-24g", "--adapter", "lora", "--batch-size", "8", cap=24
        ),
        "lora-4k-24g": measures.variant(
            "lora-4k-24g", "--adapter", "lora", "--batch-size", "16", cap=24
        ),
        "packed-4": measures.packed(4),
        "packed-8": measures.packed(8),
        "large-compile": measures.variant("large-compile", "--compile"),
        "large-noclip": measures.variant("large-noclip", "--max-grad-norm", "0"),
    }
    for name in PHASES:
        if name in args.skip:
            probe.record(name, {"skipped": "asked"}, f"{name}: skipped (asked)")
        else:
            probe.phase(name, phases[name])
    shutil.rmtree(probe.work, ignore_errors=True)  # 6 GB of bases and runs: never left behind
    table = goals_table(args.out)
    with open(args.out / "probe.txt", "a") as f:
        f.write(table + "\n")
    print(f"probe: {time.monotonic() - probe.started:.0f} s; {args.out / 'probe.txt'}")
    print(table)


if __name__ == "__main__":
    main()
