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


def train(base: Path, initial, batches, crossed: bool = False, lrs=None):
    """``len(batches)`` bots packed in one model, from ``initial`` (each bot's A and B of each
    layer), each at its rate in ``lrs`` (default 3e-3) with the pack's own AdamW; returns each
    step's losses, bot by bot."""
    import torch
    from transformers import AutoModelForCausalLM

    from job.training import packed

    bots = len(batches)
    model = AutoModelForCausalLM.from_pretrained(base)
    pack = packed.Pack(model, bots, TrainConfig(adapter="lora"), RANK)
    with torch.no_grad():
        for bot, weights in enumerate(initial):
            for mine, given in zip(adapters(pack, bot), weights, strict=True):
                mine.copy_(given)
    optimizer = packed.AdamW(pack, (0.9, 0.999), 1e-8, 0.01)
    rates = torch.tensor(lrs or [3e-3] * bots)
    routes = torch.arange(bots).repeat_interleave(ROWS)
    losses = []
    for step in range(STEPS):
        inputs = torch.cat([batches[bot][step] for bot in range(bots)])
        pack.route((routes + 1) % bots if crossed else routes)
        each = bot_losses(model(input_ids=inputs).logits, inputs, routes, bots)
        torch.stack(each).sum().backward()
        pack.clip(0.05)  # small: every step is clipped
        optimizer.step(rates, torch.ones(bots, dtype=torch.bool))
        pack.grad.zero_()
        losses.append([float(loss.detach()) for loss in each])
    return losses


def adapters(pack, bot: int) -> list:
    """Bot ``bot``'s adapter weights, as views (A then B of each layer, in order)."""
    return [w for layer in pack.layers for w in (layer.a[bot], layer.b[bot])]


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
    start = packed.Pack(
        AutoModelForCausalLM.from_pretrained(base), BOTS, TrainConfig(adapter="lora"), RANK
    )
    initial = []
    with torch.no_grad():
        for bot in range(BOTS):
            start.init(bot, seed=bot)
        for layer in start.layers:  # B nonzero too, so that the first step's losses differ
            layer.b.normal_(0, 0.02)
        for bot in range(BOTS):
            initial.append([w.clone() for w in adapters(start, bot)])

    together = train(base, initial, batches)
    for bot in range(BOTS):
        alone = train(base, [initial[bot]], [batches[bot]])
        assert [step[0] for step in alone] == pytest.approx(
            [step[bot] for step in together], rel=1e-5
        ), bot
    assert together[0][0] != pytest.approx(together[0][1], rel=1e-3)  # the bots do differ
    # The test can fail: rows sent through another bot's adapter train it on other tweets,
    # and bot 0's losses leave its own.
    coupled = train(base, initial, batches, crossed=True)
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
    pack = packed.Pack(mine, 1, config, RANK)
    lora = [m for m in peft_model.modules() if hasattr(m, "lora_A") and "default" in m.lora_A]
    assert len(lora) == len(pack.layers)
    with torch.no_grad():
        for theirs, ours in zip(lora, pack.layers, strict=True):
            theirs.lora_B["default"].weight.normal_(0, 0.02)
            ours.a[0].copy_(theirs.lora_A["default"].weight)
            ours.b[0].copy_(theirs.lora_B["default"].weight)
            assert ours.scale == theirs.scaling["default"]
    ids = torch.randint(0, mine.config.vocab_size, (2, 16))
    pack.route(torch.zeros(2, dtype=torch.long))
    torch.testing.assert_close(mine(input_ids=ids).logits, peft_model(input_ids=ids).logits)
    # and out again: the model's own modules, its logits the base's
    plain = AutoModelForCausalLM.from_pretrained(base)
    pack.remove()
    torch.testing.assert_close(mine(input_ids=ids).logits, plain(input_ids=ids).logits)


def test_the_packs_adamw_is_torchs_for_each_bot_at_its_own_rate_and_leaves_a_resting_bot(
    base: Path,
) -> None:
    """Three bots at three rates, the second left out of the third step: each bot's weights
    are those torch.optim.AdamW makes of the same gradients at its rate; the resting bot's
    weights and moments do not move in the step it sat out."""
    import torch
    from transformers import AutoModelForCausalLM

    from job.training import packed

    pack = packed.Pack(AutoModelForCausalLM.from_pretrained(base), 3, TrainConfig(), RANK)
    for bot in range(3):
        pack.init(bot, seed=bot)
    optimizer = packed.AdamW(pack, (0.9, 0.999), 1e-8, 0.01)
    rates = [1e-2, 3e-3, 1e-3]
    theirs = [torch.nn.Parameter(pack.data[bot].clone()) for bot in range(3)]
    torch_opts = [
        torch.optim.AdamW([p], lr=r, weight_decay=0.01) for p, r in zip(theirs, rates, strict=True)
    ]
    generator = torch.Generator().manual_seed(0)
    for step in range(4):
        grads = torch.randn(pack.data.shape, generator=generator)
        pack.grad.copy_(grads)
        active = torch.tensor([True, step != 2, True])
        before = pack.data[1].clone(), optimizer.m[1].clone()
        optimizer.step(torch.tensor(rates), active)
        for bot in range(3):
            if active[bot]:
                theirs[bot].grad = grads[bot].clone()
                torch_opts[bot].step()
        if step == 2:
            assert torch.equal(pack.data[1], before[0]) and torch.equal(optimizer.m[1], before[1])
    for bot in range(3):
        # a step moves a weight by ~its rate (1e-3 to 1e-2): rounding is 1e-4 of that
        torch.testing.assert_close(pack.data[bot], theirs[bot].detach(), rtol=1e-5, atol=1e-6)
    assert float(optimizer.steps[1]) == 3 and float(optimizer.steps[0]) == 4
