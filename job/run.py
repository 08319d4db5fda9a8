"""Recipe: the whole job on one machine, from tweets to a published-quality model folder.

Features, and the flags of ``huggingtweets run`` that control them:
- Data: every feature of the prepare recipe (sources, cleaning, balancing; see prepare.py).
- Base model by name or path (``--base-model``); ``tiny`` builds a tiny GPT-2 locally, with
  GPT-2's tokenizer when ``--tokenizer`` gives its files.
- Fine-tuning (``--epochs``, ``--learning-rate``, ``--batch-size``, ``--block-size``,
  ``--seed``...; see train.py), with validation perplexity before and after.
- Predictions sampled in one batch (``--start-text``, ``--predictions-per-prompt``,
  ``--top-p``) and checked for memorized tweets (``--memorization-ngram``).
- ``predictions.png``, the model card, W&B runs and artifacts (``--wandb-mode``).
- Outputs in ``OUT/<bot>/``: ``model/`` (loads with ``pipeline``), ``predictions.json`` and
  ``job.json`` (config, versions, timings per phase, result), written last.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import platform
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from job import __version__
from job.atomic import replace_dir, write_json
from job.checkpoints import Checkpoints
from job.handles import bot_name
from job.model import EOS, GPT2_NAMES, HUB_IDS
from job.predict import Prediction, SamplingConfig
from job.prepare import PrepareConfig, Prepared, prepare
from job.storage import Storage
from job.tracking import Tracker, default_mode
from job.train import TrainConfig, TrainResult
from job.tweets import TweetSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunConfig:
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    wandb_mode: str = field(default_factory=default_mode)  # offline unless WANDB_MODE says
    wandb_project: str = "huggingtweets"
    wandb_log_model: bool = True  # upload the model as an artifact (online: GBs for XL)
    hub_repo: str | None = None  # where the card says the model lives, once pushed


@dataclass
class RunResult:
    bot: str
    model_dir: Path
    train: TrainResult
    predictions: list[Prediction]
    flagged: int
    timings: dict[str, float]


class Phases:
    """Times each phase of the job and logs it (the job measures itself)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        # a phase may run in parts (load: build the tiny base, then load it on every rank)
        self.seconds[name] = round(self.seconds.get(name, 0) + time.perf_counter() - start, 3)
        log.info("%s: %.1f s", name, self.seconds[name])


def run(
    sources: dict[str, TweetSource],
    out: Path,
    config: RunConfig,
    progress: Callable[[int, int], None] | None = None,
    checkpoint_storage: tuple[Storage, str] | None = None,
) -> RunResult | None:
    """Prepare, fine-tune, sample, write the card; see the module docstring.

    Under a multi-process launcher every rank calls this; rank 0 gets the result, the others
    None once they have trained and saved.
    """
    import torch

    from job import distributed
    from job.model import check_base, load, resolve_base
    from job.train import finetune

    tokenizer_dir = Path(config.train.tokenizer) if config.train.tokenizer else None
    check_base(config.train.base_model, tokenizer_dir)  # before any tweets are fetched
    start = time.perf_counter()
    phases = Phases()
    _quiet_libraries()
    ranks = distributed.init()
    bot = bot_name(sources)
    bot_dir = out / bot
    work = bot_dir / ".work"  # the same path on every rank: ZeRO-3 saves from all of them
    data: Prepared | None = None
    tracker = Tracker(
        config.wandb_mode if ranks.main else "disabled", config.wandb_project, bot, bot_dir
    )
    clean = None
    name = texts = None
    if ranks.main:
        with phases("prepare"):
            data = prepare(sources, out, config.prepare)
        with tracker.stage("prepare", asdict(config.prepare)) as wb:
            raw = tracker.log_artifact(
                wb, f"raw-{bot}", "raw_data", [data.data_dir / "raw.jsonl"], _counts(data)
            )
            clean = tracker.log_artifact(
                wb,
                f"dataset-{bot}",
                "dataset",
                [data.data_dir / "clean.jsonl", data.data_dir / "stats.json"],
                _counts(data),
                parent=raw,
            )
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        texts = [t.text for t in data.tweets]
        with phases("load"):  # the tiny base is built once, by rank 0
            name = resolve_base(
                config.train.base_model, work, texts, tokenizer_dir, config.train.seed
            )
    name, texts = distributed.share((name, texts))  # also the barrier after rank 0's prepare
    assert texts is not None and name is not None
    checkpoints = Checkpoints(
        bot_dir / "checkpoints",
        _fingerprint(config, texts),
        config.train.keep_checkpoints,
        *(checkpoint_storage or (None, "")),
    )
    resume = checkpoints.latest()  # fetched from S3 if an earlier attempt left one there
    previous_run = checkpoints.recall("wandb_train_run")

    with tracker.stage("train", asdict(config), run_id=previous_run) as wb:
        if clean is not None:
            tracker.use(wb, clean)
        if ranks.main:  # the fingerprint always; the W&B run id when there is a run
            checkpoints.remember(
                **({"wandb_train_run": wb.id} if config.wandb_mode != "disabled" else {})
            )
        with phases("load"):
            device = "cuda" if torch.cuda.is_available() else "cpu"
            model, tokenizer = load(name, device=device)
            # Everything made so far (torch's and transformers' modules, the model) lives to
            # the end: keep it out of the collector's walks. accelerate calls gc.collect()
            # when training ends, and that walk costs ~0.2 s otherwise.
            gc.freeze()
        with phases("train"):
            result, trainer = finetune(
                model,
                tokenizer,
                texts,
                config.train,
                work,
                on_log=lambda logs, step: wb.log(logs, step=step),
                on_step=progress if ranks.main else None,
                checkpoints=checkpoints,
                resume=resume,
            )
        with phases("save"):
            staged = work / "model"
            trainer.save_model(str(staged))  # consolidated on every strategy (ZeRO-3 gathers)
            distributed.barrier()
        if not ranks.main:
            return None
        checkpoints.clear()  # the model is saved: they were only for resuming
        assert data is not None
        _finish_model_folder(staged, tokenizer, config.sampling)
        with phases("predict"):
            from job.predict import flag_memorized, sample

            if result.strategy.startswith("zero3"):  # partitioned in memory: use the saved one
                from transformers.integrations.deepspeed import unset_hf_deepspeed_config

                unset_hf_deepspeed_config()  # else from_pretrained would partition it again
                model, tokenizer = load(str(staged), device=device)
            predictions = sample(model, tokenizer, config.sampling)
            flagged = flag_memorized(
                predictions, [asdict(t) for t in data.tweets], config.sampling.ngram
            )
        with phases("card"):
            _write_card(staged, data, config, result, predictions, flagged, tracker)
            replace_dir(staged, bot_dir / "model")
            shutil.rmtree(work, ignore_errors=True)
        model_dir = bot_dir / "model"
        wb.log(
            {
                "val_loss": result.val_loss,
                "perplexity": result.perplexity,
                "base_perplexity": result.base_perplexity,
                "memorized": flagged,
                "tokens_per_second": result.tokens_per_second,
            }
        )
        wb.log(
            {
                "predictions": tracker.table(
                    ["prompt", "text", "memorized"],
                    [[p.prompt, p.text, p.memorized] for p in predictions],
                )
            }
        )
        if config.wandb_log_model:
            tracker.log_artifact(
                wb,
                f"model-{bot}",
                "model",
                [model_dir],
                {"perplexity": result.perplexity},
                parent=clean,
            )

    phases.seconds["total"] = round(time.perf_counter() - start, 3)
    write_json(
        bot_dir / "predictions.json",
        {
            "sampling": asdict(config.sampling),
            "memorized": flagged,
            "predictions": [asdict(p) for p in predictions],
        },
    )
    write_json(
        bot_dir / "job.json",
        {  # last: its presence means the run finished
            "bot": bot,
            "config": asdict(config),
            "versions": versions(),
            "timings": phases.seconds,
            "wandb": {"mode": config.wandb_mode, "runs": tracker.run_ids, "urls": tracker.urls},
            "result": {
                **result.summary(),
                "predictions": len(predictions),
                "memorized": flagged,
                "model_dir": str(model_dir),
            },
        },
    )
    return RunResult(bot, model_dir, result, predictions, flagged, phases.seconds)


def _fingerprint(config: RunConfig, texts: list[str]) -> str:
    """Checkpoints resume only the same training on the same tweets."""
    digest = hashlib.sha256(json.dumps(asdict(config.train), sort_keys=True).encode())
    for text in texts:
        digest.update(text.encode() + b"\0")
    return digest.hexdigest()


def _finish_model_folder(folder: Path, tokenizer: Any, sampling: SamplingConfig) -> None:
    """Add the tokenizer and the sampling settings where pipeline() and the Hub widget look.

    transformers 5's pipeline reads generation_config.json and config.prefix; older versions
    read task_specific_params. All three are written so every client samples alike.
    """
    from transformers import AutoConfig, GenerationConfig

    generation = sampling.generation_kwargs()
    config = AutoConfig.from_pretrained(folder)
    config.prefix = EOS
    config.task_specific_params = {"text-generation": {**generation, "prefix": EOS}}
    config.save_pretrained(folder)
    gen = GenerationConfig.from_pretrained(folder)
    gen.update(**generation)
    gen.save_pretrained(folder)
    tokenizer.padding_side = "right"
    tokenizer.save_pretrained(folder)


def _write_card(
    folder: Path,
    data: Prepared,
    config: RunConfig,
    result: TrainResult,
    predictions: list[Prediction],
    flagged: int,
    tracker: Tracker,
) -> None:
    from job import card, thumbnail

    repo = config.hub_repo
    users = []
    for handle, stats in data.stats["users"].items():
        avatar = stats.get("avatar")
        if avatar and not avatar.startswith("http"):
            shutil.copy(data.data_dir / avatar, folder / f"avatar-{handle}{Path(avatar).suffix}")
            avatar = f"avatar-{handle}{Path(avatar).suffix}"
            if repo:
                avatar = f"https://huggingface.co/{repo}/resolve/main/{avatar}"
        users.append(
            {
                "handle": stats.get("handle") or handle,
                "display_name": stats.get("display_name") or stats.get("handle") or handle,
                "avatar_src": avatar or "",
                "avatar": stats.get("avatar"),
                "stats": stats,
            }
        )
    # One prediction per start text first, then the rest; never a memorized one if avoidable.
    ordered = predictions[:: config.sampling.per_prompt] + [
        p for i, p in enumerate(predictions) if i % config.sampling.per_prompt
    ]
    shown = [p.text for p in ordered if not p.memorized] or [p.text for p in ordered]
    thumbnail.render(folder / "predictions.png", users, shown, data.data_dir)
    base = config.train.base_model
    languages = _languages(data)
    context = {
        "users": users,
        "version": __version__,
        "base_model_label": "a tiny GPT-2 (random init)" if base == "tiny" else base,
        "base_model_url": f"https://huggingface.co/{HUB_IDS[base]}"
        if base in GPT2_NAMES
        else "https://huggingface.co/openai-community/gpt2",
        "base_model_id": HUB_IDS.get(base)
        or (base if "/" in base and not Path(base).exists() else None),
        "thumbnail": f"https://huggingface.co/{repo}/resolve/main/predictions.png"
        if repo
        else "predictions.png",
        "model_ref": repo or str(folder.parent.parent / "model"),
        "wandb_url": tracker.urls.get("train"),
        "languages": languages,
        "clean": asdict(config.prepare.clean),
        "balance_ratio": config.prepare.balance_ratio,
        "warnings": data.stats["warnings"],
        "train": asdict(config.train),
        "result": result.summary(),
        "sampling": asdict(config.sampling),
        "predictions": predictions,
        "flagged": flagged,
        "config": asdict(config),
        "versions": versions(),
    }
    (folder / "README.md").write_text(card.render(context), encoding="utf-8")


def _languages(data: Prepared) -> list[str]:
    """Languages of at least 5% of the kept tweets, most common first ("und" is no language)."""
    counts: dict[str, int] = {}
    for stats in data.stats["users"].values():
        for lang, n in stats["languages"].items():
            counts[lang] = counts.get(lang, 0) + n
    total = sum(counts.values()) or 1
    return [
        k
        for k, n in sorted(counts.items(), key=lambda kv: -kv[1])
        if k not in ("und", "qme", "zxx") and n / total >= 0.05
    ]


def _counts(data: Prepared) -> dict[str, Any]:
    return {"bot": data.bot, "users": data.stats["users"], "total": data.stats["total"]}


def versions() -> dict[str, str]:
    import tokenizers
    import torch
    import transformers

    return {
        "huggingtweets": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "cuda": torch.version.cuda or "none",
    }


def _quiet_libraries() -> None:
    """Keep stdout for the job's result line, and progress bars off the job's own display."""
    import contextlib
    import importlib.util
    import os
    import sys

    import torch

    if importlib.util.find_spec("deepspeed"):
        if not torch.cuda.is_available():
            # Else DeepSpeed probes every accelerator it knows and warns "Setting accelerator
            # to CPU" on every CPU run; DS_ACCELERATOR is its documented override.
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        # DeepSpeed's logger binds its handler to sys.stdout when first imported (and
        # accelerate imports it whenever it is installed, even for plain DDP, when the
        # Trainer unwraps the model): bind it to stderr instead.
        with contextlib.redirect_stdout(sys.stderr):
            import deepspeed  # noqa: F401
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_warning()
    disable_progress_bars()
