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


@pytest.mark.parametrize(
    "code", [errors.INVALID_HANDLE, errors.BAD_CONFIG, errors.OPTED_OUT, errors.TRANSIENT, 130]
)
def test_a_code_another_process_of_the_job_exits_with_is_its_error_again(code: int) -> None:
    """What outputs/browser.py's export process says comes back as the error a bot in this
    process would have raised: the same class, its code and its line."""
    made = errors.of_code(code, "what it said")
    assert made.exit_code == code and type(made).__dict__["exit_code"] == code
    assert str(made).startswith("what it said")


def test_a_code_of_no_error_is_internal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token_value")
    for code in (errors.INTERNAL, 99):
        made = errors.of_code(code, "said hf_secret_token_value")
        assert type(made) is errors.InternalError and "hf_secret" not in str(made)
