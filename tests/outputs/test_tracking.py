"""W&B tracking: modes, the disabled path that records nothing, lineage kept offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from job.errors import BadConfig
from job.outputs.tracking import Tracker, default_mode


def test_mode_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert default_mode() == "offline"  # nothing leaves the machine unless asked
    monkeypatch.setenv("WANDB_MODE", "online")
    assert default_mode() == "online"


def test_unknown_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadConfig, match="W&B mode must be one of"):
        Tracker("sometimes", "p", "bot", tmp_path)


def test_disabled_records_nothing_and_writes_nothing(tmp_path: Path) -> None:
    tracker = Tracker("disabled", "p", "bot", tmp_path / "bot")
    with tracker.stage("train", {"a": 1}) as run:
        run.log({"loss": 1.0})
        assert tracker.log_artifact(run, "model-bot", "model", [tmp_path], {}) is None
        assert tracker.table(["a"], [[1]]) is None
    assert tracker.run_ids == {} and tracker.urls == {}
    assert not (tmp_path / "bot").exists()


@pytest.mark.integration
def test_offline_artifacts_name_their_parent(tmp_path: Path) -> None:
    """W&B cannot use_artifact offline: the lineage is kept in each artifact's metadata."""
    data = tmp_path / "clean.jsonl"
    data.write_text(json.dumps({"text": "hello"}) + "\n")
    code = f"""
from pathlib import Path
from job.outputs.tracking import Tracker
t = Tracker("offline", "p", "bot", Path({str(tmp_path / "bot")!r}))
with t.stage("prepare", {{}}) as run:
    raw = t.log_artifact(run, "raw-bot", "raw_data", [Path({str(data)!r})], {{"n": 1}})
    child = t.log_artifact(run, "dataset-bot", "dataset", [Path({str(data)!r})], {{}}, parent=raw)
print(child.metadata["derived_from"], t.run_ids["prepare"] is not None)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["raw-bot", "True"]
    assert len(list((tmp_path / "bot" / "wandb").glob("offline-run-*"))) == 1


@pytest.mark.integration
def test_an_online_wandb_that_stops_answering_is_left_behind(tmp_path: Path) -> None:
    """W&B online, its server accepting and never answering: the stage goes on without it
    after the start timeout (here 3 s), with a warning, instead of hanging."""
    import socket
    import time

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(50)
        code = f"""
from pathlib import Path
from job.outputs import tracking
tracking.INIT_TIMEOUT = 3.0
t = tracking.Tracker("online", "p", "bot", Path({str(tmp_path)!r}))
with t.stage("prepare", {{}}) as run:
    run.log({{"x": 1}})
import json, os
print(json.dumps({{"skipped": t.skipped, "runs": t.run_ids}}), flush=True)
os._exit(0)  # wandb's own exit handler waits ~12 s more for the server: not under test
"""
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("WANDB_")},
            "WANDB_BASE_URL": f"http://127.0.0.1:{server.getsockname()[1]}",
            "WANDB_API_KEY": "k" * 40,
        }
        start = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
        )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {"skipped": ["prepare"], "runs": {}}
    assert "goes on without it" in result.stderr
    assert time.monotonic() - start < 30


@pytest.mark.integration
def test_the_bots_of_one_process_keep_their_copies_apart_and_the_service_its_logs(
    tmp_path: Path,
) -> None:
    """A task's bots share one process and one W&B service, the one before finishing behind the
    next (its model logged from a thread while the next one's runs go on): each bot's copies go
    to its own folder, the service's logs to neither (it wrote into the first bot's folder after
    that was removed), the service reports nothing, and the process leaves no folder behind."""
    files = {}
    for bot in ("first", "second"):
        files[bot] = tmp_path / f"{bot}.txt"
        files[bot].write_text(f"what {bot} logs\n")
    root = tmp_path / "out"
    code = f"""
import os, threading
from pathlib import Path
from job.outputs.tracking import Tracker
root = Path({str(root)!r})
first = Tracker("offline", "p", "first", root / "first")
with first.stage("train", {{}}) as run:
    second = Tracker("offline", "p", "second", root / "second")  # the next bot, meanwhile
    with second.stage("prepare", {{}}) as other:
        second.log_artifact(other, "raw-second", "raw_data", [Path({str(files["second"])!r})], {{}})
        def rest():  # the first bot's rest, behind: its model, its predictions table
            first.log_artifact(run, "model-first", "model", [Path({str(files["first"])!r})], {{}})
            first.log(run, {{"predictions": first.table(["text"], [["what first says"]])}})
        behind = threading.Thread(target=rest)
        behind.start()
        behind.join()
        second.log(other, {{"predictions": second.table(["text"], [["what second says"]])}})
        for pid in filter(str.isdigit, os.listdir("/proc")):  # the service of this process
            try:
                line = Path(f"/proc/{{pid}}/cmdline").read_bytes().split(b"\\0")
            except OSError:
                continue
            if line[0].endswith(b"wandb-core") and str(os.getpid()).encode() in line:
                print(b" ".join(line).decode())
"""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**env, "TMPDIR": str(temporary)},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "--no-observability" in result.stdout  # the one service, told not to report
    for bot, other in (("first", "second"), ("second", "first")):
        copied = [p.read_bytes() for p in (root / bot).rglob("*") if p.is_file()]
        assert f"what {bot} logs\n".encode() in copied, bot
        assert f"what {other} logs\n".encode() not in copied, bot
        assert not any(f"what {other} says".encode() in c for c in copied), bot  # its table
        assert not list((root / bot).rglob("core-debug-*.log")), bot  # the service's
    assert sorted(p.name for p in temporary.iterdir()) == []
    # and none in the home (W&B stages a logged table too: outside a bot's turn, it went to
    # ~/.local/share/wandb)
    home = Path(os.environ["HOME"])
    assert [p for p in home.rglob("*") if p.is_file()] == []


def test_a_steps_metrics_wait_for_no_other_bots_copy_and_a_table_does(tmp_path: Path) -> None:
    """Another bot's rest holds the turn while W&B copies what it logs (a gpt2-xl's model is
    ~6 GB): the training step's numbers go at once; a table, which W&B stages, waits."""
    import threading

    logged: list[tuple[dict[str, Any], int | None]] = []
    copying, copied = threading.Event(), threading.Event()

    class Run:
        def log(self, data: dict[str, Any], step: int | None = None) -> None:
            logged.append((dict(data), step))

    class Copying(Run):  # the other bot's run, while W&B copies its table
        def log(self, data: dict[str, Any], step: int | None = None) -> None:
            copying.set()
            copied.wait(10)

    other, tracker = (Tracker("offline", "p", b, tmp_path / b) for b in ("other", "bot"))
    threads = [threading.Thread(target=other.log, args=(Copying(), {"predictions": object()}))]
    threads[0].start()
    assert copying.wait(10)
    metrics = {"loss": 1.5, "epoch": 1, "note": "x", "none": None}
    step = threading.Thread(target=tracker.log, args=(Run(), metrics, 3))
    step.start()
    step.join(5)
    assert not step.is_alive() and logged == [(metrics, 3)]  # at once
    threads.append(threading.Thread(target=tracker.log, args=(Run(), {"predictions": object()})))
    threads[1].start()
    threads[1].join(0.3)
    assert threads[1].is_alive() and len(logged) == 1  # the table waits its turn
    copied.set()
    for thread in (*threads, step):
        thread.join(10)
    assert len(logged) == 2
