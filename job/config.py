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

Manifest format (version 1), for cloud batch jobs (see docs/batch.md)::

    version: 1                          # required; the only version so far
    output: s3://bucket/huggingtweets   # required; s3:// URI or a local folder
    defaults:                           # every bot starts from these (all optional)
      base_model: gpt2                  # shortcut for train.base_model
      train: {epochs: 4}                # any field of a JobConfig section, by section
      sampling: {per_prompt: 3}
      clean: {replies: keep}
      prepare: {balance_ratio: 1.0}
    hub: {push: true, owner: huggingtweets, private: false, contact: takedown@example.org}
    wandb: {project: huggingtweets, mode: online}
    bots:                               # required; one bot per entry, one per array index
      - users:
          - {handle: __wmww, source: api}
          - {handle: andreruffert, source: archive, uri: s3://bucket/inputs/andreruffert.zip}
        base_model: gpt2-xl             # a bot's own keys win over the defaults
        train: {epochs: 2}
        hub_repo: someone/custom-name   # else <hub.owner>/<bot>

Gotchas: section overrides merge key by key with the defaults, they do not replace them;
``sampling.start_texts`` is a list.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal, TypeVar, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from job.data.handles import bot_name, validate_handle
from job.errors import BadConfig, JobError
from job.gpt2 import GPT2
from job.storage import check_uri, read_uri

VERSION = 1
Strategy = Literal["auto", "ddp", "zero2", "zero3", "zero3-offload"]
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
# Hub repo ids as huggingface_hub's validate_repo_id has them: owner/name of letters, digits,
# '_', '-', '.', starting and ending with a letter, digit or '_'; no '--' or '..'.
HUB_REPO = re.compile(r"^\w(?:[\w.-]*\w)?/\w(?:[\w.-]{0,94}\w)?$", re.ASCII)
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


class Carried(ValueError):
    """A JobError raised inside a validator: pydantic only locates ValueErrors, and the
    error's own kind (and exit code) must survive."""

    def __init__(self, error: JobError) -> None:
        super().__init__(str(error))
        self.error = error


def _carried(check: Callable[[str], str], value: str) -> str:
    """``check(value)`` inside a validator, its JobError carried through pydantic."""
    try:
        return check(value)
    except JobError as e:
        raise Carried(e) from None


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
        """The name's form only; that a folder exists is checked where it is read."""
        folder = value.startswith(("/", "./", "../", "~"))
        hub_id = HUB_REPO.fullmatch(value) is not None and ".." not in value
        if value in GPT2 or value == "tiny" or folder or hub_id:
            return value
        raise ValueError(
            f"{value!r}: use tiny, {', '.join(GPT2)}, a folder (/... or ./...) or a Hub id"
            " (owner/name)"
        )

    # 1,000 passes over a person's tweets would only learn them by heart (and a huge count
    # overflows the step count after the data stage)
    epochs: float = Field(
        4.0, gt=0, le=1000, description="Passes over the tweets (original recipe)."
    )
    # The original trained batch 1 of one full-context block at 1.372e-4; this job's steps hold
    # more tokens (8 blocks of 256), so fewer steps at that rate end worse (benchmarks.md).
    # Scaled, it stays at most the rate the base's size was pre-trained at (model.py).
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
    # allow (train.py batch_size(): a small data set keeps its optimizer steps). The learning
    # rate follows the tokens a step (learning_rate above).
    batch_size: int | None = Field(
        None,
        ge=1,
        description="Blocks per step, per device. Default: 8, more on a GPU (train.py).",
    )
    grad_accum: int = Field(1, ge=1, description="Steps to accumulate before an update.")
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
    strategy: Strategy = Field(
        "auto", description="ddp | zero2 | zero3 | zero3-offload, or auto: the fastest that fits."
    )
    # A gpt2-xl checkpoint with its optimizer is ~20 GB and its training lasts minutes on a
    # GPU: time, not a step count, says when one is worth writing. SIGTERM always saves.
    checkpoint_every: int = Field(
        0, ge=0, description="Steps between checkpoints; 0: by time (checkpoint-minutes)."
    )
    checkpoint_minutes: float = Field(10.0, gt=0, description="Training minutes per checkpoint.")
    keep_checkpoints: int = Field(3, ge=1, description="Newest complete checkpoints kept.")
    # torch.compile's first step costs ~1 min (54 s for the tiny model on CPU, where it never
    # paid back: docs/benchmarks.md); a long gpt2-xl run on a GPU can win it back. Its caches
    # go under HF_HOME, the volume the fleet shares, so one task compiles and the rest reuse.
    compile: bool = Field(
        False, description="torch.compile training and sampling (for GPUs; caches on HF_HOME)."
    )
    # bf16 weights are half the bytes: gpt2-xl's model.safetensors goes from 6.2 to 3.1 GB,
    # and so do its upload to S3 and the Hub and every later download. fp32 is what the
    # original HuggingTweets published; bf16 is what the GPU trained in anyway.
    save_precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="Precision of the saved weights: fp32, or bf16 (half the size)."
    )


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
    # those bytes; a static KV cache keeps one shape for the whole generation, so that with
    # --compile the decode step is captured once. On a CPU neither pays (bf16 matmuls are slow
    # there), and the static and dynamic caches sample the same tokens (tests/outputs).
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto",
        description="Sampling precision; auto: bf16 on a GPU that has it, else fp32.",
        json_schema_extra={"flag": "sampling-precision"},
    )
    kv_cache: Literal["auto", "static", "dynamic"] = Field(
        "auto", description="KV cache while sampling; auto: static on a GPU, else dynamic."
    )
    # Long enough that common phrases don't match, short enough to catch a copied sentence.
    ngram: int = Field(
        8,
        ge=3,
        description="Flag a prediction sharing this many consecutive words with a tweet.",
        json_schema_extra={"flag": "memorization-ngram"},
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


def flag(model: type[Section], name: str) -> str:
    """The command-line flag of a field (without ``--``): its name, or what it says."""
    extra = model.model_fields[name].json_schema_extra
    given = extra.get("flag") if isinstance(extra, dict) else None
    return str(given or model.cli_prefix + name.replace("_", "-"))


def describe(field: Any) -> str:
    """A field's help: its description, and its choices when the description lacks them."""
    text = field.description or ""
    args = [a for a in get_args(field.annotation) if a is not type(None)]
    literal = field.annotation if get_origin(field.annotation) is Literal else None
    literal = literal or next((a for a in args if get_origin(a) is Literal), None)
    if literal is not None:
        choices = [str(c) for c in get_args(literal)]
        if choices[0] not in text:
            text += f" One of: {' | '.join(choices)}."
    return text


def options_markdown(root: type[JobConfig] | None = None) -> str:
    """docs/options.md: every option, generated from this module (``make docs``)."""
    root = root or JobConfig
    lines = [
        "# Options",
        "",
        "Generated from job/config.py by `make docs`; tests/test_config.py fails when it drifts.",
        "Each option is a flag of `huggingtweets run` (`prepare` takes Cleaning and Data)",
        "and a key of a `--config` file, in its section. In a manifest, each is a key of its",
        "`defaults` or of a bot, in its section, but for `wandb`: the manifest's own top-level",
        "`wandb` section, for all its bots (where metrics go is the job's, not a bot's).",
    ]
    for section, info in root.model_fields.items():
        model = info.annotation
        assert isinstance(model, type) and issubclass(model, Section)
        title = (model.__doc__ or section).strip().splitlines()[0]
        lines += ["", f"## `{section}`: {title}", "", "| flag | key | default | what |"]
        lines.append("| --- | --- | --- | --- |")
        for name, field in model.model_fields.items():
            default = field.get_default(call_default_factory=True)
            shown = ", ".join(map(str, default)) if isinstance(default, list) else default
            what = describe(field).replace("|", "\\|")
            name_flag = flag(model, name)
            if field.annotation is bool:
                name_flag += f"/--no-{name_flag}"
            lines.append(
                f"| `--{name_flag}` | `{section}.{name}` | "
                f"{'' if shown is None else f'`{shown}`'} | {what} |"
            )
    return "\n".join(lines) + "\n"


# Which sections each command takes options for.
PREPARE_SECTIONS = ("clean", "prepare")
TRAINING = ("train", "sampling")
RUN_SECTIONS = (*PREPARE_SECTIONS, *TRAINING, "wandb")


# --- Bots: who a bot imitates, where its tweets come from, where it is published -------------


class UserSpec(Section):
    handle: str
    source: Literal["api", "archive", "jsonl"] = "api"
    uri: str | None = None  # s3:// or a local path; required for archive and jsonl

    @field_validator("uri")
    @classmethod
    def _uri_form(cls, value: str | None) -> str | None:
        return _carried(check_uri, value) if value is not None else None

    @field_validator("handle")
    @classmethod
    def _handle(cls, value: str) -> str:
        return _carried(validate_handle, value)

    @model_validator(mode="after")
    def _uri(self) -> UserSpec:
        if self.source != "api" and not self.uri:
            raise ValueError(f"source {self.source!r} needs a uri")
        if self.source == "api" and self.uri:
            raise ValueError("an api source takes no uri")
        return self


class BotJob(Section):
    """One bot, resolved: what ``run`` makes and where it is published. A CLI run and each
    bot of a manifest are both one of these."""

    bot: str
    users: list[UserSpec]
    config: JobConfig = Field(default_factory=JobConfig)
    hub_repo: str | None = None  # the card points here; pushed when hub_push
    hub_push: bool = False
    hub_private: bool = False
    contact: str | None = None  # for removal requests; required for a public push
    index: int = 0

    @model_validator(mode="after")
    def _public_push_names_a_contact(self) -> BotJob:
        if self.hub_push and not self.hub_private and not self.contact:
            raise ValueError(
                "a public Hub push needs a contact for removal requests (the manifest's"
                " hub.contact, or submit --contact): the person it imitates must be able to ask"
            )
        return self

    def fingerprint(self) -> str:
        """Identifies the work: a finished run with the same fingerprint needs no rerun."""
        config = self.config.model_dump(exclude={"wandb"})  # where metrics go: not the model
        spec = {"users": [u.model_dump() for u in self.users], "config": config}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def bot_job(
    users: list[UserSpec],
    config: JobConfig,
    hub_repo: str | None = None,
    contact: str | None = None,
) -> BotJob:
    if hub_repo is not None:
        hub_repo = check_repo(hub_repo, "--hub-repo")
    return BotJob(
        bot=bot_name([u.handle for u in users]),
        users=users,
        config=config,
        hub_repo=hub_repo,
        contact=contact,
    )


def check_repo(repo: str, where: str) -> str:
    if not HUB_REPO.fullmatch(repo) or ".." in repo or "--" in repo:
        raise BadConfig(f"{where}: {repo!r} is not a Hub repo id (owner/name)")
    return repo


# --- Manifests ------------------------------------------------------------------------------


# A manifest's bounds: the bots a task reads past (each task loads the whole manifest), and its
# size. 50,000 bots are ~2 MB of YAML and load in ~5 s here; more go in more manifests.
MAX_BOTS = 50_000
MAX_MANIFEST_BYTES = 32 << 20


class Overrides(Section):
    base_model: str | None = None
    clean: dict[str, Any] = Field(default_factory=dict)
    prepare: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)
    sampling: dict[str, Any] = Field(default_factory=dict)


class BotSpec(Overrides):
    users: list[UserSpec] = Field(min_length=1)
    hub_repo: str | None = None


class HubSpec(Section):
    push: bool = False
    owner: str = "huggingtweets"
    private: bool = False
    # Where the person a bot imitates asks for its removal (an e-mail or a URL): the card's
    # "Request removal" section names it, and a public push is refused without one.
    contact: str | None = Field(None, min_length=3, max_length=200)


class Manifest(Section):
    version: int
    output: str
    bots: list[BotSpec] = Field(min_length=1, max_length=MAX_BOTS)
    # Bots made by one task (one array index) in turn, in one process: for small models the
    # fixed cost of a task (start-up, imports, loading the base) is most of a bot's time, and
    # K bots pay it once (docs/benchmarks.md). Task i makes bots i*K .. i*K+K-1; submit sizes
    # the array to ceil(bots / K). Each bot still publishes, fails and retries on its own.
    bots_per_task: int = Field(1, ge=1, le=1000)
    defaults: Overrides = Field(default_factory=Overrides)
    hub: HubSpec = Field(default_factory=HubSpec)
    wandb: WandbConfig = Field(default_factory=WandbConfig)

    @field_validator("output")
    @classmethod
    def _output(cls, value: str) -> str:
        return _carried(check_uri, value)

    @field_validator("version")
    @classmethod
    def _version(cls, value: int) -> int:
        if value != VERSION:
            raise ValueError(f"this huggingtweets reads version {VERSION}, not {value}")
        return value


def tasks(manifest: Manifest) -> int:
    """How many array tasks make the manifest's bots."""
    return -(-len(manifest.bots) // manifest.bots_per_task)


def load_manifest(uri: str, resolve: bool = True) -> Manifest:
    """The manifest at ``uri`` (s3:// or a path), read and checked; every bot's config too
    unless ``resolve`` is False (a task resolves only its own: ``jobs(manifest, only=...)``)."""
    try:
        text = read_uri(uri, MAX_MANIFEST_BYTES, "manifest").decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadConfig(f"{uri}: not UTF-8 text") from e
    return parse_manifest(text, uri, resolve)


def parse_manifest(text: str, source: str = "manifest", resolve: bool = True) -> Manifest:
    manifest = validate(Manifest, load_yaml(text, source), "manifest")
    if resolve:  # every bot now: a bad override fails before any work starts
        jobs(manifest)
    return manifest


def jobs(manifest: Manifest, only: range | None = None) -> list[BotJob]:
    """The manifest's bots, resolved; with ``only``, those of these indices (every bot's name
    is still checked: two bots of one name would write one folder)."""
    hub = manifest.hub
    if hub.push and not hub.private and not hub.contact:
        raise BadConfig(
            "manifest.hub.contact: a public Hub push needs a contact for removal requests (an"
            " e-mail or URL): the person a bot imitates must be able to ask for its removal"
        )
    out = []
    seen: set[str] = set()
    d = manifest.defaults
    for i, spec in enumerate(manifest.bots):
        path = f"manifest.bots[{i}]"
        name = bot_name([u.handle for u in spec.users])
        if name.lower() in seen:
            raise BadConfig(f"{path}: bot {name} appears twice")
        seen.add(name.lower())
        if only is not None and i not in only:
            continue
        sections: dict[str, Any] = {
            key: {**getattr(d, key), **getattr(spec, key)} for key in PREPARE_SECTIONS + TRAINING
        }
        # base_model, a shortcut: the bot's wins over the defaults' train.base_model
        if d.base_model:
            sections["train"] = {"base_model": d.base_model, **sections["train"]}
        if spec.base_model:
            sections["train"]["base_model"] = spec.base_model
        sections["wandb"] = manifest.wandb.model_dump()
        config = validate(JobConfig, sections, path)
        repo = spec.hub_repo or f"{manifest.hub.owner}/{name}"
        out.append(
            BotJob(
                index=i,
                bot=name,
                users=spec.users,
                config=config,
                # The card names a Hub repo only if the model will be pushed there.
                hub_repo=check_repo(repo, f"{path}.hub_repo") if manifest.hub.push else None,
                hub_push=manifest.hub.push,
                hub_private=manifest.hub.private,
                contact=manifest.hub.contact,
            )
        )
    return out


# --- Loading --------------------------------------------------------------------------------

M = TypeVar("M", bound=BaseModel)


# PyYAML recurses ~6 frames a level; a manifest needs ~6 levels. A bound well below Python's
# 1,000 frames turns a hostile 5,000-deep document into an error in 0.1 s instead of 1.7 s.
YAML_FRAMES = 400


@functools.cache
def _loader() -> Any:
    """PyYAML's safe loader, reading numbers as people write them: YAML 1.1 takes ``5e-5`` and
    ``1e3`` (no dot) for strings; YAML 1.2 and JSON, as here, for numbers."""
    import yaml

    # libyaml's parser where PyYAML has it (4 s for a 50,000-bot manifest, 13 s without)
    class Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
        list("-+0123456789."),
    )
    return Loader


def load_yaml(text: str, source: str) -> Any:
    import sys

    import yaml

    depth, frame = 0, sys._getframe()
    while frame.f_back is not None:
        depth, frame = depth + 1, frame.f_back
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(min(limit, depth + YAML_FRAMES))
    try:
        return yaml.load(text, Loader=_loader())  # a SafeLoader; JSON too
    except yaml.YAMLError as e:
        raise BadConfig(f"{source}: not valid JSON or YAML: {' '.join(str(e).split())}") from e
    except RecursionError:
        raise BadConfig(f"{source}: nested too deeply") from None
    finally:
        sys.setrecursionlimit(limit)


def validate(model: type[M], data: Any, path: str) -> M:
    """``model`` from plain data, or a JobError naming the field's path."""
    try:
        return model.model_validate(data)
    except ValidationError as e:  # checks raising a JobError reach here as Carried
        raise _error(model, e, path) from None


def _error(model: type[BaseModel], e: ValidationError, path: str) -> JobError:
    found = e.errors()
    # An unknown key first: it usually explains the other errors (a misspelt field is missing).
    error = next((x for x in found if x["type"] == "extra_forbidden"), found[0])
    loc = [p for p in error["loc"] if p not in ("function-after", "literal")]
    where = path + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)
    kind, value = error["type"], error.get("input")
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        known = _fields_at(model, loc[:-1])
        hint = " (secrets come from the environment)" if _secretish(str(loc[-1])) else ""
        return BadConfig(f"{where}: unknown key{hint}; known keys: {', '.join(known)}")
    if kind == "missing":
        return BadConfig(f"{where}: required")
    if kind == "model_type" or kind == "dict_type":
        return BadConfig(f"{where}: expected a mapping, got {_kind(value)}")
    if kind == "literal_error":
        choices = ", ".join(repr(c) for c in _literal_choices(ctx.get("expected", "")))
        return BadConfig(f"{where}: must be one of {choices}, not {_kind(value)}")
    if kind == "value_error":
        original = ctx.get("error")
        if isinstance(original, Carried):  # a handle check: keep its exit code
            return type(original.error)(f"{where}: {original.error}")
        return BadConfig(f"{where}: {original}")
    expected = {
        "float_type": "a number",
        "float_parsing": "a number",
        "int_type": "an integer",
        "int_parsing": "an integer",
        "int_from_float": "an integer",
        "bool_type": "true or false",
        "bool_parsing": "true or false",
        "string_type": "a string",
        "list_type": "a list",
    }.get(kind)
    if expected:
        return BadConfig(f"{where}: expected {expected}, got {_kind(value)}")
    return BadConfig(f"{where}: {error['msg']}")  # bounds (gt, ge...): pydantic's own words


def _fields_at(model: type[BaseModel], loc: list[Any]) -> list[str]:
    """The keys the model allows at ``loc``, for an unknown key's message."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = field.annotation
        for arg in get_args(current) or ():  # list[BotSpec], X | None
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                current = arg
    return sorted(getattr(current, "model_fields", {}))


def _literal_choices(expected: str) -> list[str]:
    return re.findall(r"'([^']*)'", expected)


def _kind(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    if isinstance(value, str) and len(value) > 20:  # might be a pasted secret: don't echo it
        return f"a string of {len(value)} characters"
    return repr(value)


def _secretish(key: str) -> bool:
    return any(word in key.lower() for word in ("token", "secret", "password", "api_key"))


if __name__ == "__main__":  # make docs
    print(options_markdown(), end="")
