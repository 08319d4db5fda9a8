"""The base model a bot is fine-tuned from: classified once, by the form of its name.

``Base.of(name)`` is the one rule every place that asks "what base is this" reads: the
config's check of ``--base-model``, the run's checks before any download, what
``from_pretrained`` loads, the strategy's size estimate, preflight, and the card's link. A
``BotJob`` carries its own (``job.base``). The rule is the name's form alone, no I/O:

- ``tiny``: a tiny GPT-2 built locally from random weights (job/training/model.py);
- a GPT-2 size (``gpt2`` ... ``gpt2-xl``, or its Hub id ``openai-community/gpt2-xl``);
- a folder: a path that starts ``/``, ``./``, ``../`` or ``~`` (``out/model`` is not one: it
  has the form of a Hub id, and is read as one);
- a Hub id, ``owner/name`` (a GPT-2 fine-tune, say).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from job.gpt2 import GPT2, GPT2_NAMES, GPT2Size

# Hub repo ids as huggingface_hub's validate_repo_id has them: owner/name of letters, digits,
# '_', '-', '.', starting and ending with a letter, digit or '_'; no '--' or '..'.
HUB_REPO = re.compile(r"^\w(?:[\w.-]*\w)?/\w(?:[\w.-]{0,94}\w)?$", re.ASCII)


def is_repo_id(repo: str) -> bool:
    """Whether ``repo`` has the form of a Hub repo id (owner/name): checked before any Hub
    call is made with it."""
    return bool(HUB_REPO.fullmatch(repo)) and ".." not in repo and "--" not in repo


FOLDER_PREFIXES = ("/", "./", "../", "~")
Kind = Literal["tiny", "gpt2", "folder", "hub"]


@dataclass(frozen=True)
class Base:
    name: str  # as given
    kind: Kind
    size: GPT2Size | None = None  # a GPT-2 size's facts: its shape, Hub id and pre-training rate

    @classmethod
    def of(cls, name: str) -> Base:
        """The base ``name`` names, or ValueError saying what a name may be."""
        short = name.removeprefix("openai-community/")
        if name == "tiny":
            return cls(name, "tiny")
        if short in GPT2:
            return cls(name, "gpt2", GPT2[short])
        if name.startswith(FOLDER_PREFIXES):
            return cls(name, "folder")
        if is_repo_id(name):
            return cls(name, "hub")
        raise ValueError(
            f"{name!r}: use tiny, {', '.join(GPT2_NAMES)}, a folder (/... or ./...) or a Hub id"
            " (owner/name)"
        )

    @property
    def hub_id(self) -> str | None:
        """Its id on the Hub (a card's ``base_model:``), where it has one."""
        if self.size is not None:
            return self.size.hub_id
        return self.name if self.kind == "hub" else None

    @property
    def folder(self) -> Path | None:
        return Path(self.name).expanduser() if self.kind == "folder" else None

    @property
    def label(self) -> str:
        """How a card names it."""
        return "a tiny GPT-2 built locally (random init)" if self.kind == "tiny" else self.name
