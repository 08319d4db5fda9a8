from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from job import errors
from job.errors import InputNotFound
from job.gpt2 import GPT2
from job.training.model import (
    build_random,
    causal_only,
    gpt2_tokenizer,
    load,
    resolve_base,
)

# Loads transformers and builds models through it: ~5 s of imports, so not the unit tier.
MODEL = pytest.mark.integration


@MODEL
def test_gpt2_tokenizer_is_exact(shared: Path) -> None:
    tok = gpt2_tokenizer(shared / "tokenizers" / "gpt2")
    assert tok("Hello world")["input_ids"] == [15496, 995]
    assert tok.convert_tokens_to_ids("<|endoftext|>") == 50256 and len(tok) == 50257


@MODEL
def test_tiny_with_gpt2_tokenizer_loads_through_from_pretrained(shared: Path, tmp_path: Path):
    folder = build_random(tmp_path / "tiny", [], shared / "tokenizers" / "gpt2", seed=0)
    model, tok = load(str(folder), device="cpu")
    assert model.config.vocab_size == 50257 and model.config.n_layer == 2
    assert model.config._attn_implementation == "sdpa"
    assert tok("Hello world")["input_ids"] == [15496, 995]
    assert tok.pad_token_id == tok.eos_token_id == 50256


@MODEL
def test_random_weights_take_the_given_shape(shared: Path, tmp_path: Path) -> None:
    arch = {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 64}
    folder = build_random(tmp_path / "r", [], shared / "tokenizers" / "gpt2", 0, arch)
    model, _ = load(str(folder), device="cpu")
    got = {k: getattr(model.config, k) for k in arch}
    assert got == arch and model.config.vocab_size == 50257


@MODEL
def test_gelu_is_fused_without_changing_the_model(tmp_path: Path) -> None:
    """load() swaps GPT-2's 8-op GELU for PyTorch's fused one: the same function, so the
    logits match a plain from_pretrained load (which keeps gelu_new) to float precision."""
    import torch
    from transformers import AutoModelForCausalLM

    folder = build_random(tmp_path / "t", ["bread and butter and code"] * 50, None, seed=0)
    fast, tok = load(str(folder), device="cpu")
    plain = AutoModelForCausalLM.from_pretrained(folder)
    assert plain.config.activation_function == "gelu_new"
    assert fast.config.activation_function == "gelu_pytorch_tanh"
    ids = tok(["<|endoftext|>bread and butter and code"] * 2, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(fast(ids).logits, plain(ids).logits, rtol=1e-5, atol=1e-5)


@MODEL
def test_causal_only_attention_is_sdpas_own_on_full_blocks(tmp_path: Path) -> None:
    """Training's attention builds no mask: the same logits as "sdpa" on unpadded blocks,
    a padded batch is refused inside, and the model gets "sdpa" back on the way out."""
    import torch

    folder = build_random(tmp_path / "m", ["rye and spelt"] * 50, None, seed=0)
    model, _ = load(str(folder), device="cpu")
    model.eval()
    blocks = torch.randint(0, model.config.vocab_size, (3, 64))
    with torch.no_grad():
        expected = model(input_ids=blocks).logits
        with causal_only(model):
            assert model.config._attn_implementation != "sdpa"
            got = model(input_ids=blocks).logits
            with pytest.raises(ValueError, match="no attention mask"):  # it would be dropped
                model(input_ids=blocks, attention_mask=torch.ones_like(blocks))
    assert torch.equal(got, expected)
    assert model.config._attn_implementation == "sdpa"


@MODEL
def test_tiny_with_trained_tokenizer_roundtrips(tmp_path: Path) -> None:
    texts = ["bread and butter and code"] * 50 + ["sourdough starter bubbles"] * 50
    model, tok = load(str(build_random(tmp_path / "t", texts, None, seed=0)), device="cpu")
    assert tok.eos_token == "<|endoftext|>"
    ids = tok("<|endoftext|>bread and butter")["input_ids"]
    assert ids[0] == tok.eos_token_id and tok.decode(ids[1:]) == "bread and butter"
    assert model.config.vocab_size == len(tok) < 2100


@MODEL
def test_same_seed_same_weights(tmp_path: Path) -> None:
    a, _ = load(str(build_random(tmp_path / "a", ["x y z"] * 20, None, seed=3)), device="cpu")
    b, _ = load(str(build_random(tmp_path / "b", ["x y z"] * 20, None, seed=3)), device="cpu")
    c, _ = load(str(build_random(tmp_path / "c", ["x y z"] * 20, None, seed=4)), device="cpu")
    wa, wb, wc = (m.transformer.h[0].attn.c_attn.weight for m in (a, b, c))
    assert wa.equal(wb) and not wa.equal(wc)


def test_resolve_base(tmp_path: Path) -> None:
    from job.base import Base

    def resolved(name: str, tokenizer: Path | None = None) -> str:
        return resolve_base(Base.of(name), tmp_path, [], tokenizer, 0)

    assert resolved("gpt2-xl") == "openai-community/gpt2-xl"
    assert resolved("someone/gpt2-tweets") == "someone/gpt2-tweets"
    with pytest.raises(InputNotFound, match="no such folder"):
        resolved(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputNotFound, match=r"no config\.json"):
        resolved(str(tmp_path / "empty"))
    with pytest.raises(InputNotFound, match=r"vocab\.json"):
        resolved("tiny", tmp_path / "empty")
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(errors.BadConfig, match=r"not a GPT-2's config\.json"):
        resolved(str(tmp_path / "empty"))
    (tmp_path / "empty" / "config.json").write_text(json.dumps(TINY_CONFIG))
    assert resolved(str(tmp_path / "empty")) == str(tmp_path / "empty")


@MODEL
def test_a_task_restores_its_base_from_host_memory(tmp_path: Path) -> None:
    """Several bots in one task: the second gets the base's weights from the kept copy, equal
    to a fresh from_pretrained load, whatever training did to the first's."""
    import torch

    from job.training import model as model_module
    from job.training.model import bases_kept, load, load_base

    base = str(build_random(tmp_path / "base", ["bread and butter"] * 40, None, 42))
    ids = torch.randint(0, 100, (2, 12))
    fresh, _ = load(base, device="cpu")
    fresh.eval()
    with bases_kept():
        first, _ = load_base(base, device="cpu")
        with torch.no_grad():
            for p in first.parameters():  # what a bot's training does to it
                p.add_(1.0)
        second, tokenizer = load_base(base, device="cpu")
        kept = model_module._kept
        assert kept is not None and kept.shared == {"lm_head.weight"}  # the tied one, once
        assert set(kept.state) | kept.shared == set(fresh.state_dict())
    second.eval()
    assert torch.equal(second(ids).logits, fresh(ids).logits)
    assert second.lm_head.weight is second.transformer.wte.weight  # still tied
    assert second.generation_config.pad_token_id == tokenizer.pad_token_id is not None
    assert second.config.activation_function == "gelu_pytorch_tanh"
    # Outside a task of several bots, nothing is kept: each load comes from disk.
    assert model_module._kept is None and not model_module._keeping


@MODEL
def test_a_base_too_large_for_the_hosts_memory_is_not_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A container with no room for a second copy (gpt2-xl: 6 GB beside the process) loads the
    base from disk for each bot rather than be killed for memory."""
    import torch

    from job.training import memory
    from job.training import model as model_module
    from job.training.model import bases_kept, load_base

    base = str(build_random(tmp_path / "base", ["bread and butter"] * 40, None, 42))
    # the host's limit: this process as it stands, and nothing more
    monkeypatch.setattr(memory, "host_memory_bytes", lambda: memory.process_memory_bytes())
    with bases_kept(), caplog.at_level("WARNING"):
        first, _ = load_base(base, device="cpu")
        assert model_module._kept is None and "base not kept in host memory" in caplog.text
        with torch.no_grad():
            for p in first.parameters():
                p.add_(1.0)
        second, _ = load_base(base, device="cpu")  # from disk again: the pristine weights
    assert not torch.equal(first.lm_head.weight, second.lm_head.weight)
    monkeypatch.undo()
    with bases_kept():
        load_base(base, device="cpu")
        assert model_module._kept is not None  # with the host's real memory, it is kept


def test_hf_home_is_read_as_the_hub_client_reads_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from job.training.model import hf_home

    monkeypatch.setenv("HF_HOME", "/data/hf")
    monkeypatch.setenv("XDG_CACHE_HOME", "/xdg")
    assert hf_home() == Path("/data/hf")
    monkeypatch.delenv("HF_HOME")
    assert hf_home() == Path("/xdg/huggingface")  # where huggingface_hub would look
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert hf_home() == Path.home() / ".cache" / "huggingface"


@pytest.mark.integration
@pytest.mark.parametrize(
    ("where", "code"),
    [
        ("a model the Hub does not have", errors.INPUT_NOT_FOUND),
        ("a file the Hub's model lacks", errors.INPUT_NOT_FOUND),
        ("the Hub answering 503", errors.TRANSIENT),
        ("a Hub that cannot be reached", errors.TRANSIENT),
    ],
)
def test_a_failed_base_download_says_whether_a_retry_can_help(
    hub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, where: str, code: int
) -> None:
    """Only a model (or file) the Hub says does not exist is the input's fault (4); a Hub that
    is down or unreachable is transient (75), which the platforms retry. The servers' words
    are not quoted. huggingface_hub's own backoff sleeps are skipped: the answers are real."""
    import huggingface_hub.constants
    import huggingface_hub.utils._http as http

    monkeypatch.setattr(http.time, "sleep", lambda seconds: None)
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # nothing cached
    if where == "a file the Hub's model lacks":
        hub.state.repos["someone/model"] = {"private": False}
    elif where == "the Hub answering 503":
        hub.state.faults.append(lambda m, p: 503 if "/resolve/" in p else None)
    elif where == "a Hub that cannot be reached":
        import socket

        with socket.socket() as s:  # a port nothing listens on
            s.bind(("127.0.0.1", 0))
            closed = f"http://127.0.0.1:{s.getsockname()[1]}"
        constants = huggingface_hub.constants
        for name in ("HUGGINGFACE_CO_URL_TEMPLATE", "ENDPOINT"):  # the template names ENDPOINT
            value = getattr(constants, name).replace(constants.ENDPOINT, closed)
            monkeypatch.setattr(constants, name, value)
    with pytest.raises(errors.JobError) as raised:
        load("someone/model", device="cpu")
    assert raised.value.exit_code == code, raised.value
    message = str(raised.value)
    assert "someone/model" in message and "\n" not in message
    assert "injected fault" not in message and "Entry not found" not in message


@MODEL
def test_a_hub_client_line_is_printed_once() -> None:
    """huggingface_hub's retry lines went out through its own handler and the job's."""
    script = (
        "from job.console import setup_logging; setup_logging(False)\n"
        "from job.console import quiet_libraries; quiet_libraries()\n"
        "import logging; logging.getLogger('huggingface_hub.utils._http')"
        ".warning('Retrying in 1s [Retry 1/5].')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("Retrying in 1s") == 1, done.stderr


# --- A base is what its config.json says, read before anything is built ----------------------

TINY_CONFIG = {
    "model_type": "gpt2",
    "n_layer": 2,
    "n_embd": 64,
    "n_head": 2,
    "n_positions": 128,
    "vocab_size": 1000,
}


@pytest.mark.parametrize(
    "config",
    [
        {**TINY_CONFIG, "model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32},
        [],
        {**TINY_CONFIG, "n_positions": 8},
        {**TINY_CONFIG, "n_positions": 10**9},
        {**TINY_CONFIG, "n_embd": 0},
        {**TINY_CONFIG, "vocab_size": -1},
        {**TINY_CONFIG, "n_layer": 10_000},
        {**TINY_CONFIG, "n_head": 3},
        "[" * 100_000,
    ],
    ids=[
        "llama", "[]", "8 positions", "1e9 positions", "width 0", "vocab -1", "10,000 layers",
        "heads that do not divide", "deep",
    ],
)  # fmt: skip
def test_a_base_folder_that_is_no_sane_gpt2_is_refused_before_the_data(config, tmp_path) -> None:
    """A llama's config.json once built a 7 B model and the kernel killed the job (no line);
    the others were exit 1 after the data stage."""
    import json

    from tests.helpers import SAMPLE
    from tests.helpers.cli import invoke, one_line

    base = tmp_path / "base"
    base.mkdir()
    text = config if isinstance(config, str) else json.dumps(config)
    (base / "config.json").write_text(text)
    out = tmp_path / "out"
    done = invoke(
        "run", "sam", "--jsonl", str(SAMPLE), "--base-model", str(base), "--out", str(out)
    )
    line = one_line(done, errors.BAD_CONFIG)
    assert f"--base-model {base}" in line
    assert not (out / ".sam").exists()  # before the data stage


@pytest.mark.parametrize("name", ["gpt2", "openai-community/gpt2-medium"])
def test_a_base_named_for_a_gpt2_size_must_be_that_size(name: str, tmp_path: Path) -> None:
    """A tiny model served (or cached) as gpt2 once trained and was carded as gpt2."""
    from job.training.model import BaseShape, check_shape

    tiny = BaseShape.model_validate(TINY_CONFIG)
    with pytest.raises(errors.BadConfig, match=f"it is not {name}"):
        check_shape(tiny, name)
    size = GPT2[name.removeprefix("openai-community/")]
    real = BaseShape.model_validate({**TINY_CONFIG, **size.arch, "vocab_size": 50257})
    check_shape(real, name)  # the real one passes
    check_shape(tiny, "someone/tiny-gpt2")  # another name: any sane GPT-2


def test_a_hub_that_cannot_be_reached_says_what_runs_offline() -> None:
    """With no network, `--base-model gpt2` said only "the Hub could not be reached"."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    from job.training.model import OFFLINE_HINT, load_error

    error = load_error("openai-community/gpt2", LocalEntryNotFoundError("not cached"))
    assert error.exit_code == errors.TRANSIENT
    assert "could not be reached" in str(error) and OFFLINE_HINT in str(error)
