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


@pytest.mark.parametrize(
    "given",
    [
        "SourDough_Sam", "@SourDough_Sam", "sourdough_sam", "@SOURDOUGH_SAM",
        "https://twitter.com/SourDough_Sam", "https://x.com/sourdough_sam/",
        "x.com/@SourDough_Sam", "http://www.twitter.com/SourDough_Sam",
        "mobile.twitter.com/sourdough_sam",
    ],
)  # fmt: skip
def test_every_form_of_a_handle_is_the_same_person(given: str) -> None:
    """The forms a person gives for themselves (their handle, with @, in another case, their
    profile's address) are one Handle: one opt-out key, one bot."""
    from job.data.handles import Handle, holds

    handle = Handle(given)
    assert handle.key == "sourdough_sam"
    assert handle.same(Handle("sourdough_sam"))
    assert holds("pal_9-SourDough_Sam", handle) and not holds("pal_9", handle)
    assert Handle(handle) is handle  # parsed once


@pytest.mark.parametrize(
    "given",
    [
        "https://evil.com/sam", "twitter.com/a/b", "@@sam", " sam", "sam ", "https://x.com/",
        "x.com/sam?ref=1", "ftp://x.com/sam", "sam-pal", "s" * 16,
    ],
)  # fmt: skip
def test_what_is_no_handle_is_refused(given: str) -> None:
    from job.data.handles import Handle

    with pytest.raises(InvalidHandle):
        Handle(given)


def test_one_person_twice_in_one_bot_is_refused_in_any_form() -> None:
    from job.data.handles import handles_of

    with pytest.raises(InvalidHandle, match="twice"):
        bot_name(handles_of(["Sam", "https://x.com/sam"]))
