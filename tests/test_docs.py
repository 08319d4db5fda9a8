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
