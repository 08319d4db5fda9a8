"""Base.of: the one rule for what a base model's name names (job/base.py)."""

from __future__ import annotations

import pytest

from job.base import Base
from job.gpt2 import GPT2


@pytest.mark.parametrize(
    ("name", "kind", "hub_id"),
    [
        ("tiny", "tiny", None),
        ("gpt2", "gpt2", "openai-community/gpt2"),
        ("openai-community/gpt2-xl", "gpt2", "openai-community/gpt2-xl"),
        ("/models/mine", "folder", None),
        ("./out/sam/model", "folder", None),
        ("../model", "folder", None),
        ("~/model", "folder", None),
        ("someone/gpt2-tweets", "hub", "someone/gpt2-tweets"),
        ("out/model", "hub", "out/model"),  # no ./: the form of a Hub id, read as one
    ],
)
def test_a_name_is_one_kind_of_base(name: str, kind: str, hub_id: str | None) -> None:
    base = Base.of(name)
    assert (base.kind, base.hub_id) == (kind, hub_id)
    assert (base.size is not None) == (kind == "gpt2")
    assert (base.folder is not None) == (kind == "folder")


def test_a_gpt2_size_carries_its_facts() -> None:
    assert Base.of("openai-community/gpt2-xl").size == GPT2["gpt2-xl"]
    assert Base.of("tiny").label.startswith("a tiny GPT-2")


@pytest.mark.parametrize("name", ["gpt5", "a", "a--b/c", "a/b/c", "a/..", "", "x y/z"])
def test_any_other_name_is_refused_with_what_a_name_may_be(name: str) -> None:
    with pytest.raises(ValueError, match="use tiny"):
        Base.of(name)


def test_the_config_and_a_job_read_the_same_rule(tmp_path) -> None:
    from job.errors import BadConfig
    from tests.helpers.jobs import tiny_job

    assert tiny_job().base.kind == "tiny"
    assert tiny_job(train={"base_model": "gpt2-medium"}).base.size == GPT2["gpt2-medium"]
    with pytest.raises(BadConfig, match="use tiny"):
        tiny_job(train={"base_model": "gpt5"})
