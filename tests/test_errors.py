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


HOSTILE = "s3://x/\x1b]52;c;cm0gLXJmIH4K\x07a\rb\u202ec\x85d\u2028e"


def test_an_error_line_shows_what_a_terminal_would_act_on_as_text() -> None:
    """A message quotes records and servers: an escape sequence (OSC 52 writes the clipboard),
    a bidi override in it is written out, never sent raw; a CR or another line break is a
    space (one line)."""
    line = str(errors.BadConfig(f"{HOSTILE}: not a manifest"))
    assert line == "s3://x/\\u001b]52;c;cm0gLXJmIH4K\\u0007a b\\u202ec d e: not a manifest"
    assert line.isprintable()


def test_inert_keeps_newlines_tabs_and_a_json_lines_value() -> None:
    import json

    assert errors.inert("a\tb\nc é 👩‍👩‍👧 \u200f") == "a\tb\nc é 👩‍👩‍👧 \u200f"
    line = errors.inert(json.dumps({"text": HOSTILE}, ensure_ascii=False))
    assert json.loads(line) == {"text": HOSTILE} and line.isprintable()
