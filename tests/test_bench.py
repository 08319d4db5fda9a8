"""The benchmark runs end to end and reports what docs/benchmarks.md quotes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO
from tests.helpers.jobs import made_run

DOCS = [str(REPO / "README.md"), str(REPO / "docs" / "batch.md")]  # over 6,000 characters


def run_bench(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """One of bench/'s scripts, in its own process as a user runs it; it must succeed."""
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "WANDB_MODE": "disabled"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.integration
def test_bench_on_sample_data(tmp_path: Path) -> None:
    result = run_bench(
        "bench.py",
        *["--epochs", "3", "--repeats", "1", "--help-runs", "1"],  # medians: test_summary_...
        *["--quality-epochs", "2"],
        # the base pre-trained on other text first (our docs), as a stand-in for GPT-2's
        *["--pretrain-on", *DOCS, "--pretrain-epochs", "1"],
        *["--out", str(tmp_path)],
    )
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["device"] == "cpu" and results["tweets"] == 111
    for side in ("ours", "baseline"):
        r = results[side]
        assert r["time_to_bot_s"] > 0 and r["tokens_per_second"] > 0 and r["peak_rss_bytes"] > 0
        assert r["phases_s"]["train"] > 0 and r["mfu"] is None  # MFU only on a GPU
        runs = r["time_to_bot_runs_s"]
        assert len(runs) == 1 and r["time_to_bot_s"] == runs[0]
        # time-to-bot is the whole process: more than the job's own phases add up to
        assert r["time_to_bot_s"] > sum(v for k, v in r["phases_s"].items() if k != "total")
        assert r["steady_tokens_per_second_per_gpu"] > 0 and r["perplexity"] > 1
    # The original recipe: blocks of the model's whole context (the tiny model's 128), one
    # epoch over shuffled copies of the training tweets, one per epoch (3 here).
    baseline = json.loads((tmp_path / "baseline-0" / "baseline.json").read_text())
    assert baseline["block_size"] == 128 and len(baseline["predictions"]) == 15
    ours = json.loads((tmp_path / "ours-0" / "sourdough_sam" / "job.json").read_text())
    assert baseline["train_tokens"] > 2.5 * ours["result"]["train_tokens"]  # ours: one epoch
    # Both sides trained on the same tweets, 10% of them held out from both.
    held_out = 111 - sum(1 for _ in (tmp_path / "train.jsonl").open())
    assert held_out == 11 and f"({held_out} tweets neither side saw)" in result.stdout
    ratios = results["ratios"]
    assert ratios["time_to_bot_speedup"] == pytest.approx(
        results["baseline"]["time_to_bot_s"] / results["ours"]["time_to_bot_s"]
    )
    assert "ratios: training tokens/s x" in result.stdout
    # Both sides started from the pre-trained base, the job's own model of the docs.
    pretrained = tmp_path / "pretrained" / "pretrain" / "model"
    assert results["pretrained_on"] == DOCS
    assert ours["config"]["train"]["base_model"] == str(pretrained)
    assert baseline["base_model"] == str(pretrained)
    assert "pre-trained the base on" in result.stdout
    # Time-to-quality: ours again at 2 epochs; the first run of ours (any length) whose
    # held-out perplexity reaches the baseline's final one gives it.
    quality = results["quality_runs"]
    assert [epochs for epochs, _, _ in quality] == [2.0, 3.0]
    assert quality[1][2] == pytest.approx(results["ours"]["perplexity"])
    reached = sorted(s for _, s, p in quality if p <= results["baseline"]["perplexity"])
    assert results["time_to_quality_s"] == (reached[0] if reached else None)
    assert ratios["perplexity"] == pytest.approx(
        results["ours"]["perplexity"] / results["baseline"]["perplexity"]
    )


def test_random_init_needs_a_gpt2_size_and_its_tokenizer(tmp_path: Path) -> None:
    """A wrong flag stops the bench before it clears --out: earlier results stay."""
    kept = tmp_path / "out" / "results.json"
    kept.parent.mkdir()
    kept.write_text("{}")
    for args in (["--base-model", "tiny", "--tokenizer", "x"], ["--base-model", "gpt2"]):
        result = subprocess.run(
            [
                *[sys.executable, str(REPO / "bench" / "bench.py"), "--random-init", *args],
                *["--out", str(kept.parent)],
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert result.returncode == 2, result.stderr
        assert "--random-init needs a GPT-2 size" in result.stderr
    assert kept.read_text() == "{}"


def test_summary_takes_medians_and_peaks() -> None:
    """Each figure is the median of the interleaved runs (of two: their mean); peaks are maxima."""
    sys.path.insert(0, str(REPO / "bench"))
    try:
        from bench import summarize
    finally:
        sys.path.remove(str(REPO / "bench"))
    runs = [
        {
            "process_s": t,
            "tokens_per_second": 100.0 * t,
            "timings": {"train": t / 2},
            "peak_memory_bytes": 0,
            "rss": int(t * 1000),
            "perplexity": 10.0 + t,
            "steady_tokens_per_second": 300.0 * t,
            "processes": 2,
            "block_size": 64,
        }
        for t in (3.0, 1.0, 2.0)
    ]
    s = summarize(runs, lambda tps, block: tps * block / 64_000)
    assert (s["time_to_bot_s"], s["tokens_per_second"], s["perplexity"]) == (2.0, 200.0, 12.0)
    assert s["time_to_bot_runs_s"] == [3.0, 1.0, 2.0] and s["phases_s"] == {"train": 1.0}
    assert s["peak_rss_bytes"] == 3000 and s["mfu"] == pytest.approx(0.2)
    # steady-state: per GPU (2 processes), with its own MFU
    assert s["steady_tokens_per_second_per_gpu"] == 300.0 and s["steady_mfu"] == pytest.approx(0.3)
    assert summarize(runs[:2], lambda tps, block: None)["time_to_bot_s"] == pytest.approx(2.0)


def test_a_larger_bot_is_its_tweets_repeated_and_each_copy_survives_the_cleaning(
    tmp_path: Path,
) -> None:
    """The probe's bots of ~0.3 M training tokens (bench/gpu_probe.py --bot-tokens): copies of
    the tweets the job's cleaning keeps, each copy its own (its ids and texts told apart)."""
    sys.path.insert(0, str(REPO / "bench"))
    try:
        from common import SAMPLE, bakers
        from gpu_probe import copies_for
    finally:
        sys.path.remove(str(REPO / "bench"))
    from job.config import JobConfig
    from job.data.sources import FileSource
    from job.prepare import prepare

    kept = []
    for copies in (1, 3):
        (path,) = bakers(SAMPLE, tmp_path / f"x{copies}", 1, copies)
        made = prepare({"baker0": FileSource(path)}, tmp_path / f"p{copies}", JobConfig())
        kept.append(len(made.tweets))
    assert kept[1] == 3 * kept[0]
    chars = sum(len(json.loads(line)["text"]) for line in SAMPLE.read_text().splitlines())
    assert copies_for(SAMPLE, 0) == 1 and copies_for(SAMPLE, chars) == 1  # 4 epochs of it
    assert copies_for(SAMPLE, 300_000) == round(300_000 / (chars / 4 * 4))


@pytest.mark.integration
def test_many_bots_bench_makes_every_bot_on_both_sides(tmp_path: Path) -> None:
    result = run_bench("many_bots.py", "--bots", "2", "--out", str(tmp_path))
    results = json.loads((tmp_path / "many_bots.json").read_text())
    per_bot = results["seconds_per_bot"]
    assert results["ratio"] == pytest.approx(per_bot["one task"] / per_bot["separate tasks"])
    # One process made both bots; each was published on its own (its own latest.json).
    for side in ("together-0", "apart-0"):
        assert sorted(p.parent.name for p in (tmp_path / side).glob("*/latest.json")) == [
            "baker0",
            "baker1",
        ]
    assert "s per bot" in result.stdout


@pytest.mark.integration
def test_rate_sweep_trains_each_batch_at_its_scaled_rate(tmp_path: Path) -> None:
    run_bench(
        "rate_sweep.py",
        *["--epochs", "1", "--batch-sizes", "4,8", "--rates", "linear,2e-3"],
        *["--out", str(tmp_path)],
    )
    sweep = json.loads((tmp_path / "rate_sweep.json").read_text())
    assert sweep["baseline_perplexity"] > 1
    runs = {(r["batch_size"], r["scaling"]): r for r in sweep["runs"]}
    assert set(runs) == {(4, "linear"), (8, "linear"), (4, "2e-3"), (8, "2e-3")}
    # tiny: 128-token blocks and context, so linear scaling is the original's x batch
    assert runs[4, "linear"]["learning_rate"] == pytest.approx(4 * 1.372e-4)
    assert runs[8, "linear"]["learning_rate"] == pytest.approx(8 * 1.372e-4)
    assert runs[4, "2e-3"]["learning_rate"] == 2e-3
    # every run a bot of one task: one job process, each bot with its own batch and rate
    assert len({Path(r["job"]).parents[1].name for r in sweep["runs"]}) == 4
    assert (tmp_path / "runs.out").read_text().count("  succeeded  ") == 4  # the task's table
    for (batch, _), r in runs.items():
        job = json.loads(Path(r["job"]).read_text())
        # the job trained at the batch and rate the sweep asked for, and was measured
        assert job["result"]["batch_size"] == batch
        assert job["result"]["learning_rate"] == pytest.approx(r["learning_rate"], rel=1e-3)
        assert r["perplexity"] > 1 and r["tokens_per_step"] == batch * 128
    # half the batch, twice the optimizer steps over the same tweets
    assert runs[4, "linear"]["steps"] in (
        2 * runs[8, "linear"]["steps"] - 1,
        2 * runs[8, "linear"]["steps"],
    )


@pytest.mark.integration
def test_host_per_layer_fits_the_step_time_of_each_depth(tmp_path: Path) -> None:
    run_bench("host_per_layer.py", "--layers", "2,4", "--epochs", "1", "--out", str(tmp_path))
    fit = json.loads((tmp_path / "host_per_layer.json").read_text())
    assert [r["layers"] for r in fit["runs"]] == [2, 4]
    for r in fit["runs"]:
        job = json.loads(
            (tmp_path / f"run-{r['layers']}" / "sourdough_sam" / "job.json").read_text()
        )
        # each depth trained as asked: batch 1 of 16 tokens, steady steps measured
        assert job["result"]["batch_size"] == 1 and job["result"]["block_size"] == 16
        assert r["steady_steps"] == job["result"]["steady_steps"] > 0
        assert r["ms_per_step"] == pytest.approx(16_000 / job["result"]["steady_tokens_per_second"])
        # two depths: the line goes through both
        assert fit["ms_fixed"] + fit["ms_per_layer"] * r["layers"] == pytest.approx(
            r["ms_per_step"]
        )


@pytest.mark.integration
def test_the_gpu_probes_cpu_check_runs_as_printed_and_writes_each_phase_as_it_ends() -> None:
    """docs/benchmarks.md's command: every phase it does not skip runs (compiling has a test of
    its own, tests/training/test_train.py), each line and record is there, and the probe
    leaves no bases or runs behind."""
    import shutil

    page = (REPO / "docs" / "benchmarks.md").read_text()
    command = next(line for line in page.splitlines() if line.startswith("OUT=/tmp/probe "))
    out = Path("/tmp/probe")
    shutil.rmtree(out, ignore_errors=True)
    done = subprocess.run(
        ["bash", "-c", command],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}"},
    )
    try:
        assert done.returncode == 0, done.stderr[-3000:]
        records = {
            r["phase"]: r for r in map(json.loads, (out / "probe.jsonl").read_text().splitlines())
        }
        assert list(records) == [
            "setup", "fixed", "large", "many", "large-8k", "lora-2k", "lora-4k", "lora-2k-24g",
            "lora-4k-24g", "packed-4", "packed-8", "large-compile", "large-noclip",
        ]  # fmt: skip
        assert all("failed" not in r for r in records.values()), records
        skips = ("large-8k", "lora-4k", "lora-2k-24g", "lora-4k-24g", "packed-8", "large-compile")
        for skipped in skips:
            assert records[skipped] == {"phase": skipped, "skipped": "asked"}
        packed = records["packed-4"]
        assert packed["strategy"] == "packed" and packed["card"] == "cpu"
        assert packed["adapter_bytes_fp32"] == 2 * packed["adapter_bytes_bf16"]
        # saved in bf16: the file, its header included, under the fp32 numbers alone
        assert (
            packed["adapter_bytes_bf16"]
            < packed["adapter_bytes_saved"]
            < packed["adapter_bytes_fp32"]
        )
        assert records["lora-2k"]["steady_tokens"] > 0
        assert records["fixed"]["imports_s"] > 0 and records["fixed"]["load_s"] > 0
        ran = [r for r in records.values() if "skipped" not in r and r["phase"] != "setup"]
        assert all(r["card"] == "cpu" for r in ran), ran  # every phase says where it ran
        large = records["large"]
        assert large["steady_tokens"] > 0 and large["profile"]["wall_ms_per_step"] > 0
        assert large["profile"]["aten_ops_per_step"] > 0
        many = records["many"]
        assert len(many["bot_seconds"]) == 2 and len(many["between_bots_gib"]) == 2
        # as production makes them: output on S3 (moto), W&B offline with the model logged
        assert many["output"] == "s3 (moto on loopback)" and many["wandb"].startswith("offline")
        assert all(t > 0 for t in many["trained_tokens"])
        assert records["large-noclip"]["steps"] == large["steps"]
        text = (out / "probe.txt").read_text()
        assert "tok/s" in text and "2 bots of tiny in one task" in text
        # last, the goals: each with its figure or why it has none, and the card
        table = text[text.index("| goal | figure | met | card |") :].splitlines()
        assert len(table) == 2 + 4 and "| 10,000" not in table[0]
        assert "(packed-8: asked) | not measured" in "\n".join(table)
        assert table[2].startswith("| gpt2: at most 5 s a bot") and table[2].endswith("| cpu |")
        assert not (out / "work").exists()
    finally:
        shutil.rmtree(out, ignore_errors=True)


@pytest.mark.integration
def test_the_adapter_bench_compares_full_and_adapter_quality_in_one_run(tmp_path: Path) -> None:
    result = run_bench(
        "adapters.py",
        *["--epochs", "1", "--factors", "10", "--out", str(tmp_path)],
        # a tenth: the sample's other nine tenths stay above the job's 6,000 characters
        *["--pretrain-share", "0.1", "--pretrain-epochs", "1", "--pretrain-on", *DOCS],
        # the seconds part (3) has its own test, below, as docs/benchmarks.md runs it
        *["--parts", "quality"],
    )
    report = json.loads((tmp_path / "adapters.json").read_text())
    (adapter,) = report["adapters"]
    assert adapter["factor"] == 10 and adapter["perplexity"] > 1 < report["full"]["perplexity"]
    assert adapter["model_bytes"] < 0.05 * report["full"]["model_bytes"]  # measured, tiny
    assert report["seconds_per_bot"] == {} and "bots in one task" not in result.stdout
    xl = next(r for r in report["sizes"] if r["model"] == "gpt2-xl")
    assert xl["adapter_bytes"] == 16 * 1600 * 16 * 48 * 4  # rank 16 on every block's matrices
    # A tenth of the training tweets pre-trained the base instead, and left the training file.
    moved, total = map(int, re.findall(r"pre-training on (\d+) of the (\d+)", result.stdout)[0])
    assert (
        moved == round(total / 10) > 0
        and len((tmp_path / "train.jsonl").read_text().splitlines()) == total - moved
    )


@pytest.mark.integration
def test_the_packed_adapter_bench_times_each_count_of_bots(tmp_path: Path) -> None:
    """What docs/benchmarks.md quotes from it: ms a bot-step for each count, against one bot a
    step (the speed itself is the bench's to measure, not a test's)."""
    result = run_bench(
        "packed_adapters.py", "--bots", "1,3", "--layers", "2", "--out", str(tmp_path)
    )
    report = json.loads((tmp_path / "packed_adapters.json").read_text())
    assert [r["bots"] for r in report["rows"]] == [1, 3] and report["layers"] == 2
    assert all(r["ms_per_bot_step"] > 0 for r in report["rows"])
    assert report["rows"][0]["against_one_at_a_time"] == 1.0
    assert "3 bots packed:" in result.stdout and "x one bot a step" in result.stdout


@pytest.mark.integration
def test_the_adapter_bench_times_tasks_alone_with_gpt2s_vocabulary(
    tmp_path: Path, shared: Path
) -> None:
    """--parts seconds: only the K-bot tasks, no quality runs; --tokenizer: GPT-2's 50,257
    tokens, the vocabulary the seconds in docs/benchmarks.md were measured with."""
    result = run_bench(
        "adapters.py",
        *["--parts", "seconds", "--bots", "2", "--out", str(tmp_path)],
        *["--tokenizer", str(shared / "tokenizers" / "gpt2"), "--lora-dropout", "0.1"],
    )
    report = json.loads((tmp_path / "adapters.json").read_text())
    assert report["full"] is None and report["adapters"] == []  # the quality part did not run
    assert set(report["seconds_per_bot"]) == {"full", "adapter"}
    assert report["tokenizer"].endswith("gpt2") and report["lora_dropout"] == 0.1
    assert not (tmp_path / "full").exists() and "bots in one task" in result.stdout
    config = json.loads((tmp_path / "base" / "config.json").read_text())
    assert config["vocab_size"] == 50257
    task = json.loads((tmp_path / "task-adapter.yaml").read_text())  # JSON: YAML reads it
    assert task["defaults"]["train"] == {"epochs": 1, "adapter": "lora", "lora_dropout": 0.1}


@pytest.mark.integration
def test_the_generate_bench_hears_bots_in_one_call_and_one_call_a_bot(tmp_path: Path) -> None:
    """bench/generate.py: the same bots heard both ways, each way's first and last seconds."""
    script = str(REPO / "bench" / "generate.py")
    done = subprocess.run(
        [sys.executable, script, "--bots", "2", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads((tmp_path / "generate.json").read_text())
    assert figures["bots"] == 2
    for way in ("one_call", "a_call_a_bot"):
        assert 0 < figures[way]["first_s"] <= figures[way]["all_s"]
    assert figures["ratio_all"] == figures["one_call"]["all_s"] / figures["a_call_a_bot"]["all_s"]
    assert "2 adapter bots: one call" in done.stdout


@pytest.mark.integration
def test_the_adapter_bench_times_packed_against_sequential_bots(tmp_path: Path) -> None:
    """--parts packed: the same task of adapter bots packed, one after another and as full
    fine-tunes, at each width asked for; and one bot's adapter saved in bf16 and fp32."""
    result = run_bench(
        "adapters.py",
        *["--parts", "packed", "--bots", "2", "--epochs", "1", "--packed-widths", "64"],
        *["--out", str(tmp_path)],
    )
    (row,) = json.loads((tmp_path / "adapters-packed.json").read_text())
    assert row["width"] == 64 and set(row["seconds_per_bot"]) == {"full", "sequential", "packed"}
    tasks = tmp_path / "width-64"
    packed = json.loads((tasks / "pack-packed.yaml").read_text())["defaults"]["train"]
    alone = json.loads((tasks / "pack-sequential.yaml").read_text())["defaults"]["train"]
    assert packed["pack"] is True and alone["pack"] is False
    job = json.loads((made_run(tasks / "pack-packed", "baker0") / "job.json").read_text())
    assert job["result"]["strategy"] == "packed"  # the packed side did pack
    line = next(ln for ln in result.stdout.splitlines() if "packed x" in ln)
    assert f"packed x{row['packed_x_sequential']:.2f} the sequential seconds a bot" in line
    assert row["bf16_perplexity"] > 1 and row["fp32_perplexity"] > 1
    assert "adapter saved in bf16: held-out perplexity" in result.stdout


@pytest.mark.integration
def test_the_many_bots_bench_times_slow_storage_against_instant(tmp_path: Path) -> None:
    """--s3-delay: the same task to S3 (moto on loopback) straight and through a proxy that
    holds each bot's upload back; the ratio as docs/benchmarks.md quotes it."""
    result = run_bench("many_bots.py", "--bots", "2", "--s3-delay", "0.5", "--out", str(tmp_path))
    report = json.loads((tmp_path / "slow_storage.json").read_text())
    assert set(report["seconds"]) == {"instant", "slow"} and report["s3_delay"] == 0.5
    assert f"slow storage x{report['ratio']:.2f} the seconds of instant storage" in result.stdout
    # both tasks wrote to S3, not to the local folder their manifests sit in
    assert not list(tmp_path.glob("instant/*/latest.json"))


@pytest.mark.integration
def test_the_gpu_kit_builds_what_a_device_call_needs_as_printed(
    tmp_path: Path, shared: Path
) -> None:
    """docs/benchmarks.md's `make gpu-kit`, in a clone (this checkout's .venv shared): the
    tokenizer, the archive cleaned by the job and the wheels land in the ignored folders, and
    the call is printed with the carry and time limit the probe needs."""
    from tests.test_docs_commands import printed

    (command,) = printed("docs/benchmarks.md", "make gpu-kit")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    (clone / ".venv").symlink_to(REPO / ".venv")
    for made_from in ("pyproject.toml", "requirements/constraints.txt"):  # installed already
        os.utime(clone / made_from, (0, 0))
    done = subprocess.run(
        ["bash", "-c", command], cwd=clone, capture_output=True, text=True, timeout=300,
        env={**os.environ, "HUGGINGTWEETS_SHARED": str(shared)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    wheels = {p.name.split("-")[0].lower() for p in (clone / ".whl").glob("*.whl")}
    assert {"peft", "pydantic", "pydantic_core", "tenacity", "fonttools"} <= wheels
    assert {"moto", "boto3", "botocore", "werkzeug", "flask"} <= wheels  # the probe's S3 output
    assert "wandb" in wheels  # and its W&B, offline
    (botocore,) = (clone / ".whl").glob("botocore-*.whl")
    assert botocore.stat().st_size < 2e6  # its s3 and sts APIs only: the carry holds 64 MiB
    assert (clone / ".gpu" / "tokenizer" / "vocab.json").is_file()
    rows = [json.loads(line) for line in (clone / ".gpu" / "tweets.jsonl").open()]
    assert len(rows) > 1000 and {r["user"] for r in rows} == {"andreruffert"}  # cleaned
    assert "MiB of the carry's 64" in done.stdout
    assert 'run(command="bash bench/gpu_probe.sh", carry=[".gpu", ".whl"], timeout_s=480)' in (
        done.stdout
    )
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True,
                            text=True, check=True).stdout  # fmt: skip
    assert ".gpu" not in status and ".whl" not in status  # ignored: never committed
