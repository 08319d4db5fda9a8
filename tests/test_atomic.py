"""Writes that readers never see half of: folders by rename, files by temporary file."""

from __future__ import annotations

import json
from pathlib import Path

from job.atomic import copy_file, json_bytes, replace_dir, write_json


def test_replace_dir_swaps_whole_folders(tmp_path: Path) -> None:
    final, new = tmp_path / "model", tmp_path / ".model-new"
    final.mkdir()
    (final / "old.txt").write_text("old")
    new.mkdir()
    (new / "new.txt").write_text("new")
    replace_dir(new, final)
    assert [p.name for p in final.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no .old, no .new left


def test_replace_dir_into_nothing(tmp_path: Path) -> None:
    new = tmp_path / "staged"
    new.mkdir()
    replace_dir(new, tmp_path / "data")
    assert (tmp_path / "data").is_dir() and not new.exists()


def test_files_are_written_whole_and_leave_no_temporary(tmp_path: Path) -> None:
    write_json(tmp_path / "a" / "job.json", {"é": 1})
    assert (tmp_path / "a" / "job.json").read_bytes() == json_bytes({"é": 1})
    assert json_bytes({"é": 1}) == '{\n  "é": 1\n}\n'.encode()
    (tmp_path / "src").write_bytes(b"x" * 10)
    copy_file(tmp_path / "src", tmp_path / "b" / "dst")
    assert (tmp_path / "b" / "dst").read_bytes() == b"x" * 10
    leftovers = [p.name for p in tmp_path.rglob(".*.tmp")]
    assert leftovers == []
    assert json.loads((tmp_path / "a" / "job.json").read_text()) == {"é": 1}


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    import os
    import socket

    import pytest

    from job.atomic import lock
    from job.errors import BadConfig

    path = tmp_path / ".bot" / "lock"
    with lock(path, "out/bot"):
        holder = json.loads(path.read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        busy = rf"out/bot is being written by pid {os.getpid()}"
        with pytest.raises(BadConfig, match=busy), lock(path, "out/bot"):
            pass
    assert not path.exists()  # released


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path: Path, caplog) -> None:
    import logging
    import socket
    import subprocess
    import sys

    import pytest

    from job.atomic import lock
    from job.errors import BadConfig

    code = "import os; print(os.getpid())"
    dead = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    path = tmp_path / "lock"
    path.write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    with caplog.at_level(logging.WARNING), lock(path, "out/bot"):
        assert "taking over the lock of pid" in caplog.text
    path.write_text(json.dumps({"pid": 1, "host": "another-host"}))  # cannot be checked
    with pytest.raises(BadConfig, match="on another-host"), lock(path, "out/bot"):
        pass
