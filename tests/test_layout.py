"""The package's shape: recipes and the command on top, nothing below them imports them."""

from __future__ import annotations

import ast

from tests.helpers import REPO

RECIPES = {"job.prepare", "job.run", "job.batch"}
TOP = {"job.cli", "job.options", "job.__main__"}  # the command line, above the recipes


def imports(path) -> set[str]:
    """Every module a file imports, at the top, in a function, or for type checking."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def modules() -> dict[str, object]:
    package = REPO / "job"
    return {
        ".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
        for p in package.rglob("*.py")
    }


def test_no_module_below_the_recipes_imports_one() -> None:
    found = modules()
    assert set(found) >= RECIPES | TOP
    offenders = {
        name: sorted(imports(path) & (RECIPES | TOP))
        for name, path in found.items()
        if name not in RECIPES | TOP and imports(path) & (RECIPES | TOP)
    }
    assert offenders == {}


def test_recipes_do_not_import_the_command_line() -> None:
    found = modules()
    assert all(not imports(found[r]) & TOP for r in RECIPES)
