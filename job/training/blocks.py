"""Training data in plain sight: tweets -> token ids -> fixed-length blocks.

Each tweet is prefixed with ``<|endoftext|>`` (the same prompt the sampler and the Hub widget
use), all of them are tokenized in one batched call, concatenated and cut into blocks of
``block_size`` tokens: no padding, so every token in a batch is trained on. The validation set
is whole tweets, held out before packing, so no tweet is split across train and validation.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from job.errors import NotEnoughData

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase


@dataclass
class Blocks:
    train: torch.Tensor  # [n_train, block_size] token ids
    val: torch.Tensor  # [n_val, block_size]

    @property
    def train_tokens(self) -> int:
        return self.train.numel()


class BlockDataset:
    """What the HF Trainer wants: items of input_ids and labels (the model shifts them)."""

    def __init__(self, blocks: torch.Tensor) -> None:
        self.blocks = blocks

    def __len__(self) -> int:
        return int(self.blocks.shape[0])

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.blocks[i], "labels": self.blocks[i]}


def make_blocks(
    texts: list[str],
    tokenizer: PreTrainedTokenizerBase,
    block_size: int,
    val_fraction: float,
    seed: int,
) -> Blocks:
    import torch

    eos = tokenizer.eos_token
    ids = tokenizer([eos + t for t in texts], add_special_tokens=False)["input_ids"]
    order = list(range(len(ids)))
    random.Random(seed).shuffle(order)
    total = sum(len(x) for x in ids)
    # Hold out whole tweets until the validation set has its share and at least one block.
    want = max(int(total * val_fraction), block_size) if val_fraction > 0 else 0
    val_ids: list[int] = []
    cut = 0
    while len(val_ids) < want and cut < len(order):
        val_ids.extend(ids[order[cut]])
        cut += 1
    train_ids = [tok for i in order[cut:] for tok in ids[i]]

    def chunk(flat: list[int]) -> torch.Tensor:
        n = len(flat) // block_size
        return torch.tensor(flat[: n * block_size], dtype=torch.long).view(n, block_size)

    blocks = Blocks(train=chunk(train_ids), val=chunk(val_ids))
    if len(blocks.train) < 2 or (val_fraction > 0 and len(blocks.val) < 1):
        raise NotEnoughData(
            f"{total} tokens of tweets make fewer than 2 training blocks of {block_size} tokens"
            " plus a validation block; use more tweets or a smaller --block-size"
        )
    return blocks
