"""The job's one typed config: every option, its default and the reason for it, stated once.

Every front end reads this: ``huggingtweets run``/``prepare`` make one option per field (flag,
default and ``--help`` text come from here), ``--config FILE`` and job manifests are validated
by the same loader, and docs/options.md is generated from it (tests/test_config.py fails when
it drifts). Adding an option is one field here plus its use.

Strict: an unknown key, a missing field or a wrong type is a ``BadConfig`` that names the
field's path (``manifest.bots[1].train.epochs: expected a number, got 'four'``). Ints are
accepted for floats; bools never for numbers (YAML's ``yes`` is a bool). Values are not echoed
when they are long: they might be pasted secrets. Secrets never go in a config at all: they
come from the environment (``TWITTER_BEARER_TOKEN``, ``HF_TOKEN``, ``WANDB_API_KEY``).

Job specs and manifests are in job/spec.py; reading YAML and turning pydantic's errors into
one line each, in job/loading.py; docs/options.md is written by job/options.py.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from job.base import Base

Strategy = Literal["auto", "ddp", "zero2", "zero3", "zero2-offload", "zero3-offload"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)  # the names, once: from the type
# transformers' schedulers that need no extra arguments (SchedulerType)
Scheduler = Literal[
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
]
START_TEXTS = ["My dream is", "I think that", "I wish", "The best thing about", "Today I"]
# The same five openings in the languages the job knows: a bot that tweets in German is
# prompted in German, and its Hub widget too (sampling.start_texts, when given, wins).
START_TEXTS_BY_LANGUAGE = {
    "en": START_TEXTS,
    "de": ["Mein Traum ist", "Ich glaube, dass", "Ich wünschte", "Das Beste an", "Heute habe ich"],
    "fr": ["Mon rêve est", "Je pense que", "J'aimerais", "Le meilleur, c'est", "Aujourd'hui, je"],
    "es": ["Mi sueño es", "Creo que", "Ojalá", "Lo mejor de", "Hoy"],
    "pt": ["Meu sonho é", "Eu acho que", "Eu queria", "O melhor de", "Hoje eu"],
    "ja": ["私の夢は", "思うに", "できれば", "一番いいのは", "今日は"],
}


class Section(BaseModel):
    """A strict, frozen part of the config. ``cli_prefix`` goes before its fields' flags."""

    # defer_build: validators are built on first use, not at import (``--help`` needs none)
    # allow_inf_nan: no field takes inf or NaN (an epoch count, a ratio, a rate): each would
    # pass its bounds and fail after the data stage
    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, defer_build=True, allow_inf_nan=False
    )
    cli_prefix: ClassVar[str] = ""


class CleanConfig(Section):
    """How downloaded tweets become training text (job/data/clean.py)."""

    min_words: int = Field(
        3, ge=0, description="Drop tweets with fewer real words (the original recipe's 3)."
    )
    # Replies are a large part of most people's voice, so they stay by default.
    replies: Literal["keep", "drop", "strip"] = Field(
        "keep", description="Replies: keep, drop, or strip (keep them without leading @s)."
    )
    dedupe: bool = Field(
        True, description="Drop exact duplicates: a repeated 'gm' is memorised, not learned."
    )


class PrepareConfig(Section):
    """The data of one bot (job/prepare.py)."""

    balance_ratio: float = Field(
        1.0,
        le=1_000_000,
        description="Cap each user at R x the smallest user's tweets (newest kept); 0 = off.",
    )
    min_chars: int = Field(
        6000, ge=0, description="Fail under this much text: ~60 tweets teach GPT-2 nothing."
    )
    warn_chars: int = Field(
        50_000, ge=0, description="Warn under this much text: the bot will repeat its tweets."
    )

    @field_validator("balance_ratio")
    @classmethod
    def _ratio(cls, value: float) -> float:
        if value != 0 and value < 1:
            raise ValueError("must be 0 (off) or at least 1.0")
        return value


# GPT-2's matrices as peft names them (by suffix): every base is a GPT-2 (training/model.py),
# so a name that matches no matrix (ln_1, a regex) is refused before any download.
LoraTarget = Literal[
    "c_attn", "c_proj", "c_fc", "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"
]


class TrainConfig(Section):
    """Fine-tuning (job/training/train.py); defaults from the original HuggingTweets recipe."""

    base_model: str = Field(
        "gpt2",
        description="gpt2 | gpt2-medium | gpt2-large | gpt2-xl | tiny (random, local) | "
        "a model folder | a Hub id.",
    )
    tokenizer: str | None = Field(
        None, description="Folder with GPT-2's vocab.json and merges.txt, for tiny."
    )

    @field_validator("base_model")
    @classmethod
    def _base_model(cls, value: str) -> str:
        """The name's form only (job/base.py); that a folder exists is checked where it is
        read."""
        Base.of(value)
        return value

    @property
    def lora(self) -> bool:
        """A LoRA adapter run (``adapter``): the base frozen, only the adapter trained."""
        return self.adapter != "none"

    # 1,000 passes over a person's tweets would only learn them by heart (and a huge count
    # overflows the step count after the data stage)
    epochs: float = Field(
        4.0, gt=0, le=1000, description="Passes over the tweets (original recipe)."
    )
    # The original trained batch 1 of one full-context block at 1.372e-4; this job's steps hold
    # more tokens (8 blocks of 256), so fewer steps at that rate end worse (benchmarks.md).
    # Scaled, it stays at most the rate its size was pre-trained at (gpt2.py pretraining_rate).
    learning_rate: float | None = Field(
        None,
        gt=0,
        le=1,  # past 1 every step diverges
        description="Peak rate. Default: the original's 1.372e-4 scaled by tokens per step.",
    )
    lr_scheduler: Scheduler = Field("cosine", description="Learning-rate schedule.")
    warmup_ratio: float = Field(
        0.0, ge=0, lt=1, description="Share of steps warming up; fine-tuning needs none."
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    # None: 8 blocks; on a GPU, doubled up to 8 k tokens a step while the memory and the data
    # allow (plan.py batch_size(): a small data set keeps its optimizer steps). The learning
    # rate follows the tokens a step (learning_rate above).
    batch_size: int | None = Field(
        None,
        ge=1,
        description="Blocks per step and device. Default: 8, more on a GPU (plan.py batch_size()).",
    )
    grad_accum: int = Field(1, ge=1, description="Steps to accumulate before an update.")
    # The Trainer's default and the original recipe's. Clipping costs a norm over every
    # gradient each step (host-bound small steps feel its kernels); the probe measures it.
    max_grad_norm: float = Field(
        1.0, ge=0, allow_inf_nan=False, description="Gradient clipping norm; 0: no clipping."
    )
    # Tweets are ~20-40 tokens; a 256-token block holds ~10, and shorter blocks give small data
    # sets more optimizer steps. Capped by the model's context (tiny: 128).
    block_size: int = Field(256, ge=8, description="Tokens per training block.")
    val_fraction: float = Field(
        0.1, ge=0, lt=0.5, description="Share of whole tweets held out for validation."
    )
    seed: int = Field(
        42,
        ge=0,
        le=2**32 - 1,  # numpy's seeds, which the Trainer sets too, are 32-bit
        description="Seeds the split, init, data order and sampling: CPU runs repeat.",
    )
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="auto: bf16 where the GPU supports it, else fp32."
    )
    # LoRA (Hu et al. 2021, arXiv:2106.09685): the base stays frozen and is shared by every bot
    # of it; a bot is a low-rank update of each block's matrices, megabytes where a full copy
    # of gpt2-xl is 3-6 GB, with no optimizer state for the base (it fits one 24 GB GPU).
    adapter: Literal["none", "lora"] = Field(
        "none",
        description="none: fine-tune every weight; lora: train a LoRA adapter of the frozen"
        " base (megabytes a bot; docs/usage.md, Adapter bots).",
    )
    # Rank 16 and alpha twice the rank (a scale of 2): peft's and QLoRA's usual pair (Dettmers
    # et al. 2023 sweep 8-64 and find the rank matters less than adapting every layer), at
    # most width/32 so that the update stays low-rank for a narrow model (the tiny one's 64:
    # rank 2; gpt2's adapter is then ~2% of its weights). GPT-2's Conv1D matrices: c_attn (q,
    # k, v together), both c_proj (attention's and the MLP's), c_fc.
    lora_rank: int | None = Field(
        None, ge=1, le=1024, description="LoRA's rank; unset: 16, or width/32 where less."
    )
    lora_alpha: int | None = Field(
        None,
        ge=1,
        description="LoRA's alpha (its update is scaled by alpha/rank); unset: 2 x rank.",
    )
    # No dropout by default: peft's LoRA dropout makes a copy of every adapted matrix's input
    # (four a block), which cost a fifth of an adapter step (262 against 218 ms, width 256 on
    # CPU) for held-out perplexity within noise (docs/benchmarks.md, adapter rows); the
    # epochs, not dropout, keep a bot from memorising its tweets. unsloth's default is 0 too.
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on LoRA's input.")
    lora_targets: list[LoraTarget] = Field(
        ["c_attn", "c_proj", "c_fc"],
        min_length=1,
        description="Modules LoRA adapts (GPT-2's names: every matrix of a block).",
    )
    # For users who want one repo that loads alone (no peft): the base with the adapter added,
    # a full model's bytes again, written beside the adapter and pushed to <repo>-merged.
    lora_merged: bool = Field(
        False,
        description="With lora: also write the merged model (OUT/<bot>/merged), pushed to"
        " <repo>-merged.",
    )

    @model_validator(mode="after")
    def _merged_needs_lora(self) -> TrainConfig:
        if self.lora_merged and not self.lora:
            raise ValueError("lora_merged merges an adapter into its base: it needs adapter: lora")
        return self

    strategy: Strategy = Field(
        "auto",
        description="ddp | zero2 | zero3 | zero2-offload | zero3-offload, or auto: the fastest"
        " that fits.",
    )
    # A gpt2-xl checkpoint with its optimizer is ~20 GB and its training lasts minutes on a
    # GPU: time, not a step count, says when one is worth writing. SIGTERM always saves.
    checkpoint_every: int = Field(
        0, ge=0, description="Steps between checkpoints; 0: by time (checkpoint-minutes)."
    )
    checkpoint_minutes: float = Field(10.0, gt=0, description="Training minutes per checkpoint.")
    keep_checkpoints: int = Field(3, ge=1, description="Newest complete checkpoints kept.")
    # Regional: one GPT-2 block is compiled and serves every layer (accelerate's compile_regions),
    # not the whole model (minutes cold for gpt2-xl's 48 layers); caches under HF_HOME, the volume
    # the fleet shares. Unset: on for a GPU run of plan.py's COMPILE_MIN_STEPS (there, why).
    compile: bool | None = Field(
        None,
        description="torch.compile each block for training; unset: on for a GPU run long enough"
        " to repay it (caches on HF_HOME).",
    )
    # bf16 is half the bytes (gpt2-xl: 6.2 -> 3.1 GB), and so is every upload and download.
    # A full bot's default is fp32, what the original published; an adapter's is bf16: gpt2-xl's
    # rank-16 adapter is 39.3 MB instead of 78.6, under the 50 MB a bot that 10,000 bots a
    # GPU-day needs, for held-out perplexity within -0.5% to +1.2% of fp32's on the bench's
    # stand-ins, where the adapter carries the whole fit (docs/benchmarks.md, "packed" rows).
    save_precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="Saved weights: fp32, bf16 (half the size); auto: bf16 for an adapter."
    )
    # A task's adapter bots of one base train together (training/packs.py), each its own loss,
    # clipping, schedule, optimizer, epochs and checkpoints: a step's host time, what a GPU's
    # small steps wait on, is paid once (~0.2x a bot-step; a CPU: 0.95-0.99x, benchmarks.md).
    pack: bool = Field(True, description="Train a task's adapter bots of one base together.")

    @property
    def saved_precision(self) -> Literal["fp32", "bf16"]:
        """``save_precision`` with auto decided: bf16 for an adapter, fp32 for a full model."""
        if self.save_precision == "auto":
            return "bf16" if self.lora else "fp32"
        return self.save_precision


class SamplingConfig(Section):
    """Predictions (job/outputs/predict.py), sampled as the original HuggingTweets did."""

    # All prompts are sampled in one batch (predict.py): their count and length bound its
    # memory. A prompt past the model's context keeps its last tokens.
    start_texts: list[Annotated[str, Field(max_length=1000)]] = Field(
        default_factory=lambda: list(START_TEXTS),
        min_length=1,
        max_length=100,
        description="Prompts, each sampled as <|endoftext|> + text.",
        json_schema_extra={"flag": "start-text"},
    )
    per_prompt: int = Field(
        3,
        ge=1,
        le=100,
        description="Predictions per prompt.",
        json_schema_extra={"flag": "predictions-per-prompt"},
    )
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling.")
    max_length: int = Field(
        160, ge=8, description="Tokens per prediction, prompt included (the original's 160)."
    )
    temperature: float = Field(1.0, gt=0, description="Sampling temperature.")
    # On a GPU, sampling is decode-bound: each new token reads every weight once. bf16 halves
    # those bytes; a static KV cache keeps one shape, so a compiled decode step is captured once
    # (a task's choice, kept for its bots: task.py decode_compiled, not in the fingerprint). On a
    # CPU none pays (bf16 matmuls are slow; transformers compiles no CPU decode), and the static
    # and dynamic caches sample the same tokens (tests/outputs).
    compile: bool | None = Field(None, description="torch.compile the decode step, once a task;"
                                 " unset: on for a GPU task that decodes enough to repay it.",
                                 json_schema_extra={"flag": "compile-decode"})  # fmt: skip
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto",
        description="Sampling precision; auto: bf16 on a GPU that has it, else fp32.",
        json_schema_extra={"flag": "sampling-precision"},
    )
    kv_cache: Literal["auto", "static", "dynamic"] = Field(
        "auto",
        description="KV cache while sampling; auto: static when the decode step is compiled"
        " (--compile-decode), else dynamic.",
    )
    # Long enough that common phrases don't match, short enough to catch a copied sentence.
    ngram: int = Field(
        8,
        ge=3,
        description="Flag a prediction sharing this many consecutive words with a tweet.",
        json_schema_extra={"flag": "memorization-ngram"},
    )

    # The bot in a visitor's browser (job/outputs/browser.py): an ONNX export in the model's
    # onnx/ and a static Space page in space/, pushed beside the model. auto: for a GPT-2 a
    # browser can hold (gpt2, gpt2-medium: the export costs seconds to a minute of CPU, and a
    # visitor downloads 126-358 MB), named so; not for the tiny test base (random, not a bot
    # anyone wants to meet), a folder or another Hub model (on asks for one), nor gpt2-large
    # and xl (too large for a browser). An adapter bot's Space runs its merged copy, so it
    # needs --lora-merged.
    space: Literal["auto", "on", "off"] = Field(
        "auto",
        description="A Space that runs the bot in the browser (ONNX export); auto: for gpt2 and"
        " gpt2-medium.",
    )

    def in_language(self, languages: list[str]) -> SamplingConfig:
        """The default prompts in the main language of the tweets (``languages``, most common
        first), where a set is defined; prompts that were given stay as they are."""
        if "start_texts" in self.model_fields_set or not languages:
            return self
        texts = START_TEXTS_BY_LANGUAGE.get(languages[0])
        return self if texts is None else self.model_copy(update={"start_texts": list(texts)})

    def generation_kwargs(self) -> dict[str, Any]:
        """What the Hub widget and ``pipeline()`` should use too."""
        return {
            "do_sample": True,
            "top_p": self.top_p,
            "temperature": self.temperature,
            "max_length": self.max_length,
        }


WANDB_PROJECT = "huggingtweets"  # the default; a takedown also searches it (cloud/consent.py)


class WandbConfig(Section):
    """Weights & Biases (job/outputs/tracking.py)."""

    cli_prefix: ClassVar[str] = "wandb-"
    mode: Literal["online", "offline", "disabled"] | None = Field(
        None, description="online | offline | disabled (default: $WANDB_MODE, else offline)."
    )
    project: str = Field(WANDB_PROJECT, description="W&B project.")
    log_model: bool = Field(
        True, description="Upload the model as an artifact (online: GBs for gpt2-xl)."
    )


class JobConfig(Section):
    """Everything a bot is made with: the sections of a ``--config`` file and a manifest."""

    clean: CleanConfig = Field(default_factory=CleanConfig)
    prepare: PrepareConfig = Field(default_factory=PrepareConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    wandb: WandbConfig = Field(default_factory=WandbConfig)


# Which sections each command takes options for.
PREPARE_SECTIONS = ("clean", "prepare")
TRAINING = ("train", "sampling")
RUN_SECTIONS = (*PREPARE_SECTIONS, *TRAINING, "wandb")


# --- huggingtweets submit: the options of a submission, typed as the job's are -------------------


class SubmitOptions(Section):
    """``huggingtweets submit``'s options besides the handles. Each field is its flag, with its
    default and help, once (job/options.py makes the flags); ``envvar`` names a variable
    that gives it too."""

    target: Literal["batch", "k8s"] = Field(
        "batch", description="batch (AWS Batch) | k8s (Kubernetes)."
    )
    output: str = Field(
        "",
        description="The output prefix, s3://bucket/prefix.",
        json_schema_extra={"envvar": "HUGGINGTWEETS_OUTPUT"},
    )
    base_model: str = Field("gpt2", description="The base of every bot (as run's --base-model).")
    adapter: Literal["none", "lora"] = Field(
        "none", description="lora: each bot a LoRA adapter of the base (as run's --adapter)."
    )
    together: bool = Field(False, description="One bot of all the users.")
    hub_owner: str = Field("huggingtweets", description="Hub owner of the repos.")
    push: bool = Field(True, description="Push the models to the Hub.")
    contact: str | None = Field(
        None,
        description="Where people ask for a bot's removal (e-mail or URL): needed to push"
        " publicly.",
        json_schema_extra={"envvar": "HUGGINGTWEETS_CONTACT"},
    )
    # The manifest says whether W&B is online, not the infra: online needs the key (preflight
    # checks it before any work).
    wandb_mode: Literal["online", "offline", "disabled"] = Field(
        "offline", description="online (needs WANDB_API_KEY in the job) | offline | disabled."
    )
    bots_per_task: int = Field(
        1, ge=1, le=1000, description="Bots each array task makes in turn (small models: 10+)."
    )
    job_queue: str = Field(
        "huggingtweets",
        description="batch: the AWS Batch job queue.",
        json_schema_extra={"envvar": "HUGGINGTWEETS_JOB_QUEUE"},
    )
    job_definition: str = Field(
        "huggingtweets",
        description="batch: the AWS Batch job definition.",
        json_schema_extra={"envvar": "HUGGINGTWEETS_JOB_DEFINITION"},
    )
    image: str | None = Field(
        None,
        description="k8s: the image, in a registry.",
        json_schema_extra={"envvar": "HUGGINGTWEETS_IMAGE"},
    )
    namespace: str = Field("default", description="k8s: the namespace of the Job.")
    overlay: str | None = Field(
        None, description="k8s: resources of infra/k8s/overlays/NAME (gpt2-xl)."
    )
    cache_claim: str | None = Field(
        None, description="k8s: a ReadWriteMany claim for the model cache (default: per pod)."
    )
    service_account: str | None = Field(
        None,
        description="k8s: the pods' service account: AWS access through its IAM role (IRSA, EKS"
        " Pod Identity) instead of keys in the Secret.",
    )
    queue: str | None = Field(
        None,
        description="k8s: a Kueue LocalQueue; the Job is created suspended and Kueue starts it"
        " when admitted.",
    )
    dry_run: bool = Field(False, description="Print what would be submitted.")
