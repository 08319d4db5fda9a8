"""Recipe: a pack, K adapter bots of one base trained in shared steps (packed.py's layers).

What each bot keeps of its own, as if it trained alone (train.py):
- its tweets' blocks, split with its own seed, and its plan (``plan()``: batch, steps,
  learning rate); a step holds one batch of each bot still training;
- its loss (its mean over its own tokens), its clipping (``max_grad_norm``, by its own norm),
  its schedule (transformers' ``get_scheduler``, the Trainer's), its AdamW moments and step
  count, its epochs and data order (a permutation an epoch, from its seed);
- its validation: the base's loss and its own, on its held-out blocks;
- its checkpoints (its own folder and storage prefix, checkpoints.py) and the steps it resumes
  from: each bot's step is its own.

A bot that has made its steps leaves the pack (no further update touches it); one whose loss
stops being finite leaves with its own error (exit 10, a lower rate) and the others go on.
SIGTERM: after the step in progress every bot's checkpoint is written, then TransientError
(exit 75), as a lone bot does. Not here: torch.compile (a pack's routing changes every
step's shapes; its steps are few) and ZeRO (an adapter has no optimizer state to shard).

How many bots a pack holds (``pack_size``) is planned from free memory; the task groups its
bots (task.py) and the bot's outputs are made as a lone adapter bot's (run.py).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from job.atomic import write_json
from job.config import TrainConfig
from job.errors import BadConfig, JobError, Preempted, classify
from job.gpt2 import Shape
from job.records import Record, read_or_none
from job.storage import MARKER, LocalStorage
from job.training import memory
from job.training.adapter import rank_for
from job.training.blocks import make_blocks
from job.training.checkpoints import Cadence, Checkpoints, Preemption
from job.training.model import causal_only
from job.training.plan import GPU_TOKENS, Plan, block_size, plan
from job.training.strategy import activation_bytes, logit_bytes
from job.training.train import LOG_EVERY, TrainResult

log = logging.getLogger(__name__)

# At most this many bots a step. The host's time a bot-step falls to ~0.2x that of one bot
# a step at 10 bots and flattens there (bench/packed_adapters.py, docs/benchmarks.md): more
# bots only make each step longer, and a SIGTERM's checkpoint larger.
PACK_MAX = 16
# A bot's share of a pack's memory: its batch's activations (the strategy's terms,
# training/strategy.py: measured, within 2% of the H200's peaks; twice in fp32, on a CPU) and
# its adapter's weights, gradient and two moments, 16 bytes a number. The base and one bot's
# logits are counted once.
ADAPTER_STATE_BYTES = 16
WEIGHTS = "adapter_pack.safetensors"  # a bot's checkpoint: its adapter and its moments
STATE = "pack_state.json"


class PackState(Record):
    """``pack_state.json``, beside a bot's weights in its checkpoint."""

    step: int = Field(ge=0)
    pack_step: int = Field(0, ge=0)  # the pack's steps when it was written
    numbers: int = Field(ge=1)  # the adapter's size: another shape is not resumed
    loss_total: float
    history: list[tuple[int, dict[str, float]]] = Field(default_factory=list)


@dataclass
class Member:
    """One bot of a pack, as run.py prepared it."""

    bot: str
    config: TrainConfig
    texts: list[str]
    checkpoints: Checkpoints
    resume: Path | None = None


@dataclass
class Outcome:
    """What a pack made of one bot: its result, adapter (peft's names, on the host) and W&B
    history, or its error."""

    result: TrainResult | None = None
    weights: dict[str, Any] | None = None
    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    error: JobError | None = None


def pack_size(
    shape: Shape, vocab: int, tokens: int, bf16: bool, free_bytes: int, base_bytes: int
) -> tuple[int, str]:
    """How many bots' batches of ``tokens`` fit beside the base (``base_bytes``) in
    ``free_bytes``, at most PACK_MAX; and why, in words for the log."""
    rank = rank_for(shape.n_embd)
    adapter = rank * shape.n_embd * 16 * shape.n_layer  # every matrix of a block: 16 d r
    scale = 1 if bf16 else 2
    per_bot = activation_bytes(shape, tokens, vocab, logits=False) * scale
    per_bot += ADAPTER_STATE_BYTES * adapter
    # the logits are one bot's at a time (_forward_backward): counted once, beside the base
    room = free_bytes * memory.HEADROOM - base_bytes - logit_bytes(tokens, vocab) * scale
    fits = max(1, int(room // per_bot))
    size = min(fits, PACK_MAX)
    why = (
        f"a bot's batch of {tokens:,} tokens needs ~{per_bot / 2**20:,.0f} MiB; with the base"
        f" ({base_bytes / 2**30:.1f} GiB), {fits:,} fit in {free_bytes / 2**30:.1f} GiB free"
        + (f", and a pack holds at most {PACK_MAX}" if fits > PACK_MAX else "")
    )
    return size, why


def tokens_a_bot(config: TrainConfig, model_config: dict[str, Any], gpu: bool) -> int:
    """The most tokens a bot's batch may hold: what ``plan`` can give it (its configured batch,
    else 8 blocks on a CPU and up to GPU_TOKENS on a GPU)."""
    size = block_size(config, model_config)
    if config.batch_size:
        return config.batch_size * size
    return max(GPU_TOKENS, 8 * size) if gpu else 8 * size


@dataclass
class _Bot:
    """A member's state in the loop."""

    member: Member
    decided: Plan
    blocks: Any
    schedule: Any
    step: int = 0
    resumed: int = 0
    loss_total: float = 0.0
    logged_loss: float = 0.0
    logged_steps: int = 0
    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    done: bool = False
    error: JobError | None = None
    orders: dict[int, Any] = field(default_factory=dict)
    saved: dict[str, Any] | None = None  # a resumed bot's moments, for the optimizer
    pack_step: int = 0  # the pack's step its checkpoint was written at

    @property
    def total(self) -> int:
        return self.decided.total_steps

    @property
    def log_every(self) -> int:  # as the Trainer's logging_steps (train.py)
        return max(LOG_EVERY, self.total // 20)

    def rows(self, step: int) -> Any:
        """The indices of this bot's training blocks for ``step``: a permutation an epoch."""
        import torch

        epoch, i = divmod(step, self.decided.steps_per_epoch)
        if epoch not in self.orders:
            self.orders = {  # one epoch's order at a time
                epoch: torch.randperm(
                    len(self.blocks.train),
                    generator=torch.Generator().manual_seed(self.member.config.seed + epoch),
                )
            }
        batch = self.decided.batch
        return self.orders[epoch][i * batch : (i + 1) * batch]

    def lr(self) -> float:
        return float(self.schedule.get_last_lr()[0])

    def advance(self) -> None:
        """One step made: the count, and the schedule (its stand-in optimizer stepped first,
        as torch expects: it holds no gradient, so nothing changes)."""
        self.step += 1
        self.schedule.optimizer.step()
        self.schedule.step()


def train_pack(model: Any, tokenizer: Any, members: list[Member], device: str) -> list[Outcome]:
    """Train ``members``' adapters together on ``model`` (the live base, left as it was);
    one outcome a member, in order."""
    import torch

    from job.training import packed

    started = time.perf_counter()
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    model_config = model.config.to_dict()
    outcomes = [Outcome() for _ in members]
    bots: dict[int, _Bot] = {}
    budget = memory.gpu_budget(model) if cuda else 0  # the card less what others keep on it
    for k, member in enumerate(members):
        try:
            bots[k] = _prepare(member, tokenizer, model_config, budget)
        except Exception as e:  # too few tweets, a plan that cannot be: this bot alone
            outcomes[k].error = classify(e)
    if not bots:
        return outcomes
    first = next(iter(bots.values()))
    config, bf16 = first.member.config, first.decided.bf16
    rank = config.lora_rank or rank_for(int(model_config["n_embd"]))
    pack = packed.Pack(model, len(members), config, rank)
    use_cache = model.config.use_cache
    model.config.use_cache = False  # no key/value cache is kept in training
    try:
        for k, bot in bots.items():
            pack.init(k, bot.member.config.seed)
        with causal_only(model):
            base_losses = {k: _val_loss(model, pack, bot, k) for k, bot in bots.items()}
            for k, bot in bots.items():
                _resume(pack, bot, k)
            log.info(
                "pack of %d adapter bots, %s numbers each: %s",
                len(bots),
                f"{pack.parameters:,}",
                ", ".join(f"{b.member.bot} {b.total - b.step} steps" for b in bots.values()),
            )
            optimizer = packed.AdamW(pack, (0.9, 0.999), 1e-8, config.weight_decay)
            pack_step = _random_state(bots, config.seed)
            for k, bot in bots.items():
                if bot.saved is not None:
                    optimizer.load(k, bot.saved)
                    bot.saved = None
            tokens = _steps(model, pack, optimizer, bots, device, bf16, pack_step)
            seconds = time.perf_counter() - started
            for k, bot in bots.items():
                if bot.error is not None:
                    outcomes[k].error = bot.error
                    continue
                val = _val_loss(model, pack, bot, k)
                outcomes[k] = Outcome(
                    result=_result(bot, base_losses[k], val, seconds, tokens[k], len(bots), device),
                    weights=pack.weights(k),
                    history=bot.history,
                )
    finally:
        pack.remove()
        model.config.use_cache = use_cache
    every = sum(tokens.values())
    log.info("pack: %s tokens in %.1f s, %.0f tokens/s", f"{every:,}", seconds, every / seconds)
    return outcomes


def _prepare(member: Member, tokenizer: Any, model_config: dict[str, Any], gpu: int) -> _Bot:
    import torch
    from transformers import get_scheduler

    config = member.config
    blocks = make_blocks(
        member.texts, tokenizer, block_size(config, model_config), config.val_fraction, config.seed
    )
    decided = plan(
        config,
        model_config,
        train_blocks=len(blocks.train),
        world=1,
        gpu_bytes=gpu,
        host_bytes=memory.host_memory_bytes(),
        bf16_supported=gpu > 0 and torch.cuda.is_bf16_supported(),
        resumed_batch=Checkpoints.batch_of(member.resume) if member.resume else None,
    )
    # The Trainer's own schedule, on a stand-in optimizer of one number: its rate each step is
    # the bot's (warm-up a ratio of its steps, rounded up, as TrainingArguments takes one)
    holder = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=decided.learning_rate)
    schedule = get_scheduler(
        config.lr_scheduler,
        holder,
        num_warmup_steps=math.ceil(decided.total_steps * config.warmup_ratio),
        num_training_steps=decided.total_steps,
    )
    log.info(
        "%s: batch %d x %d tokens, %d steps, learning rate %.3g",
        member.bot, decided.batch, decided.block_size, decided.total_steps, decided.learning_rate,
    )  # fmt: skip
    return _Bot(member, decided, blocks, schedule)


def _resume(pack: Any, bot: _Bot, k: int) -> None:
    """The bot's adapter and count from its checkpoint, where it has a sound one of this
    shape (else it starts afresh, with one line)."""
    import torch
    from safetensors.torch import load_file

    path = bot.member.resume
    if path is None:
        return
    state = read_or_none(LocalStorage(path), STATE, PackState)
    try:
        saved = load_file(path / WEIGHTS) if state is not None else None
    except Exception:  # a file cut short or of another format
        saved = None
    if state is None or saved is None or state.numbers != pack.parameters:
        log.warning("%s: %s is no pack checkpoint of this shape: started afresh",
                    bot.member.bot, path.name)  # fmt: skip
        bot.member.resume = None
        return
    with torch.no_grad():
        pack.data[k].copy_(saved["weights"])
    bot.saved = saved
    bot.step = bot.resumed = state.step
    bot.pack_step = state.pack_step
    bot.loss_total, bot.history = state.loss_total, list(state.history)
    for _ in range(bot.step):
        bot.schedule.optimizer.step()
        bot.schedule.step()
    log.info("%s: resuming from step %d", bot.member.bot, bot.step)


def _random_state(bots: dict[int, _Bot], seed: int) -> int:
    """The base's dropout draws from torch's generator, one for the pack: seeded afresh, or,
    where every bot resumes from a checkpoint of the same pack step (the same pack, retried),
    the generator as it was then, so that the rerun makes what the run would have; returns
    the pack's step to count on from."""
    import torch

    going = [b for b in bots.values() if b.step < b.total]  # a finished bot draws nothing
    saved = [b.saved for b in going if b.saved is not None and "rng" in b.saved]
    steps = {b.pack_step for b in going}
    if going and len(saved) == len(going) and len(steps) == 1:
        torch.set_rng_state(saved[0]["rng"])
        if torch.cuda.is_available() and "cuda_rng" in saved[0]:
            torch.cuda.set_rng_state(saved[0]["cuda_rng"])
        return steps.pop()
    torch.manual_seed(seed)
    return 0


def _steps(
    model: Any,
    pack: Any,
    optimizer: Any,
    bots: dict[int, _Bot],
    device: str,
    bf16: bool,
    pack_step: int,
) -> dict[int, int]:
    """The pack's steps until every bot has made its own; the tokens each trained."""
    import torch

    from job.training.packed import rows_of

    k_all = pack.bots
    tokens = dict.fromkeys(bots, 0)
    clip = torch.tensor(
        [
            bots[k].member.config.max_grad_norm or math.inf if k in bots else math.inf
            for k in range(k_all)
        ],
        device=device,
    )
    since_log = torch.zeros(k_all, device=device, dtype=torch.float64)
    every = torch.zeros(k_all, device=device, dtype=torch.float64)
    configs = [b.member.config for b in bots.values()]
    due = Cadence(
        min(c.checkpoint_every for c in configs), min(c.checkpoint_minutes for c in configs) * 60
    )
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=bf16)
    model.train()
    with Preemption() as preemption:
        while active := [k for k, b in bots.items() if not b.done and b.error is None
                         and b.step < b.total]:  # fmt: skip
            rows, routes, sizes = [], [], []
            for k in active:
                chosen = bots[k].blocks.train[bots[k].rows(bots[k].step)]
                rows.append(chosen)
                routes += [k] * len(chosen)
                sizes.append(len(chosen))
                tokens[k] += chosen.numel()
            inputs = torch.cat(rows).to(device, non_blocking=True)
            pack.route(rows_of(routes, device))
            losses = _forward_backward(model, inputs, active, sizes, autocast, k_all)
            norms = pack.clip(clip)
            on = torch.zeros(k_all, dtype=torch.bool)
            on[active] = True
            lrs = torch.tensor([bots[k].lr() if k in active else 0.0 for k in range(k_all)])
            optimizer.step(lrs.to(device), on.to(device))
            pack.grad.zero_()
            loss = losses.detach().double() * on.to(device)
            since_log += loss
            every += loss
            pack_step += 1
            for k in active:
                bot = bots[k]
                bot.advance()
                if bot.step % bot.log_every == 0 or bot.step == bot.total:
                    _log(bot, k, since_log, every, norms)
                if bot.step >= bot.total:
                    bot.done = True
            if preemption.requested or due(pack_step):
                _checkpoint(pack, optimizer, bots, every, pack_step)
                if preemption.requested:
                    raise Preempted(
                        f"stopped by SIGTERM at step {pack_step} of the pack; each bot's"
                        " checkpoint is saved and a rerun resumes from it"
                    )
    for k, bot in bots.items():
        if bot.error is None:
            bot.loss_total = float(every[k]) + bot.loss_total
    return tokens


def _forward_backward(
    model: Any, inputs: Any, active: list[int], sizes: list[int], autocast: Any, bots: int
) -> Any:
    """The step's forward and backward; each bot's mean loss over its own tokens, (K,).

    The blocks run once for every bot's rows; the output layer and the loss run a bot at a
    time, each bot's backward into the blocks' output as it goes, then the blocks' backward
    once. So the logits (0.5 MB a token at GPT-2's vocabulary: 5 GB for 10 bots of 1,024
    tokens) are one bot's at a time, as a lone bot's are, not the whole pack's: on the CPU a
    pack's step of whole-pack logits ran at 930 tokens/s against a lone bot's 1,200 (width
    256, 10 bots; docs/benchmarks.md). The output layer is the frozen base's: nothing of it
    needs a gradient but its input's."""
    import torch
    import torch.nn.functional as F

    with autocast:
        hidden = model.transformer(input_ids=inputs, use_cache=False).last_hidden_state
    through = hidden.detach().requires_grad_()
    losses = torch.zeros(bots, device=inputs.device)
    # Each token's label is the next one; a row's last has none (-100: ignored). Shifting the
    # labels, not the logits, as transformers' loss does: slicing the logits copied them
    # (0.2 GB a bot a step at GPT-2's vocabulary, 7% of a CPU pack's time).
    labels = torch.nn.functional.pad(inputs[:, 1:], (0, 1), value=-100)
    start = 0
    for k, size in zip(active, sizes, strict=True):
        mine = slice(start, start + size)
        with autocast:
            logits = model.lm_head(through[mine])
        loss = F.cross_entropy(
            logits.view(-1, logits.shape[-1]).float(), labels[mine].reshape(-1), ignore_index=-100
        )
        loss.backward()
        losses[k] = loss.detach()
        start += size
    hidden.backward(through.grad)
    return losses


def _log(bot: _Bot, k: int, since_log: Any, every: Any, norms: Any) -> None:
    """The bot's logged figures since its last log (one read back to the host); a loss that
    is not finite ends the bot's training with its own error."""
    steps = bot.step - bot.resumed - bot.logged_steps
    loss = float(since_log[k]) / max(steps, 1)
    since_log[k] = 0
    bot.logged_steps += steps
    if not math.isfinite(loss):
        bot.error = BadConfig(
            f"{bot.member.bot}: training diverged (loss {loss} at step {bot.step}); a lower"
            " --learning-rate, or its checkpoints cleared, trains it again"
        )
        log.error("%s", bot.error)
        return
    bot.history.append(
        (
            bot.step,
            {
                "loss": loss,
                "grad_norm": float(norms[k]),
                "learning_rate": bot.lr(),
                "epoch": bot.step / bot.decided.steps_per_epoch,
            },
        )
    )


def _checkpoint(
    pack: Any, optimizer: Any, bots: dict[int, _Bot], every: Any, pack_step: int
) -> None:
    """Every bot's checkpoint at its own step (a finished bot's at its last): its adapter, its
    moments and count, what it has logged; then its marker (checkpoints.py, uploaded where the
    bot's storage is)."""
    import torch
    from safetensors.torch import save_file

    rng = {"rng": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda_rng"] = torch.cuda.get_rng_state()
    for k, bot in bots.items():
        if bot.error is not None or bot.step == bot.resumed:
            continue
        checkpoints = bot.member.checkpoints
        path = checkpoints.folder / f"checkpoint-{bot.step}"
        if (path / MARKER).is_file():
            continue  # a finished bot's, already written
        path.mkdir(parents=True, exist_ok=True)
        state = optimizer.state(k)
        save_file(
            {
                "weights": pack.data[k].to("cpu", copy=True),
                "exp_avg": state["exp_avg"],
                "exp_avg_sq": state["exp_avg_sq"],
                "steps": state["steps"],
                **rng,
            },
            path / WEIGHTS,
        )
        write_json(
            path / STATE,
            PackState(
                step=bot.step,
                pack_step=pack_step,
                numbers=pack.parameters,
                loss_total=bot.loss_total + float(every[k]),
                history=bot.history,
            ).model_dump(),
        )
        checkpoints.saved(bot.step, bot.decided.batch)
        checkpoints.prune_local()


def _val_loss(model: Any, pack: Any, bot: _Bot, k: int) -> float:
    """The mean token loss of bot ``k``'s held-out blocks through its own adapter, weighted
    as train.mean_loss weighs them."""
    import torch

    val = bot.blocks.val
    if len(val) == 0:
        return float("nan")
    was = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=pack.data.device)
    on_device = val.to(pack.data.device)
    batch = bot.decided.batch
    with torch.inference_mode():
        for i in range(0, len(val), batch):
            rows = on_device[i : i + batch]
            pack.route(torch.full((len(rows),), k, device=pack.data.device))
            total += model(input_ids=rows, labels=rows, use_cache=False).loss.double() * len(rows)
    model.train(was)
    return float(total) / len(val)


def _result(
    bot: _Bot, base: float, val: float, seconds: float, tokens: int, pack: int, device: str
) -> TrainResult:
    import torch

    cuda = device.startswith("cuda")
    steps = bot.total - bot.resumed
    return TrainResult(
        base_val_loss=base,
        val_loss=val,
        train_loss=bot.loss_total / max(bot.total, 1),
        steps=bot.total,
        train_tokens=bot.blocks.train_tokens,
        seconds=seconds,
        tokens_per_second=tokens / seconds if seconds > 0 else 0.0,
        device="cuda" if cuda else "cpu",
        resumed_from_step=bot.resumed,
        trained_tokens=tokens,
        packed_with=pack - 1,
        # the pack's, on its one GPU: what the pack plan (pack_size) is held to
        peak_memory_bytes=int(torch.cuda.max_memory_allocated()) if cuda else 0,
        gpu_name=torch.cuda.get_device_name(0) if cuda else "",
        **{
            **bot.decided.summary(),
            "strategy": "packed",
            "strategy_reason": f"trained in one step with {pack - 1} other adapter bot(s) of"
            f" the same base ({steps} steps of its own this session)",
            "compiled": False,
        },
    )
