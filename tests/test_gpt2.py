"""job/gpt2.py: the GPT-2 family's facts, in one table."""

from __future__ import annotations

import pytest

from job.gpt2 import GPT2, GPT2_NAMES, pretraining_rate

# Loads transformers (on the meta device: no memory): not the unit tier.
MODEL = pytest.mark.integration


@MODEL
@pytest.mark.parametrize("name", GPT2_NAMES)
def test_gpt2_arch_has_the_published_parameter_count(name: str) -> None:
    """Random weights for benchmarks (bench --random-init) have each size's exact shape, and
    the family table's parameter count agrees: built on the meta device, no memory."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    with torch.device("meta"):
        model = GPT2LMHeadModel(GPT2Config(vocab_size=50257, **GPT2[name].arch))
    assert model.num_parameters() == GPT2[name].params


def test_a_sizes_rate_is_found_by_its_shape_fine_tuned_or_not() -> None:
    for name in GPT2_NAMES:
        arch = GPT2[name].arch
        assert pretraining_rate({**arch, "vocab_size": 50257}) == GPT2[name].pretraining_rate
    assert pretraining_rate({"n_layer": 12, "n_embd": 1024}) is None  # no size's shape
    assert [GPT2[n].params for n in GPT2_NAMES] == sorted(GPT2[n].params for n in GPT2_NAMES)
