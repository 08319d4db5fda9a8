"""Deciding a run's training, apart from running it (train.py runs a ``Plan``).

``plan()`` picks the strategy, the blocks per step, the learning rate, the steps and the
precision, each with the reason where one was chosen over another. It is pure: it reads the
config, the base's config.json fields and the machine's sizes it is given, and imports neither
torch nor transformers, so every rule below is unit-tested against the GPT-2 table and any
host or GPU size (tests/training/test_plan.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from job.config import TrainConfig
from job.errors import BadConfig
from job.gpt2 import Shape, pretraining_rate
from job.training.memory import GIB, HEADROOM
from job.training.strategy import GPT2_VOCAB, Choice, choose, per_gpu_bytes, shape_of


@dataclass(frozen=True)
class Plan:
    """What a run will do, decided before it starts."""

    block_size: int  # tokens a block: the configured, capped by the model's context
    choice: Choice  # the strategy, why, and each candidate's memory estimate
    batch: int  # blocks a step and device
    batch_reason: str
    world: int  # processes
    tokens_per_step: int  # every process and accumulation together
    steps_per_epoch: int
    total_steps: int
    learning_rate: float
    bf16: bool
    compile: bool = False
    compile_reason: str = "asked for"

    @property
    def strategy(self) -> str:
        return self.choice.strategy

    def summary(self) -> dict[str, Any]:
        """What a run's result reports of its plan (train.TrainResult's fields)."""
        return {
            "block_size": self.block_size,
            "batch_size": self.batch,
            "precision": "bf16" if self.bf16 else "fp32",
            "strategy": self.strategy,
            "strategy_reason": self.choice.reason,
            "processes": self.world,
            "learning_rate": self.learning_rate,
            "compiled": self.compile,
        }


def block_size(config: TrainConfig, model_config: dict[str, Any]) -> int:
    """The configured block, at most the model's context (the tiny model's is 128)."""
    return min(config.block_size, int(model_config["n_positions"]))


def plan(
    config: TrainConfig,
    model_config: dict[str, Any],
    *,
    train_blocks: int,
    world: int,
    gpu_bytes: int,
    host_bytes: int,
    bf16_supported: bool,
    resumed_batch: int | None = None,
) -> Plan:
    """The run's plan for ``train_blocks`` training blocks on ``world`` processes, each with a
    GPU of ``gpu_bytes`` (0: the CPU) on a host of ``host_bytes``. A resumed run keeps its
    checkpoint's batch (``resumed_batch``): the one batch_size() picks depends on the GPU, and
    a retry may land on another; with another batch the Trainer would skip the wrong number of
    blocks and stretch the schedule. A batch asked for is part of the fingerprint."""
    gpu = gpu_bytes > 0
    if config.precision == "bf16" and not (gpu and bf16_supported):
        raise BadConfig("precision bf16 needs a GPU that supports it")
    bf16 = config.precision == "bf16" or (config.precision == "auto" and gpu and bf16_supported)
    size = block_size(config, model_config)
    choice = pick_strategy(config, model_config, size, world if gpu else 0, gpu_bytes, host_bytes)
    ceiling = pretraining_rate(model_config)
    shape = shape_of(config.base_model, model_config)
    vocab = int(model_config.get("vocab_size", GPT2_VOCAB))
    batch, why = batch_size(
        config, shape, train_blocks, size, world, choice, gpu_bytes, ceiling, vocab
    )
    if config.batch_size is None and resumed_batch is not None and resumed_batch != batch:
        batch, why = (
            resumed_batch,
            f"the checkpoint's, to resume its steps (this GPU would take {batch})",
        )
    tokens_per_step = batch * config.grad_accum * world * size
    steps_per_epoch = math.ceil(train_blocks / (batch * config.grad_accum * world))
    total_steps = math.ceil(steps_per_epoch * config.epochs)
    compile, compile_reason = compiled(config, gpu, total_steps)
    return Plan(
        block_size=size,
        choice=choice,
        batch=batch,
        batch_reason=why,
        world=world,
        tokens_per_step=tokens_per_step,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        learning_rate=learning_rate(
            config, tokens_per_step, int(model_config["n_positions"]), ceiling
        ),
        bf16=bf16,
        compile=compile,
        compile_reason=compile_reason,
    )


# The steps from which --compile, left unset, is on (on a GPU). What compiling one GPT-2 block
# costs against what it saves a step, from the figures we have (benchmarks-history.md, "host
# per layer"): the small steps are host-bound at 2.4-2.8 ms a layer on the H200, and compiled
# the host does a third less a layer (the CPU's proxy: 2.88 -> 1.85 ms). That saves ~40 ms a
# step for gpt2-xl's 48 layers (~10 ms for gpt2's 12). A block's compile, forward and backward,
# is of the order of 30-60 s cold and 5-10 s from the caches on HF_HOME (the fleet's usual
# case), so even gpt2-xl needs ~250 steps warm and ~1,000 cold to win it back. 1,000: a run
# that long repays it in every case we can name; a bot's usual run (100-400 steps) stays
# eager. An estimate until bench/gpu_probe.sh measures the compile and the step on a GPU.
COMPILE_MIN_STEPS = 1000


def compiled(config: TrainConfig, gpu: bool, total_steps: int) -> tuple[bool, str]:
    """Whether to compile, and why."""
    if config.compile is not None:
        return config.compile, "asked for" if config.compile else "turned off"
    if not gpu:
        return False, "no GPU (compiling never pays back on a CPU)"
    if total_steps < COMPILE_MIN_STEPS:
        return False, f"{total_steps} steps, under {COMPILE_MIN_STEPS}: the compile would not pay"
    return True, f"{total_steps} steps: at least {COMPILE_MIN_STEPS}, enough to repay it"


ORIGINAL_RATE = 1.372e-4  # the notebook's rate, for one block of the model's context per step
# How the rate follows the tokens in an optimizer step, against the original's one block of the
# model's full context: rate = ORIGINAL_RATE * (tokens per step / context) ** RATE_SCALING.
# Measured on the CPU bench (docs/benchmarks.md, "The learning rate"): linear scaling (1.0)
# ends at a better held-out perplexity than the square root (0.5) and than no scaling.
RATE_SCALING = 1.0


def learning_rate(
    config: TrainConfig, tokens_per_step: int, context: int, ceiling: float | None = None
) -> float:
    """The configured rate, or the original's scaled to this run's tokens per optimizer step
    (all processes and accumulation together), at most ``ceiling``: the rate the base model's
    size was pre-trained at (gpt2.py ``pretraining_rate``), where it is known. Linear
    scaling was measured from small models; a fine-tune of gpt2-xl at 8 k tokens a step would
    get 1.1e-3, five times what its size was pre-trained at."""
    if config.learning_rate is not None:
        return config.learning_rate
    rate = ORIGINAL_RATE * (tokens_per_step / context) ** RATE_SCALING
    rate = min(rate, ceiling) if ceiling else rate
    return rate * ADAPTER_RATE_FACTOR if config.lora else rate


# How much higher an adapter's default rate is than the full fine-tune's: LoRA's update starts
# at zero and is scaled by alpha/rank, and LoRA's rates run 2-10x full fine-tunes' of the same
# model (Hu et al. 2021, Table 11: 2e-4 for GPT-2 medium's LoRA; full fine-tunes of GPT-2 take
# 1e-5 to 1e-4). Swept on the CPU bench (bench/adapters.py --factors, docs/benchmarks.md) with a
# base that knows the tweets' words (--pretrain-share 0.5): at width 256 (rank 8) 3x ended at
# 364 held-out perplexity and 10x at 373; at the tiny width (rank 2) 10x led 3x by 1.3%. The
# wider the model, the more 3x led (646 against 861 on the weaker base), and every real GPT-2
# is wider still: 3x. It also keeps gpt2-xl's capped rate (its pre-training's) at a LoRA rate.
ADAPTER_RATE_FACTOR = 3.0


# Blocks per step and device, where --batch-size is not given (batch_size()).
BATCH = 8  # on a CPU, tokens/s is flat from 8 blocks up (compute-bound; benchmarks.md)
# On a GPU, as many as a step of this many tokens per device holds: gpt2-xl's steady MFU on an
# H200 was 17% at 2,048 tokens a step and 41% at 8,192 (docs/benchmarks.md).
GPU_TOKENS = 8192
# ...but only while the run keeps this many optimizer steps, because the rate cannot follow the
# batch far. On the CPU bench (bench/rate_sweep.py, a pre-trained tiny model, 963 tweets),
# twice the tokens a step at twice the rate held the held-out perplexity (618 against 614),
# four times at four times the rate did not (776; 600 against 450 even at equal steps), and at
# the rate held 20 larger steps ended at 856. A GPT-2's rate stops at its size's pre-training
# rate (learning_rate()), so a larger step must come with many steps: 200 is more than any run
# where fewer steps cost quality there, and a single user's tweets (~150 steps at 8 blocks for
# 3,000 tweets) keep the default; a bot of many users gets the GPU-sized step.
MIN_STEPS = 200


def batch_size(
    config: TrainConfig,
    shape: Shape,
    blocks: int,
    block_size: int,
    world: int,
    choice: Choice,
    gpu_bytes: int,
    ceiling: float | None,
    vocab: int = GPT2_VOCAB,
) -> tuple[int, str]:
    """Blocks per step and device, and why: ``--batch-size`` where given; else BATCH, doubled on
    a GPU while a step holds at most GPU_TOKENS per device, the strategy ``choice`` (made at
    BATCH) still fits the GPU's memory, and ``blocks`` training blocks still make MIN_STEPS
    optimizer steps over the run. Only for a base whose pre-training rate (``ceiling``) bounds
    the scaled rate: another (the tiny model) keeps BATCH."""
    if config.batch_size is not None:
        return config.batch_size, "asked for"
    if gpu_bytes == 0:
        return BATCH, "no GPU"
    if ceiling is None:
        return BATCH, "not a GPT-2 size: no pre-training rate bounds a larger step's rate"
    batch, why = BATCH, f"{GPU_TOKENS:,} tokens a step is the most sized to a GPU"
    while 2 * batch * block_size <= GPU_TOKENS:
        more = 2 * batch
        steps = math.ceil(blocks / (more * config.grad_accum * world)) * config.epochs
        key = "lora" if config.lora else choice.strategy  # what the GPU holds
        need = per_gpu_bytes(shape, world, more * block_size, vocab)[key]
        if steps < MIN_STEPS:
            why = f"{more} would leave {steps:.0f} optimizer steps, under {MIN_STEPS}"
            break
        if need > gpu_bytes * HEADROOM:
            why = (
                f"{more} would need ~{need / GIB:.1f} GiB per GPU with {choice.strategy}, over"
                f" the {gpu_bytes * HEADROOM / GIB:.1f} GiB usable"
            )
            break
        batch = more
    return batch, why


def pick_strategy(
    config: TrainConfig,
    model_config: dict[str, Any],
    block_size: int,
    gpus: int,
    gpu_bytes: int,
    host_bytes: int,
) -> Choice:
    """The strategy for ``gpus`` GPUs of ``gpu_bytes`` each (0 GPUs: the CPU), on a host of
    ``host_bytes`` of memory, at the configured batch or else the least batch_size() gives."""
    return choose(
        config.strategy,
        shape_of(config.base_model, model_config),
        gpus=gpus,
        gpu_bytes=gpu_bytes,
        tokens_per_gpu=(config.batch_size or BATCH) * block_size,
        host_bytes=host_bytes,
        adapter=config.lora,
        vocab=int(model_config.get("vocab_size", GPT2_VOCAB)),
    )
