"""Reading configs: YAML (and JSON) as people write it, and pydantic's errors as one line each.

Strict: an unknown key, a missing field or a wrong type is a ``BadConfig`` that names the
field's path (``manifest.bots[1].train.epochs: expected a number, got 'four'``). Ints are
accepted for floats; bools never for numbers (YAML's ``yes`` is a bool). Values are not echoed
when they are long: they might be pasted secrets. A leaf: it knows no config of the job's.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any, TypeVar, get_args

from pydantic import BaseModel, ValidationError

from job.errors import BadConfig, JobError


class Carried(ValueError):
    """A JobError raised inside a validator: pydantic only locates ValueErrors, and the
    error's own kind (and exit code) must survive."""

    def __init__(self, error: JobError) -> None:
        super().__init__(str(error))
        self.error = error


def _carried(check: Callable[[str], str], value: str) -> str:
    """``check(value)`` inside a validator, its JobError carried through pydantic."""
    try:
        return check(value)
    except JobError as e:
        raise Carried(e) from None


# --- Loading --------------------------------------------------------------------------------

M = TypeVar("M", bound=BaseModel)


# PyYAML recurses ~6 frames a level; a manifest needs ~6 levels. A bound well below Python's
# 1,000 frames turns a hostile 5,000-deep document into an error in 0.1 s instead of 1.7 s.
YAML_FRAMES = 400


@functools.cache
def _loader() -> Any:
    """PyYAML's safe loader, reading numbers as people write them: YAML 1.1 takes ``5e-5`` and
    ``1e3`` (no dot) for strings; YAML 1.2 and JSON, as here, for numbers."""
    import yaml

    # libyaml's parser where PyYAML has it (4 s for a 50,000-bot manifest, 13 s without)
    class Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
        list("-+0123456789."),
    )
    return Loader


def load_yaml(text: str, source: str) -> Any:
    import sys

    import yaml

    depth, frame = 0, sys._getframe()
    while frame.f_back is not None:
        depth, frame = depth + 1, frame.f_back
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(min(limit, depth + YAML_FRAMES))
    try:
        return yaml.load(text, Loader=_loader())  # a SafeLoader; JSON too
    except yaml.YAMLError as e:
        raise BadConfig(f"{source}: not valid JSON or YAML: {' '.join(str(e).split())}") from e
    except RecursionError:
        raise BadConfig(f"{source}: nested too deeply") from None
    finally:
        sys.setrecursionlimit(limit)


def validate(model: type[M], data: Any, path: str) -> M:
    """``model`` from plain data, or a JobError naming the field's path."""
    try:
        return model.model_validate(data)
    except ValidationError as e:  # checks raising a JobError reach here as Carried
        raise _error(model, e, path) from None


def _error(model: type[BaseModel], e: ValidationError, path: str) -> JobError:
    found = e.errors()
    # An unknown key first: it usually explains the other errors (a misspelt field is missing).
    error = next((x for x in found if x["type"] == "extra_forbidden"), found[0])
    loc = [p for p in error["loc"] if p not in ("function-after", "literal")]
    where = path + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)
    kind, value = error["type"], error.get("input")
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        known = _fields_at(model, loc[:-1])
        hint = " (secrets come from the environment)" if _secretish(str(loc[-1])) else ""
        return BadConfig(f"{where}: unknown key{hint}; known keys: {', '.join(known)}")
    if kind == "missing":
        return BadConfig(f"{where}: required")
    if kind == "model_type" or kind == "dict_type":
        return BadConfig(f"{where}: expected a mapping, got {_kind(value)}")
    if kind == "literal_error":
        choices = ", ".join(repr(c) for c in _literal_choices(ctx.get("expected", "")))
        return BadConfig(f"{where}: must be one of {choices}, not {_kind(value)}")
    if kind == "value_error":
        original = ctx.get("error")
        if isinstance(original, Carried):  # a handle check: keep its exit code
            return type(original.error)(f"{where}: {original.error}")
        return BadConfig(f"{where}: {original}")
    expected = {
        "float_type": "a number",
        "float_parsing": "a number",
        "int_type": "an integer",
        "int_parsing": "an integer",
        "int_from_float": "an integer",
        "bool_type": "true or false",
        "bool_parsing": "true or false",
        "string_type": "a string",
        "list_type": "a list",
    }.get(kind)
    if expected:
        return BadConfig(f"{where}: expected {expected}, got {_kind(value)}")
    return BadConfig(f"{where}: {error['msg']}")  # bounds (gt, ge...): pydantic's own words


def _fields_at(model: type[BaseModel], loc: list[Any]) -> list[str]:
    """The keys the model allows at ``loc``, for an unknown key's message."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = field.annotation
        for arg in get_args(current) or ():  # list[BotSpec], X | None
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                current = arg
    return sorted(getattr(current, "model_fields", {}))


def _literal_choices(expected: str) -> list[str]:
    return re.findall(r"'([^']*)'", expected)


def _kind(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    if isinstance(value, str) and len(value) > 20:  # might be a pasted secret: don't echo it
        return f"a string of {len(value)} characters"
    return repr(value)


def _secretish(key: str) -> bool:
    return any(word in key.lower() for word in ("token", "secret", "password", "api_key"))
