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

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from job.config import TrainConfig
from job.errors import Preempted
from job.training import memory
from job.training.blocks import BlockDataset, make_blocks
from job.training.checkpoints import Checkpoints
from job.training.distributed import as_one_process_group, ranks
from job.training.model import causal_only, hf_home, kept_host_bytes
from job.training.peaks import mfu
from job.training.plan import BATCH, Plan, block_size, plan

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

LOG_EVERY = 10  # steps between logs, at the least (see logging_steps below)


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
    # Over the steps after the warm-up (training/clock.py), all processes together, each
    # step's tokens as its batches held them; 0 when the run was too short to have any.
    steady_tokens_per_second: float = 0.0
    steady_steps: int = 0
    steady_tokens: int = 0
    trained_tokens: int = 0  # every step's, this session (a resumed run: since it resumed)
    learning_rate: float = 0.0  # the peak rate used (configured, or scaled: learning_rate())
    batch_size: int = BATCH  # blocks per step and device (configured, or batch_size())
    compiled: bool = False  # torch.compile, regional (asked for, or plan.compiled())
    packed_with: int = 0  # other adapter bots trained in the same steps (training/packs.py)
    # The steady rate's model FLOPs utilization, against the device's dense bf16 peak
    # (training/peaks.py); None on a CPU or a GPU whose peak is not known.
    steady_mfu: float | None = None
    gpu_name: str = ""

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
    """Train ``model`` on ``texts`` as plan() decides; evaluate before and after. Returns the
    result and the Trainer, whose ``save_model`` writes a consolidated model under every
    strategy."""
    import torch

    cuda = torch.cuda.is_available()
    gpu = torch.cuda.get_device_name(0) if cuda else ""
    model_config = model.config.to_dict()
    blocks = make_blocks(
        texts, tokenizer, block_size(config, model_config), config.val_fraction, config.seed
    )
    decided = plan(
        config,
        model_config,
        train_blocks=len(blocks.train),
        world=ranks().world,
        # what this bot may use: not a kept adapter base's GPU memory, nor a kept base's host
        # copy (pinned: rounded up, memory.pinned_bytes)
        gpu_bytes=memory.gpu_budget(model) if cuda else 0,
        host_bytes=memory.host_memory_bytes() - kept_host_bytes(),
        bf16_supported=cuda and torch.cuda.is_bf16_supported(),
        resumed_batch=Checkpoints.batch_of(resume) if resume else None,
    )
    log.info("strategy %s: %s", decided.strategy, decided.choice.reason)
    log.info(
        "batch %d x %d tokens a device: %s", decided.batch, decided.block_size, decided.batch_reason
    )
    log.info(
        "learning rate %.3g (%d tokens per step)", decided.learning_rate, decided.tokens_per_step
    )
    log.info("torch.compile %s: %s", "on" if decided.compile else "off", decided.compile_reason)
    if decided.strategy.startswith("zero"):
        as_one_process_group()
    from job.training.callbacks import Report  # transformers loads with it

    report = Report(config, checkpoints, on_log, on_step)
    trainer, clock = _trainer(model, decided, config, blocks, workdir, report)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    # Validation loss by a plain loop, before and after: evaluating through the Trainer before
    # training starts DeepSpeed's inference engine (ZeRO-2 refuses it, ZeRO-3 then cannot
    # train), and the Trainer's eval_loss divides by the unshifted label count (~1/block low).
    with causal_only(model):  # no mask built, no read back to the host, in every forward
        base_loss = mean_loss(model, blocks.val, decided.batch)
        log.info(
            "base model: validation loss %.3f (perplexity %.1f)", base_loss, math.exp(base_loss)
        )
        start = time.perf_counter()
        if resume:
            log.info("resuming from %s", resume.name)
        with report.preemption:
            output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        seconds = time.perf_counter() - start
        without_autocast(trainer)
        if report.stopped_at is not None:
            raise Preempted(
                f"stopped by SIGTERM at step {report.stopped_at}; the checkpoint is saved and a"
                " rerun resumes from it"
            )
        val_loss = _final_loss(model, blocks.val, decided.batch, decided.strategy)
    return TrainResult(
        base_val_loss=base_loss,
        val_loss=val_loss,
        train_loss=float(output.training_loss),
        steps=int(output.global_step),
        train_tokens=blocks.train_tokens,
        seconds=seconds,
        tokens_per_second=clock.total_tokens / seconds if seconds > 0 else 0.0,
        device="cuda" if cuda else "cpu",
        peak_memory_bytes=int(torch.cuda.max_memory_allocated()) if cuda else 0,
        resumed_from_step=int(resume.name.split("-")[1]) if resume else 0,
        steady_tokens_per_second=clock.tokens_per_second,
        steady_steps=clock.steps,
        steady_tokens=clock.tokens,
        trained_tokens=clock.total_tokens,
        steady_mfu=mfu(clock.tokens_per_second, trainer.flops_per_token, gpu) if cuda else None,
        gpu_name=gpu,
        **decided.summary(),
    ), trainer


def training_arguments(
    decided: Plan, config: TrainConfig, workdir: Path, checkpoints: Checkpoints | None, width: int
) -> Any:
    """The Trainer's arguments: the plan's decisions and the config, each with its reason."""
    import torch
    from transformers import TrainingArguments

    cuda = torch.cuda.is_available()
    return TrainingArguments(
        output_dir=str(checkpoints.folder if checkpoints else workdir / "trainer"),
        num_train_epochs=config.epochs,
        learning_rate=decided.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,  # a float < 1 is a ratio of the total steps
        weight_decay=config.weight_decay,
        per_device_train_batch_size=decided.batch,
        per_device_eval_batch_size=decided.batch,
        gradient_accumulation_steps=config.grad_accum,
        max_grad_norm=config.max_grad_norm,
        bf16=decided.bf16,
        # One kernel for every parameter, on CPU too (torch >= 2.4): ~6x faster than the
        # per-tensor loop on the tiny model. ZeRO's configs name their own optimizer.
        optim="adamw_torch_fused",
        use_cpu=not cuda,
        seed=config.seed,
        data_seed=config.seed,
        # Each log reads the loss and the gradient norm back to the host: the GPU's queue drains
        # and the host, which runs ahead on the small steps, starts again from behind. At
        # most one step in LOG_EVERY pays that; a long run still logs 20 points.
        logging_steps=max(LOG_EVERY, decided.total_steps // 20),
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
        deepspeed=decided.choice.deepspeed_config(cpu=not cuda, hidden=width),
        # Every parameter of GPT-2 gets a gradient: the default (True) walks the autograd graph
        # for unused ones and adds an all-reduce every step. Buckets of ~100 MB hold two of
        # gpt2-xl's largest gradients (c_fc, c_proj: 41 MB in fp32); the default 25 MB holds
        # none, so each went alone.
        ddp_find_unused_parameters=False,
        ddp_bucket_cap_mb=100,
        # One block compiled for all (regional: compile_caches() asks accelerate for it), its
        # caches on HF_HOME; run() calls it before torch is imported.
        torch_compile=decided.compile,
    )


def _trainer(
    model: PreTrainedModel,
    decided: Plan,
    config: TrainConfig,
    blocks: Any,
    workdir: Path,
    report: Any,
) -> tuple[Any, Any]:
    """The Trainer that runs ``decided`` with its callbacks (``report``; the clock of steady
    throughput; the step profile a bench asks for), and the clock."""
    from transformers import PrinterCallback, set_seed

    from job.training.callbacks import JobTrainer, flops_per_token
    from job.training.clock import PROFILE_ENV, clocks, counted

    set_seed(config.seed)
    args = training_arguments(decided, config, workdir, report.checkpoints, model.config.n_embd)
    # the step profile: a diagnostic of the bench's (bench/gpu_probe.py), outside the clock's
    clock, profile = clocks(decided.world, os.environ.get(PROFILE_ENV))
    callbacks = [report, clock, *([profile] if profile else [])]
    trainer: Any = counted(JobTrainer, clock)(
        model=model, args=args, train_dataset=BlockDataset(blocks.train), callbacks=callbacks
    )
    trainer.flops_per_token = flops_per_token(model, config)
    trainer.remove_callback(PrinterCallback)  # it prints every log dict to stdout
    return trainer, clock


def without_autocast(trainer: Any) -> None:
    """The model as it was loaded, in place: accelerate wraps ``forward`` in bf16 autocast for
    mixed precision and leaves the wrapper on after training. The final validation loss would
    then run in bf16 where the base's ran in fp32, and sampling in fp32
    (``--sampling-precision fp32``) would run under autocast, re-casting the weights at every
    token."""
    trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)


def compile_caches() -> None:
    """torch.compile's caches (Inductor's compiled graphs, Triton's kernels) under HF_HOME, the
    volume a fleet shares (docs/deploy.md): the first task compiles, later ones load. A cache
    folder already set in the environment wins."""
    home = hf_home()
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(home / "torchinductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", str(home / "triton"))
    # accelerate's regional compilation: the Trainer's torch_compile then compiles each block
    # (one graph serves them all: GPT-2's blocks are alike) and leaves the rest eager.
    os.environ.setdefault("ACCELERATE_DYNAMO_USE_REGIONAL_COMPILATION", "true")


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
