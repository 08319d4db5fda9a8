"""job/loading.py: YAML read as people write numbers, nesting bounded, pydantic's errors as one
line that names the field."""

from __future__ import annotations

import time

import pytest

from job.config import JobConfig
from job.errors import BadConfig
from job.loading import load_yaml, validate


def test_numbers_read_as_people_write_them() -> None:
    """YAML 1.1 takes 5e-5 and 1e3 (no dot) for strings."""
    assert load_yaml("a: 5e-5\nb: 1e3\nc: 0.5\nd: x\n", "f") == {
        "a": 5e-5, "b": 1000.0, "c": 0.5, "d": "x",
    }  # fmt: skip


def test_a_deeply_nested_document_is_one_line_not_a_crash() -> None:
    started = time.monotonic()
    with pytest.raises(BadConfig, match="f"):
        load_yaml("[" * 5000 + "]" * 5000, "f")
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    ("data", "said"),
    [
        ({"train": {"epoch": 2}}, "f.train.epoch: unknown key; known keys:"),
        ({"train": {"epochs": "many"}}, "f.train.epochs: expected a number"),
        ({"clean": {"replies": "bogus"}}, "f.clean.replies: must be one of 'keep', 'drop'"),
        ({"train": []}, "f.train: expected a mapping, got a list"),
        ({"train": {"hf_token": "x"}}, "(secrets come from the environment)"),
    ],
)
def test_an_error_is_one_line_that_names_the_field(data: dict, said: str) -> None:
    with pytest.raises(BadConfig) as caught:
        validate(JobConfig, data, "f")
    assert said in str(caught.value) and "\n" not in str(caught.value)
