"""The code's shape, read from its source (docs/architecture.md): imports point one way; the contract is named once."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import pytest

from engine.contract import schema

ROOT = Path(__file__).resolve().parents[1]
#: Each part of the engine and the parts it may import (``engine/__init__.py`` lists them bottom up).
#: A part is a subpackage of ``engine`` or one of its top-level modules.
FLOORS = {
    "contract": set(),
    "kernels": {"contract"},
    "solver": {"contract"},
    "testing": {"contract", "kernels", "solver"},
    "book": {"contract", "kernels"},
    "rebalance": {"contract", "kernels", "solver", "book"},
    "review": {"contract", "kernels", "book", "rebalance"},
    "simulate": {"contract", "kernels", "solver", "book", "rebalance", "review"},
    "actors": {"contract", "kernels", "solver", "book", "rebalance"},
    "portal": {"contract", "kernels", "solver", "book", "rebalance", "review", "simulate"},
    "warmup": {"contract", "kernels", "solver", "book", "rebalance", "simulate", "actors"},
    "cli": {"contract", "kernels", "solver", "book", "rebalance", "review", "simulate", "actors", "testing",
            "warmup", "portal"},
}
#: Pure numerics: neither ray nor storage, directly or through any module of ours they import.
PURE = ("contract", "kernels", "solver", "rebalance", "testing")
STORAGE = {"fsspec", "s3fs", "deltalake"}


def _modules(paths):
    for path in paths:
        target = ROOT / path
        yield from (sorted(target.rglob("*.py")) if target.is_dir() else [target] if target.exists() else [])


def _name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(path: Path, package: str = "") -> set[str]:
    """Every module ``path`` imports, anywhere in it (inside functions too), as dotted names.

    ``from a.b import c`` is ``a.b.c`` where that is a module of ours, else ``a.b``.
    """
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            for alias in node.names:
                names.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in SOURCES else base)
    return names


def _package(path: Path) -> str:
    return _name(path) if path.name == "__init__.py" else _name(path).rpartition(".")[0]


SOURCES = {_name(p): p for p in _modules(["engine", "jobs", "benchmarks"])}
#: module -> the modules of ours it imports.
GRAPH = {name: {m for m in _imported(path, _package(path)) if m in SOURCES and m != name}
         for name, path in SOURCES.items()}


def _imports(path: Path) -> set[str]:
    return {name.split(".")[0] for name in _imported(path)}


def _part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "engine" and len(parts) > 1 else None


def _reachable(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        for nxt in GRAPH[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_every_part_of_the_engine_has_a_floor():
    parts = {_part(m) for m in SOURCES if m.startswith("engine.")} - {None}
    assert parts == set(FLOORS), f"parts without a floor in FLOORS: {parts - set(FLOORS)}"


@pytest.mark.parametrize("module", sorted(m for m in SOURCES if _part(m)))
def test_imports_point_down(module):
    """A part imports only the parts below it (FLOORS), and never jobs/ or benchmarks/."""
    part = _part(module)
    wrong = sorted(m for m in GRAPH[module] if _part(m) not in FLOORS[part] | {part})
    assert not wrong, f"{module} ({part}) may import only {sorted(FLOORS[part])}, imports {wrong}"


def test_modules_of_ours_import_no_cycle():
    cyclic = sorted(m for m in GRAPH if m in _reachable(m))
    assert not cyclic, f"modules on an import cycle: {cyclic}"


@pytest.mark.parametrize("module", sorted(m for m in SOURCES if _part(m) in PURE))
def test_pure_modules_reach_no_ray_and_no_storage(module):
    reached = {module} | _reachable(module)
    touching = sorted(m for m in reached if _imports(SOURCES[m]) & ({"ray"} | STORAGE))
    assert not touching, f"{module} reaches ray or storage through {touching}"


def test_only_the_book_touches_storage():
    touching = {m for m, p in SOURCES.items() if _imports(p) & STORAGE}
    assert all(_part(m) == "book" for m in touching), touching


def test_only_actors_and_jobs_import_ray():
    importing = {m for m, p in SOURCES.items() if "ray" in _imports(p) and not m.startswith("benchmarks.")}
    assert all(_part(m) == "actors" or m.startswith("jobs.") for m in importing), importing


def test_the_layer_test_sees_a_forbidden_arrow(tmp_path):
    """The checks above find what they look for: a planted upward import is caught."""
    planted = tmp_path / "planted.py"
    planted.write_text("import ray\nfrom engine.review.report import make_report\n")
    assert "engine.review.report" in _imported(planted) and "ray" in _imports(planted)
    assert _part("engine.review.report") not in FLOORS["rebalance"]


def test_column_names_are_spelled_in_schema_only():
    """A column name as a bare string literal appears at most once outside schema.py."""
    columns = {value for name, value in vars(schema.Col).items() if not name.startswith("_")}
    counts: Counter[str] = Counter()
    where: dict[str, list[str]] = {}
    for path in _modules(["engine", "jobs"]):
        if path.name == "schema.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in columns:
                counts[node.value] += 1
                where.setdefault(node.value, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    repeated = {name: where[name] for name, count in counts.items() if count > 1}
    assert not repeated, f"use schema.Col instead of these literals: {repeated}"
