"""The canopy command, run as a user would."""

from __future__ import annotations

import json
import sys

from typer.testing import CliRunner

from engine.cli import app

runner = CliRunner()


def test_generate_then_validate(tmp_path):
    out = tmp_path / "book"
    result = runner.invoke(app, ["generate", "--accounts", "300", "--seed", "2", "--out", str(out),
                                 "--bad-fraction", "0.01"])
    assert result.exit_code == 0, result.output
    assert "300" in result.output and (out / "book.json").exists()
    result = runner.invoke(app, ["validate", "--book", str(out)])
    assert result.exit_code == 0, result.output
    assert "rejected with 30 rejection(s)" in result.output
    for rule in ("unknown_security", "missing_price", "stale_price", "unknown_template"):
        assert rule in result.output


def test_generate_refuses_to_overwrite(tmp_path):
    out = tmp_path / "book"
    assert runner.invoke(app, ["generate", "--accounts", "20", "--out", str(out)]).exit_code == 0
    result = runner.invoke(app, ["generate", "--accounts", "20", "--out", str(out)])
    assert result.exit_code == 2
    assert "a book already exists" in result.output
    assert runner.invoke(app, ["generate", "--accounts", "20", "--out", str(out), "--overwrite"]).exit_code == 0


def test_validate_exits_non_zero_on_book_error(tmp_path):
    out = tmp_path / "book"
    assert runner.invoke(app, ["generate", "--accounts", "20", "--out", str(out)]).exit_code == 0
    (out / "book.json").write_text(json.dumps({"schema_version": 1, "as_of": "not a date"}))
    result = runner.invoke(app, ["validate", "--book", str(out)])
    assert result.exit_code == 2
    assert "as_of must be a date" in result.output


def test_validate_missing_book(tmp_path):
    result = runner.invoke(app, ["validate", "--book", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "no book.json" in result.output


def test_bench_solver_smallest_case(tmp_path):
    out = tmp_path / "solver.json"
    result = runner.invoke(app, ["bench", "solver", "--size", "30", "--accounts", "1", "--batch", "2",
                                 "--oracle-households", "1", "--calibration", "1", "--workers", "0",
                                 "--iterations", "500", "--out", str(out)])
    assert result.exit_code == 0, result.output
    cases = json.loads(out.read_text())["cases"]
    assert [(c["securities"], c["accounts_per_household"]) for c in cases] == [(30, 1)]
    assert cases[0]["systems"][0]["worst_objective_gap"] < 1e-4
    assert result.output.strip().splitlines()[-1].startswith("(30, 1): ")


def test_bench_solver_runs_without_the_oracle(tmp_path, monkeypatch):
    """A GPU node has no cvxpy nor OSQP: ``--oracle-households 0`` must not import them."""
    for module in ("cvxpy", "osqp", "engine.testing.oracle", "engine.testing.peers"):
        monkeypatch.setitem(sys.modules, module, None)           # importing it now raises
    out = tmp_path / "solver.json"
    result = runner.invoke(app, ["bench", "solver", "--size", "30", "--accounts", "1", "--batch", "2",
                                 "--oracle-households", "0", "--workers", "0", "--iterations", "500",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    [case] = json.loads(out.read_text())["cases"]
    [canopy] = case["systems"]
    assert canopy["system"] == "canopy" and canopy["accounts_per_s"] > 0
    assert canopy["worst_objective_gap"] is None and case["ratio"] is None


def test_bench_solver_rejects_unknown_dtype():
    result = runner.invoke(app, ["bench", "solver", "--dtype", "float16"])
    assert result.exit_code == 2 and "float64 or float32" in result.output


def test_bench_solver_rejects_unknown_method():
    result = runner.invoke(app, ["bench", "solver", "--method", "simplex"])
    assert result.exit_code == 2 and "ipm or admm" in result.output


def test_config_prints_every_setting_documented_at_its_default():
    import dataclasses
    import tomllib

    from engine.contract.config import _SECTIONS, Config, _field_docs, config_from_dict

    result = runner.invoke(app, ["config"])
    assert result.exit_code == 0
    assert config_from_dict(tomllib.loads(result.output)) == Config()
    for section, cls in _SECTIONS.items():
        docs = _field_docs(cls)
        undocumented = [f.name for f in dataclasses.fields(cls) if not docs.get(f.name)]
        assert undocumented == [], f"[{section}] settings without a description: {undocumented}"
