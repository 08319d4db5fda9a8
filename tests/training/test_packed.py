"""Packed adapters (job/training/packed.py): K bots trained in one step reach, step by step, the
losses each reaches trained alone from the same adapter and the same batches; and one bot's
packed adapter computes what peft's LoRA does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from job.config import TrainConfig
from tests.helpers import SAMPLE

pytestmark = pytest.mark.integration  # loads torch and transformers

BOTS, ROWS, BLOCK, STEPS, RANK = 3, 2, 32, 6, 2


def bot_batches(tokenizer) -> list[list]:
    """Each bot's own batches, in order: ROWS blocks of BLOCK tokens a step, from its own
    third of the sample."""

    texts = [json.loads(line)["text"] for line in SAMPLE.read_text().splitlines()]
    ids = tokenizer("\n".join(texts), return_tensors="pt").input_ids[0]
    share = len(ids) // BOTS
    batches = []
    for bot in range(BOTS):
        mine = ids[bot * share : (bot + 1) * share]
        blocks = mine[: (len(mine) // BLOCK) * BLOCK].view(-1, BLOCK)
        batches.append([blocks[(s * ROWS) % len(blocks) :][:ROWS] for s in range(STEPS)])
        assert all(b.shape == (ROWS, BLOCK) for b in batches[-1]), "the sample is too short"
    return batches


def bot_losses(logits, inputs, routes, bots: int):
    """Each bot's mean next-token loss over its own rows."""
    import torch.nn.functional as F

    per_token = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), inputs[:, 1:].reshape(-1), reduction="none"
    ).view(inputs.shape[0], -1)
    return [per_token[routes == k].mean() for k in range(bots)]


def train(base: Path, initial, batches, per_bot_clip: bool = True):
    """``len(batches)`` bots packed in one model, from ``initial`` (each bot's A and B of each
    layer); returns each step's losses, bot by bot."""
    import torch
    from transformers import AutoModelForCausalLM

    from job.training import packed

    bots = len(batches)
    model = AutoModelForCausalLM.from_pretrained(base)
    layers = packed.pack(model, bots, TrainConfig(adapter="lora"), RANK)
    with torch.no_grad():
        for bot, weights in enumerate(initial):
            for mine, given in zip(packed.adapters(layers, bot), weights, strict=True):
                mine.copy_(given)
    params = [p for layer in layers for p in (layer.a, layer.b)]
    optimizer = torch.optim.AdamW(params, lr=3e-3, weight_decay=0.01)
    routes = torch.arange(bots).repeat_interleave(ROWS)
    losses = []
    for step in range(STEPS):
        inputs = torch.cat([batches[bot][step] for bot in range(bots)])
        packed.route(layers, routes)
        each = bot_losses(model(input_ids=inputs).logits, inputs, routes, bots)
        torch.stack(each).sum().backward()
        if per_bot_clip:
            packed.clip(layers, 0.05)  # small: every step is clipped
        else:
            torch.nn.utils.clip_grad_norm_(params, 0.05)  # over all bots: couples them
        optimizer.step()
        optimizer.zero_grad()
        losses.append([float(loss.detach()) for loss in each])
    return losses


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from job.training.model import build_random

    texts = [json.loads(line)["text"] for line in SAMPLE.read_text().splitlines()]
    return build_random(tmp_path_factory.mktemp("base"), texts, None, 42)


def test_k_bots_packed_reach_the_losses_each_reaches_alone(base: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from job.training import packed

    batches = bot_batches(AutoTokenizer.from_pretrained(base))
    torch.manual_seed(0)
    start = packed.pack(
        AutoModelForCausalLM.from_pretrained(base), BOTS, TrainConfig(adapter="lora"), RANK
    )
    initial = []
    with torch.no_grad():
        for layer in start:  # B nonzero too, so that the first step's losses differ by bot
            layer.b.normal_(0, 0.02)
        for bot in range(BOTS):
            initial.append([w.clone() for w in packed.adapters(start, bot)])

    together = train(base, initial, batches)
    for bot in range(BOTS):
        alone = train(base, [initial[bot]], [batches[bot]])
        assert [step[0] for step in alone] == pytest.approx(
            [step[bot] for step in together], rel=1e-5
        ), bot
    assert together[0][0] != pytest.approx(together[0][1], rel=1e-3)  # the bots do differ
    # The test can fail, and the updates matter: clipping the whole step's gradients, as one
    # model's, couples the bots, and bot 0's losses leave its own.
    coupled = train(base, initial, batches, per_bot_clip=False)
    alone = train(base, [initial[0]], [batches[0]])
    assert [s[0] for s in coupled] != pytest.approx([s[0] for s in alone], rel=1e-5)


def test_one_packed_adapter_computes_what_peft_lora_does(base: Path) -> None:
    """The same A and B in peft's LoRA (what `run --adapter lora` trains) and in a pack of one:
    the same logits, so "trained alone" above is the job's adapter."""
    import torch
    from transformers import AutoModelForCausalLM

    from job.training import adapter, packed

    config = TrainConfig(adapter="lora", lora_rank=RANK)
    torch.manual_seed(0)
    peft_model = adapter.attach(AutoModelForCausalLM.from_pretrained(base), config)
    mine = AutoModelForCausalLM.from_pretrained(base)
    layers = packed.pack(mine, 1, config, RANK)
    lora = [m for m in peft_model.modules() if hasattr(m, "lora_A") and "default" in m.lora_A]
    assert len(lora) == len(layers)
    with torch.no_grad():
        for theirs, ours in zip(lora, layers, strict=True):
            theirs.lora_B["default"].weight.normal_(0, 0.02)
            ours.a[0].copy_(theirs.lora_A["default"].weight)
            ours.b[0].copy_(theirs.lora_B["default"].weight)
            assert ours.scale == theirs.scaling["default"]
    ids = torch.randint(0, mine.config.vocab_size, (2, 16))
    packed.route(layers, torch.zeros(2, dtype=torch.long))
    torch.testing.assert_close(mine(input_ids=ids).logits, peft_model(input_ids=ids).logits)
