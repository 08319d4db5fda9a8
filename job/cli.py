"""The ``huggingtweets`` command: a thin Typer layer over plain functions.

- Every option of ``run`` and ``prepare`` that shapes the bot is generated from job/config.py
  (flag, default and help); ``--config FILE`` gives the same fields as YAML, and the flags win.
  A CLI run builds the same ``BotJob`` a one-bot manifest would (config.bot_job).
- Heavy libraries (torch, transformers, tweepy, wandb) are imported inside the commands that
  need them, so ``huggingtweets --help`` stays fast.
- Every error a user can act on is a JobError: one line on stderr and the exit code documented
  in docs/exit-codes.md.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from job import __version__, errors
from job.config import (
    PREPARE_SECTIONS,
    RUN_SECTIONS,
    JobConfig,
    Section,
    UserSpec,
    describe,
    flag,
)

app = typer.Typer(
    name="huggingtweets",
    help="Turn a person's tweets into a fine-tuned GPT-2 tweet generator.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
log = logging.getLogger("job")
PANELS = {
    "clean": "Cleaning",
    "prepare": "Data",
    "train": "Training",
    "sampling": "Predictions",
    "wandb": "Weights & Biases",
}


@contextmanager
def _errors() -> Iterator[None]:
    """A JobError becomes one line on stderr and its exit code."""
    try:
        yield
    except errors.JobError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(e.exit_code) from None


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


# --- Options generated from the config ------------------------------------------------------


def config_flags(sections: tuple[str, ...]) -> list[tuple[str, str, str, Any]]:
    """(section, field, flag, pydantic field) for every config field the command takes."""
    flags = []
    for section in sections:
        model = JobConfig.model_fields[section].annotation
        assert isinstance(model, type) and issubclass(model, Section)
        for name, field in model.model_fields.items():
            flags.append((section, name, flag(model, name), field))
    return flags


def _option(section: str, name: str, flag: str, field: Any) -> inspect.Parameter:
    """A Typer option for a config field: its type, default and help come from the field."""
    annotation, default = field.annotation, field.get_default(call_default_factory=True)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    optional = type(None) in typing.get_args(annotation)
    inner = args[0] if optional else annotation
    help_text = describe(field)
    if typing.get_origin(inner) is Literal:
        inner = str
    elif typing.get_origin(inner) is list:
        inner, default, optional = list[str], None, True
        help_text += " Repeatable."
    decls = [f"--{flag}/--no-{flag}"] if inner is bool else [f"--{flag}"]
    option = typer.Option(*decls, help=help_text, rich_help_panel=PANELS[section])
    return inspect.Parameter(
        f"{section}__{name}",
        inspect.Parameter.KEYWORD_ONLY,
        default=default,
        annotation=Annotated[inner | None if optional else inner, option],
    )


def with_config_options(sections: tuple[str, ...]) -> Callable[[Callable[..., Any]], Any]:
    """Add an option per config field of ``sections``; the command gets the ones given on the
    command line as ``overrides`` ({section: {field: value}})."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        hints = typing.get_type_hints(func, include_extras=True)
        fixed = [
            p.replace(annotation=hints[p.name])
            for p in inspect.signature(func).parameters.values()
            if p.name != "overrides"
        ]
        generated = [_option(*f) for f in config_flags(sections)]

        @functools.wraps(func)
        def command(ctx: typer.Context, **kwargs: Any) -> Any:
            overrides: dict[str, dict[str, Any]] = {}
            for param in generated:
                value = kwargs.pop(param.name)
                source = ctx.get_parameter_source(param.name)
                # by name: Typer ships its own copy of Click and its ParameterSource enum
                if source is not None and source.name == "COMMANDLINE":
                    section, name = param.name.split("__")
                    overrides.setdefault(section, {})[name] = value
            return func(ctx, overrides=overrides, **kwargs)

        params = fixed + generated
        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate


# --- Options every bot command shares -------------------------------------------------------

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
ConfigFile = Annotated[
    Path | None,
    typer.Option("--config", help="YAML with config sections (as in a manifest); flags win."),
]
Verbose = Annotated[bool, typer.Option("--verbose", "-v")]


def _bot_job(
    users: list[str],
    archives: list[str],
    jsonls: list[str],
    api: bool,
    config_file: Path | None,
    overrides: dict[str, dict[str, Any]],
    hub_repo: str | None = None,
) -> Any:
    """The BotJob of a command line: the same one a one-bot manifest makes."""
    from job.config import bot_job, load_yaml, validate
    from job.data.sources import user_specs

    data: dict[str, Any] = {}
    if config_file is not None:
        if not config_file.is_file():
            raise errors.InputNotFound(f"--config {config_file}: no such file")
        loaded = load_yaml(config_file.read_text(encoding="utf-8"), str(config_file))
        if not isinstance(loaded, dict):
            raise errors.BadConfig(f"{config_file}: expected a mapping of config sections")
        data = loaded
    for section, values in overrides.items():
        base = data.get(section)
        data[section] = {**(base if isinstance(base, dict) else {}), **values}
    config = validate(JobConfig, data, str(config_file) if config_file else "options")
    specs: list[UserSpec] = user_specs(users, archives, jsonls, api)
    return bot_job(specs, config, hub_repo)


@app.command()
@with_config_options(PREPARE_SECTIONS)
def prepare(
    ctx: typer.Context,
    users: Users,
    out: Out = Path("out"),
    archive: Archive = None,
    jsonl: Jsonl = None,
    api: Api = False,
    config: ConfigFile = None,
    verbose: Verbose = False,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Download and clean tweets: OUT/<bot>/data/{raw,clean}.jsonl and stats.json."""
    from job.console import setup_logging

    setup_logging(verbose)
    with _errors():
        from job.data.sources import sources_for
        from job.prepare import prepare as prepare_bot

        job = _bot_job(users, archive or [], jsonl or [], api, config, overrides or {})
        result = prepare_bot(sources_for(job.users), out, job.config)
    total = result.stats["total"]
    typer.echo(
        f"prepared {result.bot}: {total['used']} tweets, {total['characters']} characters"
        f" -> {result.data_dir}"
    )


@app.command()
@with_config_options(RUN_SECTIONS)
def run(
    ctx: typer.Context,
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
            help="The manifest's bot to run (default: $AWS_BATCH_JOB_ARRAY_INDEX or "
            "$JOB_COMPLETION_INDEX, else all in turn)."
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Rerun bots already published.")] = False,
    out: Out = Path("out"),
    archive: Archive = None,
    jsonl: Jsonl = None,
    api: Api = False,
    config: ConfigFile = None,
    hub_repo: Annotated[
        str | None, typer.Option(help="Hub repo the card should point to (owner/name).")
    ] = None,
    verbose: Verbose = False,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> None:
    """The whole job: prepare, fine-tune, sample, write the card: OUT/<bot>/model and job.json."""
    from job.console import progress, setup_logging

    setup_logging(verbose)
    with _errors():
        if manifest is not None:
            if users or overrides or config:
                raise errors.BadConfig("--manifest takes no handles or config options")
            from job.batch import run_manifest

            for record in run_manifest(manifest, index=index, force=force):
                typer.echo(record.line())
            return
        if not users:
            raise errors.BadConfig("give at least one Twitter handle, or --manifest")
        from job.data.sources import sources_for

        job = _bot_job(users, archive or [], jsonl or [], api, config, overrides or {}, hub_repo)
        sources = sources_for(job.users)  # paths checked, tokens read: before the imports
        from job.run import run as run_bot

        with progress() as bars:
            result = run_bot(job, sources, out, progress=bars)
    if result is None:  # a rank other than 0 of a multi-process run: rank 0 reports
        return
    t = result.train
    typer.echo(
        f"done {result.bot}: validation perplexity {t.base_perplexity:.1f} -> {t.perplexity:.1f},"
        f" {result.flagged}/{len(result.predictions)} predictions memorized,"
        f" {t.tokens_per_second:,.0f} tokens/s ({t.strategy}), {result.timings['total']:.0f} s"
        f" -> {result.model_dir}"
    )


OutputUri = Annotated[
    str | None, typer.Option(help="The output prefix (s3://bucket/prefix or a folder).")
]
ManifestUri = Annotated[str | None, typer.Option(help="A job manifest: its output and bots.")]


def _output(manifest: str | None, output: str | None) -> tuple[str, list[str] | None]:
    """The output prefix, and the manifest's bots when a manifest names it."""
    from job.batch import load_manifest
    from job.config import jobs

    if (manifest is None) == (output is None):
        raise errors.BadConfig("give --manifest or --output")
    if manifest is None:
        assert output is not None
        return output, None
    loaded = load_manifest(manifest)
    return loaded.output, [j.bot for j in jobs(loaded)]


@app.command()
def status(manifest: ManifestUri = None, output: OutputUri = None) -> None:
    """Status of each bot: queued, running, succeeded or failed (with the reason)."""
    from job.console import setup_logging

    setup_logging(False)
    with _errors():
        from job.cloud.status import statuses
        from job.cloud.storage import open_storage

        uri, bots = _output(manifest, output)
        records = statuses(open_storage(uri), bots)
    for record in records:
        typer.echo(record.line())


@app.command()
def publish(
    bot: Annotated[str, typer.Argument(help="The bot (handles joined with '-').")],
    output: OutputUri = None,
    manifest: ManifestUri = None,
    repo: Annotated[str | None, typer.Option(help="owner/name (default: as recorded).")] = None,
    private: Annotated[bool | None, typer.Option("--private/--public")] = None,
) -> None:
    """Push a bot's latest published run to the Hub again (after a Hub failure)."""
    from job.console import setup_logging

    setup_logging(False)
    with _errors():
        from job.batch import push_to_hub
        from job.cloud.storage import open_storage
        from job.data.handles import bot_name

        name = bot_name(bot.split("-"))
        uri, _ = _output(manifest, output)
        record = push_to_hub(open_storage(uri), name, repo, private)
    typer.echo(record.line())


@app.command()
def submit(
    users: Annotated[list[str], typer.Argument(help="Twitter handles: one bot each.")],
    target: Annotated[str, typer.Option(help="batch (AWS Batch) | k8s (Kubernetes).")] = "batch",
    base_model: Annotated[str, typer.Option()] = "gpt2",
    output: Annotated[
        str | None, typer.Option(help="s3://bucket/prefix (default: $HUGGINGTWEETS_OUTPUT).")
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
    import os

    from job.console import setup_logging

    setup_logging(False)
    with _errors():
        from job.cloud.submit import submit as submit_bots

        result = submit_bots(
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


def main() -> None:
    import atexit

    from job.training.launch import relaunch_if_needed

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
