"""The process's temporary folder (job/temporary.py): made for the command, removed however the
process ends, and, after SIGKILL, by the next job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from job import temporary


def gone_pid() -> int:
    """The pid of a process that has ended."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return int(done.stdout)


def test_the_sweep_removes_the_folders_of_ended_processes_alone(tmp_path: Path) -> None:
    ended = tmp_path / f"ht-{gone_pid()}-abcd_123"
    running = tmp_path / f"ht-{os.getpid()}-abcd_123"  # this process's
    others = [tmp_path / "ht-123-not-ours", tmp_path / "htt-abcd1234", tmp_path / "ht-x-abcd1234"]
    for folder in (ended, running, *others):
        folder.mkdir()
        (folder / "tweets.jsonl").write_text("a person's words\n")
    a_file = tmp_path / f"ht-{gone_pid()}-file1234"  # named like one, not a folder
    a_file.write_text("a file\n")
    assert temporary.sweep(tmp_path) == [ended]
    assert sorted(tmp_path.iterdir()) == sorted([running, *others, a_file])


KILLED = """
import os, signal
from job import temporary
folder = temporary.start()
(folder / "tweets.jsonl").write_text("a person's words")
print(folder, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.integration
def test_a_job_killed_outright_leaves_its_folder_to_the_next_job_which_removes_it(
    tmp_path: Path,
) -> None:
    """SIGKILL (the OOM killer) runs no cleanup: its folder, with whatever it held (a task's
    folder for each bot: the person's tweets), stays until the next job on the machine starts,
    and goes then; a job that ends by itself leaves nothing."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    killed = subprocess.run(
        [sys.executable, "-c", KILLED], env=env, capture_output=True, text=True, timeout=60
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left = Path(killed.stdout.strip())
    assert left.parent == tmp_path and (left / "tweets.jsonl").is_file()
    done = subprocess.run(
        [sys.executable, "-m", "job", "--version"], env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.startswith("huggingtweets "), done.stderr
    assert sorted(tmp_path.iterdir()) == []  # the killed job's folder, and its own
