"""References that cannot go stale: every `path.py name` that the package's comments, docstrings
and help texts, the docs and the README cite names a file that exists and, where a name follows
it, a name defined in that file."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

from tests.helpers import REPO

# A file, then (optionally) what in it: a call `name()`, a snake_case or UPPER_CASE name, or any
# backticked one (`delete`). Plain words after a path ("job/run.py reads ...") are prose.
CITED = re.compile(
    r"(?<![\w/.-])((?:[\w-]+/)*[\w-]+\.py)\b`*"
    r"(?:[ ,:]+`*(?:(\w+)\(\)|([a-z]+_[a-z0-9_]+|[A-Z][A-Z0-9_]{2,})\b|(?<=`)(\w+)(?=`)))?"
)
# Files of other projects that the docs name (DeepSpeed's own setup.py), and a project whose
# name is a file's (the Mastodon.py client, data/sources/web.py says why it is not used)
ELSEWHERE = {"setup.py", "Mastodon.py"}
SOURCES = [
    *sorted((REPO / "job").rglob("*.py")),
    *sorted((REPO / "docs").glob("*.md")),
    REPO / "README.md",
    *sorted((REPO / "bench").rglob("*.py")),
]


@cache
def python_files() -> list[Path]:
    return [
        p
        for p in REPO.rglob("*.py")
        if ".venv" not in p.parts and "node_modules" not in p.parts and ".git" not in p.parts
    ]


def resolve(cited: str, source: Path) -> list[Path]:
    """The files ``cited`` may mean: a path from the repo's root, from the package, from the
    citing file's folder, or a file of that name anywhere in the package, tests or bench."""
    found = [
        base / cited for base in (REPO, REPO / "job", source.parent) if (base / cited).is_file()
    ]
    if found or "/" in cited:
        return found
    return [p for p in python_files() if p.name == cited]


@cache
def functions(path: Path) -> set[str]:
    """The functions and classes a file defines: what ``name()`` may cite."""
    return {
        node.name
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
    }


@cache
def defined(path: Path) -> set[str]:
    """Every name a file defines: functions, classes, methods, assignments, its arguments."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.alias):
            names.add(node.asname or node.name.split(".")[-1])
    return names


def stale(sources: list[Path] | None = None) -> list[str]:
    found = []
    for source in SOURCES if sources is None else sources:
        text = source.read_text()
        for m in CITED.finditer(text):
            cited, call, name = m.group(1), m.group(2), m.group(3) or m.group(4)
            if cited.startswith(("test_", "tests/")) or cited in ELSEWHERE:
                continue
            where = f"{source.name}: {m.group(0).strip()}"
            files = resolve(cited, source)
            if not files:
                found.append(f"{where}: no such file")
            elif call and not any(call in functions(f) for f in files):
                found.append(f"{where}: {call}() is not in {cited}")
            elif name and not any(name in defined(f) for f in files):
                found.append(f"{where}: {name} is not in {cited}")
    return found


def test_every_cited_file_and_name_exists() -> None:
    assert stale() == []


def test_the_check_finds_a_stale_reference(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "See train.py batch_size() and model.py ``pretraining_rate``; job/gone.py; and"
        " plan.py batch_size(), gpt2.py ``pretraining_rate``, which are fine. One word in"
        " backticks is a name too: storage.py `delete` is, storage.py `remove` is not."
    )
    found = stale([page])
    assert "page.md: storage.py `remove: remove is not in storage.py" in found
    assert "page.md: train.py batch_size(): batch_size() is not in train.py" in found
    assert "page.md: model.py ``pretraining_rate: pretraining_rate is not in model.py" in found
    assert "page.md: job/gone.py: no such file" in found
    assert len(found) == 4, found
