"""The model folder a run leaves (``OUT/<bot>/model``, and an adapter's merged copy and kept
base beside it), finished after training: the sampling settings and tokenizer where every
client looks, the weights in the precision asked for, an adapter's local base kept and named.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from job.config import SamplingConfig
from job.training.model import EOS, unshared


def to_bf16(folder: Path) -> None:
    """The saved weights in bf16, in place: the model in memory (which samples next) keeps its
    precision; the files, and everything that loads them, get half the bytes. An adapter's
    folder too (its adapter_model.safetensors: a gpt2-xl rank-16 adapter is 39 MB in bf16, 79
    MB in fp32); peft loads it into its base's precision."""
    import torch
    from safetensors.torch import load_file, save_file

    total = 0
    for path in sorted(folder.glob("*.safetensors")):
        tensors = {
            name: t.to(torch.bfloat16) if t.is_floating_point() else t
            for name, t in load_file(path).items()
        }
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        save_file(tensors, path, metadata={"format": "pt"})
    index = folder / "model.safetensors.index.json"
    if index.is_file():  # a sharded save states its total size
        data = json.loads(index.read_text())
        data.setdefault("metadata", {})["total_size"] = total
        index.write_text(json.dumps(data, indent=2) + "\n")
    _config_in_bf16(folder)


def save_bf16(model: Any, folder: Path) -> None:
    """The model saved once, in bf16, from its weights in memory: no fp32 file written, read
    back and written again (``to_bf16``'s way, which ZeRO-3's partitioned weights still need;
    gpt2-xl: 6.2 GB written and read for 3.1 GB kept). Each tensor is cast on the host, one at
    a time; a tied tensor (GPT-2's output embedding is its input's) is saved once, as
    transformers saves it (``snapshot``, written at once). An adapter (peft) saves its own
    tensors only."""
    if hasattr(model, "peft_config"):
        state = {k: _host(v, True) for k, v in model.state_dict().items() if "lora_" in k}
        model.save_pretrained(folder, state_dict=state)
        return
    snapshot(model, folder, bf16=True).write()


def _host(tensor: Any, bf16: bool) -> Any:
    """``tensor`` copied to the host, cast to bf16 where asked (a float tensor only)."""
    import torch

    dtype = torch.bfloat16 if bf16 and tensor.is_floating_point() else tensor.dtype
    return tensor.detach().to("cpu", dtype, copy=True).contiguous()


@dataclass
class Weights:
    """A full model's weights on the host, to be written into its folder later (``write``):
    a task's bot is sampled from the model in memory while its next bot trains and this is
    written behind it (run.py ``Rest``; gpt2-xl: 3-6 GB, 5-20 s of the GPU's time otherwise)."""

    folder: Path
    state: dict[str, Any]

    @property
    def bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.state.values())

    @property
    def params(self) -> int:
        return sum(t.numel() for t in self.state.values())

    def write(self) -> None:
        """``model.safetensors`` as save_pretrained writes it: one file (transformers'
        shards start at 50 GB), each tensor once, its metadata."""
        from safetensors.torch import save_file

        save_file(self.state, str(self.folder / "model.safetensors"), metadata={"format": "pt"})
        self.state = {}


def snapshot(model: Any, folder: Path, bf16: bool) -> Weights:
    """A full model's folder now but for its weights: its configs written, its weights
    copied to the host (in bf16 where asked, a tensor at a time), each
    tied tensor once (``unshared``); ``Weights.write`` writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(folder)
    if model.can_generate():
        model.generation_config.save_pretrained(folder)
    if bf16:
        _config_in_bf16(folder)
    state, _ = unshared(model)
    return Weights(folder, {k: _host(v, bf16) for k, v in state.items()})


def _config_in_bf16(folder: Path) -> None:
    """config.json says the weights are bf16 (an adapter's folder has none: peft's
    adapter_config.json names no dtype)."""
    config = folder / "config.json"
    if not config.is_file():
        return
    data = json.loads(config.read_text())
    data["dtype"] = "bfloat16"  # transformers 5's key (torch_dtype before it)
    data.pop("torch_dtype", None)
    config.write_text(json.dumps(data, indent=2) + "\n")


def finish(folder: Path, tokenizer: Any, sampling: SamplingConfig, model: Any) -> None:
    """Add the tokenizer and the sampling settings where pipeline() and the Hub widget look.

    transformers 5's pipeline reads generation_config.json and config.prefix; older versions
    read task_specific_params. All three are written so every client samples alike.
    """
    from transformers import AutoConfig, GenerationConfig

    generation = sampling.generation_kwargs()
    if (folder / "adapter_config.json").is_file():  # an adapter: no config.json of its own
        gen = GenerationConfig.from_dict(model.generation_config.to_dict())  # the base's
    else:
        config = AutoConfig.from_pretrained(folder)
        config.prefix = EOS
        config.task_specific_params = {"text-generation": {**generation, "prefix": EOS}}
        # The Trainer turns the key/value cache off while it trains, and the saved config kept
        # that: every user's generate() then recomputed the whole text for each new token.
        config.use_cache = True
        config.save_pretrained(folder)
        gen = GenerationConfig.from_pretrained(folder)
    gen.update(**generation)
    gen.save_pretrained(folder)
    tokenizer.padding_side = "right"
    tokenizer.save_pretrained(folder)


def keep_base_beside(base: str, result: Path, model: Path, final: Path) -> None:
    """An adapter names its base (adapter_config.json). A base built here (the tiny one) is
    kept beside the model in the ``result``, ``base/``, and named where it will be
    (``final``, the result's place once the run is done), so the adapter loads after the run's
    scratch space is gone; a Hub base keeps its Hub id (the caller does not call this)."""
    shutil.copytree(base, result / "base")
    config_path = model / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = str((final / "base").resolve())
    config_path.write_text(json.dumps(config, indent=2) + "\n")
