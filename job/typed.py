"""Strict loading of dataclasses from plain data (JSON/YAML): a typed config.

Unknown keys, missing required fields and wrong types are errors that name the field's path
(``bots[1].train.epochs: expected a number, got 'four'``). Ints are accepted for floats; bools
are never accepted for numbers (YAML's ``yes`` is a bool).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, TypeVar, Union

from job.errors import BadConfig, JobError

T = TypeVar("T")
_MISSING = dataclasses.MISSING


def from_dict(cls: type[T], data: Any, path: str) -> T:
    if not isinstance(data, dict):
        raise BadConfig(f"{path}: expected a mapping, got {_kind(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    for key in data:
        if key not in fields:
            hint = " (secrets come from the environment)" if _secretish(str(key)) else ""
            raise BadConfig(
                f"{path}.{key}: unknown key{hint}; known keys: {', '.join(sorted(fields))}"
            )
    values = {}
    for name, f in fields.items():
        if name in data:
            values[name] = coerce(hints[name], data[name], f"{path}.{name}")
        elif f.default is _MISSING and f.default_factory is _MISSING:
            raise BadConfig(f"{path}.{name}: required")
    try:
        return cls(**values)
    except JobError as e:  # a check in the class: say where, keep the kind (and exit code)
        raise type(e)(f"{path}: {e}") from e


def coerce(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return from_dict(tp, value, path)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        arms = [a for a in args if a is not type(None)]
        errors = []
        for arm in arms:
            try:
                return coerce(arm, value, path)
            except BadConfig as e:
                errors.append(str(e))
        raise BadConfig(errors[0])
    if origin is Literal:
        if value not in args:
            raise BadConfig(f"{path}: must be one of {', '.join(map(repr, args))}, not {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise BadConfig(f"{path}: expected a list, got {_kind(value)}")
        item = args[0] if args else Any
        items = [coerce(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise BadConfig(f"{path}: expected a mapping, got {_kind(value)}")
        return {
            str(k): coerce(args[1] if args else Any, v, f"{path}.{k}") for k, v in value.items()
        }
    if tp is bool:
        if not isinstance(value, bool):
            raise BadConfig(f"{path}: expected true or false, got {_kind(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadConfig(f"{path}: expected an integer, got {_kind(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BadConfig(f"{path}: expected a number, got {_kind(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise BadConfig(f"{path}: expected a string, got {_kind(value)}")
        return value
    raise TypeError(f"typed.coerce cannot handle {tp!r}")  # a bug in a config class


def _kind(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    if isinstance(value, str) and len(value) > 20:  # might be a pasted secret: don't echo it
        return f"a string of {len(value)} characters"
    return repr(value)


def _secretish(key: str) -> bool:
    return any(word in key.lower() for word in ("token", "secret", "password", "api_key"))
