"""Base models: GPT-2 by name or path, or a tiny random GPT-2 built locally.

Every model, tiny included, is loaded through ``from_pretrained``: the tiny one is written to a
folder first, so smoke runs and tests take the same code path as real runs. A task that makes
several bots (a manifest's ``bots_per_task``) loads a base once that way and restores it from a
copy in host memory for the next bots of the same base (``bases_kept``). Nothing here
downloads weights on its own: a name (``gpt2``...) resolves through the Hugging Face cache
(``HF_HOME``), which the Docker image keeps on a volume.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationError

from job.base import Base
from job.deadline import deadline, hub_timeouts
from job.errors import (
    BadConfig,
    CorruptInput,
    CredentialsError,
    InputNotFound,
    JobError,
    TransientError,
    causes,
)
from job.gpt2 import GPT2
from job.records import DamagedRecord, Record, read_record
from job.storage import LocalStorage
from job.training import memory

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)


EOS = "<|endoftext|>"

# The tiny model: small enough to train on a laptop CPU in seconds, big enough to learn
# something from a few thousand tweets. 2 layers x 64 wide is nanoGPT's "baby" scale.
TINY: dict[str, Any] = {"n_layer": 2, "n_head": 2, "n_embd": 64, "n_positions": 128}
TINY_VOCAB = 2000  # BPE vocabulary when no GPT-2 tokenizer files are given
MAX_BPE_BYTES = 64 << 20  # GPT-2's vocab.json is 1 MB: 64 is no tokenizer


def check_base(base: Base, tokenizer: Path | None) -> None:
    """Raise if ``base`` (and ``tokenizer``, for tiny) cannot be loaded: a folder must hold a
    model. Cheap: the run calls it before fetching any tweets, so a typo costs no download."""
    if base.kind == "tiny" and tokenizer:
        _bpe_files(tokenizer)
    folder = base.folder
    if folder is not None:
        if not folder.is_dir():
            raise InputNotFound(f"--base-model {base.name}: no such folder")
        if not (folder / "config.json").is_file():
            raise InputNotFound(f"--base-model {base.name}: folder has no config.json")
        try:  # read, not trusted: a llama's config would build a 7 B model
            shape = read_record(LocalStorage(folder), "config.json", BaseShape)
        except DamagedRecord as e:
            raise BadConfig(f"--base-model {base.name}: {e}; not a GPT-2's config.json") from e
        assert shape is not None
        check_shape(shape, base.name)


# Bounds of a base the job will build: twice gpt2-xl's depth and width, GPT-2's context at
# most 8x (a larger one is no GPT-2 the job trains), a block of at least 16 tokens (a tweet's
# length in tokens is ~30), and 4x GPT-2's vocabulary.
MAX_LAYERS, MAX_WIDTH, MIN_POSITIONS, MAX_POSITIONS, MAX_VOCAB = 96, 3200, 16, 8192, 4 * 50257
GPT2_VOCAB = 50257


class BaseShape(Record):
    """What the job reads of a base's ``config.json`` before it builds anything: a GPT-2, of
    sizes that make sense (the family's table in gpt2.py, and the tiny one)."""

    model_type: Literal["gpt2"]
    n_layer: int = Field(ge=1, le=MAX_LAYERS)
    n_embd: int = Field(ge=1, le=MAX_WIDTH)
    n_head: int = Field(ge=1)
    n_positions: int = Field(ge=MIN_POSITIONS, le=MAX_POSITIONS)
    vocab_size: int = Field(ge=1, le=MAX_VOCAB)


def base_arch(base: Base) -> dict[str, Any]:
    """A base's shape before it is loaded: a GPT-2 size's from the table, a folder's from its
    config.json (check_base has read it); a Hub id's is not read before its download, so it is
    taken as gpt2-xl's, the largest a plan must allow for."""
    if base.folder is not None:
        shape = read_record(LocalStorage(base.folder), "config.json", BaseShape)
        assert shape is not None  # check_base refused a folder without one
        return shape.model_dump()
    size = base.size or GPT2["gpt2-xl"]
    return {**size.arch, "vocab_size": GPT2_VOCAB}


def check_shape(shape: BaseShape, name: str) -> None:
    """A base named by a GPT-2 size is that size, whatever cache or mirror it came from (its
    shape in gpt2.py's table, GPT-2's vocabulary): the card's ``base_model`` says so."""
    if shape.n_embd % shape.n_head:
        raise BadConfig(f"--base-model {name}: width {shape.n_embd} is not a multiple of its heads")
    size = GPT2.get(name.removeprefix("openai-community/"))
    if size is None:
        return
    want = {**size.arch, "vocab_size": GPT2_VOCAB}
    have = shape.model_dump(include=set(want))
    if have != want:
        differ = next(k for k in want if have[k] != want[k])
        raise BadConfig(
            f"--base-model {name}: what loaded has {differ} {have[differ]}, not {name}'s"
            f" {want[differ]}: it is not {name} (a stale or foreign cache, or a mirror); point"
            " HF_HOME elsewhere, or name the folder it is"
        )


def resolve_base(
    base: Base, workdir: Path, texts: list[str], tokenizer: Path | None, seed: int
) -> str:
    """The name or folder to give ``from_pretrained``; builds the tiny model when asked."""
    check_base(base, tokenizer)
    if base.kind == "tiny":
        return str(build_random(workdir / "base-tiny", texts, tokenizer, seed))
    if base.folder is not None:
        return str(base.folder)
    return base.hub_id or base.name


def hf_home() -> Path:
    """The Hugging Face cache folder, read now, as huggingface_hub reads it when imported:
    ``HF_HOME``, else ``$XDG_CACHE_HOME/huggingface``, else ``~/.cache/huggingface``."""
    import os

    given = os.environ.get("HF_HOME")
    if given:
        return Path(os.path.expanduser(given))
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    if cache.startswith("~"):  # no HOME, and no passwd entry for this uid (a bare container)
        raise BadConfig(f"uid {os.getuid()} has no home folder: set HF_HOME (or HOME)")
    return Path(cache) / "huggingface"


@dataclass
class _Pristine:
    """A base model as loaded from disk, kept in host memory for the next bot of a task."""

    name: str
    config: Any
    state: dict[str, Any]  # CPU tensors, each once
    shared: frozenset[str]  # names left out of state: tied to another's tensor
    generation: Any
    tokenizer: Any


_keeping = False  # inside bases_kept()
_kept: _Pristine | None = None  # the base of this task's bots, once the first has loaded it
# Adapter bots' base: the model itself, left on the device between bots (adapter.py)
_live: tuple[str, Any, Any] | None = None


@contextmanager
def bases_kept() -> Iterator[None]:
    """Inside, ``load_base`` keeps the base it loads in host memory, and later calls for the
    same base restore it from there instead of from disk (a task making several bots)."""
    global _keeping, _kept, _live
    _keeping = True
    try:
        yield
    finally:
        _keeping, _kept, _live = False, None, None


def load_base(name_or_path: str, *, device: str, live: bool = False) -> tuple[PreTrainedModel, Any]:
    """``load``, or inside ``bases_kept`` the same weights restored from host memory: the
    model is built on the meta device and takes a copy of the kept tensors on ``device`` (no
    random init, no disk, no parsing). ``live``: for an adapter bot, whose training leaves
    the base's weights as they were, the very model the last adapter bot of the same base
    used, still on the device (its tokenizer a fresh copy)."""
    import copy

    global _kept, _live
    if not _keeping:
        return load(name_or_path, device=device)
    if live:
        if _live is None or _live[0] != name_or_path:
            _live = None  # another base: the last one goes first
            model, tokenizer = load(name_or_path, device=device)
            _live = (name_or_path, model, tokenizer)
            return model, copy.deepcopy(tokenizer)
        log.info("base %s still on the device", name_or_path)
        return _live[1], copy.deepcopy(_live[2])
    kept = _kept
    if kept is None or kept.name != name_or_path:
        _kept = None  # another base: the last one's copy goes
        model, tokenizer = load(name_or_path, device=device)
        state, shared = unshared(model)
        if not _copy_fits(state, pinned=device.startswith("cuda")):
            return model, tokenizer
        _kept = _Pristine(
            name_or_path,
            copy.deepcopy(model.config),
            {k: _host_copy(v, pinned=device.startswith("cuda")) for k, v in state.items()},
            shared,
            copy.deepcopy(model.generation_config),
            copy.deepcopy(tokenizer),
        )
        return model, tokenizer
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(
            copy.deepcopy(kept.config), attn_implementation="sdpa"
        )
    # Copied straight to the device: a copy on the host first would hold the base twice in
    # host memory for a moment (gpt2-xl: 12 GB of a 15 GB Batch job).
    # From pinned memory the copies queue without the host waiting (each ~2x a pageable one's
    # speed); the model's first kernels on the same stream come after them.
    missing, unexpected = model.load_state_dict(
        {k: v.to(device, copy=True, non_blocking=v.is_pinned()) for k, v in kept.state.items()},
        assign=True,
        strict=False,
    )
    if set(missing) != kept.shared or unexpected:  # cannot be, from the same config
        raise RuntimeError(f"kept base {name_or_path}: {missing=} {unexpected=}")
    model.tie_weights()  # GPT-2's output embedding is its input one, kept once
    model.generation_config = copy.deepcopy(kept.generation)
    model.loss_type = "ForCausalLM"
    log.info("base %s restored from host memory", name_or_path)
    return model, copy.deepcopy(kept.tokenizer)


def _host_copy(tensor: Any, *, pinned: bool) -> Any:
    """A copy of ``tensor`` in host memory: page-locked for a GPU's bots, so each restore is
    one DMA at the bus's speed rather than a staged copy through a pageable buffer."""
    import torch

    copy = torch.empty_like(tensor, device="cpu", pin_memory=pinned)
    return copy.copy_(tensor.detach())


def unshared(model: PreTrainedModel) -> tuple[dict[str, Any], frozenset[str]]:
    """The state dict with each tensor once, and the names left out: GPT-2's tied output
    embedding is the input embedding's tensor listed under a second name (0.3 GB for gpt2-xl)."""
    seen: set[tuple[int, Any, Any]] = set()
    state, shared = {}, set()
    for name, tensor in model.state_dict().items():
        key = (tensor.data_ptr(), tensor.shape, tensor.dtype)
        if tensor.numel() and key in seen:
            shared.add(name)
        else:
            seen.add(key)
            state[name] = tensor
    return state, frozenset(shared)


def host_bytes(state: dict[str, Any], pinned: bool) -> int:
    """The host memory a copy of ``state`` takes, pinned (rounded: memory.pinned_bytes) or not."""
    sizes = [t.numel() * t.element_size() for t in state.values()]
    return memory.pinned_bytes(sizes) if pinned else sum(sizes)


def kept_host_bytes() -> int:
    """What the task's kept base (``bases_kept``) holds of the host's memory now."""
    if _kept is None:
        return 0
    return host_bytes(_kept.state, any(t.is_pinned() for t in _kept.state.values()))


def _copy_fits(state: dict[str, Any], pinned: bool) -> bool:
    """Whether a host copy of these weights fits beside what this process holds, within
    the host's (or the container's) memory less the strategy's headroom. If not, each bot of
    the task loads the base from disk: slower, never killed for memory."""
    size = host_bytes(state, pinned)
    usable = memory.host_memory_bytes() * memory.HEADROOM - memory.process_memory_bytes()
    if size <= usable:
        return True
    log.warning(
        "base not kept in host memory: its copy needs %.1f GiB and %.1f GiB is free here; each"
        " bot loads it from disk",
        size / memory.GIB,
        max(usable, 0) / memory.GIB,
    )
    return False


def load(
    name_or_path: str, *, device: str, dtype: Any = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model and tokenizer, straight onto the device, with SDPA attention; from the Hub with
    per-request timeouts and a total deadline (job/deadline.py)."""
    hub_timeouts()  # a download from the Hub: every request with a timeout
    try:
        with deadline("base_model", f"loading the base model {name_or_path!r}"):
            return _load(name_or_path, device, dtype)
    except (OSError, ValueError) as e:  # ValueError: a repo or folder without a tokenizer
        raise load_error(name_or_path, e) from e


def _load(
    name_or_path: str, device: str, dtype: Any
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    config = AutoConfig.from_pretrained(name_or_path)
    try:
        check_shape(BaseShape.model_validate(config.to_dict()), name_or_path)
    except ValidationError as e:
        raise BadConfig(f"{name_or_path}: its config.json is not a GPT-2's of a sane size") from e
    family = name_or_path.removeprefix("openai-community/") in GPT2
    if family and len(tokenizer) != GPT2_VOCAB:
        raise BadConfig(
            f"--base-model {name_or_path}: its tokenizer has {len(tokenizer):,} tokens, not"
            f" GPT-2's {GPT2_VOCAB:,}: it is not {name_or_path} (a stale or foreign cache)"
        )
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
    # transformers picks the loss by class name, and "GPT2LMHeadModel" names none: it warns
    # on every run, then uses the causal LM loss. Name that loss so it need not guess.
    model.loss_type = "ForCausalLM"
    if tokenizer.pad_token is None:  # GPT-2 has none; generation pads with EOS
        tokenizer.pad_token = tokenizer.eos_token
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


# What runs with no download at all: a tiny GPT-2 built here, which starts from random weights
# and so needs a far higher rate and more epochs than a fine-tune (the Makefile's demo uses
# these, and the README prints them).
TINY_FLAGS = "--base-model tiny --learning-rate 3e-3 --epochs 30"
OFFLINE_HINT = f"{TINY_FLAGS} trains a tiny GPT-2 built locally (a demo, not a real bot)"


def load_error(name: str, error: BaseException) -> JobError:
    """What a failed ``from_pretrained`` means, from the errors under transformers' OSError:
    the Hub saying the model or a file does not exist is the input (exit 4), gated is the
    token (9); a Hub that cannot be reached or fails (connection, timeout, 5xx, 429) is
    transient (75), which the platforms retry. The servers' words are not quoted."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    chain = causes(error)
    for cause in chain:
        if isinstance(cause, JobError):  # the job's own (a deadline, a stop): as it is
            return cause
        if isinstance(cause, GatedRepoError):
            return CredentialsError(
                f"base model {name!r} is gated on the Hub: HF_TOKEN must be of an account that"
                " accepted its terms"
            )
        if isinstance(cause, RepositoryNotFoundError):
            return InputNotFound(
                f"base model {name!r}: no such model on the Hub (or a private one HF_TOKEN may"
                " not read)"
            )
        if isinstance(cause, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
            break  # the Hub was not reached: below
        if isinstance(cause, (RevisionNotFoundError, EntryNotFoundError)):
            return InputNotFound(f"base model {name!r}: the Hub has no such file or revision")
        if isinstance(cause, HfHubHTTPError):
            status = cause.response.status_code if cause.response is not None else 0
            if status in (401, 403):
                return CredentialsError(f"the Hub refused HF_TOKEN for base model {name!r}")
            if status and status < 500 and status != 429:
                return InputNotFound(f"base model {name!r}: the Hub said {status}")
    hub = any(isinstance(c, (LocalEntryNotFoundError, OfflineModeIsEnabled)) for c in chain)
    wire = [c for c in chain if type(c).__module__.startswith(("httpx", "httpcore"))]
    if hub or wire or any(isinstance(c, (HfHubHTTPError, TimeoutError)) for c in chain):
        kind = type(wire[0]).__name__ if wire else "not reached"
        return TransientError(
            f"base model {name!r}: the Hub could not be reached ({kind}) and the model is not"
            f" in the cache (HF_HOME); a retry fetches it. With no network: {OFFLINE_HINT}"
        )
    return InputNotFound(f"cannot load base model {name!r}: not a model folder or Hub model")


# Training and its loss measurements see only full blocks, no padding and no attention mask
# (blocks.py), so causal attention is all the mask there is. transformers' "sdpa" still builds
# one per forward, and without an attention mask it first checks the position ids for packed
# sequences with an ``.all()`` read back to the host (masking_utils.find_packed_sequence_indices,
# transformers 5): on a GPU a sync in every step. An attention function that the mask interface
# does not know gets no mask built, and drops any it is given (the path transformers keeps for
# vLLM-style backends); SDPA then runs with ``is_causal=True``: the kernel "sdpa" ends up with
# for these blocks anyway. A base whose config names a pad token gets a second read in every
# forward (``warn_if_padding_and_no_attention_mask`` looks for it in the first and last column):
# inside, the config names none.
CAUSAL_ONLY = "sdpa_causal_only"


def _no_mask(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
    if kwargs.get("attention_mask") is not None:  # it would be dropped: padding unmasked
        raise ValueError("causal_only() takes unpadded blocks: no attention mask")


@contextmanager
def causal_only(model: PreTrainedModel) -> Iterator[None]:
    """Inside, ``model`` attends causally over unpadded blocks without building a mask, and
    refuses an attention mask; its attention is put back on the way out (sampling pads)."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    AttentionInterface.register(CAUSAL_ONLY, sdpa_attention_forward)
    before, pad = model.config._attn_implementation, model.config.pad_token_id
    model.set_attn_implementation(CAUSAL_ONLY)
    model.config.pad_token_id = None
    guard = model.register_forward_pre_hook(_no_mask, with_kwargs=True)
    try:
        yield
    finally:
        guard.remove()
        model.config.pad_token_id = pad
        model.set_attn_implementation(before)


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
    try:
        return GPT2Tokenizer(vocab=str(vocab), merges=str(merges))
    except Exception as e:  # the Rust tokenizer's own errors: files it cannot read
        kind = type(e).__name__
        raise CorruptInput(f"--tokenizer {folder}: not GPT-2's BPE files ({kind})") from e


def _bpe_files(folder: Path) -> tuple[Path, Path]:
    """The folder's vocab.json and merges.txt, checked to be what their names say: a JSON
    object of tokens to ids, and text (GPT-2's: 1 MB and 456 KB)."""
    import json

    vocab, merges = folder / "vocab.json", folder / "merges.txt"
    if not (vocab.is_file() and merges.is_file()):
        raise InputNotFound(f"--tokenizer {folder}: needs vocab.json and merges.txt")
    if max(vocab.stat().st_size, merges.stat().st_size) > MAX_BPE_BYTES:
        raise CorruptInput(f"--tokenizer {folder}: files over {MAX_BPE_BYTES >> 20} MiB")
    try:
        table = json.loads(vocab.read_text(encoding="utf-8"))
        merges.read_text(encoding="utf-8")
    except (ValueError, UnicodeDecodeError) as e:
        raise CorruptInput(f"--tokenizer {folder}: not GPT-2's BPE files") from e
    if not isinstance(table, dict) or not all(isinstance(i, int) for i in table.values()):
        raise CorruptInput(f"--tokenizer {folder}: vocab.json is not a table of token ids")
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
