from __future__ import annotations

from pathlib import Path

import pytest

from job.errors import NotEnoughData
from job.training.blocks import make_blocks
from job.training.model import gpt2_tokenizer

# GPT-2's tokenizer through transformers: ~5 s of imports, so not the unit tier.
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tokenizer(shared: Path):
    return gpt2_tokenizer(shared / "tokenizers" / "gpt2")


TWEETS = [f"tweet number {i} says something about bread and code" for i in range(200)]


def test_blocks_are_full_and_tweets_start_with_eos(tokenizer) -> None:
    blocks = make_blocks(TWEETS, tokenizer, 32, 0.1, seed=0)
    assert blocks.train.shape[1] == blocks.val.shape[1] == 32
    flat = blocks.train.flatten().tolist() + blocks.val.flatten().tolist()
    eos = tokenizer.eos_token_id
    assert eos == 50256 and flat.count(eos) >= len(TWEETS) * 0.8  # only the cut tails are lost
    assert tokenizer.pad_token_id is None or tokenizer.pad_token_id == eos  # no padding used
    text = tokenizer.decode(blocks.train[0])
    assert "<|endoftext|>tweet number" in text


def test_validation_holds_whole_tweets_and_its_share(tokenizer) -> None:
    blocks = make_blocks(TWEETS, tokenizer, 16, 0.2, seed=0)
    total = len(blocks.train) + len(blocks.val)
    assert 0.15 <= len(blocks.val) / total <= 0.25
    val_text = tokenizer.decode(blocks.val.flatten())
    train_text = tokenizer.decode(blocks.train.flatten())
    val_ids = {s.split(" says")[0] for s in val_text.split("<|endoftext|>")[1:-1]}
    train_ids = {s.split(" says")[0] for s in train_text.split("<|endoftext|>")[1:-1]}
    assert val_ids and not (val_ids & train_ids)


def test_split_depends_on_seed_only(tokenizer) -> None:
    a = make_blocks(TWEETS, tokenizer, 32, 0.1, seed=1)
    b = make_blocks(TWEETS, tokenizer, 32, 0.1, seed=1)
    c = make_blocks(TWEETS, tokenizer, 32, 0.1, seed=2)
    assert a.train.equal(b.train) and not a.train.equal(c.train)


def test_too_little_data(tokenizer) -> None:
    with pytest.raises(NotEnoughData, match="smaller --block-size"):
        make_blocks(TWEETS[:3], tokenizer, 64, 0.1, seed=0)
