"""The solver benchmark's peers (engine.testing.peers, engine.testing.solver_bench): the same problem as
Canopy's, solved as well as the reference, and the benchmark's last line."""

from __future__ import annotations

import re

import numpy as np
import pytest

pytest.importorskip("cvxpy")
pytest.importorskip("osqp")

from engine.solver import evaluate  # noqa: E402
from engine.solver.types import take  # noqa: E402
from engine.testing import oracle, peers, solver_bench  # noqa: E402
from engine.testing.instances import random_batch  # noqa: E402

HEADLINE = re.compile(r"^\((\d+), (\d+)\): .* ratio vs best peer: (\d+\.\d+)×$")


@pytest.fixture(scope="module")
def problem():
    """Six households of two accounts, every constraint mix among them, prepared as the solver prepares them."""
    mixes = ["all", "bands", "budget", "infeasible_floor", "screens", "turnover_cap"]
    parts = [random_batch(1, n=25, accounts=2, lots=3, factors=4, classes=3, seed=20 + i, mix=mix)
             for i, mix in enumerate(mixes)]
    first = parts[0]
    batch = first._replace(**{f: np.concatenate([getattr(p, f) for p in parts]) for f in first._fields
                              if f not in ("exposures", "factor_covariance", "specific_variance", "spread",
                                           "asset_class", "wash_group", "penalties", "lot_position")})
    # one universe for the batch, as a shard has
    return evaluate.prepare(batch)[0]


@pytest.fixture(scope="module")
def reference(problem):
    return solver_bench._reference_task(problem)


def test_the_reference_is_the_oracle_at_tight_tolerance(problem, reference):
    loose = [oracle.solve_household(problem, h) for h in range(6)]
    buy, sell = np.stack([s[0] for s in loose]), np.stack([s[1] for s in loose])
    assert all(s[2] == "optimal" for s in loose)
    gap = solver_bench.gaps(problem, buy, sell, reference)
    assert gap.max() <= solver_bench.GAP
    # the reference is at least as good as the default-tolerance oracle, everywhere
    assert np.all(evaluate.objective(problem, *reference) <= evaluate.objective(problem, buy, sell) + 1e-9)


@pytest.mark.parametrize("system", ["osqp", "cvxpy_dpp"])
def test_a_peer_built_once_solves_every_household_as_the_reference(problem, reference, system):
    settings = {**solver_bench.OSQP_SETTINGS, "eps_abs": 1e-8, "eps_rel": 1e-8} if system == "osqp" else {}
    model = solver_bench._peer(system, peers.household(problem, 0), settings)
    solved = []
    for h in range(6):
        household = peers.household(problem, h)
        b, z, iterations, status = model.solve(household)
        assert status in ("solved", "optimal") and iterations > 0
        solved.append(peers.trades(household, b, z))
    buy, sell = np.stack([s[0] for s in solved]), np.stack([s[1] for s in solved])
    assert solver_bench.gaps(problem, buy, sell, reference).max() <= solver_bench.GAP
    assert evaluate.violations(problem, buy, sell).max() <= 1e-6


def test_a_loose_osqp_misses_the_gap_that_the_calibrated_one_reaches(problem, reference):
    """The calibration is needed: OSQP at eps 1e-3 is off by more than the gap on some household."""
    model = peers.OsqpPeer(peers.household(problem, 0), **solver_bench.OSQP_SETTINGS, eps_abs=1e-3, eps_rel=1e-3)
    solved = [peers.trades(peers.household(problem, h), *model.solve(peers.household(problem, h))[:2])
              for h in range(6)]
    buy, sell = np.stack([s[0] for s in solved]), np.stack([s[1] for s in solved])
    assert solver_bench.gaps(problem, buy, sell, reference).max() > solver_bench.GAP


def test_the_calibration_picks_an_eps_that_reaches_the_gap(problem, reference):
    eps = solver_bench.calibrate_osqp(None, 2, take(problem, np.arange(4)))
    assert eps in solver_bench.OSQP_EPS and eps < 1e-3
    model = peers.OsqpPeer(peers.household(problem, 0), **solver_bench.OSQP_SETTINGS, eps_abs=eps, eps_rel=eps)
    solved = [peers.trades(peers.household(problem, h), *model.solve(peers.household(problem, h))[:2])
              for h in range(4)]
    buy, sell = np.stack([s[0] for s in solved]), np.stack([s[1] for s in solved])
    assert solver_bench.gaps(take(problem, np.arange(4)), buy, sell,
                             tuple(r[:4] for r in reference)).max() <= solver_bench.GAP


def test_the_peers_refuse_a_compact_batch(problem):
    with pytest.raises(ValueError, match="dense lot layout"):
        peers.household(problem._replace(lot_position=np.zeros((6, 3), np.int32)), 0)


def test_the_headline_names_the_case_and_the_ratio_to_the_fastest_peer():
    systems = [{"system": "canopy", "accounts_per_s": 300.0, "worst_objective_gap": 2e-6},
               {"system": "osqp", "accounts_per_s": 120.0, "worst_objective_gap": 3e-5},
               {"system": "cvxpy_dpp", "accounts_per_s": 20.0, "worst_objective_gap": 1e-7}]
    case = {"securities": 500, "accounts_per_household": 1, "systems": systems, "best_peer": "osqp",
            "ratio": 2.5, "host_share": 0.3}
    line = solver_bench.headline(case)
    match = HEADLINE.match(line)
    assert match and match.groups() == ("500", "1", "2.50") and "osqp 120.0" in line


@pytest.mark.slow
def test_the_benchmark_runs_every_system_and_ends_with_its_headline(capsys):
    cases = solver_bench.main(sizes=[20], batch=2, households=[1], peer_households=2, calibration=2, workers=2,
                              out=None)
    lines = capsys.readouterr().out.strip().splitlines()
    assert HEADLINE.match(lines[-1]).groups()[:2] == ("20", "1")
    systems = cases[0]["systems"]
    assert [s["system"] for s in systems] == ["canopy", *solver_bench.PEERS]
    assert all(s["worst_objective_gap"] <= solver_bench.GAP and s["accounts_per_s"] > 0 for s in systems)
    assert 0.0 < cases[0]["host_share"] < 1.0
