"""job/outputs/model_folder.py: a full model's weights copied to the host at once and written
later (``snapshot``, ``Weights.write``: a task's bot behind its next bot's training; written at
once, ``save_bf16``) make the folder ``save_pretrained`` makes, and in bf16 the one ``to_bf16``
converts it to; an adapter's and ZeRO-3's saves are tested with their runs (tests/training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from job.outputs import model_folder
from job.training.model import build_random, load

pytestmark = pytest.mark.integration  # loads a model (torch, transformers)


def tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_weights_written_later_are_the_folder_a_save_makes_now(tmp_path: Path, bf16) -> None:
    import torch

    base = build_random(tmp_path / "base", ["Bread is good", "I bake bread"] * 20, None, 42)
    model, _ = load(str(base), device="cpu")
    made = tmp_path / "made"  # transformers' own save, then (bf16) the fp32 file converted
    model.save_pretrained(made)
    if bf16:
        model_folder.to_bf16(made)
    weights = model_folder.snapshot(model, tmp_path / "later", bf16)
    assert not (tmp_path / "later" / "model.safetensors").exists()  # nothing written yet
    assert weights.params == sum(t.numel() for t in tensors(made).values())
    with torch.no_grad():  # the model goes on (the next bot): the copy stays
        for p in model.parameters():
            p.zero_()
    weights.write()
    assert weights.state == {}  # the host copy is given back once written
    now, later = tensors(made), tensors(tmp_path / "later")
    assert sorted(now) == sorted(later)  # each tied tensor once, under the same name
    assert all(now[k].dtype == later[k].dtype and bool((now[k] == later[k]).all()) for k in now)
    config = json.loads((tmp_path / "later" / "config.json").read_text())
    assert config == json.loads((made / "config.json").read_text())
    reloaded, _ = load(str(tmp_path / "later"), device="cpu")  # as every user loads it
    assert float(next(reloaded.parameters()).detach().abs().sum()) > 0
