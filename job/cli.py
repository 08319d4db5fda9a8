"""The ``huggingtweets`` command: a thin Typer layer over plain functions.

- Every option of ``run`` and ``prepare`` that shapes the bot is generated from job/config.py
  (flag, default and help; job/options.py); ``--config FILE`` gives the same fields as YAML,
  and the flags win. A CLI run builds the same ``BotJob`` a one-bot manifest would.
- Heavy libraries (torch, transformers, tweepy, wandb) are imported inside the commands that
  need them, so ``huggingtweets --help`` stays fast.
- Every error a user can act on is a JobError: one line on stderr and the exit code documented
  in docs/exit-codes.md.
"""

from __future__ import annotations

import logging
import os
import sys
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from job import __version__, errors
from job.config import PREPARE_SECTIONS, RUN_SECTIONS, WANDB_PROJECT, SubmitOptions
from job.console import show
from job.options import (
    Api,
    Archive,
    Bluesky,
    ConfigFile,
    Jsonl,
    Mastodon,
    Out,
    Users,
    Verbose,
    bot_job_from_args,
    online,
    with_config_options,
    with_options_of,
)


class _Group(TyperGroup):
    """The commands, with Click's placeholders for values (TEXT, INTEGER, FLOAT, PATH) where
    Typer would print Python's types (``<list[str]>``), and none for flags (``--api``)."""

    ARGUMENTS: typing.ClassVar[dict[str, str]] = {
        "users": "HANDLE",
        "handle": "HANDLE",
        "bot": "BOT",
        "bots": "BOT",
    }
    NAMES: typing.ClassVar[dict[Any, str]] = {
        str: "TEXT",
        int: "INTEGER",
        float: "NUMBER",
        Path: "PATH",
        bool: "",
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for command in [self, *self.commands.values()]:
            for param in command.params:
                if param.param_type_name == "argument":  # its name says what it is
                    param.display_type_rich = lambda ctx: None  # type: ignore[attr-defined]
                    # as Click's users know them: HANDLE... (optional: [HANDLE]...), not
                    # Typer's {users}..., which reads as a template left unfilled
                    name = self.ARGUMENTS.get(param.name or "", str(param.name).upper())
                    shown = (name if param.required else f"[{name}]") + (
                        "..." if param.nargs != 1 else ""
                    )
                    param.metavar = name
                    param._usage_display_name = lambda shown=shown: shown  # type: ignore[attr-defined]
                elif param.metavar is None:
                    annotation = param.type_descriptor.annotation  # type: ignore[attr-defined]
                    inner = [a for a in typing.get_args(annotation) if a is not type(None)]
                    listed = typing.get_origin(annotation) is list and inner
                    param.metavar = self.NAMES.get(inner[0] if listed else annotation, "TEXT")
            command.get_help_option = self._flag(command.get_help_option)  # type: ignore[method-assign]

    @staticmethod
    def _flag(made: Any) -> Any:
        """--help, which Click makes anew for each use: a flag, with no placeholder."""

        def help_option(ctx: Any) -> Any:
            option = made(ctx)
            if option is not None:
                option.metavar = ""
            return option

        return help_option


app = typer.Typer(
    cls=_Group,
    name="huggingtweets",
    help="Turn a person's tweets into a fine-tuned GPT-2 tweet generator.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@contextmanager
def _command(verbose: bool = False) -> Iterator[None]:
    """Log lines on stderr. The one boundary: any error becomes one line there and its exit
    code (docs/exit-codes.md); the traceback only with --verbose."""
    from job.console import setup_logging

    setup_logging(verbose)
    errors.SAID.clear()  # a new command: its own line (tests run many in one process)
    try:
        yield
    except BrokenPipeError:
        # stdout's reader left (`status | head`): what it wanted, it has; end quietly, and
        # keep the interpreter's last flush from failing on the closed pipe too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise typer.Exit(0) from None
    except (Exception, errors.Terminated, KeyboardInterrupt) as e:  # a stop: 75 or 130
        error = errors.classify(e)
        if verbose and not isinstance(e, errors.JobError):
            logging.getLogger("job").debug("traceback", exc_info=e)
        errors.say(error)
        raise typer.Exit(error.exit_code) from None


def _version(value: bool) -> None:
    if value:
        show(f"huggingtweets {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print version.")
    ] = False,
) -> None:
    """Turn a person's tweets into a fine-tuned GPT-2 tweet generator."""


@app.command()
@with_config_options(PREPARE_SECTIONS)
def prepare(
    ctx: typer.Context,
    users: Users,
    out: Out = Path("out"),
    archive: Archive = None,
    jsonl: Jsonl = None,
    api: Api = False,
    bluesky: Bluesky = False,
    mastodon: Mastodon = False,
    config: ConfigFile = None,
    verbose: Verbose = False,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Download and clean tweets: OUT/<bot>/data/{raw,clean}.jsonl and stats.json."""
    with _command(verbose):
        from job.console import progress
        from job.data.sources import sources_for
        from job.prepare import prepare as prepare_bot

        job = bot_job_from_args(
            users, archive or [], jsonl or [], online(api, bluesky, mastodon), config,
            overrides or {},
        )  # fmt: skip
        guard = _check_consent(out, job)
        with progress() as bars:
            try:
                sources = sources_for(job.users, bars=bars, consent=guard.also)
                prepared = prepare_bot(sources, out, job.config)
            except errors.OptedOut:
                raise
            except Exception:
                guard.check("a failure")  # a takedown meanwhile removed what it wrote
                raise
        guard.check("the data was written")
        show(prepared.line())


@app.command()
@with_config_options(RUN_SECTIONS)
def run(
    ctx: typer.Context,
    users: Annotated[
        list[str] | None,
        typer.Argument(help="Handles: Twitter, Bluesky or Mastodon (or use --manifest)."),
    ] = None,
    manifest: Annotated[
        str | None,
        typer.Option(help="Job manifest (s3://bucket/key or a path): run its bots instead."),
    ] = None,
    index: Annotated[
        int | None,
        typer.Option(
            help="The manifest's task to run: task i makes bots i*K to i*K+K-1, K being its"
            " bots_per_task (1: task i is bot i). Default: $AWS_BATCH_JOB_ARRAY_INDEX or"
            " $JOB_COMPLETION_INDEX, else every bot in turn."
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Rerun bots already published.")] = False,
    out: Out = Path("out"),
    archive: Archive = None,
    jsonl: Jsonl = None,
    api: Api = False,
    bluesky: Bluesky = False,
    mastodon: Mastodon = False,
    config: ConfigFile = None,
    hub_repo: Annotated[
        str | None, typer.Option(help="Hub repo the card should point to (owner/name).")
    ] = None,
    contact: Annotated[
        str | None,
        typer.Option(help="Where people ask for the bot's removal (e-mail or URL), on the card."),
    ] = None,
    verbose: Verbose = False,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> None:
    """The whole job: prepare, fine-tune, sample, write the card: OUT/<bot>/model and job.json."""
    with _command(verbose):
        if manifest is not None:
            if users or overrides or config:
                raise errors.BadConfig("--manifest takes no handles or config options")
            from job.task import run_manifest

            for record in run_manifest(manifest, index=index, force=force):
                show(record.line())
            return
        if not users:
            raise errors.BadConfig("give at least one handle, or --manifest")
        from job.console import progress
        from job.data.sources import sources_for

        job = bot_job_from_args(
            users, archive or [], jsonl or [], online(api, bluesky, mastodon), config,
            overrides or {}, hub_repo, contact,
        )  # fmt: skip
        from job.preflight import preflight

        guard = _check_consent(out, job)
        preflight([job], None)  # credentials and HF_HOME: before any download
        with progress() as bars:
            # paths checked: before the imports
            sources = sources_for(job.users, bars=bars, consent=guard.also)
            from job.run import run as run_bot

            result = run_bot(job, sources, out, progress=bars, guard=guard.check)
        if result is not None:  # None: a rank other than 0 of a multi-process run
            from job.cloud.publish import record_local_run

            # status lists it, publish pushes it
            record_local_run(out, job, result.train.perplexity, result.flagged)
            guard.check("the bot's record")
    if result is not None:
        show(result.line())


def _check_consent(out: Path, job: Any) -> Any:
    """The output folder's opt-out list (cloud/consent.py), before any download; the guard
    the command checks again after it writes (a takedown may come while it works)."""
    from job.cloud.consent import Guard, check_not_opted_out
    from job.storage import LocalStorage
    from job.workspace import check_out_folder

    check_out_folder(str(out), "--out")
    handles = [u.handle for u in job.users]
    check_not_opted_out(LocalStorage(out), handles)
    return Guard(LocalStorage(out), job.bot, handles)


# One output setting for every command that reads one, as submit's: HUGGINGTWEETS_OUTPUT.
OUTPUT_VARIABLE = "HUGGINGTWEETS_OUTPUT"
OUTPUT_OPTION = typer.Option(
    help="The output prefix (s3://bucket/prefix or a folder).",
    envvar=OUTPUT_VARIABLE,
    show_envvar=True,
)
OutputUri = Annotated[str | None, OUTPUT_OPTION]


def _output(ctx: typer.Context, manifest: str | None, output: str | None) -> str | None:
    """``--output``, unless it only came from the environment and a manifest was given."""
    source = ctx.get_parameter_source("output")
    if manifest is not None and source is not None and source.name == "ENVIRONMENT":
        return None
    return output


ManifestUri = Annotated[str | None, typer.Option(help="A job manifest: its output and bots.")]


@app.command()
def status(ctx: typer.Context, manifest: ManifestUri = None, output: OutputUri = None) -> None:
    """Status of each bot: queued, running, succeeded or failed (with the reason)."""
    with _command():
        from job.cloud.consent import shown
        from job.cloud.status import COLUMNS, statuses
        from job.storage import open_storage
        from job.task import output_of

        uri, bots = output_of(manifest, _output(ctx, manifest, output))
        storage = open_storage(uri)
        records = shown(storage, statuses(storage, bots))
        if sys.stdout.isatty():  # a person reads it: a table
            from rich.console import Console
            from rich.table import Table

            table = Table(*COLUMNS, box=None, header_style="bold")
            for record in records:
                table.add_row(*(errors.inert(c) for c in record.row()), end_section=False)
            Console(markup=False, highlight=False).print(table)
            return
        # a program reads it: tab-separated, with a header line, a record a line
        show("\t".join(COLUMNS))
        for record in records:
            show("\t".join(" ".join(cell.split()) for cell in record.row()))


@app.command()
def publish(
    ctx: typer.Context,
    bot: Annotated[str, typer.Argument(help="The bot (handles joined with '-').")],
    output: OutputUri = None,
    manifest: ManifestUri = None,
    repo: Annotated[str | None, typer.Option(help="owner/name (default: as recorded).")] = None,
    private: Annotated[
        bool | None,
        typer.Option("--private/--public", help="The repo's visibility (default: as recorded)."),
    ] = None,
) -> None:
    """Push a bot's latest published run to the Hub again (after a Hub failure)."""
    with _command():
        from job.cloud.publish import publish_latest
        from job.data.handles import bot_name, handles_of
        from job.storage import open_storage
        from job.task import output_of

        name = bot_name(handles_of(bot.split("-")))
        storage = open_storage(output_of(manifest, _output(ctx, manifest, output))[0])
        show(publish_latest(storage, name, repo, private).line())


@app.command()
def takedown(
    handle: Annotated[
        str,
        typer.Argument(
            help="The person's handle, in any form: @ann, x.com/ann, alice.bsky.social, a"
            " did:plc:, @bob@mastodon.social. A Bluesky person's other name (DID or handle)"
            " is looked up and opted out too."
        ),
    ],
    output: Annotated[str, OUTPUT_OPTION],
    reason: Annotated[str | None, typer.Option(help="Why, for the opt-out record.")] = None,
    requested_by: Annotated[
        str | None, typer.Option(help="Who asked (the person, or on their behalf).")
    ] = None,
    keep_private: Annotated[
        bool, typer.Option(help="Make the Hub repos private instead of deleting them.")
    ] = False,
    wandb_project: Annotated[
        str, typer.Option(help="W&B project searched besides those the runs name.")
    ] = WANDB_PROJECT,
    wandb_entity: Annotated[
        str | None,
        typer.Option(envvar="WANDB_ENTITY", help="W&B entity (default: the key's own)."),
    ] = None,
) -> None:
    """Remove every bot of HANDLE (alone or with others) and opt the handle out for good.
    With WANDB_API_KEY set, their W&B runs and artifacts go too."""
    with _command():
        from job.cloud.consent import takedown as take_down
        from job.data.handles import Handle
        from job.outputs.tracking import remove_group
        from job.storage import open_storage

        person = Handle(handle)  # @, case and a profile's address: the same person
        storage = open_storage(output)

        def wandb_remove(project: str, group: str) -> list[str]:
            return remove_group(project, group, wandb_entity)

        errors_left = []
        for name in [person, *other_names(person)]:  # a Bluesky person's handle and DID
            done = take_down(
                storage,
                name,
                reason=reason,
                requested_by=requested_by,
                keep_private=keep_private,
                wandb_remove=wandb_remove if os.environ.get("WANDB_API_KEY") else None,
                wandb_project=wandb_project,
            )
            show(done.lines())
            errors_left.append(done.error())
        error = next((e for e in errors_left if e is not None), None)
        if error is not None:
            raise error


def other_names(person: Any) -> list[Any]:
    """A Bluesky person's other name (their DID for a handle, their handle for a DID), asked of
    the AppView once with no retry; a takedown goes on without it, and says so, when it cannot
    be had (no network, the account gone)."""
    if person.platform != "bluesky":
        return []
    from job.data.sources.bluesky import BlueskySource
    from job.deadline import deadline

    source = BlueskySource(retries=0)
    try:
        with deadline("posts_api", f"asking the Bluesky AppView for {person.shown}'s names"):
            return [n for n in source.names(person) if not n.same(person)]
    except errors.JobError as e:
        show(
            f"{person.shown}: its other name (handle or DID) could not be read ({e}); bots"
            " made under that name were not searched: run takedown with it too",
            err=True,
        )
        return []


@app.command()
def generate(
    bots: Annotated[
        list[str],
        typer.Argument(
            help="Bots: a bot's folder (out/sam) or a model folder, s3://bucket/prefix/<bot>,"
            " or a Hub repo (owner/name)."
        ),
    ],
    prompt: Annotated[
        list[str] | None,
        typer.Option(help="A prompt (repeatable; default: the bot's own start texts)."),
    ] = None,
    n: Annotated[int | None, typer.Option(help="Tweets a prompt (default: the bot's).")] = None,
    max_new_tokens: Annotated[
        int | None, typer.Option(help="Tokens after the prompt, at most (within the context).")
    ] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature.")] = None,
    top_p: Annotated[float | None, typer.Option(help="Nucleus sampling.")] = None,
    seed: Annotated[int, typer.Option(help="The same seed, the same tweets (same machine).")] = 42,
    json_lines: Annotated[
        bool, typer.Option("--json", help="One JSON object a line: bot, prompt, text, seed.")
    ] = False,
    verbose: Verbose = False,
) -> None:
    """Hear bots: sample tweets from each, wherever it is. Several adapter (LoRA) bots of one
    base load the base once and switch adapters: the cheap way to hear many bots."""
    with _command(verbose):
        import json

        from job.generate import Asked, located
        from job.generate import generate as sample_bots

        asked = Asked(prompt or None, n, max_new_tokens, temperature, top_p, seed)
        with located(bots) as found:
            for bot in found:
                show(bot.note(), err=True)
            for said in sample_bots(found, asked):
                if json_lines:
                    record = {"bot": said.bot, "prompt": said.prompt, "text": said.text}
                    show(json.dumps({**record, "seed": said.seed}, ensure_ascii=False))
                else:
                    show(said.text)


@app.command()
@with_options_of(SubmitOptions)
def submit(
    users: Annotated[
        list[str], typer.Argument(help="Handles (Twitter, Bluesky or Mastodon): one bot each.")
    ],
    options: dict[str, Any] | None = None,
) -> None:
    """Write a manifest to S3 and start the job on AWS Batch or Kubernetes."""
    with _command():
        from job.cloud.submit import submit as submit_bots
        from job.loading import validate

        checked = validate(SubmitOptions, options or {}, "submit")
        show(submit_bots(users, checked).lines(checked.dry_run))
