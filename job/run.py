"""Recipe: the whole job on one machine, from tweets to a published-quality model folder.

Features, and the options that control them (every option: docs/options.md):
- Data: every feature of the prepare recipe (sources, cleaning, balancing; see prepare.py).
- Base model by name or path (``--base-model``); ``tiny`` builds a tiny GPT-2 locally, with
  GPT-2's tokenizer when ``--tokenizer`` gives its files.
- Fine-tuning (``--epochs``, ``--learning-rate``, ``--batch-size``, ``--block-size``,
  ``--seed``...; see training/train.py), with validation perplexity before and after.
- Predictions sampled in one batch (``--start-text``, ``--predictions-per-prompt``,
  ``--top-p``) and checked for memorized tweets (``--memorization-ngram``).
- ``predictions.png``, the model card, W&B runs and artifacts (``--wandb-mode``).
- Outputs in ``OUT/<bot>/``: ``model/`` (loads with ``pipeline``), ``predictions.json`` and
  ``job.json`` (config, versions, timings per phase, result), written last.

The phases, in order: ``setup``, ``prepare_data``, ``locate_base``, ``train``, ``predict``,
then the ``Rest``, which needs no GPU: ``browser_space``, ``write_card``, ``log_results``,
``finish``. Each reads the run's ``State`` and returns what it makes (``Data``, the base and
texts, ``Trained``, ``Sampled``) to the next. ``make`` stops before the rest and hands it
back: a task of several bots runs it behind the next bot's training (task.py). After each
write that publishes, and on failure, a ``guard`` checks the opt-out list (cloud/consent.py).
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from job.atomic import replace_dir, write_json
from job.cloud.status import inputs_of
from job.console import quiet_libraries, versions
from job.data.clean import Prepared
from job.data.handles import Handle
from job.data.tweets import TweetSource
from job.deadline import seconds_for
from job.errors import OptedOut
from job.inventory import SPACE, STATUS
from job.outputs import browser, card, model_folder
from job.outputs.card import languages
from job.outputs.predict import (
    Prediction,
    compile_seconds,
    decode_compiled,
    flag_memorized,
    sample,
)
from job.outputs.tracking import Tracker, default_mode
from job.prepare import prepare
from job.spec import BotJob
from job.storage import Storage
from job.training import adapter, distributed
from job.training.checkpoints import Checkpoints, discard_incomplete
from job.training.model import check_base, load, load_base, resolve_base
from job.training.packs import Member, train_pack
from job.training.train import TrainResult, compile_caches, finetune
from job.workspace import bot_writer, check_out, scratch_of

log = logging.getLogger(__name__)
# console.Bars: a bar per phase name, or None where there is no terminal to draw it on
Progress = Callable[[str], Callable[[int, int], None] | None]


@dataclass
class RunResult:
    bot: str
    model_dir: Path
    train: TrainResult
    predictions: list[Prediction]
    flagged: int
    timings: dict[str, float]

    def line(self) -> str:
        """What ``huggingtweets run`` prints on stdout when it is done."""
        t = self.train
        return (
            f"done {self.bot}: validation perplexity {t.base_perplexity:.1f} ->"
            f" {t.perplexity:.1f}, {self.flagged}/{len(self.predictions)} predictions memorized,"
            f" {t.tokens_per_second:,.0f} tokens/s ({t.strategy}), {self.timings['total']:.0f} s"
            f" -> {self.model_dir}"
        )


class Phases:
    """Times each phase of the job and logs it (the job measures itself)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.start = time.perf_counter()
        self.who = ""  # "<bot>: " while the bot's rest runs behind another's training

    @contextmanager
    def __call__(self, name: str, part: str | None = None) -> Iterator[None]:
        """Time ``name``; a phase may run in parts (load: build the tiny base, then load it on
        every rank), each logged with its ``part`` label, the last with the phase's total."""
        start = time.perf_counter()
        yield
        took = time.perf_counter() - start
        self.seconds[name] = round(self.seconds.get(name, 0) + took, 3)
        if part:
            log.info("%s%s (%s): %.1f s", self.who, name, part, took)
        else:
            log.info("%s%s: %.1f s", self.who, name, self.seconds[name])


@dataclass
class State:
    """What every phase shares, set up once. What a phase makes, it returns."""

    job: BotJob
    bot_dir: Path  # OUT/<bot>: the result, replaced as one unit when the run is done
    scratch: Path  # OUT/.<bot>: the lock, work, checkpoints, W&B files, the staged result
    main: bool  # rank 0: prepares, samples, writes; the other ranks only train
    wandb_mode: str
    tracker: Tracker
    phases: Phases = field(default_factory=Phases)
    device: str = "cpu"
    progress: Progress | None = None
    attached: Any = None  # an adapter bot's model: its adapter comes out however the run ends
    space: browser.Export | None = None  # the browser's graph, when sampling.space made one

    @property
    def work(self) -> Path:
        return self.scratch / "work"  # the same path on every rank: ZeRO-3 saves from all

    @property
    def staging(self) -> Path:
        """The new result, written here whole, then put in place of OUT/<bot> at once."""
        return self.scratch / "result"

    @property
    def staged(self) -> Path:
        return self.staging / "model"

    @property
    def merged(self) -> Path:
        """An adapter bot's merged copy (train.lora_merged), beside the model."""
        return self.staging / "merged"


@dataclass
class Data:
    """prepare_data's: the tweets, and W&B's dataset artifact (None offline or disabled)."""

    prepared: Prepared
    artifact: Any = None


@dataclass
class Trained:
    """train's: the fine-tuned model in memory, its tokenizer and the result; a full model's
    weights on the host, where they are still to be written (``Rest``)."""

    result: TrainResult
    model: Any
    tokenizer: Any
    weights: model_folder.Weights | None = None


@dataclass
class Sampled:
    """predict's: the job with the sampling it used, its predictions, how many memorized."""

    job: BotJob
    predictions: list[Prediction]
    flagged: int


def run(
    job: BotJob,
    sources: dict[Handle, TweetSource],
    out: Path,
    progress: Progress | None = None,
    checkpoint_storage: tuple[Storage, str] | None = None,
    guard: Callable[[str], None] | None = None,
) -> RunResult | None:
    """Prepare, fine-tune, sample, write the card; see the module docstring.

    Under a multi-process launcher every rank calls this; rank 0 gets the result, the others
    None once they have trained and saved. ``guard(after)`` raises OptedOut once one of the
    bot's people has opted out (cloud/consent.py): it is called after each checkpoint written
    to storage, before the result is put in place, and on any failure (a local takedown
    removes the files the run is writing).
    """
    rest = make(Request(job, sources, out, checkpoint_storage, guard), progress)
    return None if rest is None else rest()


def make(request: Request, progress: Progress | None = None) -> Rest | None:
    """``run`` up to its ``Rest``: the bot trained, saved and sampled, its adapter out of a
    shared base; the rest holds the bot's lock until it is done. None on other ranks."""
    # Before torch is imported (plan() decides later whether to compile): Inductor fixes its
    # cache folder in the environment the first time it looks, and its workers read it there.
    compile_caches()
    state = setup(request.job, request.out)
    state.progress = progress
    with ExitStack() as held:
        if state.main:
            held.enter_context(bot_writer(request.out, request.job.bot))
        held.enter_context(_failing(state, request.guard))
        rest = _run(state, request.sources, request.checkpoint_storage, request.guard)
        if rest is not None:
            rest.held = held.pop_all()
        return rest


@dataclass
class Request:
    """One bot to make, as the task asks for it: its job and sources, where its result goes
    (``out``), where its checkpoints are mirrored, and the opt-out ``guard``."""

    job: BotJob
    sources: dict[Handle, TweetSource]
    out: Path
    checkpoint_storage: tuple[Storage, str] | None = None
    guard: Callable[[str], None] | None = None


@dataclass
class Ready:
    """A bot ready to train: its state, tweets, base and checkpoints (``_ready``)."""

    state: State
    data: Data | None  # None on ranks other than 0
    base: str
    texts: list[str]
    checkpoints: Checkpoints
    resume: Path | None


@dataclass
class Rest:
    """A bot trained and sampled: what is left of it needs no GPU (a full model's weights
    written, its Space's export, its card, W&B's results and the run's sync, its result put in
    place). Called once: at once for a lone bot (``run``), or behind the next bot's training
    in a task of several (task.py, job/behind.py), where ``apart`` exports the Space in a
    process of its own."""

    state: State
    data: Data
    result: TrainResult
    sampled: Sampled
    wb: Any
    stage: ExitStack  # the W&B run: finished once the results are logged
    guard: Callable[[str], None] | None
    held: ExitStack = field(default_factory=ExitStack)  # the lock, the failure's tidying
    apart: bool = False
    weights: model_folder.Weights | None = None  # a full model's, still to be written
    checkpoints: Checkpoints | None = None  # cleared once the model is written

    def host_bytes(self) -> int:
        """The host memory its rest holds beside the training: the weights still to be
        written, and its Space's export, in a process of its own (where it makes one)."""
        held = self.weights.bytes if self.weights else 0
        unwritten = self.weights.params if self.weights else None
        folder, why_not = _space_folder(self.state, unwritten)
        if why_not:
            return held
        return held + browser.export_host_bytes(unwritten or browser.saved_params(folder))

    def __call__(self) -> RunResult:
        state = self.state
        if self.apart:
            state.phases.who = f"{state.job.bot}: "
        with self.held:
            with self.stage:
                if self.weights is not None:
                    with state.phases("save", "written"):
                        self.weights.write()
                if self.checkpoints is not None:
                    self.checkpoints.clear()  # the model is written: they were for resuming
                prepared = self.data.prepared
                browser_space(state, prepared, self.sampled, self.apart)
                write_card(state, prepared, self.result, self.sampled)
                log_results(state, self.wb, self.result, self.sampled, self.data.artifact)
            return _finished(state, self.result, self.sampled, self.guard)


@contextmanager
def _failing(state: State, guard: Callable[[str], None] | None) -> Iterator[None]:
    """A bot's failure, however it comes: its half-written files go (``_tidy``), the guard is
    asked (a takedown may be why), and an adapter's layers come out of the shared base."""
    try:
        yield
    except Exception as e:
        _failed(state, guard, e)
        raise
    finally:
        _release(state)


def _release(state: State) -> None:
    """An adapter's layers out of the shared base, as it was, for the next bot."""
    if state.attached is not None:
        adapter.release(state.attached)
        state.attached = None


def _failed(state: State, guard: Callable[[str], None] | None, error: Exception) -> None:
    if state.main:  # a full disk stays full otherwise; complete checkpoints stay
        _tidy(state)
        if guard is not None and not isinstance(error, OptedOut):
            # the failure may be a takedown's doing (it removed these files): say so
            guard("a failure")


def _tidy(state: State) -> None:
    """After a failure: drop the scratch space and the half of any result or checkpoint."""
    shutil.rmtree(state.work, ignore_errors=True)
    shutil.rmtree(state.staging, ignore_errors=True)
    discard_incomplete(state.scratch / "checkpoints")


def _ready(
    state: State,
    sources: dict[Handle, TweetSource],
    checkpoint_storage: tuple[Storage, str] | None,
    guard: Callable[[str], None] | None,
    packed: bool = False,
) -> Ready:
    """The tweets prepared, the base located, and the bot's checkpoints (a pack's are of
    another format: ``packed`` keeps the two apart by fingerprint)."""
    data = prepare_data(state, sources)
    base, texts = locate_base(state, data)
    remote, prefix = checkpoint_storage or (None, "")
    checkpoints = Checkpoints(
        state.scratch / "checkpoints",
        _fingerprint(state.job, texts, packed),
        state.job.config.train.keep_checkpoints,
        remote,
        prefix,
        guard=guard if state.main else None,
    )
    resume = checkpoints.latest()  # fetched from S3 if an earlier attempt left one there
    return Ready(state, data, base, texts, checkpoints, resume)


def _run(
    state: State,
    sources: dict[Handle, TweetSource],
    checkpoint_storage: tuple[Storage, str] | None,
    guard: Callable[[str], None] | None,
) -> Rest | None:
    job = state.job
    ready = _ready(state, sources, checkpoint_storage, guard)
    data, checkpoints = ready.data, ready.checkpoints
    previous_run = checkpoints.recall("wandb_train_run")
    with ExitStack() as stage:
        wb = stage.enter_context(
            state.tracker.stage("train", job.config.model_dump(), run_id=previous_run)
        )
        if data is not None and data.artifact is not None:
            state.tracker.use(wb, data.artifact)
        if state.main:  # the fingerprint always; the W&B run id when there is a run
            checkpoints.remember(
                **({"wandb_train_run": wb.id} if state.wandb_mode != "disabled" else {})
            )
        trained = train(state, ready.base, ready.texts, wb, checkpoints, ready.resume)
        if data is None:  # a rank other than 0: it only trains
            return None
        return _sampled(state, ready, trained, wb, stage, guard)


def _sampled(
    state: State,
    ready: Ready,
    trained: Trained,
    wb: Any,
    stage: ExitStack,
    guard: Callable[[str], None] | None,
) -> Rest:
    """Rank 0, once the model is saved: its predictions, then its adapter out of the shared
    base; the rest (its Space, card, W&B's results) is the ``Rest``'s, with the W&B run."""
    assert ready.data is not None
    sampled = predict(state, ready.data.prepared, trained)
    _release(state)
    return Rest(state, ready.data, trained.result, sampled, wb, stage.pop_all(), guard,
                weights=trained.weights, checkpoints=ready.checkpoints)  # fmt: skip


def _finished(
    state: State, result: TrainResult, sampled: Sampled, guard: Callable[[str], None] | None
) -> RunResult:
    if guard is not None:
        guard("training")
    made = finish(state, result, sampled)
    if guard is not None:
        guard("the result was written")
    return made


def run_pack(requests: list[Request]) -> list[Rest | Exception]:
    """Adapter bots of one base, trained together (training/packs.py), each then saved and
    sampled as a lone adapter bot is, up to its ``Rest``. One outcome a request, in order:
    its rest or its own error; a failure of the pack's training (SIGTERM's TransientError
    included) is every unfinished bot's. One process only (the task packs no other way)."""
    compile_caches()
    outcomes: list[Rest | Exception | None] = [None] * len(requests)
    with ExitStack() as stack:
        ready: dict[int, Ready] = {}
        held: dict[int, ExitStack] = {}  # each bot's lock: its rest's once it has one
        for i, request in enumerate(requests):
            try:
                state = setup(request.job, request.out)
                held[i] = stack.enter_context(ExitStack())
                held[i].enter_context(bot_writer(request.out, request.job.bot))
                with _failing(state, request.guard):
                    one = _ready(
                        state, request.sources, request.checkpoint_storage, request.guard, True
                    )
                    one.checkpoints.remember()  # their fingerprint: a retry fetches them by it
                    ready[i] = one
            except Exception as e:  # this bot's: its tweets, its lock
                outcomes[i] = e
        if ready:
            try:
                model, tokenizer, made = _train_pack(ready)
            except Exception as e:
                for i, one in ready.items():
                    _failed(one.state, requests[i].guard, e)
                    outcomes[i] = e
                made = {}
            for i, outcome in made.items():
                try:
                    with held[i]:
                        held[i].enter_context(_failing(ready[i].state, requests[i].guard))
                        rest = _packed_bot(ready[i], outcome, model, tokenizer, requests[i])
                        rest.held = held[i].pop_all()
                        outcomes[i] = rest
                except Exception as e:
                    outcomes[i] = e
    assert all(o is not None for o in outcomes)  # each bot: its setup's error, or its end
    return outcomes  # type: ignore[return-value]


def _train_pack(ready: dict[int, Ready]) -> tuple[Any, Any, dict[int, Any]]:
    """The shared base loaded (kept on the device for the task), the pack trained; each
    bot's phases get the pack's load and training seconds."""
    first = next(iter(ready.values()))
    assert all(r.base == first.base for r in ready.values()), "a pack is of one base"
    start = time.perf_counter()
    model, tokenizer = load_base(first.base, device=first.state.device, live=True)
    if first.state.device == "cuda" and _gpu_bf16():
        model.bfloat16()  # the frozen base: half the memory, never updated
    loaded = time.perf_counter()
    members = [
        Member(r.state.job.bot, r.state.job.config.train, r.texts, r.checkpoints, r.resume)
        for r in ready.values()
    ]
    outcomes = train_pack(model, tokenizer, members, first.state.device)
    trained = time.perf_counter()
    for r in ready.values():
        seconds = r.state.phases.seconds
        seconds["load"] = round(seconds.get("load", 0) + loaded - start, 3)
        seconds["train"] = round(trained - loaded, 3)
    return model, tokenizer, dict(zip(ready, outcomes, strict=True))


def _packed_bot(ready: Ready, outcome: Any, base: Any, tokenizer: Any, request: Request) -> Rest:
    """One bot of a pack, from its trained adapter on: the same folder, predictions, W&B run
    (its history logged as it was made) and rest as a lone adapter bot's."""
    import copy

    import torch

    if outcome.error is not None:
        raise outcome.error
    state, config = ready.state, ready.state.job.config
    assert ready.data is not None
    with ExitStack() as stage:
        wb = stage.enter_context(state.tracker.stage("train", config.model_dump()))
        if ready.data.artifact is not None:
            state.tracker.use(wb, ready.data.artifact)
        for step, logs in outcome.history:
            state.tracker.log(wb, logs, step=step)
        with state.phases("load", "the adapter attached"):
            model = state.attached = adapter.attach(base, config.train)
            with torch.no_grad():
                for name, tensor in outcome.weights.items():
                    module, _, kind = name.rpartition(".lora_")
                    layer = model.get_submodule(f"base_model.model.{module}")
                    getattr(layer, f"lora_{kind.split('.')[0]}")["default"].weight.copy_(tensor)
        with state.phases("save"):
            if config.train.saved_precision == "bf16":
                model_folder.save_bf16(model, state.staged)
            else:
                model.save_pretrained(str(state.staged))
            _saved(state, model, ready.base, converted=True)
        trained = Trained(outcome.result, model, copy.deepcopy(tokenizer))
        return _sampled(state, ready, trained, wb, stage, request.guard)


def setup(job: BotJob, out: Path) -> State:
    """Check the base model (before any tweets are fetched), quiet the libraries, join the
    other ranks, open W&B."""
    train = job.config.train
    check_out(out)
    check_base(job.base, Path(train.tokenizer) if train.tokenizer else None)
    import torch  # after the cheap checks: a typo costs no seconds of imports

    phases = Phases()
    quiet_libraries()
    ranks = distributed.init()
    bot_dir, scratch = out / job.bot, scratch_of(out, job.bot)
    mode = job.config.wandb.mode or default_mode()
    tracker = Tracker(
        mode if ranks.main else "disabled", job.config.wandb.project, job.bot, scratch
    )
    return State(
        job=job,
        bot_dir=bot_dir,
        scratch=scratch,
        main=ranks.main,
        wandb_mode=mode,
        tracker=tracker,
        phases=phases,
        device="cuda" if torch.cuda.is_available() else "cpu",
    )


def prepare_data(state: State, sources: dict[Handle, TweetSource]) -> Data | None:
    """Rank 0: the tweets, cleaned, and W&B's raw and dataset artifacts; None on other ranks."""
    if not state.main:
        return None
    shutil.rmtree(state.staging, ignore_errors=True)  # a killed run's half
    config = state.job.config
    with state.phases("prepare"):
        data = prepare(sources, state.bot_dir.parent, config, data_dir=state.staging / "data")
    tracker = state.tracker
    with tracker.stage("prepare", config.model_dump(include={"clean", "prepare"})) as wb:
        counts = {"bot": data.bot, "users": data.stats["users"], "total": data.stats["total"]}
        raw = tracker.log_artifact(
            wb, f"raw-{data.bot}", "raw_data", [data.data_dir / "raw.jsonl"], counts
        )
        dataset = tracker.log_artifact(
            wb,
            f"dataset-{data.bot}",
            "dataset",
            [data.data_dir / "clean.jsonl", data.data_dir / "stats.json"],
            counts,
            parent=raw,
        )
    return Data(data, dataset)


def locate_base(state: State, data: Data | None) -> tuple[str, list[str]]:
    """What from_pretrained loads (rank 0 resolves the name, and builds the tiny base), and
    the tweets' texts: rank 0's, shared with every rank (also the barrier after its prepare)."""
    name = texts = None
    if data is not None:
        shutil.rmtree(state.work, ignore_errors=True)
        state.work.mkdir(parents=True)
        texts = [t.text for t in data.prepared.tweets]
        train = state.job.config.train
        with state.phases("load", "the base resolved"):  # the tiny base is built once, by rank 0
            tokenizer = Path(train.tokenizer) if train.tokenizer else None
            name = resolve_base(state.job.base, state.work, texts, tokenizer, train.seed)
    name, texts = distributed.share((name, texts))
    assert name is not None and texts is not None  # rank 0 sent both
    return name, texts


def train(
    state: State,
    base: str,
    texts: list[str],
    wb: Any,
    checkpoints: Checkpoints,
    resume: Path | None,
) -> Trained:
    """Load the base on every rank, fine-tune, save the consolidated model to ``staged``."""
    config = state.job.config.train
    with state.phases("load"):
        model, tokenizer = load_base(base, device=state.device, live=config.lora)
        if config.lora:
            if state.device == "cuda" and _gpu_bf16():
                model.bfloat16()  # the frozen base: half the memory, never updated
            model = state.attached = adapter.attach(model, config)
        # Everything made so far (torch's and transformers' modules, the model) lives to the
        # end: keep it out of the collector's walks. accelerate calls gc.collect() when
        # training ends, and that walk costs ~0.2 s otherwise.
        gc.freeze()
    with state.phases("train"):
        result, trainer = finetune(
            model,
            tokenizer,
            texts,
            state.job.config.train,
            state.work,
            on_log=lambda logs, step: state.tracker.log(wb, logs, step=step),
            on_step=state.progress("training") if state.progress and state.main else None,
            checkpoints=checkpoints,
            resume=resume,
        )
    weights = None
    with state.phases("save"):
        once = config.saved_precision == "bf16" and not result.strategy.startswith("zero3")
        if result.strategy == "ddp" and not config.lora:  # whole in memory: to the host now,
            if state.main:  # written by the bot's rest (``Rest``), behind the next bot
                weights = model_folder.snapshot(model, state.staged, once)
            once = True
        elif once:  # the weights are whole in memory: written once, in bf16
            if state.main:
                model_folder.save_bf16(model, state.staged)
        else:
            trainer.save_model(str(state.staged))  # consolidated (ZeRO-3 gathers)
        distributed.barrier()
        # The Trainer's arguments, pickled: nothing a user of the model needs, and the Hub
        # flags every pickle it is given.
        (state.staged / "training_args.bin").unlink(missing_ok=True)
        if state.main:
            _saved(state, model, base, converted=once)
    return Trained(result, model, tokenizer, weights)


def _saved(state: State, model: Any, base: str, converted: bool = False) -> None:
    """Rank 0, once the weights are saved (``converted``: in their precision already): their
    precision, an adapter's tiny base kept beside it, and its merged copy."""
    config = state.job.config.train
    precision = config.saved_precision
    if precision == "bf16" and not converted:  # ZeRO-3's, gathered into an fp32 file
        model_folder.to_bf16(state.staged)
    if config.lora and state.job.base.kind == "tiny":
        model_folder.keep_base_beside(base, state.staging, state.staged, state.bot_dir)
    if config.lora_merged:  # a full model: auto is fp32, as for any other
        merged = "fp32" if config.save_precision == "auto" else config.save_precision
        adapter.save_merged(model, state.merged, merged, precision)


def _gpu_bf16() -> bool:
    import torch

    return bool(torch.cuda.is_bf16_supported())


def predict(state: State, data: Prepared, trained: Trained) -> Sampled:
    """Rank 0: the model folder's sampling settings, then predictions and memorization."""
    # The default prompts follow the tweets' main language; the card, its widget and job.json
    # then show the prompts that were used.
    sampling = state.job.config.sampling.in_language(languages(data.stats))
    # Never longer than the model's context (tiny: 128 positions; the default asks 160): the
    # generation config, the card's "How to use" and the Hub widget would fail past it.
    context = int(getattr(trained.model.config, "n_positions", 0) or sampling.max_length)
    if sampling.max_length > context:
        sampling = sampling.model_copy(update={"max_length": context})
    config = state.job.config.model_copy(update={"sampling": sampling})
    job = state.job.model_copy(update={"config": config})
    for folder in (state.staged, state.merged):
        if folder.is_dir():
            model_folder.finish(folder, trained.tokenizer, sampling, trained.model)
    model, tokenizer = trained.model, trained.tokenizer
    compiled = sampling.compile  # set by the task for its bots (task.py); alone, decided here
    if compiled is None:
        compiled, why = decode_compiled([sampling], state.device == "cuda")
        log.info("decode step compiled: %s (%s)", "yes" if compiled else "no", why)
    before = compile_seconds()
    with state.phases("predict"):
        if trained.result.strategy.startswith("zero3"):  # partitioned in memory: the saved one
            from transformers.integrations.deepspeed import unset_hf_deepspeed_config

            unset_hf_deepspeed_config()  # else from_pretrained would partition it again
            model, tokenizer = load(str(state.staged), device=state.device)
        predictions = sample(
            model,
            tokenizer,
            sampling,
            seed=job.config.train.seed,
            on_token=state.progress("sampling") if state.progress else None,
            compile=compiled,
        )
        flagged = flag_memorized(predictions, [asdict(t) for t in data.tweets], sampling.ngram)
    if compiled:  # the capture's seconds, apart: the task's first bot pays them, its later not
        took = state.phases.seconds["decode_compile"] = round(compile_seconds() - before, 3)
        log.info("decode step compiled: %.1f s of the predict phase", took)
    return Sampled(job, predictions, flagged)


def browser_space(state: State, data: Prepared, sampled: Sampled, apart: bool = False) -> None:
    """Rank 0: the bot for a visitor's browser (outputs/browser.py), where sampling.space asks
    for it: the ONNX graph in the model folder (an adapter bot's: its merged copy's) and the
    Space's page in ``space/``, which loads the model from ``../model`` until a push points it
    at the Hub. Exported from the saved folder, on the host: the whole model on every
    strategy (ZeRO-3's in memory is partitioned), and nothing more on the GPU; ``apart``, in
    a process of its own (browser.export_apart)."""
    config = state.job.config
    folder, why_not = _space_folder(state)
    if why_not:
        if config.sampling.space == "on" or "browser" in why_not:
            log.warning("no Space: %s; hear the bot with huggingtweets generate", why_not)
        return
    with state.phases("space"):
        texts = [t.text for t in data.tweets]
        if apart:
            made = browser.export_apart(folder, texts, seconds_for("space"))
        else:
            made = browser.export_saved(folder, texts)
        who = " & ".join(Handle(u.handle).shown for u in state.job.users)
        browser.write_space(
            state.staging / SPACE,
            bot=state.job.bot,
            repo=None,
            card_url=f"../{folder.name}/README.md",
            who=who,
            made=made,
            sampling=sampled.job.config.sampling.model_dump(),
            model=folder.name,
            handles=[Handle(u.handle) for u in state.job.users],
        )
        state.space = made
        log.info("%sSpace: %s, %.1f MB for a visitor (%s)", state.phases.who, made.file,
                 made.bytes / 1e6, made.dtype)  # fmt: skip


def _space_folder(state: State, params: int | None = None) -> tuple[Path, str | None]:
    """The saved folder a bot's Space is exported from (an adapter bot's: its merged copy),
    and why it gets none (None: it gets one); ``params``: its weights', not yet written."""
    config = state.job.config
    adapter_bot = config.train.lora
    folder = state.merged if adapter_bot else state.staged
    if params is None:
        params = browser.saved_params(folder)  # 0 where an adapter bot has no merged copy
    why_not = browser.why_not(
        config.sampling.space, state.job.base.kind, params, adapter_bot, folder.is_dir()
    )
    return folder, why_not


def write_card(state: State, data: Prepared, result: TrainResult, sampled: Sampled) -> None:
    """Rank 0: the card and its picture into the staged model folder."""
    with state.phases("card"):
        context = card.context(
            state.staged,
            data,
            sampled.job,
            result,
            sampled.predictions,
            sampled.flagged,
            wandb_url=state.tracker.urls.get("train"),
            versions=versions(),
            model_dir=state.bot_dir / "model",
        )
        if state.space is not None:  # what a visitor of the Space downloads, as measured
            context["space"] = {"file": state.space.file, "dtype": state.space.dtype,
                                "size": card.size(state.space.bytes)}  # fmt: skip
        card.write(state.staged, context, data.data_dir)  # and card.json beside it
        if state.merged.is_dir():
            card.write_merged(state.staging, context)
        shutil.rmtree(state.work, ignore_errors=True)


def log_results(state: State, wb: Any, result: TrainResult, sampled: Sampled, dataset: Any) -> None:
    """Rank 0: final metrics, the predictions table and the model artifact to W&B."""
    tracker = state.tracker
    tracker.log(
        wb,
        {
            "val_loss": result.val_loss,
            "perplexity": result.perplexity,
            "base_perplexity": result.base_perplexity,
            "memorized": sampled.flagged,
            "tokens_per_second": result.tokens_per_second,
        },
    )
    rows = [[p.prompt, p.text, p.memorized] for p in sampled.predictions]
    tracker.log(wb, {"predictions": tracker.table(["prompt", "text", "memorized"], rows)})
    if state.job.config.wandb.log_model:
        tracker.log_artifact(
            wb,
            f"model-{state.job.bot}",
            "model",
            [state.staged],
            {"perplexity": result.perplexity},
            parent=dataset,
        )


def finish(state: State, result: TrainResult, sampled: Sampled) -> RunResult:
    """Rank 0: predictions.json and job.json into the staged result, then the whole result in
    place of OUT/<bot> by renames: a kill at any point leaves the previous result or this one,
    never a mix of the two."""
    phases, staging, job = state.phases, state.staging, sampled.job
    phases.seconds["total"] = round(time.perf_counter() - phases.start, 3)
    model_dir = state.bot_dir / "model"
    write_json(
        staging / "predictions.json",
        {
            "sampling": job.config.sampling.model_dump(),
            "memorized": sampled.flagged,
            "predictions": [asdict(p) for p in sampled.predictions],
        },
    )
    write_json(
        staging / "job.json",
        {
            "bot": job.bot,
            # whose tweets, from where: a takedown deletes the person's inputs (consent.py)
            "inputs": [i.model_dump() for i in inputs_of(job.users)],
            "config": job.config.model_dump(),
            "versions": versions(),
            "timings": phases.seconds,
            "wandb": {
                "mode": state.wandb_mode,
                "runs": state.tracker.run_ids,
                "urls": state.tracker.urls,
                "skipped": state.tracker.skipped,  # stages W&B did not answer for
            },
            "result": {
                **result.summary(),
                "predictions": len(sampled.predictions),
                "memorized": sampled.flagged,
                "model_dir": str(model_dir),
            },
        },
    )
    # The bot's record (a local run's, cloud/publish.py record_local_run) outlives its result: it
    # names every Hub repo the bot was pushed to, which a takedown needs.
    if (state.bot_dir / STATUS).is_file():
        shutil.copy2(state.bot_dir / STATUS, staging / STATUS)
    replace_dir(staging, state.bot_dir)
    return RunResult(
        job.bot, model_dir, result, sampled.predictions, sampled.flagged, phases.seconds
    )


def _fingerprint(job: BotJob, texts: list[str], packed: bool = False) -> str:
    """Checkpoints resume only the same training on the same tweets, in the same format (a
    pack's checkpoint is no Trainer's)."""
    train = job.config.train.model_dump() | ({"packed": True} if packed else {})
    digest = hashlib.sha256(json.dumps(train, sort_keys=True).encode())
    for text in texts:
        digest.update(text.encode() + b"\0")
    return digest.hexdigest()
