"""Base models: GPT-2 by name or path, or a tiny random GPT-2 built locally.

Every model, tiny included, is loaded through ``from_pretrained``: the tiny one is written to a
folder first, so smoke runs and tests take the same code path as real runs. Nothing here
downloads weights on its own: a name (``gpt2``...) resolves through the Hugging Face cache
(``HF_HOME``), which the Docker image keeps on a volume.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from job.errors import BadConfig, InputNotFound

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

GPT2_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
# Hub ids of the names above, for the card's ``base_model``.
HUB_IDS = {name: f"openai-community/{name}" for name in GPT2_NAMES}
EOS = "<|endoftext|>"

# The tiny model: small enough to train on a laptop CPU in seconds, big enough to learn
# something from a few thousand tweets. 2 layers x 64 wide is nanoGPT's "baby" scale.
TINY: dict[str, Any] = {"n_layer": 2, "n_head": 2, "n_embd": 64, "n_positions": 128}
TINY_VOCAB = 2000  # BPE vocabulary when no GPT-2 tokenizer files are given


def check_base(base_model: str, tokenizer: Path | None) -> None:
    """Raise if ``base_model`` (and ``tokenizer``, for tiny) cannot name a model. Cheap: the
    run calls it before fetching any tweets, so a typo costs no download."""
    if base_model in GPT2_NAMES:
        return
    if base_model == "tiny":
        if tokenizer:
            _bpe_files(tokenizer)
        return
    path = Path(base_model)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InputNotFound(f"--base-model {base_model}: folder has no config.json")
        return
    if "/" in base_model:  # another Hub id (a GPT-2 fine-tune, say)
        return
    raise BadConfig(
        f"--base-model {base_model!r}: use tiny, {', '.join(GPT2_NAMES)}, a folder or a Hub id"
    )


def resolve_base(
    base_model: str, workdir: Path, texts: list[str], tokenizer: Path | None, seed: int
) -> str:
    """The name or folder to give ``from_pretrained``; builds the tiny model when asked."""
    check_base(base_model, tokenizer)
    if base_model == "tiny":
        return str(build_random(workdir / "base-tiny", texts, tokenizer, seed))
    return HUB_IDS.get(base_model, base_model)


def load(
    name_or_path: str, *, device: str, dtype: Any = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model and tokenizer, straight onto the device, with SDPA attention."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        config = AutoConfig.from_pretrained(name_or_path)
        if getattr(config, "activation_function", None) == "gelu_new":
            # GPT-2's GELU as transformers writes it is 8 elementwise ops, each saving its
            # input for the backward pass; PyTorch's tanh GELU is the same function in one
            # kernel (max difference 2.4e-7 in fp32): 2x faster on CPU (docs/benchmarks.md).
            config.activation_function = "gelu_pytorch_tanh"
        model = AutoModelForCausalLM.from_pretrained(
            name_or_path,
            config=config,
            dtype=dtype,
            attn_implementation="sdpa",
            device_map=device,
        )
    except OSError as e:
        raise InputNotFound(f"cannot load base model {name_or_path!r}: {e}") from e
    # transformers picks the loss by class name, and "GPT2LMHeadModel" names none: it warns
    # on every run, then uses the causal LM loss. Name that loss so it need not guess.
    model.loss_type = "ForCausalLM"
    if tokenizer.pad_token is None:  # GPT-2 has none; generation pads with EOS
        tokenizer.pad_token = tokenizer.eos_token
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def gpt2_arch(name: str) -> dict[str, Any]:
    """The shape of a GPT-2 size, for random weights of it (benchmarks on machines without the
    Hub: the speed of a step does not depend on the values of the weights)."""
    from job.strategy import GPT2_SHAPES

    _, layers, width = GPT2_SHAPES[name]
    # Every GPT-2 size has 64-wide heads and a 1,024-token context (Radford et al. 2019).
    return {"n_layer": layers, "n_embd": width, "n_head": width // 64, "n_positions": 1024}


def build_random(
    folder: Path,
    texts: list[str],
    tokenizer_dir: Path | None,
    seed: int,
    arch: dict[str, Any] | None = None,
) -> Path:
    """Write a random-init GPT-2 (the tiny one unless ``arch`` says) and its tokenizer."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = gpt2_tokenizer(tokenizer_dir) if tokenizer_dir else train_tokenizer(texts)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **(arch or TINY),
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    log.info("built a random GPT-2 (%.2f M parameters) in %s", model.num_parameters() / 1e6, folder)
    return folder


def gpt2_tokenizer(folder: Path) -> PreTrainedTokenizerBase:
    """GPT-2's tokenizer from its own BPE files (``vocab.json``, ``merges.txt``)."""
    from transformers import GPT2Tokenizer  # transformers 5: the fast (Rust) tokenizer

    vocab, merges = _bpe_files(folder)
    # transformers 5: pass the files' paths as vocab=/merges=; the old vocab_file=/merges_file=
    # names are ignored and give an empty tokenizer.
    return GPT2Tokenizer(vocab=str(vocab), merges=str(merges))


def _bpe_files(folder: Path) -> tuple[Path, Path]:
    vocab, merges = folder / "vocab.json", folder / "merges.txt"
    if not (vocab.is_file() and merges.is_file()):
        raise InputNotFound(f"--tokenizer {folder}: needs vocab.json and merges.txt")
    return vocab, merges


def train_tokenizer(texts: list[str]) -> PreTrainedTokenizerBase:
    """A small byte-level BPE trained on the tweets themselves (GPT-2's scheme, less vocab)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        texts, vocab_size=TINY_VOCAB, min_frequency=2, special_tokens=[EOS], show_progress=False
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token=EOS, bos_token=EOS, unk_token=EOS
    )
