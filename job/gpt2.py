"""The GPT-2 family: every fact the job uses about it, in one table, imported by anything.

A leaf: it imports nothing of the job's. The config checks base model names against it
(config.py), strategies size the memory from it (training/strategy.py), the card links to the
Hub id (outputs/card.py), and the learning rate stops at the size's pre-training rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Shape:
    """A GPT-2's size, for estimates before it is loaded (training/strategy.py)."""

    params: int
    n_layer: int
    n_embd: int

    @property
    def arch(self) -> dict[str, Any]:
        """GPT2Config fields of this size: every GPT-2 has 64-wide heads and a 1,024-token
        context (Radford et al. 2019)."""
        return {
            "n_layer": self.n_layer,
            "n_embd": self.n_embd,
            "n_head": self.n_embd // 64,
            "n_positions": 1024,
        }


@dataclass(frozen=True)
class GPT2Size(Shape):
    hub_id: str = ""
    # The peak rate a model of this size was pre-trained at. OpenAI did not publish GPT-2's
    # (tuned per size, Radford et al. 2019, §2.3); GPT-3's models of the same sizes, trained at
    # 0.5-1 M tokens a step, used these (Brown et al. 2020, Table 2.1: 125 M 6.0e-4, 350 M
    # 3.0e-4, 760 M 2.5e-4, 1.3 B 2.0e-4). Fine-tuning stays at or below it (train.py).
    pretraining_rate: float = 0.0


# The GPT-2 family: every fact the job uses about it, in one table.
GPT2 = {
    name: GPT2Size(params, layers, width, f"openai-community/{name}", rate)
    for name, params, layers, width, rate in [
        ("gpt2", 124_439_808, 12, 768, 6.0e-4),
        ("gpt2-medium", 354_823_168, 24, 1024, 3.0e-4),
        ("gpt2-large", 774_030_080, 36, 1280, 2.5e-4),
        ("gpt2-xl", 1_557_611_200, 48, 1600, 2.0e-4),
    ]
}
GPT2_NAMES = tuple(GPT2)


def pretraining_rate(config: dict[str, Any]) -> float | None:
    """The pre-training rate of the GPT-2 size with this config.json's shape (a fine-tuned
    gpt2-xl included), or None for another shape (the tiny model)."""
    for size in GPT2.values():
        if (size.n_layer, size.n_embd) == (config.get("n_layer"), config.get("n_embd")):
            return size.pretraining_rate
    return None
