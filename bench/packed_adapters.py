"""Bench: K adapter bots packed in one step against K steps of one bot each (job/training/
packed.py), the host's time per bot-step.

On a GPU a small bot's step is the host's time, not the arithmetic's (bench/host_per_layer.py):
K bots trained one after another pay it K times. Packed, one step carries each bot's batch
through its own adapter, and the host's work is paid about once. Measured as
host_per_layer.py measures it: a random model of GPT-2's depth (12 layers) but 64 wide, batch 1
of 16-token blocks a bot, so the arithmetic is next to nothing and a step's time is nearly all
host work; steady steps only (after WARMUP). Both sides run the same packed layers: one bot's
batch routed to its adapter, against K bots' batches routed to theirs, each step's loss the sum
of each bot's mean loss, and AdamW.

    python bench/packed_adapters.py                 # K = 1, 4, 10
    python bench/packed_adapters.py --bots 2,8 --layers 48

Written: OUT/packed_adapters.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from common import REPO

BLOCK = 16  # tokens a block, one block a bot a step: the kernels' arithmetic is negligible
WIDTH = {"n_head": 2, "n_embd": 64, "n_positions": 128}
WARMUP, STEPS = 5, 20  # steps before the clock starts, and steps timed
RANK = 2  # width 64 / 32, the job's rule (training/adapter.py rank_for)


def per_bot_step_ms(model, pack, bots: int, vocab: int) -> float:
    """Milliseconds a bot-step: STEPS steps of ``bots`` bots' blocks, after WARMUP."""
    import torch
    import torch.nn.functional as F

    from job.training import packed

    optimizer = packed.AdamW(pack, (0.9, 0.999), 1e-8, 0.0)
    rates, active = torch.full((bots,), 1e-3), torch.ones(bots, dtype=torch.bool)
    routes = torch.arange(bots)
    times = []
    for step in range(WARMUP + STEPS):
        inputs = torch.randint(0, vocab, (bots, BLOCK))
        start = time.perf_counter()
        pack.route(routes)
        logits = model(input_ids=inputs).logits
        loss = (
            F.cross_entropy(  # one row a bot: the rows' mean losses, summed
                logits[:, :-1].reshape(-1, vocab), inputs[:, 1:].reshape(-1), reduction="none"
            )
            .view(bots, -1)
            .mean(dim=1)
            .sum()
        )
        loss.backward()
        pack.clip(1.0)
        optimizer.step(rates, active)
        pack.grad.zero_()
        if step >= WARMUP:
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000 / bots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bots", default="1,4,10", help="bots packed in a step")
    parser.add_argument("--layers", type=int, default=12, help="gpt2: 12, gpt2-xl: 48")
    parser.add_argument("--out", type=Path, default=REPO / "bench-out" / "packed-adapters")
    args = parser.parse_args()

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from job.config import TrainConfig
    from job.training import packed

    torch.set_num_threads(1)  # host work, as a GPU host's one Python thread does it
    config = GPT2Config(
        vocab_size=2000, bos_token_id=0, eos_token_id=0, n_layer=args.layers, **WIDTH
    )
    counts = [int(k) for k in args.bots.split(",")]
    rows = []
    for bots in counts:
        torch.manual_seed(0)
        model = GPT2LMHeadModel(config)
        pack = packed.Pack(model, bots, TrainConfig(adapter="lora"), RANK)
        for bot in range(bots):
            pack.init(bot, seed=bot)
        rows.append({"bots": bots, "ms_per_bot_step": per_bot_step_ms(model, pack, bots, 2000)})
    alone = next((r["ms_per_bot_step"] for r in rows if r["bots"] == 1), None)
    for row in rows:
        row["against_one_at_a_time"] = row["ms_per_bot_step"] / alone if alone else None
        ratio = f" ({row['against_one_at_a_time']:.2f}x one bot a step)" if alone else ""
        print(f"{row['bots']:>3} bots packed: {row['ms_per_bot_step']:.2f} ms a bot-step{ratio}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "packed_adapters.json").write_text(
        json.dumps({"layers": args.layers, "block": BLOCK, "rows": rows}, indent=2)
    )


if __name__ == "__main__":
    main()
