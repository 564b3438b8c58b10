"""The package's layout rules, checked statically (the source is read with ``ast``; no
refusalscope module is imported to find its imports).

Rules, one test each:

* layers — a module imports only from its own layer or lower ones (``LAYERS``); ``data``
  and ``judges``, and ``evaluation`` and ``testing``, do not import each other; the
  ``organism`` client imports layers 0–3 and is imported only by ``pipeline``; within
  ``stages`` a stage imports only earlier stages (``STAGE_ORDER``). Every module has a
  place: a new top-level module or stage module fails here until it is added to
  ``LAYERS`` or ``STAGE_ORDER``.
* no_cycles — no import cycle among refusalscope modules.
* module_length — no module over ``MAX_MODULE_LINES`` lines but the word lists.
* function_length — no function or method over ``MAX_FUNCTION_LINES`` lines, counted
  from its ``def`` line to its last line (decorators excluded), unless its docstring says
  why with the phrase "Long because", e.g. ``Long because the ten steps share state.``
* no_outside_docs — no comment or docstring refers to documents outside the repository.
* tests_mirror_package — ``tests/P/`` is a package for each sub-package ``P``.

Imports counted: ``import refusalscope.x`` and ``from refusalscope.x import y`` (absolute
or relative), inside functions too, but not under ``if TYPE_CHECKING:``. ``from pkg import
name`` imports module ``pkg.name`` when that is a module or package, else ``pkg``;
importing a package means importing its ``__init__.py``. The top ``refusalscope``
package is a lazy facade: it is neither checked as an importer nor counted as imported.
"""

from __future__ import annotations

import ast
import io
import tokenize
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "refusalscope"
PACKAGE_DIR = ROOT / "src" / PACKAGE

# Top-level module or sub-package of refusalscope -> layer.
LAYERS = {
    "runtime": 0,
    "data": 1,
    "judges": 1,
    "stages": 2,
    "evaluation": 3,
    "testing": 3,
    "analysis": 4,
    "report": 5,
    "pipeline": 6,
    "export": 7,
    "cli": 7,
    "bench": 7,
    "__main__": 7,
}
APART = [{"data", "judges"}, {"evaluation", "testing"}]  # same layer, no imports between
CLIENT = "organism"  # imports layers 0..CLIENT_MAX_LAYER; imported only by CLIENT_IMPORTERS
CLIENT_MAX_LAYER = 3
CLIENT_IMPORTERS = {"pipeline"}
# Modules of refusalscope.stages, earliest first; a stage module not listed here fails
# the layers test until it is placed.
STAGE_ORDER = ["prompts", "direction", "candidates", "attribution", "features"]

MAX_MODULE_LINES = 400
LONG_MODULES = {"organism/vocab.py"}  # word lists, relative to PACKAGE_DIR
MAX_FUNCTION_LINES = 60
LONG_MARK = "Long because"
OUTSIDE_DOCS = ["METHOD.md", "ORGANISM.md", "STYLE.md", "../shared"]
MIRRORED = [
    "runtime",
    "stages",
    "evaluation",
    "analysis",
    "judges",
    "data",
    "report",
    "pipeline",
    "organism",
    "export",
    "cli",
]


# ------------------------------------------------------------------ modules and imports
@cache
def module_files() -> dict[str, Path]:
    """Dotted name -> source file of every module and package under src/refusalscope."""
    files = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def shown(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def is_package(name: str) -> bool:
    return module_files()[name].name == "__init__.py"


def runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of ``tree`` but those under ``if TYPE_CHECKING:`` (its ``else`` runs)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and is_type_checking(node.test):
            stack += node.orelse
        else:
            stack += ast.iter_child_nodes(node)


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def from_base(node: ast.ImportFrom, importer: str) -> str | None:
    """The module a ``from ... import`` reads from, made absolute (None: beyond the top)."""
    if not node.level:
        return node.module
    anchor = importer.split(".") if is_package(importer) else importer.split(".")[:-1]
    if node.level - 1 >= len(anchor):
        return None
    base = anchor[: len(anchor) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imported_names(node: ast.AST, importer: str) -> Iterator[str]:
    """Modules one import statement imports (not only refusalscope's)."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and (base := from_base(node, importer)):
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            yield submodule if submodule in module_files() else base


def is_ours(name: str) -> bool:
    return name.startswith(f"{PACKAGE}.")  # the facade ``refusalscope`` itself is ignored


@cache
def import_graph() -> dict[str, set[str]]:
    """Importer -> the refusalscope modules it imports (existing or not), facade left out."""
    graph = {}
    for name, path in module_files().items():
        if name == PACKAGE:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        graph[name] = {
            imported
            for node in runtime_nodes(tree)
            for imported in imported_names(node, name)
            if is_ours(imported) and imported != name
        }
    return graph


# ------------------------------------------------------------------ layers
def group(name: str) -> str:
    """``refusalscope.stages.prompts`` -> ``stages``."""
    return name.split(".")[1]


def stage(name: str) -> str | None:
    """``refusalscope.stages.prompts`` -> ``prompts``; None outside stage modules."""
    parts = name.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "stages" else None


def placement_problem(name: str) -> str | None:
    if group(name) not in LAYERS and group(name) != CLIENT:
        return f"{name} (in no layer: add {group(name)!r} to LAYERS or move it)"
    if stage(name) is not None and stage(name) not in STAGE_ORDER:
        return f"{name} (a stage module not in STAGE_ORDER: place it)"
    return None


def stage_problem(importer: str, imported: str) -> str | None:
    first, second = stage(importer), stage(imported)
    if None in (first, second) or first == second or not {first, second} <= set(STAGE_ORDER):
        return None  # the stages package itself, one stage's own modules, or unplaced
    if STAGE_ORDER.index(second) < STAGE_ORDER.index(first):
        return None
    return f"stage {first} may import only earlier stages, and {second} is not earlier"


def edge_problem(importer: str, imported: str) -> str | None:
    """Why ``importer`` may not import ``imported``; None when it may."""
    if imported not in module_files():
        return "no such module"
    a, b = group(importer), group(imported)
    if a == b:
        return stage_problem(importer, imported)
    if b == CLIENT:
        allowed = sorted(CLIENT_IMPORTERS)
        return None if a in CLIENT_IMPORTERS else f"only {', '.join(allowed)} may import {CLIENT}"
    if placement_problem(importer) or placement_problem(imported):
        return None  # reported as unplaced
    if a == CLIENT:
        if LAYERS[b] <= CLIENT_MAX_LAYER:
            return None
        return f"{CLIENT} may import layers 0-{CLIENT_MAX_LAYER}, and {b} is layer {LAYERS[b]}"
    if LAYERS[b] > LAYERS[a]:
        return f"{a} is layer {LAYERS[a]}, {b} is higher: layer {LAYERS[b]}"
    if {a, b} in APART:
        return f"{a} and {b} may not import each other"
    return None


def rule_layers() -> list[str]:
    unplaced = [placement_problem(name) for name in import_graph()]
    edges = [
        f"{importer} -> {imported} ({why})"
        for importer, imports in sorted(import_graph().items())
        for imported in sorted(imports)
        if (why := edge_problem(importer, imported))
    ]
    return [line for line in unplaced if line] + edges


# ------------------------------------------------------------------ cycles
def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that ends where it starts; None when there is none."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt in path:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in done and (cycle := visit(nxt)):
                return cycle
        done.add(path.pop())
        return None

    for node in sorted(graph):
        if node not in done and (cycle := visit(node)):
            return cycle
    return None


def rule_no_cycles() -> list[str]:
    graph = {name: imports & module_files().keys() for name, imports in import_graph().items()}
    cycle = find_cycle(graph)
    return [" -> ".join(cycle)] if cycle else []


# ------------------------------------------------------------------ sizes
def rule_module_length() -> list[str]:
    problems = []
    for path in module_files().values():
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_MODULE_LINES and path.relative_to(PACKAGE_DIR).as_posix() not in LONG_MODULES:
            problems.append(f"{shown(path)} ({n} lines > {MAX_MODULE_LINES})")
    return problems


def functions(node: ast.AST, prefix: str = "") -> Iterator[tuple[str, ast.AST]]:
    """(qualified name, node) of every function and method under ``node``, nested too."""
    for child in ast.iter_child_nodes(node):
        name = f"{prefix}{getattr(child, 'name', '')}"
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield name, child
            yield from functions(child, f"{name}.<locals>.")
        elif isinstance(child, ast.ClassDef):
            yield from functions(child, f"{name}.")
        else:
            yield from functions(child, prefix)


def rule_function_length() -> list[str]:
    problems = []
    for path in module_files().values():
        for name, node in functions(ast.parse(path.read_text(encoding="utf-8"))):
            n = node.end_lineno - node.lineno + 1
            if n > MAX_FUNCTION_LINES and LONG_MARK not in (ast.get_docstring(node) or ""):
                problems.append(f"{shown(path)}:{node.lineno} {name} ({n} lines)")
    return problems


# ------------------------------------------------------------------ references
def comments_and_docstrings(source: str) -> Iterator[tuple[int, str]]:
    """(first line, text) of every comment and docstring of a module; a docstring is any
    string standing alone as a statement (attribute docstrings too)."""
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            yield token.start[0], token.string
    for node in ast.walk(ast.parse(source)):
        value = node.value if isinstance(node, ast.Expr) else None
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            yield node.lineno, value.value


def rule_no_outside_docs() -> list[str]:
    problems = []
    for path in module_files().values():
        for line, text in sorted(comments_and_docstrings(path.read_text(encoding="utf-8"))):
            for doc in OUTSIDE_DOCS:
                if doc in text:
                    at = line + text[: text.index(doc)].count("\n")
                    problems.append(f"{shown(path)}:{at} mentions {doc}")
    return problems


# ------------------------------------------------------------------ tests
def rule_tests_mirror_package() -> list[str]:
    missing = [ROOT / "tests" / name / "__init__.py" for name in MIRRORED]
    return [f"{shown(path)} is missing" for path in missing if not path.is_file()]


RULES: list[Callable[[], list[str]]] = [
    rule_layers,
    rule_no_cycles,
    rule_module_length,
    rule_function_length,
    rule_no_outside_docs,
    rule_tests_mirror_package,
]


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.__name__.removeprefix("rule_"))
def test_layout(rule: Callable[[], list[str]]) -> None:
    if problems := rule():
        pytest.fail(f"{len(problems)} violation(s):\n" + "\n".join(problems), pytrace=False)
