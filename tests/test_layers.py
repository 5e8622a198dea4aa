"""The code's shape, read from its source (STYLE.md): imports point one way; the contract is named once."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import pytest

from engine import schema

ROOT = Path(__file__).resolve().parents[1]
PURE = ["engine/schema.py", "engine/config.py", "engine/errors.py", "engine/validate.py",
        "engine/targets.py", "engine/problem.py", "engine/screen_window.py", "engine/synth.py", "engine/kernels",
        "engine/lines.py", "engine/proposals.py",
        "engine/solver"]
STORAGE = {"fsspec", "s3fs"}


def _modules(paths):
    for path in paths:
        target = ROOT / path
        yield from (sorted(target.rglob("*.py")) if target.is_dir() else [target] if target.exists() else [])


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", list(_modules(PURE)), ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_modules_touch_no_ray_and_no_storage(path):
    assert not _imports(path) & ({"ray"} | STORAGE)


def test_only_book_and_store_touch_storage():
    touching = {str(p.relative_to(ROOT)) for p in _modules(["engine", "jobs"]) if _imports(p) & STORAGE}
    assert touching <= {"engine/book.py", "engine/store.py"}


def test_only_actors_and_jobs_import_ray():
    importing = {str(p.relative_to(ROOT)) for p in _modules(["engine"]) if "ray" in _imports(p)}
    assert all(p.startswith("engine/actors/") for p in importing), importing


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
