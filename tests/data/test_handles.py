from __future__ import annotations

import pytest

from job.data.handles import bot_name, validate_handle
from job.errors import InvalidHandle


@pytest.mark.parametrize("handle", ["__wmww", "a", "A_b_9", "x" * 15, "@dril"])
def test_valid(handle: str) -> None:
    assert validate_handle(handle) == handle.lstrip("@")


@pytest.mark.parametrize(
    "handle", ["", "x" * 16, "a-b", "../x", "a b", "a/b", "é", "@", "a.b", "s3://b", "a\n"]
)
def test_invalid(handle: str) -> None:
    with pytest.raises(InvalidHandle):
        validate_handle(handle)


def test_bot_name() -> None:
    assert bot_name(["elonmusk", "@dril"]) == "elonmusk-dril"
    with pytest.raises(InvalidHandle, match="twice"):
        bot_name(["dril", "DRIL"])
    with pytest.raises(InvalidHandle):
        bot_name([])
