"""Fine-tuning with the HF Trainer: the original HuggingTweets recipe, on modern defaults.

- Defaults from the original recipe (lr 1.372e-4, cosine schedule, 4 epochs), all overridable.
- bf16 autocast, fused AdamW and SDPA attention where the hardware has them; fp32 on CPU.
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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from job.data import BlockDataset, make_blocks
from job.errors import BadConfig

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    base_model: str = "gpt2"  # gpt2 | gpt2-medium | gpt2-large | gpt2-xl | tiny | folder | Hub id
    tokenizer: str | None = None  # GPT-2 BPE files (vocab.json, merges.txt) for the tiny model
    epochs: float = 4.0  # the original recipe; tweets are few, so several passes help
    learning_rate: float = 1.372e-4  # the original recipe's value
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.0  # fine-tuning from a pretrained model needs none at this lr
    weight_decay: float = 0.0
    batch_size: int = 8  # per device; blocks of block_size tokens
    grad_accum: int = 1
    # Tweets are ~20-40 tokens; 256-token blocks hold ~10 of them, and shorter blocks give
    # small data sets more optimizer steps. Capped by the model's context (tiny: 128).
    block_size: int = 256
    val_fraction: float = 0.1
    seed: int = 42
    precision: str = "auto"  # auto (bf16 where supported, else fp32) | bf16 | fp32

    def __post_init__(self) -> None:
        checks = [
            (self.epochs > 0, "epochs must be positive"),
            (self.learning_rate > 0, "learning_rate must be positive"),
            (self.batch_size >= 1 and self.grad_accum >= 1, "batch sizes must be at least 1"),
            (self.block_size >= 8, "block_size must be at least 8"),
            (0 <= self.val_fraction < 0.5, "val_fraction must be in [0, 0.5)"),
            (0 <= self.warmup_ratio < 1, "warmup_ratio must be in [0, 1)"),
            (self.precision in ("auto", "bf16", "fp32"), "precision must be auto, bf16 or fp32"),
        ]
        for ok, message in checks:
            if not ok:
                raise BadConfig(message)


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

    @property
    def base_perplexity(self) -> float:
        return math.exp(self.base_val_loss)

    @property
    def perplexity(self) -> float:
        return math.exp(self.val_loss)


def finetune(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    config: TrainConfig,
    workdir: Path,
    on_log: Callable[[dict[str, float], int], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``texts``; evaluate before and after."""
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
    blocks = make_blocks(texts, tokenizer, block_size, config.val_fraction, config.seed)
    steps_per_epoch = math.ceil(len(blocks.train) / (config.batch_size * config.grad_accum))
    total_steps = math.ceil(steps_per_epoch * config.epochs)

    args = TrainingArguments(
        output_dir=str(workdir / "trainer"),
        num_train_epochs=config.epochs,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,  # a float < 1 is a ratio of the total steps
        weight_decay=config.weight_decay,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        bf16=bf16,
        optim="adamw_torch_fused" if cuda else "adamw_torch",
        use_cpu=not cuda,
        seed=config.seed,
        data_seed=config.seed,
        logging_steps=max(1, total_steps // 20),
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )

    class Report(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if on_log and logs:
                on_log({k: float(v) for k, v in logs.items()}, state.global_step)

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if on_step:
                on_step(state.global_step, state.max_steps)

    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=BlockDataset(blocks.train),
        eval_dataset=BlockDataset(blocks.val) if len(blocks.val) else None,
        callbacks=[Report()],
    )
    trainer.remove_callback(PrinterCallback)  # it prints every log dict to stdout
    base_loss = _evaluate(trainer)
    log.info("base model: validation loss %.3f (perplexity %.1f)", base_loss, math.exp(base_loss))
    start = time.perf_counter()
    output = trainer.train()
    seconds = time.perf_counter() - start
    val_loss = _evaluate(trainer)
    tokens = int(blocks.train_tokens * config.epochs)
    return TrainResult(
        base_val_loss=base_loss,
        val_loss=val_loss,
        train_loss=float(output.training_loss),
        steps=int(output.global_step),
        train_tokens=blocks.train_tokens,
        block_size=block_size,
        seconds=seconds,
        tokens_per_second=tokens / seconds if seconds > 0 else 0.0,
        precision="bf16" if bf16 else "fp32",
        device="cuda" if cuda else "cpu",
    )


def _evaluate(trainer: Any) -> float:
    if trainer.eval_dataset is None:
        return float("nan")
    return float(trainer.evaluate()["eval_loss"])
