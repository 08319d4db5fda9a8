"""The README is a front door: two screens, and a link to every page under docs/."""

from __future__ import annotations

import re

from tests.helpers import REPO

SCREEN = 50  # lines of a terminal or an editor window, roughly


def test_readme_fits_on_two_screens() -> None:
    assert len((REPO / "README.md").read_text().splitlines()) <= 2 * SCREEN


def test_every_doc_is_linked_from_the_readme_and_every_link_resolves() -> None:
    readme = (REPO / "README.md").read_text()
    links = set(re.findall(r"\]\(([^)#]+\.md)\)", readme))
    assert {f"docs/{p.name}" for p in (REPO / "docs").glob("*.md")} <= links
    for page in [REPO / "README.md", *(REPO / "docs").glob("*.md")]:
        for link in re.findall(r"\]\(([^)#:]+)\)", page.read_text()):
            assert (page.parent / link).exists(), f"{page.name} links to missing {link}"


def test_the_offline_way_is_the_same_everywhere() -> None:
    """What runs with no download is said in one line the Hub's failure ends with, in the
    README, and is what `make demo` runs."""
    from job.training.model import OFFLINE_HINT, TINY_FLAGS

    readme = " ".join((REPO / "README.md").read_text().split())
    makefile = " ".join((REPO / "Makefile").read_text().replace("\\\n", " ").split())
    assert f"`{TINY_FLAGS}` needs no download" in readme
    for flag in ("--base-model tiny", "--learning-rate 3e-3", "--epochs 30"):
        assert flag in TINY_FLAGS and flag in makefile.split("demo: install", 1)[1][:400]
    assert TINY_FLAGS in OFFLINE_HINT


def test_the_readme_says_how_to_reach_the_command() -> None:
    readme = " ".join((REPO / "README.md").read_text().split())
    assert "`.venv/bin/huggingtweets`" in readme and "`source .venv/bin/activate`" in readme
