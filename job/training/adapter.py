"""Adapter bots: a LoRA of one frozen base per bot (``train.adapter: lora``).

The base stays as loaded: peft wraps the blocks' matrices (``lora_targets``) with low-rank
updates and freezes everything else, so training touches only the adapter, and ``release``
takes the LoRA layers out again without merging them. In a task of several adapter bots the
base is loaded once and stays on the device (model.py, ``load_base(live=True)``): each bot
attaches its adapter, trains, samples, saves and releases it, and the base's weights end
bit-identical (tests/training/test_adapter.py). On a GPU with bf16 the base is held in bf16
(half its memory; it is never updated, so nothing is lost to rounding in training), while the
adapter's weights and their optimizer state stay fp32 under autocast.

What is saved is the ecosystem's adapter format: ``adapter_model.safetensors`` and
``adapter_config.json``, which names the base (``base_model_name_or_path``), with the
tokenizer and generation config beside them; ``peft.AutoPeftModelForCausalLM`` and
``transformers.pipeline`` load it from the folder or the Hub.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from job.config import TrainConfig

if TYPE_CHECKING:
    from transformers import PreTrainedModel

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


def attach(model: PreTrainedModel, config: TrainConfig) -> Any:
    """``model`` with a fresh LoRA adapter of ``config``'s shape; only the adapter trains."""
    from peft import LoraConfig, get_peft_model

    rank = config.lora_rank or rank_for(int(model.config.n_embd))
    lora = LoraConfig(
        r=rank,
        lora_alpha=config.lora_alpha or 2 * rank,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_targets),
        fan_in_fan_out=True,  # GPT-2's Conv1D stores its weight transposed (in, out)
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def rank_for(width: int) -> int:
    """The default rank (config.py ``lora_rank``): 16, or width/32 where that is less."""
    return max(1, min(16, width // 32))


def save_merged(model: Any, folder: Path, precision: str, adapter_precision: str) -> None:
    """The adapter added into a copy of its base, saved as a full model (``lora_merged``): one
    folder that loads without peft. The live base is not touched (peft's merge_and_unload
    would add into the shared base, and taking it out again is not bit-exact), so the copy is
    made on the host, in fp32 whatever the base is held in, and merged there (gpt2-xl: 6 GB of
    host memory for the seconds this takes, and nothing more on the GPU: a deepcopy would
    first copy the model where it is)."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):  # the structure only; the weights are the live model's
        host = get_peft_model(
            AutoModelForCausalLM.from_config(model.get_base_model().config),
            model.peft_config["default"],
        )
    # The adapter as it is saved (``adapter_precision``): the merged copy is then what the
    # published adapter makes on its base, to the bit of its rounding
    saved = torch.bfloat16 if adapter_precision == "bf16" else torch.float32
    state = {
        k: v.detach().to("cpu", saved if "lora_" in k else torch.float32, copy=True).float()
        for k, v in model.state_dict().items()
    }
    host.load_state_dict(state, assign=True, strict=True)
    base = host.get_base_model()
    if getattr(base.config, "tie_word_embeddings", False):  # GPT-2's: one matrix, saved once
        base.get_output_embeddings().weight = base.get_input_embeddings().weight
    merged = host.merge_and_unload(safe_merge=True)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    merged.to(dtype).save_pretrained(folder)


def release(model: Any) -> PreTrainedModel:
    """The base, with the adapter's layers taken out (not merged): its weights as loaded."""
    return model.unload()
