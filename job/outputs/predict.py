"""Predictions: sample tweets from the fine-tuned model, and check them for memorization.

Sampling follows the original HuggingTweets: the prompt is ``<|endoftext|>`` + a start text,
nucleus sampling (top_p 0.95), at most 160 tokens, cut at the first newline. All prompts are
sampled in one batched ``generate`` call (left padding), not one sequence at a time.

Memorization: a model fine-tuned on a few thousand tweets can repeat them word for word, and
these are real people's words. A prediction is flagged when its text is a training tweet, or
when it shares a run of ``ngram`` words with one (default 8: long enough that common phrases
don't match, short enough to catch a copied sentence).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from job.config import SamplingConfig

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)
_WORDS = re.compile(r"\w+", re.UNICODE)


@dataclass
class Prediction:
    prompt: str
    text: str
    memorized: bool = False
    match: dict[str, str] = field(default_factory=dict)  # the training tweet it repeats


def fast_paths(
    config: SamplingConfig, device: str, bf16_supported: bool, compiled: bool = False
) -> tuple[bool, bool]:
    """(bf16, static KV cache) for sampling on ``device`` ("cuda" or "cpu"). The static cache
    is for a compiled decode step (one shape, captured once); eager, it buys nothing: each
    token would attend over every position of the cache, without flash attention."""
    gpu = device == "cuda"
    bf16 = config.precision == "bf16" or (config.precision == "auto" and gpu and bf16_supported)
    static = config.kv_cache == "static" or (config.kv_cache == "auto" and gpu and compiled)
    return bf16, static


MIN_NEW_TOKENS = 16  # room a prompt leaves for its prediction, at the least

# The decode steps (a token of every prompt at once) from which a task's bots, left unset, sample
# with a compiled decode step (transformers' compile of the step over a static cache, CUDA graphs
# included). Capturing it costs ~30 s for gpt2, once a task (the graphs stay for the task's
# later bots: task.py keeps Dynamo's caches). Eager, a step is host-bound: a forward alone is
# ~a fifth of plan.py's 2.4-2.8 ms a layer for a training step, ~3 ms for gpt2's 12 layers,
# against well under 1 ms captured: ~2.5 ms saved a step, so 30 s / 2.5 ms. An estimate until
# bench/gpu_probe.sh measures the capture and the step on a GPU.
DECODE_COMPILE_MIN_STEPS = 12_000


def decode_compiled(settings: list[SamplingConfig], gpu: bool) -> tuple[bool, str]:
    """Whether the bots of a task that leave ``sampling.compile`` unset sample with a compiled
    decode step, and why: decided once for the task, from all its bots' decode steps (each
    bot's ``max_length``, its prompts sampled in one batch); a bot's own setting wins."""
    if not gpu:
        return False, "no GPU (transformers compiles no decode step on a CPU)"
    steps = sum(s.max_length for s in settings)
    if steps < DECODE_COMPILE_MIN_STEPS:
        return False, f"{steps} decode steps, under {DECODE_COMPILE_MIN_STEPS}: it would not pay"
    return True, f"{steps} decode steps: at least {DECODE_COMPILE_MIN_STEPS}, enough to repay it"


def compile_seconds() -> float:
    """Seconds this process has spent compiling with torch.compile so far (Dynamo's own
    measure of each compile), 0 where nothing imported it: a phase's compile cost is the
    difference across it."""
    import sys

    utils = sys.modules.get("torch._dynamo.utils")
    if utils is None:
        return 0.0
    return float(sum(utils.compilation_time_metrics.get("_compile.compile_inner", [])))


def sample(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    config: SamplingConfig,
    seed: int,
    on_token: Callable[[int, int], None] | None = None,  # (tokens sampled, at most)
    compile: bool = False,
    max_new_tokens: int | None = None,
) -> list[Prediction]:
    """``config.per_prompt`` predictions per start text, all in one batched ``generate``. In
    bf16 (``config.precision``) the model is cast in place: the job samples after saving it.
    With a static KV cache on a GPU, ``compile`` lets transformers compile the decode step.
    ``max_new_tokens`` (``generate``'s flag) bounds the tokens after the prompt instead of
    ``config.max_length``, within the model's context all the same."""
    import torch

    bf16, static = fast_paths(
        config,
        model.device.type,
        torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        compiled=compile,
    )
    if bf16 and model.dtype != torch.bfloat16:
        model.bfloat16()

    prompts = [p for p in config.start_texts for _ in range(config.per_prompt)]
    tokenizer.padding_side = "left"  # decoder-only: pad on the left to generate in a batch
    context = int(model.config.n_positions)
    # A prompt longer than the model's context leaves no room to sample (and past it, the
    # position embeddings end): it keeps its last tokens, with MIN_NEW_TOKENS of room after.
    room = max(context - MIN_NEW_TOKENS, 1)
    tokenizer.truncation_side = "left"
    batch = tokenizer(
        [tokenizer.eos_token + p for p in prompts],
        return_tensors="pt",
        padding=True,
        add_special_tokens=False,
        truncation=True,
        max_length=room,
    ).to(model.device)
    if batch["input_ids"].shape[1] == room and room < context:
        log.warning("a start text is longer than the model's context: its last tokens are used")
    max_length = min(config.max_length, context)
    if max_new_tokens is not None:
        max_length = min(batch["input_ids"].shape[1] + max_new_tokens, context)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    was_training = model.training
    model.eval()
    prompt = batch["input_ids"].shape[1]
    total = max(max_length, prompt + 1) - prompt
    ticks = _ticks(on_token, prompt, total) if on_token else None
    with torch.inference_mode():
        out = model.generate(  # type: ignore[operator]
            **batch,
            do_sample=True,
            top_p=config.top_p,
            temperature=config.temperature,
            # max_length, not max_new_tokens: the saved generation config has a max_length,
            # and giving both makes transformers warn on every run.
            max_length=max(max_length, batch["input_ids"].shape[1] + 1),  # prompt included
            pad_token_id=tokenizer.pad_token_id,
            stopping_criteria=ticks,
            cache_implementation="static" if static else None,
            disable_compile=not compile,
        )
    if on_token:
        on_token(total, total)  # done, even when every sequence ended early
    model.train(was_training)
    torch.random.set_rng_state(generator_state)
    new = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    return [
        Prediction(prompt=p, text=first_line(p + cont))
        for p, cont in zip(prompts, new, strict=True)
    ]


def _ticks(on_token: Callable[[int, int], None], prompt: int, total: int) -> Any:
    """A stopping criterion that never stops: it reports each sampled token (a progress bar).
    It reads only the tensor's shape, so it costs no device sync."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class Ticks(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            on_token(min(input_ids.shape[1] - prompt, total), total)
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([Ticks()])


def first_line(text: str) -> str:
    return text.split("\n", 1)[0].strip()


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORDS.findall(text)]


def flag_memorized(
    predictions: Iterable[Prediction], tweets: Iterable[dict[str, str]], ngram: int
) -> int:
    """Mark predictions that repeat a training tweet (``{"id", "text"}``); return how many."""
    exact: dict[str, dict[str, str]] = {}
    grams: dict[tuple[str, ...], dict[str, str]] = {}
    for tweet in tweets:
        w = words(tweet["text"])
        exact.setdefault(" ".join(w), tweet)
        for i in range(len(w) - ngram + 1):
            grams.setdefault(tuple(w[i : i + ngram]), tweet)
    flagged = 0
    for p in predictions:
        w = words(p.text)
        hit = exact.get(" ".join(w)) if w else None
        if hit is None:
            hit = next(
                (
                    grams[g]
                    for i in range(len(w) - ngram + 1)
                    if (g := tuple(w[i : i + ngram])) in grams
                ),
                None,
            )
        if hit is not None:
            p.memorized = True
            p.match = {"id": str(hit.get("id", "")), "text": hit["text"]}
            flagged += 1
    return flagged
