"""job/deadline.py: a total deadline per network operation; the variables that change one are
checked before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from job import errors
from job.deadline import DEADLINES, MAX_SECONDS, seconds_for
from tests.helpers import SAMPLE
from tests.helpers.cli import invoke, one_line


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400", "-5", "0", "ten", "8e5"])
def test_a_deadline_variable_that_is_no_deadline_is_refused_before_any_work(
    value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nan, inf and 1e400 were exit 1; -5 silently removed the deadline."""
    monkeypatch.setenv("HUGGINGTWEETS_DEADLINE_OUTPUT", value)
    out = tmp_path / "out"
    done = invoke("run", "sam", "--jsonl", str(SAMPLE), "--base-model", "tiny", "--out", str(out))
    line = one_line(done, errors.BAD_CONFIG)
    assert "HUGGINGTWEETS_DEADLINE_OUTPUT" in line and "seconds above 0" in line
    assert not (out / ".sam").exists() and not (out / "sam").exists()


def test_a_deadline_variable_sets_its_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    assert seconds_for("output") == DEADLINES["output"]
    monkeypatch.setenv("HUGGINGTWEETS_DEADLINE_OUTPUT", "7.5")
    assert seconds_for("output") == 7.5
    monkeypatch.setenv("HUGGINGTWEETS_DEADLINE_OUTPUT", str(MAX_SECONDS))
    assert seconds_for("output") == MAX_SECONDS
