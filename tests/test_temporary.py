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


def test_the_sweep_removes_the_folders_whose_process_is_gone_alone(tmp_path: Path) -> None:
    """A folder is its process's while the process holds the lock in it (the kernel lets go of
    it when the process dies, SIGKILL included); one with no lock, once a minute old."""
    import fcntl

    def folder(name: str, lock: bool = True) -> Path:
        made = tmp_path / name
        made.mkdir()
        (made / "tweets.jsonl").write_text("a person's words\n")
        if lock:
            (made / temporary.LOCK).touch()
        return made

    ended, running = folder("ht-ended_01"), folder("ht-runs_001")
    held = os.open(running / temporary.LOCK, os.O_RDWR)
    fcntl.flock(held, fcntl.LOCK_EX)  # as its process does
    young, old = folder("ht-young_01", lock=False), folder("ht-old_0001", lock=False)
    os.utime(old, (0, 0))
    others = [folder("ht-not-ours"), folder("htt-abcd1234"), folder("ht-toolong123")]
    a_file = tmp_path / "ht-afile_01"  # named like one, not a folder
    a_file.write_text("a file\n")
    try:
        assert sorted(temporary.sweep(tmp_path)) == sorted([ended, old])
    finally:
        os.close(held)
    assert sorted(tmp_path.iterdir()) == sorted([running, young, *others, a_file])
    assert temporary.sweep(tmp_path) == [running]  # its process gone: its lock free


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
