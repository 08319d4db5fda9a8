"""Job manifests: what a cloud batch job makes, as a typed, versioned JSON or YAML document.

```yaml
version: 1                          # required; the only version so far
output: s3://bucket/huggingtweets   # required; s3:// URI or a local folder
defaults:                           # every bot starts from these (all optional)
  base_model: gpt2
  train: {epochs: 4}                # any TrainConfig field (see train.py)
  sampling: {per_prompt: 3}         # any SamplingConfig field (see predict.py)
  clean: {replies: keep}            # any CleanConfig field (see clean.py)
  prepare: {balance_ratio: 1.0}     # balance_ratio, min_chars, warn_chars
hub: {push: true, owner: huggingtweets, private: false}
wandb: {project: huggingtweets, mode: online}
bots:                               # required; one bot per entry, one per array index
  - users:
      - {handle: __wmww, source: api}
      - {handle: andreruffert, source: archive, uri: s3://bucket/archives/andreruffert.zip}
    base_model: gpt2-xl             # a bot's own keys win over the defaults
    train: {epochs: 2}
    hub_repo: someone/custom-name   # else <hub.owner>/<bot>
```

Gotchas: secrets never go here (``TWITTER_BEARER_TOKEN``, ``HF_TOKEN``, ``WANDB_API_KEY`` come
from the environment; a key that looks like one is refused). ``train``/``sampling`` overrides
merge key by key with the defaults, they do not replace them. ``sampling.start_texts`` is a list.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import yaml

from job.clean import CleanConfig
from job.errors import BadConfig
from job.handles import bot_name, validate_handle
from job.predict import SamplingConfig
from job.prepare import PrepareConfig
from job.run import RunConfig
from job.tracking import default_mode
from job.train import TrainConfig
from job.typed import from_dict

VERSION = 1


@dataclass(frozen=True)
class UserSpec:
    handle: str
    source: Literal["api", "archive", "jsonl"] = "api"
    uri: str | None = None  # s3:// or local path; required for archive and jsonl

    def __post_init__(self) -> None:
        validate_handle(self.handle)
        if self.source != "api" and not self.uri:
            raise BadConfig(f"source {self.source!r} needs a uri")
        if self.source == "api" and self.uri:
            raise BadConfig("an api source takes no uri")


@dataclass(frozen=True)
class Overrides:
    base_model: str | None = None
    train: dict[str, Any] = field(default_factory=dict)
    sampling: dict[str, Any] = field(default_factory=dict)
    clean: dict[str, Any] = field(default_factory=dict)
    prepare: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BotSpec(Overrides):
    users: list[UserSpec] = field(default_factory=list)
    hub_repo: str | None = None

    def __post_init__(self) -> None:
        if not self.users:
            raise BadConfig("users: at least one user")


@dataclass(frozen=True)
class HubSpec:
    push: bool = False
    owner: str = "huggingtweets"
    private: bool = False


@dataclass(frozen=True)
class WandbSpec:
    project: str = "huggingtweets"
    mode: Literal["online", "offline", "disabled"] | None = None  # None: $WANDB_MODE or offline


@dataclass(frozen=True)
class Manifest:
    version: int
    output: str
    bots: list[BotSpec]
    defaults: Overrides = field(default_factory=Overrides)
    hub: HubSpec = field(default_factory=HubSpec)
    wandb: WandbSpec = field(default_factory=WandbSpec)

    def __post_init__(self) -> None:
        if self.version != VERSION:
            raise BadConfig(
                f"version: this huggingtweets reads version {VERSION}, not {self.version}"
            )
        if not self.bots:
            raise BadConfig("bots: at least one bot")


@dataclass(frozen=True)
class BotJob:
    """One bot of a manifest, resolved: what ``run`` needs, and where it is published."""

    index: int
    bot: str
    users: list[UserSpec]
    config: RunConfig
    hub_repo: str | None  # None: no push
    hub_private: bool

    def fingerprint(self) -> str:
        """Identifies the work: a finished run with the same fingerprint needs no rerun."""
        config = asdict(self.config)
        for key in ("wandb_mode", "wandb_project", "wandb_log_model"):
            config.pop(key)  # where metrics go does not change the model
        spec = {"users": [asdict(u) for u in self.users], "config": config}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def parse(text: str, source: str = "manifest") -> Manifest:
    try:
        data = yaml.safe_load(text)  # YAML is a superset of JSON: one parser for both
    except yaml.YAMLError as e:
        raise BadConfig(f"{source}: not valid JSON or YAML: {' '.join(str(e).split())}") from e
    manifest = from_dict(Manifest, data, "manifest")
    jobs(manifest)  # resolve every bot now: a bad override fails before any work starts
    return manifest


def jobs(manifest: Manifest) -> list[BotJob]:
    out = []
    seen: set[str] = set()
    for i, bot in enumerate(manifest.bots):
        path = f"manifest.bots[{i}]"
        name = bot_name([u.handle for u in bot.users])
        if name.lower() in seen:
            raise BadConfig(f"{path}: bot {name} appears twice")
        seen.add(name.lower())
        d = manifest.defaults
        if "clean" in {**d.prepare, **bot.prepare}:
            raise BadConfig(f"{path}.prepare.clean: cleaning options go in the clean section")
        train = {**d.train, **bot.train}
        base = bot.base_model or d.base_model
        if base:
            train["base_model"] = base
        config = RunConfig(
            prepare=replace(
                from_dict(PrepareConfig, {**d.prepare, **bot.prepare}, f"{path}.prepare"),
                clean=from_dict(CleanConfig, {**d.clean, **bot.clean}, f"{path}.clean"),
            ),
            train=from_dict(TrainConfig, train, f"{path}.train"),
            sampling=from_dict(SamplingConfig, {**d.sampling, **bot.sampling}, f"{path}.sampling"),
            wandb_project=manifest.wandb.project,
            wandb_mode=manifest.wandb.mode or default_mode(),
            # The card names a Hub repo only if the model will be pushed there.
            hub_repo=(bot.hub_repo or f"{manifest.hub.owner}/{name}")
            if manifest.hub.push
            else None,
        )
        out.append(
            BotJob(
                index=i,
                bot=name,
                users=bot.users,
                config=config,
                hub_repo=config.hub_repo if manifest.hub.push else None,
                hub_private=manifest.hub.private,
            )
        )
    return out
