"""The suite keeps to itself: a run writes nothing into the user's caches (and fails if a test
does), leaves no server running, and says at once where the shared data is missing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from job import temporary
from tests.helpers import REPO

pytestmark = pytest.mark.integration

WRITES = """
from tests.conftest import REAL_HOME

def test_writes_into_the_users_cache():
    folder = REAL_HOME / ".cache" / "huggingface" / "hub"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "a-fake-gpt2").write_text("x")

def test_writes_into_its_own_home():
    from pathlib import Path
    import os
    (Path(os.environ["HF_HOME"])).mkdir(parents=True, exist_ok=True)
    (Path(os.environ["HF_HOME"]) / "fine").write_text("x")
"""


def session(tmp_path: Path, body: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    """A pytest session of the project's conftest over ``body``, with ``tmp_path/home`` as
    the user's home."""
    (tmp_path / "home").mkdir(exist_ok=True)
    test = tmp_path / "test_body.py"
    test.write_text(body)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "tests.conftest",
            "-p",
            "no:cacheprovider",
            *args,
            "--rootdir",
            str(tmp_path),
            str(test),
        ],
        cwd=REPO,
        env={**os.environ, "HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_test_that_writes_into_the_users_caches_fails_the_session(tmp_path: Path) -> None:
    env = {k: "" for k in ("HF_HOME",)}
    done = session(tmp_path, WRITES, **env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "the suite changed the user's caches: 1 file(s)" in done.stderr
    assert "a-fake-gpt2" in done.stderr
    clean = session(tmp_path, WRITES.split("def test_writes_into_the_users_cache")[0] + (
        "def test_only_its_own():\n    pass\n"
    ))  # fmt: skip
    assert clean.returncode == 0, clean.stdout + clean.stderr


def running(tag: str) -> list[str]:
    """The command lines of the processes whose environment holds ``tag`` (a zombie's is
    empty: it is gone but for its exit code)."""
    left = []
    for proc in Path("/proc").iterdir():
        try:
            if tag.encode() in (proc / "environ").read_bytes():
                left.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return left


def test_the_parallel_runner_leaves_no_server_running(tmp_path: Path) -> None:
    """Each `pytest -n` run once left its controller's moto server (~200 MB) behind."""
    tag = uuid.uuid4().hex
    done = session(tmp_path, "def test_a():\n    pass\n", "-n", "2", SUITE_TAG=tag)
    assert done.returncode == 0, done.stdout + done.stderr
    assert running(tag) == []


def test_a_session_killed_outright_leaves_no_server_running(tmp_path: Path) -> None:
    """A run killed with no chance to stop its servers (SIGKILL; a worker whose controller is
    gone) once left its moto server running: the kernel now ends it with its starter."""
    import time

    tag = uuid.uuid4().hex
    body = "import os, signal\n\ndef test_a(s3):\n    os.kill(os.getpid(), signal.SIGKILL)\n"
    done = session(tmp_path, body, SUITE_TAG=tag)
    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr
    deadline = time.monotonic() + 10
    while (left := running(tag)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == []


def test_a_session_killed_outright_leaves_its_temporary_folders_to_the_next_one(
    tmp_path: Path,
) -> None:
    """A run's home and its tests' temporary folders (a person's tweets among them) once
    stayed in /tmp when the run was killed: ~1,000 folders a run. The next session removes
    them, and its own at its end; what another session still holds stays."""
    import fcntl

    machine = tmp_path / "tmp"
    machine.mkdir()
    env = {"TMPDIR": str(machine)}
    base = ["--basetemp", str(tmp_path / "base")]  # pytest's own, kept apart from the machine's
    killed = (
        "import os, signal, tempfile\nfrom pathlib import Path\n\n"
        "def test_a():\n"
        "    (Path(tempfile.gettempdir()) / 'tweets.jsonl').write_text('a person')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = session(tmp_path, killed, *base, **env)
    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr
    left = [p.name for p in machine.iterdir()]
    assert len(left) == 1 and list(machine.rglob("tweets.jsonl")), left
    # another session's folder, still held by its process (this one, here)
    other = machine / "ht-abcd1234"
    other.mkdir()
    held = os.open(other / temporary.LOCK, os.O_CREAT | os.O_RDWR)
    fcntl.flock(held, fcntl.LOCK_EX)
    try:
        done = session(tmp_path, "def test_b():\n    pass\n", *base, **env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert [p.name for p in machine.iterdir()] == ["ht-abcd1234"]
    finally:
        os.close(held)


def test_missing_shared_data_is_one_line_at_the_start(tmp_path: Path) -> None:
    done = session(
        tmp_path, "def test_a():\n    pass\n", HUGGINGTWEETS_SHARED=str(tmp_path / "nowhere")
    )
    assert done.returncode == 4, done.stdout + done.stderr
    out = done.stdout + done.stderr
    assert f"expected {tmp_path / 'nowhere'}/data" in out and "HUGGINGTWEETS_SHARED" in out
    assert "passed" not in out  # nothing ran


EARLY = """
import pytest


@pytest.fixture(scope="module")
def cached():  # before any test's own home: what a library fixes at import is the process's
    from huggingface_hub import constants

    folder = __import__("pathlib").Path(constants.HF_HUB_CACHE)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "written-at-import").write_text("x")
    return folder


def test_uses_it(cached):
    assert cached.is_dir()
"""


def test_what_a_library_fixes_at_import_is_the_suites_not_the_users(tmp_path: Path) -> None:
    """huggingface_hub reads its cache folder once, when first imported: a module's fixture
    that imported it before any test's home was set once wrote to the user's cache."""
    done = session(tmp_path, EARLY)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not list((tmp_path / "home").rglob("written-at-import"))
