"""job/errors.py: what an exception from anywhere becomes at the command's boundary."""

from __future__ import annotations

import pytest

from job import errors
from job.errors import classify


@pytest.mark.parametrize(
    "error",
    [
        MemoryError(),
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:121] data. DefaultCPUAllocator: can't allocate"
            " memory: you tried to allocate 28311552000 bytes. Error code 12"
        ),
    ],
    ids=["MemoryError", "torch's allocator"],
)
def test_out_of_memory_is_transient_in_each_of_its_forms(error: BaseException) -> None:
    """torch's CPU allocator under a memory cap raises a RuntimeError: once exit 1."""
    made = classify(error)
    assert made.exit_code == errors.TRANSIENT and str(made) == "out of memory"


def test_an_unknown_error_is_internal_and_quotes_nothing() -> None:
    made = classify(ValueError("the server said: token=hf_secret"))
    assert made.exit_code == errors.INTERNAL and "hf_secret" not in str(made)
