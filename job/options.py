"""The command line's side of the config: a Typer option per config field, and the job spec
(``BotJob``) of a command line, the same one a one-bot manifest makes.

Each option's flag, type, default and help come from the field (job/config.py), so adding a
field adds its flag. A command gets only the options given on the command line, as
``overrides``: they win over a ``--config`` file, whose values win over the defaults.
"""

from __future__ import annotations

import functools
import inspect
import re
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import typer

from job import config, errors, loading
from job.config import Section
from job.spec import BotJob, UserSpec, bot_job

PANELS = {
    "clean": "Cleaning",
    "prepare": "Data",
    "train": "Training",
    "sampling": "Predictions",
    "wandb": "Weights & Biases",
}


def config_flags(sections: tuple[str, ...]) -> list[tuple[str, str, str, Any]]:
    """(section, field, flag, pydantic field) for every config field the command takes."""
    flags = []
    for section in sections:
        model = config.JobConfig.model_fields[section].annotation  # looked up now: tests swap it
        assert isinstance(model, type) and issubclass(model, Section)
        for name, field in model.model_fields.items():
            flags.append((section, name, flag(model, name), field))
    return flags


def _option(
    section: str, name: str, flag: str, field: Any, param: str | None = None
) -> inspect.Parameter:
    """A Typer option for a config field: its type, default, help and the variable that can
    give it (``envvar`` in the field's extra) come from the field."""
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
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    option = typer.Option(
        *decls,
        help=help_text,
        rich_help_panel=PANELS.get(section),
        envvar=extra.get("envvar"),
        show_envvar=bool(extra.get("envvar")),
    )
    return inspect.Parameter(
        param or f"{section}__{name}",
        inspect.Parameter.KEYWORD_ONLY,
        default=default,
        annotation=Annotated[inner | None if optional else inner, option],
    )


def with_config_options(sections: tuple[str, ...]) -> Callable[[Callable[..., Any]], Any]:
    """Add an option per config field of ``sections``; the command gets the ones given on the
    command line as ``overrides`` ({section: {field: value}})."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
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

        return _signed(command, func, "overrides", generated)

    return decorate


def _signed(
    command: Callable[..., Any],
    func: Callable[..., Any],
    taken: str,
    generated: list[inspect.Parameter],
) -> Callable[..., Any]:
    """``command`` with ``func``'s own parameters but ``taken`` (what ``command`` passes it
    instead), then ``generated``: the signature and annotations Typer reads its options from."""
    hints = typing.get_type_hints(func, include_extras=True)
    params = [
        p.replace(annotation=hints[p.name])
        for p in inspect.signature(func).parameters.values()
        if p.name != taken
    ] + generated
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command


def with_options_of(model: type[Section]) -> Callable[[Callable[..., Any]], Any]:
    """Add an option per field of ``model`` (submit's); the command gets their values, given
    or default, as ``options`` (a dict for ``loading.validate``: the one place they are
    checked)."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        generated = [
            _option("", name, flag(model, name), field, param=name)
            for name, field in model.model_fields.items()
        ]

        @functools.wraps(func)
        def command(**kwargs: Any) -> Any:
            options = {p.name: kwargs.pop(p.name) for p in generated}
            return func(options=options, **kwargs)

        return _signed(command, func, "options", generated)

    return decorate


# Options every bot command shares
Users = Annotated[
    list[str],
    typer.Argument(
        help="Handles (Twitter: ann; Bluesky: alice.bsky.social; Mastodon: @bob@mastodon.social),"
        " one bot for all of them."
    ),
]
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
Bluesky = Annotated[
    bool,
    typer.Option(
        "--bluesky",
        help="Bluesky users without a file source: their public posts, no login"
        " (BLUESKY_APPVIEW_URL, else Bluesky's public AppView).",
    ),
]
Mastodon = Annotated[
    bool,
    typer.Option(
        "--mastodon",
        help="Mastodon users without a file source: their public posts from their server, no"
        " token (MASTODON_URL, else https://HOST).",
    ),
]


def online(api: bool, bluesky: bool, mastodon: bool) -> list[str]:
    """The online sources the flags ask for (spec.py ONLINE's values)."""
    return [name for name, on in (("api", api), ("bluesky", bluesky), ("mastodon", mastodon)) if on]


ConfigFile = Annotated[
    Path | None,
    typer.Option("--config", help="YAML with config sections (as in a manifest); flags win."),
]
Verbose = Annotated[
    bool, typer.Option("--verbose", "-v", help="Debug log lines, and a failure's traceback.")
]


def bot_job_from_args(
    users: list[str],
    archives: list[str],
    jsonls: list[str],
    online: list[str],
    config_file: Path | None,
    overrides: dict[str, dict[str, Any]],
    hub_repo: str | None = None,
    contact: str | None = None,
) -> BotJob:
    """The BotJob of a command line: the same one a one-bot manifest makes."""
    from job.data.sources import user_specs

    data: dict[str, Any] = {}
    if config_file is not None:
        if not config_file.is_file():
            raise errors.InputNotFound(f"--config {config_file}: no such file")
        loaded = loading.load_yaml(config_file.read_text(encoding="utf-8"), str(config_file))
        if not isinstance(loaded, dict):
            raise errors.BadConfig(f"{config_file}: expected a mapping of config sections")
        data = loaded
    for section, values in overrides.items():
        base = data.get(section)
        data[section] = {**(base if isinstance(base, dict) else {}), **values}
    where = str(config_file) if config_file else "options"
    try:
        job_config = loading.validate(config.JobConfig, data, where)
    except errors.BadConfig as e:
        raise as_typed(e, where, overrides, config_file is None) from None
    specs: list[UserSpec] = user_specs(users, archives, jsonls, online)
    return bot_job(specs, job_config, hub_repo, contact)


def as_typed(
    error: errors.BadConfig, where: str, overrides: dict[str, dict[str, Any]], flags_only: bool
) -> errors.BadConfig:
    """``error`` in the words the user typed: a field given as a flag is its flag
    (``--replies: ...``, not ``options.clean.replies: ...``), and so is every field a rule of
    its section names (``--lora-merged ... needs --adapter lora``); a file's key stays a key."""
    match = re.fullmatch(rf"{re.escape(where)}\.(\w+)(?:\.(\w+))?(?:\[\d+\])?: (.*)", str(error))
    if match is None:
        return error
    section, name, said = match.groups()
    model = config.JobConfig.model_fields[section].annotation
    if not (isinstance(model, type) and issubclass(model, Section)):
        return error
    given = overrides.get(section, {})
    if name is not None:  # one field's own check
        return errors.BadConfig(f"--{flag(model, name)}: {said}") if name in given else error
    if not (flags_only or given):  # a rule of the section, of a file's keys
        return error
    for field in model.model_fields:
        # "adapter: lora" -> "--adapter lora"; a bare name only where it cannot be prose
        # (lora_merged, not "an adapter")
        bare = "|" + rf"\b{field}\b" if "_" in field else ""
        said = re.sub(
            rf"\b{field}: (\S+){bare}",
            lambda m, f=field: f"--{flag(model, f)}" + (f" {m.group(1)}" if m.group(1) else ""),
            said,
        )
    return errors.BadConfig(said)


# --- A field's flag and help: the flags above, and docs/options.md (options_page.py) ------------


def flag(model: type[Section], name: str) -> str:
    """The command-line flag of a field (without ``--``): its name, or what it says."""
    extra = model.model_fields[name].json_schema_extra
    given = extra.get("flag") if isinstance(extra, dict) else None
    return str(given or model.cli_prefix + name.replace("_", "-"))


def describe(field: Any) -> str:
    """A field's help: its description, and its choices when the description lacks them."""
    text = field.description or ""
    args = [a for a in get_args(field.annotation) if a is not type(None)]
    literal = field.annotation if get_origin(field.annotation) is Literal else None
    literal = literal or next((a for a in args if get_origin(a) is Literal), None)
    if literal is not None:
        choices = [str(c) for c in get_args(literal)]
        if choices[0] not in text:
            text += f" One of: {' | '.join(choices)}."
    return text
