"""The rooms of the house and what each may import (docs/architecture.md), checked on the source, not on trust.

Imports are read with ``ast`` from every module of ``gateway`` and ``simulators``; imports under
``if TYPE_CHECKING:`` are annotations only and do not count as arrows at run time, nor for cycles.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("gateway", "simulators")
MAX_LINES_IN_MAPEK = 40


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    tree: ast.Module


def _modules() -> dict[str, Module]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = Module(name, path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return found


MODULES = _modules()


def _type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in ast.iter_child_nodes(tree):
        if _type_checking_block(node):
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        else:
            yield from _import_nodes(node)


def _imports(module: Module) -> set[str]:
    """The project modules a module imports at run time (at any depth: a function's import is an arrow too)."""
    out: set[str] = set()
    for node in _import_nodes(module.tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            package = module.name.split(".")
            if module.path.name != "__init__.py":
                package = package[:-1]
            base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
        out.add(base)
        out.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES)
    return {name for name in out if name.split(".")[0] in PACKAGES}


def _arrows(source: str, target: str) -> list[str]:
    return sorted(
        f"{m.name} -> {imported}"
        for m in MODULES.values()
        if m.name == source or m.name.startswith(source + ".")
        for imported in _imports(m)
        if imported == target or imported.startswith(target + ".")
    )


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("gateway.domain", "gateway.adapters"),
        ("gateway.domain", "gateway.mapek"),
        ("gateway.domain", "gateway.config"),
        ("gateway.domain", "gateway.cli"),
        ("gateway.domain", "gateway.bootstrap"),
        ("gateway.mapek", "gateway.adapters"),
        ("gateway.mapek", "gateway.cli"),
        ("gateway.mapek", "gateway.bootstrap"),
        ("gateway.config", "gateway.mapek"),
        ("gateway.config", "gateway.adapters"),
        ("gateway.config", "gateway.cli"),
        ("gateway.adapters", "gateway.mapek"),
        ("gateway.adapters", "gateway.cli"),
        ("gateway.adapters", "gateway.bootstrap"),
        ("simulators", "gateway.cli"),
        ("simulators", "gateway.mapek"),
        ("simulators", "gateway.adapters"),
        ("simulators", "gateway.bootstrap"),
    ],
)
def test_a_room_does_not_import_what_it_must_not(source: str, target: str) -> None:
    assert _arrows(source, target) == []


def test_there_is_no_import_cycle() -> None:
    graph = {name: {i for i in _imports(m) if i in MODULES and i != name} for name, m in MODULES.items()}
    # A package's __init__ importing its own submodules is how packages re-export, not a cycle between rooms.
    for name, imported in graph.items():
        graph[name] = {i for i in imported if not name.startswith(i + ".")}
    cycles = _cycles(graph)
    assert cycles == [], "\n".join(" -> ".join(c) for c in cycles)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module (or one importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_function_in_mapek_is_longer_than_forty_lines() -> None:
    long = [
        f"{m.name}.{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for m in MODULES.values()
        if m.name.startswith("gateway.mapek")
        for node in ast.walk(m.tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_LINES_IN_MAPEK
    ]
    assert long == []


def test_the_checks_see_the_arrows_they_forbid() -> None:
    """The reader works: it finds arrows that exist, so an empty list above means none, not a blind reader."""
    assert _arrows("gateway.bootstrap", "gateway.adapters")
    assert _arrows("gateway.mapek", "gateway.domain")
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
