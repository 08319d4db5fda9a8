from __future__ import annotations

from pathlib import Path

import pytest

from job.config import SamplingConfig
from job.errors import BadConfig
from job.loading import validate
from job.outputs.predict import Prediction, fast_paths, flag_memorized, sample
from job.training.model import build_random, load

# Loads transformers and builds models through it: ~5 s of imports, so not the unit tier.
MODEL = pytest.mark.integration

TWEETS = [
    {"id": "1", "text": "The oven spring on this one made me shout in an empty kitchen."},
    {"id": "2", "text": "Rye bread is just sourdough that has read too much philosophy."},
]


def test_exact_repeat_is_flagged() -> None:
    preds = [Prediction("My", "rye bread is just sourdough that has read too much philosophy!")]
    assert flag_memorized(preds, TWEETS, ngram=8) == 1
    assert preds[0].memorized and preds[0].match["id"] == "2"


def test_long_shared_ngram_is_flagged_short_one_is_not() -> None:
    planted = Prediction("I think", "I think the oven spring on this one made me shout at night")
    common = Prediction("I think", "I think the oven spring on this loaf was great")
    other = Prediction("I wish", "I wish for a quiet morning with coffee")
    assert flag_memorized([planted, common, other], TWEETS, ngram=8) == 1
    assert planted.memorized and planted.match["text"] == TWEETS[0]["text"]
    assert not common.memorized and not other.memorized
    assert flag_memorized([Prediction("I", common.text)], TWEETS, ngram=5) == 1


def test_sampling_config_is_checked() -> None:
    with pytest.raises(BadConfig):
        validate(SamplingConfig, {"top_p": 0}, "sampling")
    with pytest.raises(BadConfig):
        validate(SamplingConfig, {"start_texts": []}, "sampling")
    with pytest.raises(BadConfig):
        validate(SamplingConfig, {"ngram": 2}, "sampling")


@MODEL
def test_batched_sampling(tmp_path: Path) -> None:
    texts = ["my dream is bread\nand more bread", "i think that code is fun"] * 40
    model, tok = load(str(build_random(tmp_path / "t", texts, None, seed=0)), device="cpu")
    config = SamplingConfig(
        start_texts=["My dream is", "I think that we"], per_prompt=2, max_length=40
    )
    preds = sample(model, tok, config, seed=42)
    assert [p.prompt for p in preds] == ["My dream is"] * 2 + ["I think that we"] * 2
    assert all(p.text.startswith(p.prompt) and "\n" not in p.text for p in preds)
    again = sample(model, tok, config, seed=42)
    assert [p.text for p in preds] == [p.text for p in again]  # seeded


@MODEL
def test_sampling_reports_its_tokens_for_a_progress_bar(tmp_path: Path) -> None:
    texts = ["my dream is bread\nand more bread", "i think that code is fun"] * 40
    model, tok = load(str(build_random(tmp_path / "t", texts, None, seed=0)), device="cpu")
    config = SamplingConfig(start_texts=["My dream is"], per_prompt=2, max_length=24)
    ticks: list[tuple[int, int]] = []
    with_bar = sample(model, tok, config, seed=42, on_token=lambda d, t: ticks.append((d, t)))
    prompt = len(tok(tok.eos_token + "My dream is", add_special_tokens=False)["input_ids"])
    total = 24 - prompt
    assert ticks[-1] == (total, total)  # the bar closes
    done = [d for d, _ in ticks]
    assert done == sorted(done) and {t for _, t in ticks} == {total}
    assert [p.text for p in with_bar] == [p.text for p in sample(model, tok, config, seed=42)]


def test_the_gpu_fast_paths_are_chosen_by_device_and_can_be_switched() -> None:
    auto = SamplingConfig()
    assert fast_paths(auto, "cpu", bf16_supported=False) == (False, False)
    # the static cache only where the decode step is compiled: eager, it buys nothing
    assert fast_paths(auto, "cuda", bf16_supported=True) == (True, False)
    assert fast_paths(auto, "cuda", bf16_supported=True, compiled=True) == (True, True)
    assert fast_paths(auto, "cuda", bf16_supported=False, compiled=True) == (False, True)  # V100
    off = SamplingConfig(precision="fp32", kv_cache="dynamic")
    assert fast_paths(off, "cuda", bf16_supported=True) == (False, False)
    on = SamplingConfig(precision="bf16", kv_cache="static")
    assert fast_paths(on, "cpu", bf16_supported=False) == (True, True)


@MODEL
def test_a_static_kv_cache_samples_the_same_tokens(tmp_path: Path) -> None:
    texts = ["my dream is bread\nand more bread", "i think that code is fun"] * 40
    model, tok = load(str(build_random(tmp_path / "t", texts, None, seed=0)), device="cpu")
    config = SamplingConfig(start_texts=["My dream is", "I think"], per_prompt=3, max_length=40)
    dynamic = sample(model, tok, config.model_copy(update={"kv_cache": "dynamic"}), seed=42)
    static = sample(model, tok, config.model_copy(update={"kv_cache": "static"}), seed=42)
    assert [p.text for p in static] == [p.text for p in dynamic]
    assert len({p.text for p in static}) > 1  # sampled, not one text repeated


@MODEL
def test_bf16_sampling_casts_the_saved_model_and_samples(tmp_path: Path) -> None:
    import torch

    texts = ["my dream is bread\nand more bread", "i think that code is fun"] * 40
    model, tok = load(str(build_random(tmp_path / "t", texts, None, seed=0)), device="cpu")
    assert model.dtype == torch.float32
    config = SamplingConfig(start_texts=["My dream is"], per_prompt=2, max_length=24)
    preds = sample(model, tok, config.model_copy(update={"precision": "bf16"}), seed=42)
    assert model.dtype == torch.bfloat16 and len(preds) == 2
    assert all(p.text.startswith("My dream is") for p in preds)


def test_a_tasks_decode_compile_is_decided_from_all_its_decode_steps() -> None:
    """outputs/predict.py decode_compiled: a GPU task compiles its decode step once its bots'
    decode steps together repay the capture; one bot alone does not; a CPU never does."""
    from job.outputs.predict import DECODE_COMPILE_MIN_STEPS, decode_compiled

    bot = SamplingConfig(max_length=160)
    enough = -(-DECODE_COMPILE_MIN_STEPS // 160)  # bots of 160 steps that reach it
    assert decode_compiled([bot], gpu=True)[0] is False
    assert decode_compiled([bot] * (enough - 1), gpu=True)[0] is False
    compiled, why = decode_compiled([bot] * enough, gpu=True)
    assert compiled and f"{enough * 160} decode steps" in why
    assert decode_compiled([bot] * enough, gpu=False) == (
        False,
        "no GPU (transformers compiles no decode step on a CPU)",
    )


@pytest.mark.integration  # torch.compile (Dynamo)
def test_compile_seconds_count_what_torch_compile_spent() -> None:
    """What a phase's compile cost is measured by (run.py predict: decode_compile)."""
    import torch

    from job.outputs.predict import compile_seconds

    before = compile_seconds()
    torch.compile(lambda x: x.cos() - 1, backend="eager")(torch.ones(2))
    assert compile_seconds() > before
