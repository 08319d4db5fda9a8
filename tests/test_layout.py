"""The package's shape: recipes and the command on top, nothing below them imports them."""

from __future__ import annotations

import ast
import functools

from tests.helpers import REPO

RECIPES = {"job.prepare", "job.run", "job.task", "job.generate"}
TOP = {
    "job.cli",
    "job.options",
    "job.options_page",
    "job.__main__",
}  # the command line, above the recipes


@functools.cache
def tree(path) -> ast.Module:
    """A file's syntax tree, parsed once for every rule (read, never changed)."""
    return ast.parse(path.read_text())


@functools.cache
def imports(path) -> frozenset[str]:
    """Every module a file imports, at the top, in a function, or for type checking."""
    found: set[str] = set()
    for node in ast.walk(tree(path)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return frozenset(found)


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


def graph() -> dict[str, set[str]]:
    """Each job module and the job modules it imports (anywhere in the file)."""
    found = modules()
    edges: dict[str, set[str]] = {}
    for name, path in found.items():
        edges[name] = set()
        for imported in imports(path):
            parts = imported.split(".")
            for k in range(len(parts), 0, -1):  # the longest prefix that is a module
                candidate = ".".join(parts[:k])
                if candidate in found and candidate != name:
                    edges[name].add(candidate)
                    break
    edges.pop("job", None)  # the package's __init__ holds only the version
    for deps in edges.values():
        deps.discard("job")
    return edges


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The import circles (Tarjan's strongly connected components of two or more)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


# The layers, lowest first: a module imports only its own layer and those below. Leaves are
# what anything may import (errors, writing files, deadlines, storage, handles, the GPT-2
# table); the typed config only leaves; data, training and outputs the config and leaves;
# cloud (runs, status, consent, the Hub, submit) those; the recipes all of it; the command
# line last.
LAYERS = [
    {"job.errors", "job.atomic", "job.deadline", "job.retry", "job.storage", "job.gpt2",
     "job.data.handles", "job.console", "job.loading", "job.base", "job.records", "job.workspace",
     "job.inventory", "job.behind", "job.temporary"},
    {"job.config", "job.spec"},
    {"job.data", "job.training", "job.outputs"},
    {"job.cloud"},
    {"job.prepare", "job.run", "job.task", "job.generate", "job.preflight"},
    {"job.cli", "job.options", "job.options_page", "job.__main__"},
]  # fmt: skip


def layer(module: str) -> int:
    for rank, members in enumerate(LAYERS):
        if any(module == m or module.startswith(m + ".") for m in members):
            return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def test_no_import_circle() -> None:
    assert circles(graph()) == []


def test_the_rule_catches_a_circle() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_import_points_down_or_across() -> None:
    # data, training and outputs are one layer: a sibling package may use another's pieces
    # (the card reads the data's stats), never a layer above.
    up = {
        name: sorted(d for d in deps if layer(d) > layer(name))
        for name, deps in graph().items()
        if any(layer(d) > layer(name) for d in deps)
    }
    assert up == {}


def test_the_config_imports_only_leaves() -> None:
    deps = graph()["job.config"]
    assert deps and all(layer(d) == 0 for d in deps), sorted(deps)
    # declarations only: the job's sections and submit's options, each field with its reason
    assert len((REPO / "job" / "config.py").read_text().splitlines()) < 450


def test_the_habits_a_maintainer_expects() -> None:
    """A license that says what pyproject says, and a pre-commit config that runs what
    `make lint` runs."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "Apache License" in (REPO / "LICENSE").read_text()
    assert project["project"]["license"]["text"] == "Apache-2.0"
    hooks = (REPO / ".pre-commit-config.yaml").read_text()
    lint = (REPO / "Makefile").read_text().split("\nlint: install\n", 1)[1].split("\n\n", 1)[0]
    for command in ("ruff check", "ruff format --check", "mypy"):
        assert command in lint and f".venv/bin/{command}" in hooks
    # one version, and one Python floor for every tool
    assert project["project"]["dynamic"] == ["version"]
    floor = project["project"]["requires-python"].removeprefix(">=")
    assert project["tool"]["mypy"]["python_version"] == floor
    assert project["tool"]["ruff"]["target-version"] == "py" + floor.replace(".", "")


# What a module may import inside a function: these libraries (seconds of imports, or a
# server's client), and project modules that load one at import. The command line (TOP) is
# the exception: `--help` and a refused flag answer without importing the recipes.
HEAVY_LIBRARIES = {
    "torch", "transformers", "accelerate", "deepspeed", "wandb", "huggingface_hub", "boto3",
    "botocore", "tweepy", "PIL", "fontTools", "httpx2", "rich", "safetensors", "tokenizers",
}  # fmt: skip


def top_level_imports(path) -> set[str]:
    """What a file imports when it is imported: at the top, and in the blocks that run then
    (``with``, ``try``); not in functions, not for type checking."""
    found = set()
    todo = list(tree(path).body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
        elif isinstance(node, (ast.With, ast.Try)):
            todo += [*node.body, *getattr(node, "orelse", []), *getattr(node, "finalbody", [])]
            todo += [s for handler in getattr(node, "handlers", []) for s in handler.body]
    return found


def heavy_modules() -> set[str]:
    """The job modules whose import loads a heavy library, directly or through another."""
    found = modules()
    direct = {name: top_level_imports(path) for name, path in found.items()}
    heavy = {
        n
        for n, imported in direct.items()
        if any(i.split(".")[0] in HEAVY_LIBRARIES for i in imported)
    }
    edges = graph()
    changed = True
    while changed:  # a module that imports a heavy one at the top is heavy too
        changed = False
        for name, imported in direct.items():
            if name not in heavy and any(d in heavy and d in imported for d in edges.get(name, ())):
                heavy.add(name)
                changed = True
    return heavy


def test_a_light_project_module_is_imported_at_the_top() -> None:
    found, heavy = modules(), heavy_modules()
    late = []
    for name, path in found.items():
        if name in TOP:
            continue
        for function in ast.walk(tree(path)):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("job"):
                    targets = {f"{node.module}.{a.name}" for a in node.names}
                    modules_named = {t if t in found else node.module for t in targets}
                    light = sorted(m for m in modules_named if m not in heavy)
                    if light:
                        late.append(f"{name}:{node.lineno} imports {', '.join(light)}")
    assert late == []


# --- One handle, one way to read a record (issue "Consent by design") ----------------------

# Where a handle enters as the text a person gave: the command line and the parser itself.
HANDLE_BOUNDARY = {"job/cli.py", "job/options.py", "job/data/handles.py"}


def test_no_function_below_the_boundary_takes_a_bare_string_for_a_handle() -> None:
    """Every parameter named ``handle`` or ``handles`` below the command line is a Handle (or
    a collection of them): parsed once where it entered, so ``@``, case and a profile's
    address mean the same person in every consent, naming and storage function."""
    bare = []
    for path in sorted((REPO / "job").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if rel in HANDLE_BOUNDARY:
            continue
        for node in ast.walk(tree(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args
                for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
                    if arg.arg in ("handle", "handles"):
                        shown = ast.unparse(arg.annotation) if arg.annotation else ""
                        if "Handle" not in shown:
                            bare.append(f"{rel}:{node.lineno} {node.name}({arg.arg}: {shown})")
    assert bare == [], bare


# Reads of bytes the job keeps in storage, outside records.py, and why each is not a record.
RAW_READS = {
    "job/storage.py": "the storage itself: inputs (read_uri) and runs (download) by their bytes",
    "job/cloud/submit.py": "a status's bytes kept to put back as they were (bounded)",
}
# json.loads outside records.py: none of these is a record the job keeps in storage
PARSES = {
    "job/data/tweets.py": "a person's tweets (an input, bounded by its reader)",
    "job/training/model.py": "GPT-2's vocabulary file that --tokenizer names",
    "job/training/strategy.py": "the DeepSpeed configs the package ships",
    "job/outputs/model_folder.py": "the model folder's files the run itself just wrote",
    "job/atomic.py": "the local lock's holder (any damage: taken as no holder)",
    "job/cloud/kubernetes.py": "kubectl's own answer",
    "job/records.py": "the one reader",
    "job/generate.py": "a bot's training tweets (clean.jsonl), for the n-gram guard",
    "job/outputs/browser.py": "the settings of the Space page the run itself just wrote",
}


def test_every_record_read_goes_through_records() -> None:
    """A status, ``latest.json``, a marker, ``job.json``, an opt-out, a checkpoint's metadata,
    marker or trainer state: read through job/records.py (bounded, then typed), never by
    ``get_bytes`` and ``json.loads`` of their own."""
    raw, parsed = [], []
    for path in sorted((REPO / "job").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        for node in ast.walk(tree(path)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                name = node.func.attr
                if name == "get_bytes" and rel not in (*RAW_READS, "job/records.py"):
                    raw.append(f"{rel}:{node.lineno}")
                is_json = isinstance(node.func.value, ast.Name) and node.func.value.id == "json"
                if is_json and name in ("loads", "load") and rel not in PARSES:
                    parsed.append(f"{rel}:{node.lineno}")
    assert raw == [] and parsed == [], (raw, parsed)


# Where the package may write to stdout or stderr other than through console.show (which makes
# what it prints inert), and why.
PRINTS = {
    "job/console.py": "show itself",
    "job/errors.py": "the error line: its message is inert when made (JobError)",
    "job/options_page.py": "docs/options.md, from the config's own fields",
    "job/outputs/browser.py": "the export's answer to the run that started it, a JSON line",
    "job/training/launch.py": "the command line it relaunches under torchrun, the user's own",
}


def test_every_line_the_package_prints_goes_through_show() -> None:
    """A line a command prints quotes records, inputs and servers: through console.show, which
    writes what a terminal would act on (an escape sequence, a CR) as text."""
    found, allowed = [], set()
    for path in sorted((REPO / "job").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        for node in ast.walk(tree(path)):
            if not isinstance(node, ast.Call):
                continue
            named = ast.unparse(node.func)
            if named in ("print", "typer.echo", "sys.stdout.write", "sys.stderr.write", "echo"):
                if rel in PRINTS:
                    allowed.add(rel)
                else:
                    found.append(f"{rel}:{node.lineno} {named}")
    assert found == []
    assert allowed == set(PRINTS)  # each exception still prints: none kept by mistake
