"""The ``huggingtweets`` command: a thin Typer layer over plain functions.

Heavy libraries (torch, transformers, tweepy, wandb) are imported inside the commands that
need them, so ``huggingtweets --help`` stays fast. Every error a user can act on is a JobError:
one line on stderr and the exit code documented in errors.py.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from job import __version__, errors
from job.clean import CleanConfig
from job.handles import HANDLE_RE, validate_handle
from job.predict import SamplingConfig
from job.prepare import PrepareConfig
from job.train import TrainConfig

app = typer.Typer(
    name="huggingtweets",
    help="Turn a person's tweets into a fine-tuned GPT-2 tweet generator.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
log = logging.getLogger("job")
# The config classes hold the defaults (with their reasons); the options repeat none of them.
_CLEAN, _PREPARE, _TRAIN, _SAMPLING = (
    CleanConfig(),
    PrepareConfig(),
    TrainConfig(),
    SamplingConfig(),
)


def _fail(error: errors.JobError) -> NoReturn:
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(error.exit_code)


def _setup_logging(verbose: bool) -> None:
    from rich.console import Console
    from rich.logging import RichHandler

    # Logs go to stderr: stdout carries only the one-line result.
    handler = RichHandler(
        console=Console(stderr=True), show_path=False, show_time=False, markup=False
    )
    logging.basicConfig(level=logging.WARNING, handlers=[handler], format="%(message)s")
    log.setLevel(logging.DEBUG if verbose else logging.INFO)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"huggingtweets {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print version.")
    ] = False,
) -> None:
    """Turn a person's tweets into a fine-tuned GPT-2 tweet generator."""


def _assign(
    users: list[str], kind: str, values: list[str], sources: dict[str, object], factory: type
) -> None:
    """Give ``--archive``/``--jsonl`` values (``PATH`` or ``HANDLE=PATH``) to users."""
    for value in values:
        name, sep, rest = value.partition("=")
        named = bool(sep) and HANDLE_RE.fullmatch(name.lstrip("@")) is not None
        path = Path(rest if named else value)
        if named:
            key = next((u for u in users if u.lower() == name.lstrip("@").lower()), None)
            if key is None:
                raise errors.BadConfig(f"--{kind} {value}: @{name} is not among the users")
            targets = [key]
        elif kind == "jsonl":  # one file for all: it is filtered by its 'user' field
            targets = [u for u in users if u not in sources]
        elif len(users) == 1:
            targets = users
        else:
            raise errors.BadConfig(f"with several users, name each archive: --{kind} HANDLE=PATH")
        if not path.exists():  # now: `run` would find out only after seconds of imports
            noun = "archive" if kind == "archive" else "tweets file"
            raise errors.InputNotFound(f"{noun} not found: {path}")
        for handle in targets:
            if handle in sources:
                raise errors.BadConfig(f"@{handle} is given two sources")
            sources[handle] = factory(path)


# Options shared by `prepare` and `run`: where the tweets come from and how they are cleaned.
Users = Annotated[list[str], typer.Argument(help="Twitter handles, one bot for all of them.")]
Out = Annotated[Path, typer.Option(help="Output folder; the bot's files go to OUT/<bot>/.")]
Archive = Annotated[
    list[str] | None,
    typer.Option(help="Twitter archive (.zip or folder): PATH, or HANDLE=PATH per user."),
]
Jsonl = Annotated[
    list[str] | None,
    typer.Option(help="Tweets as JSONL or CSV ('text' per record): PATH or HANDLE=PATH."),
]
Api = Annotated[bool, typer.Option("--api", help="Users without a file source: Twitter API v2.")]
MinWords = Annotated[int, typer.Option(help="Drop tweets with fewer real words.")]
Replies = Annotated[str, typer.Option(help="keep | drop | strip (keep, without leading @s).")]
Dedupe = Annotated[bool, typer.Option(help="Drop exact duplicate tweets.")]
BalanceRatio = Annotated[
    float, typer.Option(help="Cap each user at R x the smallest user's tweets; 0 = off.")
]
MinChars = Annotated[int, typer.Option(help="Fail under this much training text.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v")]


def _prepare_config(
    min_words: int, replies: str, dedupe: bool, balance_ratio: float, min_chars: int
) -> PrepareConfig:
    if replies not in ("keep", "drop", "strip"):
        raise errors.BadConfig(f"--replies must be keep, drop or strip, not {replies!r}")
    return PrepareConfig(
        clean=CleanConfig(min_words=min_words, replies=replies, dedupe=dedupe),  # type: ignore[arg-type]
        balance_ratio=balance_ratio,
        min_chars=min_chars,
    )


@app.command()
def prepare(
    users: Users,
    out: Out = Path("out"),
    archive: Archive = None,
    jsonl: Jsonl = None,
    api: Api = False,
    min_words: MinWords = _CLEAN.min_words,
    replies: Replies = _CLEAN.replies,
    dedupe: Dedupe = _CLEAN.dedupe,
    balance_ratio: BalanceRatio = _PREPARE.balance_ratio,
    min_chars: MinChars = _PREPARE.min_chars,
    verbose: Verbose = False,
) -> None:
    """Download and clean tweets: OUT/<bot>/data/{raw,clean}.jsonl and stats.json."""
    _setup_logging(verbose)
    try:
        from job.prepare import prepare as run_prepare

        config = _prepare_config(min_words, replies, dedupe, balance_ratio, min_chars)
        result = run_prepare(_sources(users, archive or [], jsonl or [], api), out, config)
    except errors.JobError as e:
        _fail(e)
    total = result.stats["total"]
    typer.echo(
        f"prepared {result.bot}: {total['used']} tweets, {total['characters']} characters"
        f" -> {result.data_dir}"
    )


@app.command()
def run(
    users: Annotated[
        list[str] | None, typer.Argument(help="Twitter handles (or use --manifest).")
    ] = None,
    manifest: Annotated[
        str | None,
        typer.Option(help="Job manifest (s3://bucket/key or a path): run its bots instead."),
    ] = None,
    index: Annotated[
        int | None,
        typer.Option(
            help="The manifest's bot to run [default: $AWS_BATCH_JOB_ARRAY_INDEX or "
            "$JOB_COMPLETION_INDEX, else all in turn]."
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Rerun bots already published.")] = False,
    out: Out = Path("out"),
    archive: Archive = None,
    jsonl: Jsonl = None,
    api: Api = False,
    base_model: Annotated[
        str,
        typer.Option(help="gpt2 | gpt2-medium | gpt2-large | gpt2-xl | tiny | folder | Hub id."),
    ] = _TRAIN.base_model,
    tokenizer: Annotated[
        Path | None, typer.Option(help="GPT-2 BPE files (vocab.json, merges.txt) for tiny.")
    ] = None,
    epochs: Annotated[float, typer.Option()] = _TRAIN.epochs,
    learning_rate: Annotated[float, typer.Option()] = _TRAIN.learning_rate,
    lr_scheduler: Annotated[str, typer.Option()] = _TRAIN.lr_scheduler,
    warmup_ratio: Annotated[float, typer.Option()] = _TRAIN.warmup_ratio,
    batch_size: Annotated[int, typer.Option(help="Per device.")] = _TRAIN.batch_size,
    grad_accum: Annotated[int, typer.Option()] = _TRAIN.grad_accum,
    block_size: Annotated[int, typer.Option(help="Tokens per training block.")] = _TRAIN.block_size,
    val_fraction: Annotated[float, typer.Option()] = _TRAIN.val_fraction,
    precision: Annotated[str, typer.Option(help="auto | bf16 | fp32.")] = _TRAIN.precision,
    strategy: Annotated[
        str, typer.Option(help="auto | ddp | zero2 | zero3 | zero3-offload (auto: fastest fit).")
    ] = _TRAIN.strategy,
    checkpoint_every: Annotated[
        int, typer.Option(help="Steps between checkpoints; 0: by time (--checkpoint-minutes).")
    ] = _TRAIN.checkpoint_every,
    checkpoint_minutes: Annotated[float, typer.Option()] = _TRAIN.checkpoint_minutes,
    keep_checkpoints: Annotated[int, typer.Option()] = _TRAIN.keep_checkpoints,
    seed: Annotated[int, typer.Option()] = _TRAIN.seed,
    start_text: Annotated[
        list[str] | None, typer.Option(help="Prompt for predictions (repeatable).")
    ] = None,
    predictions_per_prompt: Annotated[int, typer.Option()] = _SAMPLING.per_prompt,
    top_p: Annotated[float, typer.Option()] = _SAMPLING.top_p,
    max_length: Annotated[int, typer.Option(help="Tokens per prediction.")] = _SAMPLING.max_length,
    memorization_ngram: Annotated[
        int, typer.Option(help="Flag predictions sharing this many words with a tweet.")
    ] = _SAMPLING.ngram,
    wandb_mode: Annotated[
        str | None,
        typer.Option(help="online | offline | disabled [default: $WANDB_MODE or offline]"),
    ] = None,
    wandb_project: Annotated[str, typer.Option()] = "huggingtweets",
    hub_repo: Annotated[
        str | None, typer.Option(help="Hub repo the card should point to (owner/name).")
    ] = None,
    min_words: MinWords = _CLEAN.min_words,
    replies: Replies = _CLEAN.replies,
    dedupe: Dedupe = _CLEAN.dedupe,
    balance_ratio: BalanceRatio = _PREPARE.balance_ratio,
    min_chars: MinChars = _PREPARE.min_chars,
    verbose: Verbose = False,
) -> None:
    """The whole job: prepare, fine-tune, sample, write the card: OUT/<bot>/model and job.json."""
    _setup_logging(verbose)
    if manifest is not None:
        if users:
            _fail(errors.BadConfig("give handles or --manifest, not both"))
        _run_manifest(manifest, index, force)
        return
    if not users:
        _fail(errors.BadConfig("give at least one Twitter handle, or --manifest"))
    try:
        from job.predict import START_TEXTS
        from job.run import RunConfig
        from job.run import run as run_job
        from job.tracking import default_mode

        config = RunConfig(
            prepare=_prepare_config(min_words, replies, dedupe, balance_ratio, min_chars),
            train=TrainConfig(
                base_model=base_model,
                tokenizer=str(tokenizer) if tokenizer else None,
                epochs=epochs,
                learning_rate=learning_rate,
                lr_scheduler=lr_scheduler,
                warmup_ratio=warmup_ratio,
                batch_size=batch_size,
                grad_accum=grad_accum,
                block_size=block_size,
                val_fraction=val_fraction,
                seed=seed,
                precision=precision,
                strategy=strategy,
                checkpoint_every=checkpoint_every,
                checkpoint_minutes=checkpoint_minutes,
                keep_checkpoints=keep_checkpoints,
            ),
            sampling=SamplingConfig(
                start_texts=tuple(start_text or START_TEXTS),
                per_prompt=predictions_per_prompt,
                top_p=top_p,
                max_length=max_length,
                ngram=memorization_ngram,
                seed=seed,
            ),
            wandb_mode=wandb_mode or default_mode(),
            wandb_project=wandb_project,
            hub_repo=hub_repo,
        )
        sources = _sources(users, archive or [], jsonl or [], api)
        with _progress() as advance:
            result = run_job(sources, out, config, progress=advance)
    except errors.JobError as e:
        _fail(e)
    if result is None:  # a rank other than 0 of a multi-process run: rank 0 reports
        return
    t = result.train
    typer.echo(
        f"done {result.bot}: validation perplexity {t.base_perplexity:.1f} -> {t.perplexity:.1f},"
        f" {result.flagged}/{len(result.predictions)} predictions memorized,"
        f" {t.tokens_per_second:,.0f} tokens/s ({t.strategy}), {result.timings['total']:.0f} s"
        f" -> {result.model_dir}"
    )


def _run_manifest(uri: str, index: int | None, force: bool) -> None:
    try:
        from job.batch import run_manifest

        records = run_manifest(uri, index=index, force=force)
    except errors.JobError as e:
        _fail(e)
    for record in records:
        typer.echo(_status_line(record))


def _status_line(record: dict[str, Any]) -> str:
    hub = record.get("hub") or {}
    parts = [
        record.get("bot", "?"),
        record.get("state", "?"),
        record.get("run_id") or "-",
        record.get("updated_at") or "-",
        f"hub:{hub.get('state', 'off')}",
    ]
    reason = record.get("reason") or hub.get("reason")
    return "  ".join(str(p) for p in parts) + (f"  ({reason})" if reason else "")


OutputUri = Annotated[
    str | None, typer.Option(help="The output prefix (s3://bucket/prefix or a folder).")
]
ManifestUri = Annotated[str | None, typer.Option(help="A job manifest: its output and bots.")]


@app.command()
def status(manifest: ManifestUri = None, output: OutputUri = None) -> None:
    """Status of each bot: queued, running, succeeded or failed (with the reason)."""
    _setup_logging(False)
    try:
        from job.batch import load_manifest, statuses
        from job.manifest import jobs
        from job.storage import open_storage

        if (manifest is None) == (output is None):
            raise errors.BadConfig("give --manifest or --output")
        bots = None
        if manifest is not None:
            loaded = load_manifest(manifest)
            output, bots = loaded.output, [j.bot for j in jobs(loaded)]
        assert output is not None
        records = statuses(open_storage(output), bots)
    except errors.JobError as e:
        _fail(e)
    for record in records:
        typer.echo(_status_line(record))


@app.command()
def publish(
    bot: Annotated[str, typer.Argument(help="The bot (handles joined with '-').")],
    output: OutputUri = None,
    manifest: ManifestUri = None,
    repo: Annotated[str | None, typer.Option(help="owner/name [default: as recorded]")] = None,
    private: Annotated[bool | None, typer.Option("--private/--public")] = None,
) -> None:
    """Push a bot's latest published run to the Hub again (after a Hub failure)."""
    _setup_logging(False)
    try:
        from job.batch import load_manifest
        from job.batch import publish as push_again
        from job.handles import bot_name
        from job.storage import open_storage

        name = bot_name(bot.split("-"))
        if (manifest is None) == (output is None):
            raise errors.BadConfig("give --manifest or --output")
        if manifest is not None:
            output = load_manifest(manifest).output
        assert output is not None
        record = push_again(open_storage(output), name, repo, private)
    except errors.JobError as e:
        _fail(e)
    typer.echo(_status_line(record))


@app.command()
def submit(
    users: Annotated[list[str], typer.Argument(help="Twitter handles: one bot each.")],
    target: Annotated[str, typer.Option(help="batch (AWS Batch) | k8s (Kubernetes).")] = "batch",
    base_model: Annotated[str, typer.Option()] = "gpt2",
    output: Annotated[
        str | None, typer.Option(help="s3://bucket/prefix [default: $HUGGINGTWEETS_OUTPUT]")
    ] = None,
    together: Annotated[bool, typer.Option(help="One bot of all the users.")] = False,
    hub_owner: Annotated[str, typer.Option(help="Hub owner of the repos.")] = "huggingtweets",
    push: Annotated[bool, typer.Option(help="Push the models to the Hub.")] = True,
    job_queue: Annotated[str, typer.Option(envvar="HUGGINGTWEETS_JOB_QUEUE")] = "huggingtweets",
    job_definition: Annotated[
        str, typer.Option(envvar="HUGGINGTWEETS_JOB_DEFINITION")
    ] = "huggingtweets",
    image: Annotated[str, typer.Option(envvar="HUGGINGTWEETS_IMAGE")] = "huggingtweets:latest",
    namespace: Annotated[str, typer.Option()] = "default",
    dry_run: Annotated[bool, typer.Option(help="Print what would be submitted.")] = False,
) -> None:
    """Write a manifest to S3 and start the job on AWS Batch or Kubernetes."""
    _setup_logging(False)
    import os

    try:
        from job.submit import submit as do_submit

        result = do_submit(
            users,
            target=target,
            output=output or os.environ.get("HUGGINGTWEETS_OUTPUT", ""),
            base_model=base_model,
            together=together,
            hub_owner=hub_owner if push else None,
            job_queue=job_queue,
            job_definition=job_definition,
            image=image,
            namespace=namespace,
            dry_run=dry_run,
        )
    except errors.JobError as e:
        _fail(e)
    if dry_run:
        import yaml

        typer.echo(f"# manifest, to be written to {result.manifest_uri}")
        typer.echo(yaml.safe_dump(result.manifest, sort_keys=False))
        if result.rendered:
            typer.echo(f"---\n{result.rendered}")
        return
    bots = len(result.manifest["bots"])
    typer.echo(f"submitted {bots} bot{'s' if bots > 1 else ''} to {target}: {result.job}")
    typer.echo(result.follow())


@contextmanager
def _progress() -> Iterator[Callable[[int, int], None]]:
    """A Rich progress bar for the training steps, on stderr; silent when not a terminal."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    console = Console(stderr=True)
    with Progress(
        "training",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as bar:
        task = bar.add_task("train", total=None)

        def advance(step: int, total: int) -> None:
            bar.update(task, completed=step, total=total)

        yield advance


def _sources(users: list[str], archives: list[str], jsonls: list[str], api: bool) -> dict:
    """Each user's tweet source, by handle; the handles are validated first."""
    from job.sources import ArchiveSource, FileSource

    handles = [validate_handle(u) for u in users]
    sources: dict[str, object] = {}
    _assign(handles, "archive", archives, sources, ArchiveSource)
    _assign(handles, "jsonl", jsonls, sources, FileSource)
    missing = [h for h in handles if h not in sources]
    if missing and api:
        from job.sources.api import ApiSource

        client = ApiSource()
        sources.update({h: client for h in missing})
    elif missing:
        raise errors.BadConfig(f"no source for @{missing[0]}: give --archive, --jsonl or --api")
    return {h: sources[h] for h in handles}


def main() -> None:
    import atexit

    from job.launch import relaunch_if_needed

    exit_code = [1]  # until the command says otherwise (an uncaught exception is 1)
    # Registered first, so it runs after every other exit handler (W&B's, torch's).
    atexit.register(_exit_without_teardown, exit_code)
    try:
        relaunch_if_needed(sys.argv[1:])  # several GPUs or nodes: restart under torchrun
        app()
    except errors.JobError as e:  # raised outside a command's own handler
        typer.echo(f"error: {e}", err=True)
        exit_code[0] = e.exit_code
        sys.exit(e.exit_code)
    except SystemExit as e:  # how Typer ends every command
        exit_code[0] = e.code if isinstance(e.code, int) else int(e.code is not None)
        raise
    except KeyboardInterrupt:
        exit_code[0] = 130  # the shell's code for SIGINT
        raise


def _exit_without_teardown(exit_code: list[int]) -> None:
    """End the process once every exit handler has run, skipping the interpreter's teardown.

    Freeing torch's and transformers' thousands of modules and objects one by one takes
    ~1.1 s on the CPU dev machine (docs/benchmarks.md) and does nothing for a finished job:
    every output file is already closed, W&B runs are finished, the OS frees the rest.
    """
    import os

    logging.shutdown()  # its own exit handler was registered before this one: flush here
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code[0])
