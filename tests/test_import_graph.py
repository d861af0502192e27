"""The import graph of ``lfeval/``: no cycles, no import against the layer order, no function-level imports of
lfeval modules except for the optional extras (issue 29).

Every module is parsed with :mod:`ast` (nothing is imported). An edge is one imported name: ``from .x import a, b``
is two edges to ``lfeval.<pkg>.x`` (or to the submodules ``a`` and ``b`` where they are modules). Imports inside a
function or lambda are function-level; imports under ``if TYPE_CHECKING:`` are skipped (they never run). Importing
``lfeval.a.b`` also runs the package ``lfeval/a/__init__.py``, which counts as an edge for the cycle check (the
root ``lfeval/__init__.py``, run by every import, does not).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lfeval"

#: lowest first; an lfeval module may import modules of its own layer or of lower layers. ``examples`` is the
#: ``lfeval/examples.py`` facade, ``lfeval`` the package root. The README's Layout section states the same order.
LAYERS = (
    ("errors",), ("registry",), ("validation",), ("memory", "precision", "threads", "draws", "files"), ("modalities",),
    ("encoder",), ("text",), ("data",), ("models",), ("explain",), ("examples",), ("metrics",), ("execution",),
    ("meta",), ("evaluation",), ("report",), ("config",), ("pipeline",), ("diagnostics",), ("cli",), ("lfeval",),
)
LAYER = {name: i for i, group in enumerate(LAYERS) for name in group}

#: the only lfeval modules that may be imported inside a function (by any module above them), and why
FUNCTION_LEVEL_ALLOWED = {
    "lfeval.execution.ray_backend": "the `ray` extra (lfeval[ray]): the Ray executor is loaded only for backend='ray'",
    "lfeval.text": "the `text` extra (lfeval[text]): MiniLM and its tokenizer, loaded only for text data",
}


@dataclass(frozen=True)
class Edge:
    source: str  # importing module, e.g. "lfeval.explain.base"
    target: str  # imported module
    line: int
    in_function: bool
    implicit: bool = False  # a package __init__ run because one of its submodules is imported

    @property
    def where(self) -> str:
        return f"{_path(self.source)}:{self.line}"


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts}


def _path(module: str) -> str:
    return str(MODULES[module].relative_to(ROOT))


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if _is_package(module) else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _owner(name: str):
    """The lfeval module that ``name`` (a dotted import path) loads: its longest prefix that is a module."""
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        candidate = ".".join(parts[:k])
        if candidate in MODULES:
            return candidate
    return None


def _targets(module: str, node) -> list:
    """The lfeval modules one import statement (or ``importlib.import_module("lfeval....")`` call) loads."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = _resolve(module, node)
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
    else:  # a call of import_module / __import__ with a constant name
        names = [node.args[0].value]
    return [t for t in map(_owner, names) if t is not None and t != module]


def _is_type_checking(node) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _is_import_call(node) -> bool:
    if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)):
        return False
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    value = node.args[0].value
    return name in ("import_module", "__import__") and isinstance(value, str) and value.split(".")[0] == "lfeval"


def _edges_of(module: str) -> list:
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    edges = []

    def visit(node, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if _is_type_checking(child):
                for other in child.orelse:  # the else branch does run
                    visit(ast.Module(body=[other], type_ignores=[]), in_function)
                continue
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, (ast.Import, ast.ImportFrom)) or _is_import_call(child):
                for target in _targets(module, child):
                    edges.append(Edge(module, target, child.lineno, nested))
            visit(child, nested)

    visit(tree, False)
    return edges


def _implicit(edge: Edge) -> list:
    """The packages that importing ``edge.target`` runs first (below the root, outside the importer's own)."""
    parts = edge.target.split(".")
    out = []
    for k in range(2, len(parts)):
        package = ".".join(parts[:k])
        if not (edge.source == package or edge.source.startswith(package + ".")):
            out.append(Edge(edge.source, package, edge.line, edge.in_function, implicit=True))
    return out


EDGES = [edge for module in MODULES for edge in _edges_of(module)]


def _layer_key(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "lfeval"


def _cycles(edges: list) -> list:
    """Strongly connected components with more than one module (Tarjan), each as a sorted list."""
    graph = {}
    for e in edges:
        graph.setdefault(e.source, set()).add(e.target)
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def connect(v) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(MODULES):
        if v not in index:
            connect(v)
    return found


def test_every_module_has_a_layer():
    missing = sorted({_layer_key(m) for m in MODULES} - set(LAYER))
    assert not missing, (f"lfeval modules/packages without a layer: {missing}; add them to LAYERS here and to the "
                         "'Layers, lowest first' line of the README's Layout section.")


def test_no_import_cycles():
    """(a) no cycle among lfeval modules, counting module-level and function-level imports."""
    edges = EDGES + [i for e in EDGES for i in _implicit(e)]
    cycles = _cycles(edges)
    lines = []
    for component in cycles:
        members = set(component)
        inner = sorted((e for e in edges if e.source in members and e.target in members),
                       key=lambda e: (e.source, e.line))
        lines.append(" <-> ".join(component) + ":\n" + "\n".join(
            f"    {e.where} imports {e.target}{' (in a function)' if e.in_function else ''}"
            f"{' (its package __init__)' if e.implicit else ''}" for e in inner))
    assert not cycles, "Import cycles:\n" + "\n".join(lines)


def test_imports_follow_the_layer_order():
    """(b) every import goes to the same or a lower layer; a submodule never imports its own package's __init__."""
    bad = []
    for e in EDGES:
        src, dst = LAYER.get(_layer_key(e.source)), LAYER.get(_layer_key(e.target))
        if src is not None and dst is not None and dst > src:
            bad.append(f"{e.where} imports {e.target} (layer {dst + 1}, {_layer_key(e.target)!r}) from layer "
                       f"{src + 1} ({_layer_key(e.source)!r}){' in a function' if e.in_function else ''}")
        elif _is_package(e.target) and e.source.startswith(e.target + "."):
            bad.append(f"{e.where} imports its own package {e.target} (its __init__); import the submodule that "
                       "defines the name instead")
    assert not bad, "Imports against the layer order (lowest first: " + " < ".join(
        ", ".join(g) for g in LAYERS) + "):\n" + "\n".join(bad)


def _allowed(target: str) -> bool:
    return any(target == a or target.startswith(a + ".") for a in FUNCTION_LEVEL_ALLOWED)


def test_function_level_imports_only_for_optional_extras():
    """(c) an lfeval module is imported inside a function only when it is an optional extra (the allow-list)."""
    bad = [f"{e.where} imports {e.target} inside a function" for e in EDGES if e.in_function and not _allowed(e.target)]
    assert not bad, ("Function-level imports of lfeval modules (move them to the top of the module; only "
                     f"{sorted(FUNCTION_LEVEL_ALLOWED)} may be imported in a function):\n" + "\n".join(bad))


def _readme_layers() -> tuple:
    text = (ROOT / "README.md").read_text()
    section = re.search(r"^## Layout\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert section, "README.md has no '## Layout' section"
    line = re.search(r"^Layers, lowest first: (.+?)\.?$", section.group(1), re.M)
    assert line, "The README's Layout section has no line 'Layers, lowest first: errors < registry < ...'"
    return tuple(tuple(n.strip().strip("`") for n in group.split(",")) for group in line.group(1).split("<"))


def test_layer_order_is_the_one_the_readme_states():
    """(d) the order this test enforces is the one the README's Layout section states."""
    assert _readme_layers() == LAYERS


@pytest.mark.parametrize("source, expected", [
    ("from .a import b\n", ["lfeval.x.a"]),
    ("from . import a, c\n", ["lfeval.x.a", "lfeval.x"]),
    ("from .. import errors\n", ["lfeval.errors"]),
    ("import lfeval.x.a as m\n", ["lfeval.x.a"]),
    ("def f():\n    from ..errors import E\n", ["lfeval.errors"]),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..errors import E\n", []),
    ("import importlib\nm = importlib.import_module('lfeval.errors')\n", ["lfeval.errors"]),
])
def test_the_parser_resolves_imports(tmp_path, monkeypatch, source, expected):
    """The graph's own resolution rules, on a made-up package ``lfeval.x`` (modules ``b``, ``a`` and ``c``)."""
    fake = {"lfeval": PACKAGE / "__init__.py", "lfeval.errors": PACKAGE / "errors.py",
            "lfeval.x": tmp_path / "x" / "__init__.py", "lfeval.x.a": tmp_path / "x" / "a.py",
            "lfeval.x.b": tmp_path / "x" / "b.py"}
    fake["lfeval.x.b"].parent.mkdir()
    fake["lfeval.x.b"].write_text(source)
    monkeypatch.setitem(globals(), "MODULES", fake)
    assert [e.target for e in _edges_of("lfeval.x.b")] == expected
