"""The ``huggingtweets`` command: a thin Typer layer over plain functions.

Heavy libraries (torch, transformers, tweepy, wandb) are imported inside the commands that
need them, so ``huggingtweets --help`` stays fast. Every error a user can act on is a JobError:
one line on stderr and the exit code documented in errors.py.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from job import __version__, errors
from job.handles import HANDLE_RE, validate_handle

app = typer.Typer(
    name="huggingtweets",
    help="Turn a person's tweets into a fine-tuned GPT-2 tweet generator.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
log = logging.getLogger("job")


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
        for handle in targets:
            if handle in sources:
                raise errors.BadConfig(f"@{handle} is given two sources")
            sources[handle] = factory(path)


@app.command()
def prepare(
    users: Annotated[list[str], typer.Argument(help="Twitter handles, one bot for all of them.")],
    out: Annotated[Path, typer.Option(help="Output folder; data goes to OUT/<bot>/data.")] = Path(
        "out"
    ),
    archive: Annotated[
        list[str] | None,
        typer.Option(help="Twitter archive (.zip or folder): PATH, or HANDLE=PATH per user."),
    ] = None,
    jsonl: Annotated[
        list[str] | None,
        typer.Option(
            help="Tweets as JSONL or CSV (a 'text' field per record): PATH or HANDLE=PATH."
        ),
    ] = None,
    api: Annotated[
        bool, typer.Option("--api", help="Users without a file source: Twitter API v2.")
    ] = False,
    min_words: Annotated[int, typer.Option(help="Drop tweets with fewer real words.")] = 3,
    replies: Annotated[
        str, typer.Option(help="keep | drop | strip (keep, without leading @mentions).")
    ] = "keep",
    dedupe: Annotated[bool, typer.Option(help="Drop exact duplicate tweets.")] = True,
    balance_ratio: Annotated[
        float, typer.Option(help="Cap each user at R x the smallest user's tweets; 0 = off.")
    ] = 1.0,
    min_chars: Annotated[int, typer.Option(help="Fail under this much training text.")] = 6000,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Download and clean tweets: OUT/<bot>/data/{raw,clean}.jsonl and stats.json."""
    _setup_logging(verbose)
    try:
        from job.clean import CleanConfig
        from job.prepare import PrepareConfig
        from job.prepare import prepare as run_prepare

        if replies not in ("keep", "drop", "strip"):
            raise errors.BadConfig(f"--replies must be keep, drop or strip, not {replies!r}")
        handles = [validate_handle(u) for u in users]
        sources = _sources(handles, archive or [], jsonl or [], api)
        config = PrepareConfig(
            clean=CleanConfig(min_words=min_words, replies=replies, dedupe=dedupe),  # type: ignore[arg-type]
            balance_ratio=balance_ratio,
            min_chars=min_chars,
        )
        result = run_prepare(sources, out, config)
    except errors.JobError as e:
        _fail(e)
    total = result.stats["total"]
    typer.echo(
        f"prepared {result.bot}: {total['used']} tweets, {total['characters']} characters"
        f" -> {result.data_dir}"
    )


def _sources(handles: list[str], archives: list[str], jsonls: list[str], api: bool) -> dict:
    from job.sources import ArchiveSource, FileSource

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
    try:
        app()
    except errors.JobError as e:  # raised outside a command's own handler
        typer.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
