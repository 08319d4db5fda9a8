"""Fine-tuning with the HF Trainer: the original HuggingTweets recipe, on modern defaults.

- Defaults from the original recipe (cosine schedule, 4 epochs), all overridable; its rate,
  1.372e-4 for one 1,024-token block a step, scaled to this job's tokens a step and held at
  most at the rate the base's size was pre-trained at (``learning_rate``).
- 8 blocks a step; on a GPU, up to 8 k tokens a step where memory and data allow
  (``batch_size``: gpt2-xl's MFU goes from 17% to 41%).
- bf16 autocast where the GPU has it (fp32 on CPU), fused AdamW, SDPA attention, fused GELU.
- Validation loss and perplexity of the base model and of the fine-tuned one.
- Seeded: the same seed and data give the same losses on CPU.
- No reporting through the Trainer's own integrations: metrics go through ``on_log`` so
  nothing of TrainingArguments (tokens included) reaches W&B unasked.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from job.config import TrainConfig
from job.errors import BadConfig, TransientError
from job.gpt2 import Shape, pretraining_rate
from job.training.blocks import BlockDataset, make_blocks
from job.training.checkpoints import Cadence, Checkpoints, Preemption
from job.training.distributed import as_one_process_group, ranks
from job.training.memory import GIB, HEADROOM, host_memory_bytes
from job.training.model import causal_only
from job.training.strategy import Choice, choose, per_gpu_bytes, shape_of

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)


ORIGINAL_RATE = 1.372e-4  # the notebook's rate, for one block of the model's context per step
# How the rate follows the tokens in an optimizer step, against the original's one block of the
# model's full context: rate = ORIGINAL_RATE * (tokens per step / context) ** RATE_SCALING.
# Measured on the CPU bench (docs/benchmarks.md, "The learning rate"): linear scaling (1.0)
# ends at a better held-out perplexity than the square root (0.5) and than no scaling.
RATE_SCALING = 1.0


def resumed_batch(config: TrainConfig, resume: Path, batch: int, why: str) -> tuple[int, str]:
    """A resumed run keeps its checkpoint's batch: the one batch_size() picks depends on the
    GPU, and a retry may land on another; with another batch the Trainer would skip the wrong
    number of blocks and stretch the schedule. A batch asked for is part of the fingerprint."""
    kept = Checkpoints.batch_of(resume)
    if config.batch_size is not None or kept is None or kept == batch:
        return batch, why
    return kept, f"the checkpoint's, to resume its steps (this GPU would take {batch})"


def learning_rate(
    config: TrainConfig, tokens_per_step: int, context: int, ceiling: float | None = None
) -> float:
    """The configured rate, or the original's scaled to this run's tokens per optimizer step
    (all processes and accumulation together), at most ``ceiling``: the rate the base model's
    size was pre-trained at (model.py ``pretraining_rate``), where it is known. Linear
    scaling was measured from small models; a fine-tune of gpt2-xl at 8 k tokens a step would
    get 1.1e-3, five times what its size was pre-trained at."""
    if config.learning_rate is not None:
        return config.learning_rate
    rate = ORIGINAL_RATE * (tokens_per_step / context) ** RATE_SCALING
    return min(rate, ceiling) if ceiling else rate


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
        need = per_gpu_bytes(shape, world, more * block_size)[choice.strategy]
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


@dataclass
class TrainResult:
    base_val_loss: float
    val_loss: float
    train_loss: float
    steps: int
    train_tokens: int  # tokens per epoch
    block_size: int
    seconds: float
    tokens_per_second: float
    precision: str
    device: str
    strategy: str = "ddp"
    strategy_reason: str = ""
    processes: int = 1
    peak_memory_bytes: int = 0  # per GPU, from torch.cuda.max_memory_allocated; 0 on CPU
    resumed_from_step: int = 0  # 0: started from scratch
    # Over the steps after the warm-up (training/clock.py), all processes together; 0.0 when
    # the run was too short to have any.
    steady_tokens_per_second: float = 0.0
    steady_steps: int = 0
    learning_rate: float = 0.0  # the peak rate used (configured, or scaled: learning_rate())
    batch_size: int = BATCH  # blocks per step and device (configured, or batch_size())

    @property
    def base_perplexity(self) -> float:
        return math.exp(self.base_val_loss)

    @property
    def perplexity(self) -> float:
        return math.exp(self.val_loss)

    def summary(self) -> dict[str, Any]:
        """Every field and both perplexities: what job.json and the card report."""
        return {
            **asdict(self),
            "base_perplexity": self.base_perplexity,
            "perplexity": self.perplexity,
        }


def finetune(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    config: TrainConfig,
    workdir: Path,
    on_log: Callable[[dict[str, float], int], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    checkpoints: Checkpoints | None = None,
    resume: Path | None = None,
) -> tuple[TrainResult, Any]:
    """Train ``model`` on ``texts``; evaluate before and after. Returns the result and the
    Trainer, whose ``save_model`` writes a consolidated model under every strategy."""
    import torch

    # transformers' integrations print "[INFO] Running in WANDB offline mode" on stdout at
    # import when WANDB_MODE=offline; stdout is for the job's one-line result.
    with contextlib.redirect_stdout(sys.stderr):
        from transformers import (
            PrinterCallback,
            Trainer,
            TrainerCallback,
            TrainingArguments,
            set_seed,
        )

    cuda = torch.cuda.is_available()
    if config.precision == "bf16" and not (cuda and torch.cuda.is_bf16_supported()):
        raise BadConfig("precision bf16 needs a GPU that supports it")
    bf16 = config.precision == "bf16" or (
        config.precision == "auto" and cuda and torch.cuda.is_bf16_supported()
    )
    set_seed(config.seed)
    block_size = min(config.block_size, model.config.n_positions)
    world = ranks().world
    gpu_bytes = torch.cuda.get_device_properties(0).total_memory if cuda else 0
    model_config = model.config.to_dict()
    choice = pick_strategy(
        config, model_config, block_size, world if cuda else 0, gpu_bytes, host_memory_bytes()
    )
    log.info("strategy %s: %s", choice.strategy, choice.reason)
    if choice.strategy.startswith("zero"):
        as_one_process_group()
    blocks = make_blocks(texts, tokenizer, block_size, config.val_fraction, config.seed)
    ceiling = pretraining_rate(model_config)
    batch, why = batch_size(
        config,
        shape_of(config.base_model, model_config),
        len(blocks.train),
        block_size,
        world,
        choice,
        gpu_bytes,
        ceiling,
    )
    if resume is not None:
        batch, why = resumed_batch(config, resume, batch, why)
    log.info("batch %d blocks of %d tokens per device: %s", batch, block_size, why)
    tokens_per_step = batch * config.grad_accum * world * block_size
    steps_per_epoch = math.ceil(len(blocks.train) / (batch * config.grad_accum * world))
    total_steps = math.ceil(steps_per_epoch * config.epochs)
    rate = learning_rate(config, tokens_per_step, model.config.n_positions, ceiling)
    log.info("learning rate %.3g (%d tokens per step)", rate, tokens_per_step)

    args = TrainingArguments(
        output_dir=str(checkpoints.folder if checkpoints else workdir / "trainer"),
        num_train_epochs=config.epochs,
        learning_rate=rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,  # a float < 1 is a ratio of the total steps
        weight_decay=config.weight_decay,
        per_device_train_batch_size=batch,
        per_device_eval_batch_size=batch,
        gradient_accumulation_steps=config.grad_accum,
        bf16=bf16,
        # One kernel for every parameter, on CPU too (torch >= 2.4): ~6x faster than the
        # per-tensor loop on the tiny model. ZeRO's configs name their own optimizer.
        optim="adamw_torch_fused",
        use_cpu=not cuda,
        seed=config.seed,
        data_seed=config.seed,
        logging_steps=max(1, total_steps // 20),
        # The nan/inf check reads the loss back every step: a host sync that stops the CPU
        # from queuing the next step on a GPU. A nan still shows in the logged loss.
        logging_nan_inf_filter=False,
        eval_strategy="no",
        save_strategy="no",  # the Report callback decides (steps, time, SIGTERM)
        save_total_limit=config.keep_checkpoints,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        # Each batch goes to the GPU from pinned memory without waiting: a blocking copy
        # (accelerate's default) synchronizes the stream, so every step the CPU would wait for
        # the last one to finish before it could queue the next. On CPU there is no copy.
        dataloader_pin_memory=cuda,
        accelerator_config={"non_blocking": cuda},
        deepspeed=choice.deepspeed_config(cpu=not cuda),
        torch_compile=config.compile,  # its caches: compile_caches(), called by run()
    )

    preemption = Preemption()
    stopped_at: list[int] = []
    due = Cadence(config.checkpoint_every, config.checkpoint_minutes * 60)

    class Report(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if on_log and logs:
                on_log({k: float(v) for k, v in logs.items()}, state.global_step)

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if on_step:
                on_step(state.global_step, state.max_steps)
            if checkpoints is None:
                return
            if preemption.agreed(state.global_step):
                control.should_save = True
                control.should_training_stop = True
                stopped_at.append(state.global_step)
            elif due(state.global_step):
                control.should_save = True

        def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if checkpoints is not None:
                checkpoints.saved(state.global_step, args.per_device_train_batch_size)

    # The Trainer's own floating_point_ops (its logged total_flos) walks every module and
    # parameter of the model in every step: 2.9 ms a step for 48 layers on the dev CPU, host
    # time that a GPU's step waits for (docs/benchmarks.md). The count is taken once, here.
    params = model.num_parameters(exclude_embeddings=True)

    class CountedOnce(Trainer):
        def floating_point_ops(self, inputs: dict[str, Any]) -> int:
            return 6 * inputs["input_ids"].numel() * params

    from job.training.clock import SteadyClock

    clock = SteadyClock(tokens_per_step)
    trainer = CountedOnce(
        model=model,
        args=args,
        train_dataset=BlockDataset(blocks.train),
        callbacks=[Report(), clock],
    )
    trainer.remove_callback(PrinterCallback)  # it prints every log dict to stdout
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    # Validation loss by a plain loop, before and after: evaluating through the Trainer before
    # training starts DeepSpeed's inference engine (ZeRO-2 refuses it, ZeRO-3 then cannot
    # train), and the Trainer's eval_loss divides by the unshifted label count (~1/block low).
    with causal_only(model):  # no mask built, no read back to the host, in every forward
        base_loss = mean_loss(model, blocks.val, batch)
        log.info(
            "base model: validation loss %.3f (perplexity %.1f)",
            base_loss,
            math.exp(base_loss),
        )
        start = time.perf_counter()
        if resume:
            log.info("resuming from %s", resume.name)
        with preemption:
            output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        seconds = time.perf_counter() - start
        if stopped_at:
            raise TransientError(
                f"stopped by SIGTERM at step {stopped_at[0]}; the checkpoint is saved and a rerun"
                " resumes from it"
            )
        val_loss = _final_loss(model, blocks.val, batch, choice.strategy)
    tokens = int(blocks.train_tokens * config.epochs)
    return TrainResult(
        base_val_loss=base_loss,
        val_loss=val_loss,
        train_loss=float(output.training_loss),
        steps=int(output.global_step),
        train_tokens=blocks.train_tokens,
        block_size=block_size,
        batch_size=batch,
        seconds=seconds,
        tokens_per_second=tokens / seconds if seconds > 0 else 0.0,
        precision="bf16" if bf16 else "fp32",
        device="cuda" if cuda else "cpu",
        strategy=choice.strategy,
        strategy_reason=choice.reason,
        processes=world,
        peak_memory_bytes=int(torch.cuda.max_memory_allocated()) if cuda else 0,
        resumed_from_step=int(resume.name.split("-")[1]) if resume else 0,
        steady_tokens_per_second=clock.tokens_per_second,
        steady_steps=clock.steps,
        learning_rate=rate,
    ), trainer


def compile_caches() -> None:
    """torch.compile's caches (Inductor's compiled graphs, Triton's kernels) under HF_HOME, the
    volume a fleet shares (docs/deploy.md): the first task compiles, later ones load. A cache
    folder already set in the environment wins."""
    import os

    from job.training.model import hf_home

    home = hf_home()
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(home / "torchinductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", str(home / "triton"))


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
    )


def mean_loss(model: Any, blocks: Any, batch_size: int) -> float:
    """Mean token loss over equal-length blocks, weighted as the Trainer's eval_loss is."""
    import torch

    if len(blocks) == 0:
        return float("nan")
    was_training = model.training
    model.eval()
    # One copy to the device and one read back at the end, not one of each per batch: on a
    # GPU each of those waits for the queued batches.
    on_device = blocks.to(model.device)
    total = torch.zeros((), dtype=torch.float64, device=model.device)
    with torch.inference_mode():
        for i in range(0, len(blocks), batch_size):
            batch = on_device[i : i + batch_size]
            total += model(input_ids=batch, labels=batch).loss.double() * len(batch)
    model.train(was_training)
    return float(total) / len(blocks)


def _final_loss(model: Any, blocks: Any, batch_size: int, strategy: str) -> float:
    """The same measurement as the base loss; ZeRO-3's partitioned weights are gathered first
    (on every rank: gathering is collective)."""
    if not strategy.startswith("zero3"):
        return mean_loss(model, blocks, batch_size)
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
        return mean_loss(model, blocks, batch_size)
