"""Exported programs kept across processes (engine/solver/programs.py): the same results, traced once."""

from __future__ import annotations

import logging

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

from engine.contract.config import SolverConfig  # noqa: E402
from engine.solver import programs  # noqa: E402
from engine.solver.types import SolverState  # noqa: E402

traces = []


def scaled(state: SolverState, factor, config: SolverConfig):
    """A small stand-in for a solver step: a namedtuple in and out, a static setting."""
    traces.append(config)
    return state._replace(buy=state.buy * factor + config.rho, sell=jnp.sin(state.sell),
                          iteration=state.iteration + 1)


def _state(batch: int = 3) -> SolverState:
    rng = np.random.default_rng(0)
    return SolverState(*[jnp.asarray(rng.normal(size=(batch, 4))) if f not in ("iteration", "status")
                         else jnp.zeros(batch, jnp.int32) for f in SolverState._fields])


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """The exports go to a folder of this test (JAX's own compilation cache is left as it is)."""
    where = tmp_path / programs.FOLDER
    monkeypatch.setattr(programs, "cache_directory", lambda: where)
    traces.clear()
    return where


def _expected(state, factor, config):
    """The answer of plain ``jax.jit`` (its tracing is not counted)."""
    count = len(traces)
    out = jax.jit(scaled, static_argnames=("config",))(state, factor, config=config)
    del traces[count:]
    return out


def _same(a: SolverState, b: SolverState) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))


def test_a_new_process_loads_the_program_instead_of_tracing_it(folder):
    config = SolverConfig(rho=0.5)
    state, factor = _state(), jnp.asarray(2.0)
    first = programs.persistent(scaled, static_argnames=("config",))
    out = first(state, factor, config=config)
    assert len(traces) == 1 and len(list(folder.glob("*.jax"))) == 1
    assert _same(out, _expected(state, factor, config))
    again = programs.persistent(scaled, static_argnames=("config",))     # as a later process would
    loaded = again(state, factor, config)                                 # the setting by position
    assert len(traces) == 1, "the program was traced again instead of loaded"
    assert _same(loaded, out)


def test_settings_and_shapes_make_programs_of_their_own(folder):
    f = programs.persistent(scaled, static_argnames=("config",))
    factor = jnp.asarray(2.0)
    f(_state(3), factor, config=SolverConfig(rho=0.5))
    f(_state(3), factor, config=SolverConfig(rho=0.5))
    f(_state(3), factor, config=SolverConfig(rho=0.25))
    f(_state(5), factor, config=SolverConfig(rho=0.5))
    f(_state(3), factor.astype(jnp.float32), config=SolverConfig(rho=0.5))
    assert len(traces) == 4
    assert len(list(folder.glob("*.jax"))) == 4
    out = f(_state(5), factor, config=SolverConfig(rho=0.25))
    assert np.allclose(np.asarray(out.buy), np.asarray(_state(5).buy) * 2.0 + 0.25)


def test_a_damaged_program_is_exported_again(folder, caplog):
    config = SolverConfig()
    state, factor = _state(), jnp.asarray(3.0)
    programs.persistent(scaled, static_argnames=("config",))(state, factor, config=config)
    (path,) = folder.glob("*.jax")
    path.write_bytes(path.read_bytes()[:1000])
    with caplog.at_level(logging.WARNING, logger="engine.solver.programs"):
        out = programs.persistent(scaled, static_argnames=("config",))(state, factor, config=config)
    assert "is damaged" in caplog.text and path.name in caplog.text
    assert _same(out, _expected(state, factor, config))
    assert not list(folder.glob(".*.tmp"))
    traces.clear()
    programs.persistent(scaled, static_argnames=("config",))(state, factor, config=config)
    assert not traces, "the program exported again was not loaded"



def test_a_folder_that_cannot_be_written_costs_only_the_tracing(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setattr(programs, "cache_directory", lambda: blocker / programs.FOLDER)
    state, factor = _state(), jnp.asarray(2.0)
    with caplog.at_level(logging.WARNING, logger="engine.solver.programs"):
        out = programs.persistent(scaled, static_argnames=("config",))(state, factor, config=SolverConfig())
    assert "could not keep the program" in caplog.text
    assert _same(out, _expected(state, factor, SolverConfig()))


def test_without_a_cache_directory_the_function_is_plain_jit(monkeypatch, tmp_path):
    monkeypatch.setattr(programs, "cache_directory", lambda: None)
    traces.clear()
    f = programs.persistent(scaled, static_argnames=("config",))
    state, factor = _state(), jnp.asarray(2.0)
    assert _same(f(state, factor, config=SolverConfig()), _expected(state, factor, SolverConfig()))
    assert not list(tmp_path.rglob("*.jax"))


@pytest.mark.parametrize("root, expected", [("", None), ("gs://bucket/jax", None),
                                            ("/cache/jax", f"/cache/jax/{programs.FOLDER}")])
def test_the_exports_live_in_a_local_compilation_cache(root, expected):
    found = programs.cache_directory(root)
    assert (None if found is None else str(found)) == expected


def test_the_solver_gives_the_same_answer_from_loaded_programs(tmp_path, monkeypatch):
    """A batch solved with exported programs, then by a 'later process' that loads them, then plainly."""
    from engine.solver import solve
    from engine.testing.instances import random_batch

    problem = random_batch(4, n=12, accounts=2, lots=3, factors=3, classes=3, seed=5, lots_per_account=30)
    config = SolverConfig()
    monkeypatch.setattr(programs, "cache_directory", lambda: None)
    plain = solve(problem, config)
    programs.forget()
    monkeypatch.setattr(programs, "cache_directory", lambda: tmp_path / programs.FOLDER)
    exported = solve(problem, config)
    assert list((tmp_path / programs.FOLDER).glob("ipm_chunk-*.jax"))
    programs.forget()           # as a later process: nothing in memory, the files read back
    loaded = solve(problem, config)
    for result in (exported, loaded):
        for field in ("buy", "sell", "objective", "iterations", "status"):
            assert np.array_equal(getattr(result, field), getattr(plain, field)), field


_SOLVE_IN_A_PROCESS = """
import json, sys
from engine.contract.config import SolverConfig
from engine.solver import solve
from engine.testing.instances import random_batch
problem = random_batch(4, n=12, accounts=2, lots=3, factors=3, classes=3, seed=5, lots_per_account=30)
result = solve(problem, SolverConfig())
json.dump({"objective": result.objective.tolist(), "iterations": result.iterations.tolist()}, sys.stdout)
"""


def test_a_second_process_reads_the_programs_the_first_exported(tmp_path):
    """Two real processes with JAX_COMPILATION_CACHE_DIR: the second exports nothing, and answers the same."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax"), JAX_PLATFORMS="cpu",
               PYTHONPATH=str(Path(__file__).resolve().parents[1]))

    def run():
        done = subprocess.run([sys.executable, "-c", _SOLVE_IN_A_PROCESS], env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout)

    first = run()
    folder = tmp_path / "jax" / programs.FOLDER
    made = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.jax")}
    assert any(name.startswith("ipm_chunk-") for name in made)
    second = run()
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.jax")} == made
    assert second == first
