"""Job specs and manifests: who a bot imitates, where their tweets come from, where it goes.

A ``BotJob`` is one bot, resolved: a command line (``huggingtweets run alice --archive a.zip``)
and each bot of a manifest make the same one. A ``Manifest`` is what a cloud batch job reads.

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
      - users: [{handle: alice.bsky.social, source: bluesky}]   # or @bob@mastodon.social
        base_model: gpt2-xl             # a bot's own keys win over the defaults
        train: {epochs: 2}
        hub_repo: someone/custom-name   # else <hub.owner>/<bot>

Gotchas: section overrides merge key by key with the defaults, they do not replace them;
``sampling.start_texts`` is a list. A user's ``source`` defaults to their network's own
(``api`` for a Twitter handle, ``bluesky``, ``mastodon``); an online source must be the
handle's network's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from job import config as settings
from job.base import Base, is_repo_id
from job.config import (
    PREPARE_SECTIONS,
    TRAINING,
    JobConfig,
    Section,
    WandbConfig,
)
from job.data.handles import Handle, bot_name
from job.errors import BadConfig, InvalidHandle
from job.inventory import merged_repo
from job.loading import _carried, load_yaml, validate
from job.storage import check_uri, read_uri

VERSION = 1  # of the manifest format


# Each network's own source, read online with no file (data/sources): the flag that asks for
# it is ``--<source>``.
Source = Literal["api", "bluesky", "mastodon", "archive", "jsonl"]
ONLINE: dict[str, Source] = {"twitter": "api", "bluesky": "bluesky", "mastodon": "mastodon"}


class UserSpec(Section):
    handle: Handle
    source: Source = "api"  # given none: the handle's network's own (ONLINE)
    uri: str | None = None  # s3:// or a local path; required for archive and jsonl

    @field_validator("uri")
    @classmethod
    def _uri_form(cls, value: str | None) -> str | None:
        return _carried(check_uri, value) if value is not None else None

    @model_validator(mode="before")
    @classmethod
    def _own_source(cls, data: Any) -> Any:
        """No source given: the handle's network's own (an unreadable handle is the handle
        field's to refuse)."""
        if isinstance(data, dict) and data.get("source") is None and "handle" in data:
            with contextlib.suppress(InvalidHandle):
                data = {**data, "source": ONLINE[Handle(data["handle"]).platform]}
        return data

    @model_validator(mode="after")
    def _uri(self) -> UserSpec:
        own = ONLINE[self.handle.platform]
        online = self.source in ONLINE.values()
        if not online and not self.uri:
            raise ValueError(f"source {self.source!r} needs a uri")
        if online and self.uri:
            raise ValueError(f"an {self.source} source takes no uri")
        if online and self.source != own:
            raise ValueError(
                f"{self.handle.shown} is a {self.handle.platform} handle: its source is"
                f" {own}, not {self.source}"
            )
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
        if self.hub_push and self.config.train.lora and self.base.hub_id is None:
            raise ValueError(
                "an adapter is published with the Hub id of its base, and"
                f" {self.config.train.base_model!r} is none: give --base-model a Hub model"
                " (gpt2 ... gpt2-xl, or OWNER/NAME), or --no-push"
            )
        train = self.config.train
        if train.lora and train.strategy not in ("auto", "ddp"):
            # training/strategy.py's rule, here too: a manifest's second bot is refused when
            # the manifest is read, not after its first bot trained
            raise ValueError(
                f"strategy {train.strategy} with an adapter: ZeRO partitions the optimizer"
                " state, and a LoRA run has none for the base; use strategy ddp (or auto)"
            )
        if self.hub_push and self.hub_repo and self.config.train.lora_merged:
            check_repo(merged_repo(self.hub_repo), "the merged copy's repo (<repo>-merged)")
        return self

    @property
    def base(self) -> Base:
        """The base model it is fine-tuned from, classified (job/base.py)."""
        return Base.of(self.config.train.base_model)

    def fingerprint(self) -> str:
        """Identifies the work: a finished run with the same fingerprint needs no rerun."""
        # where metrics go, whether bots shared their steps or a compiled decode: not the model
        config = self.config.model_dump(
            exclude={"wandb": True, "train": {"pack"}, "sampling": {"compile"}}
        )
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
    fields = {
        "bot": bot_name([u.handle for u in users]),
        "users": users,
        "config": config,
        "hub_repo": hub_repo,
        "contact": contact,
    }
    return validate(BotJob, fields, "the bot")


def check_repo(repo: str, where: str) -> str:
    if not is_repo_id(repo):
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
        # looked up now, not at import: a test adds a field to it
        config = validate(settings.JobConfig, sections, path)
        repo = spec.hub_repo or f"{manifest.hub.owner}/{name}"
        # validated as data: a BotJob's own rules (a push's contact, an adapter's Hub base)
        # are one line that names the bot, like every other field's
        fields = {
            "index": i,
            "bot": name,
            "users": spec.users,
            "config": config,
            # The card names a Hub repo only if the model will be pushed there.
            "hub_repo": check_repo(repo, f"{path}.hub_repo") if manifest.hub.push else None,
            "hub_push": manifest.hub.push,
            "hub_private": manifest.hub.private,
            "contact": manifest.hub.contact,
        }
        out.append(validate(BotJob, fields, path))
    return out
