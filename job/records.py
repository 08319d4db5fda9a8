"""The one way to read a JSON record the job keeps in storage: bounded, then typed.

Whoever can write to the output can damage a record (a status, ``latest.json``, a run's
marker, ``job.json``, an opt-out, a checkpoint's metadata or marker, a trainer state). Every
such read goes through ``read_record`` (tests/test_layout.py fails on one that does not):

1. at most ``MAX_RECORD_BYTES`` are read (one ranged GET on S3): a 1 GiB status costs 1 MiB;
2. its nesting is measured before it is parsed (``MAX_DEPTH``): 100,000 ``[`` cost a scan;
3. it is parsed as JSON and validated against the record's pydantic model.

A record that fails any of these raises ``DamagedRecord`` (exit 5, docs/exit-codes.md), which
carries the bytes read, so a caller that can go on without it does (a damaged ``latest.json``
names no run; a damaged opt-out still opts the person out; a takedown still finds the Hub
repos a damaged status names, consent.py). Absent is None.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from job.errors import CorruptInput

if TYPE_CHECKING:
    from job.storage import Storage

# A status naming 10,000 Hub repos is ~500 KB; a run's marker of a sharded gpt2-xl ~2 KB.
MAX_RECORD_BYTES = 1 << 20
# The deepest record the job writes nests 5 levels (a status's hub.repos list): 32 is ample,
# and far below the ~1,000 frames at which Python's parser fails.
MAX_DEPTH = 32
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')  # JSON strings: brackets inside them don't nest
_BRACKETS = bytes(range(256)).translate(None, b"[]{}")  # every other byte, to delete

M = TypeVar("M", bound=BaseModel)
log = logging.getLogger(__name__)


class Record(BaseModel):
    """A record's model: keys of other versions are ignored, a wrong type is an error."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class DamagedRecord(CorruptInput):
    """A record that is too large, too deep, not JSON, or not of its model's shape."""

    def __init__(self, where: str, why: str, raw: bytes) -> None:
        super().__init__(f"{where}: a damaged record ({why})")
        self.raw = raw  # what was read (at most MAX_RECORD_BYTES + 1): for salvage


def depth(data: bytes) -> int:
    """How deep ``data``'s brackets nest, strings aside (C-speed: two passes of bytes ops)."""
    brackets = _STRINGS.sub(b"", data).translate(None, _BRACKETS)
    steps = (1 if b in b"[{" else -1 for b in brackets)
    return max(itertools.accumulate(steps, initial=0))


def parse(data: bytes, model: type[M], where: str) -> M:
    """``data`` as a ``model`` record, or DamagedRecord saying why not."""
    if len(data) > MAX_RECORD_BYTES:
        raise DamagedRecord(where, f"over {MAX_RECORD_BYTES >> 20} MiB", data)
    if depth(data) > MAX_DEPTH:
        raise DamagedRecord(where, f"nested over {MAX_DEPTH} levels", data)
    try:
        value: Any = json.loads(data)
    except (ValueError, RecursionError):  # not JSON, not UTF-8
        raise DamagedRecord(where, "not JSON", data) from None
    try:
        return model.model_validate(value)
    except ValidationError as e:
        first = e.errors()[0]
        at = ".".join(str(p) for p in first["loc"]) or "the record"
        raise DamagedRecord(where, f"{at}: {first['type']}", data) from None


def read_record(storage: Storage, key: str, model: type[M]) -> M | None:
    """The record at ``key`` as a ``model``; None where there is none; DamagedRecord where it
    cannot be one (see the module's docstring)."""
    data = storage.get_bytes(key, limit=MAX_RECORD_BYTES)
    if data is None:
        return None
    return parse(data, model, storage.where(key))


def read_or_none(storage: Storage, key: str, model: type[M]) -> M | None:
    """``read_record``, a damaged record read as absent (with a warning that names it): for
    records the job can go on without (``latest.json``: no run named)."""
    try:
        return read_record(storage, key, model)
    except DamagedRecord as e:
        log.warning("%s; read as absent", e)
        return None


class AnyObject(Record):
    """A record of which only its being a JSON object is asked (an opt-out's date, say)."""

    model_config = ConfigDict(extra="allow", frozen=True)
