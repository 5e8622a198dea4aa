"""Throughput of Canopy's batched solver against cvxpy + Clarabel, one household at a time.

Both solve the same random instances (:func:`engine.testing.instances.random_batch`:
``k`` = 20 factors, ~5 lots per security per account) in the same process.
For each size (securities) and household size (accounts) it prints accounts
per second for each, the ratio, Canopy's iterations and the worst objective
gap to Clarabel (relative, on the households both solved), and writes the
figures as JSON.

Canopy's time is a warm-cache solve of the whole batch (the one-off jit compile
is reported apart); Clarabel's is cvxpy's problem construction plus solve per
household, what a user would write today.

    python benchmarks/solver.py --sizes 50 200 500 --households 1 2 4 --batch 64
    canopy bench solver --size 500 --accounts 1                 # the same, from the command
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np

DEFAULT_OUT = Path("benchmarks/results/solver.json")


def _profile(problem, config, result, seconds_per_household):
    """Where the time goes: one jitted chunk of iterations, and its share of the whole solve.

    ``seconds_per_iteration_per_household`` is a chunk of the full batch over
    its iterations and households; ``iterations_share`` is the mean
    iterations times that over the measured time per household (the rest is
    the host: preparation, compaction, wash-sale fixing, polish and repair).
    """
    import jax

    from engine.solver import driver as solve_module
    from engine.solver import evaluate
    from engine.solver.layout import compact_problem, lot_layout

    prepared, _ = evaluate.prepare(problem)
    dtype = jax.numpy.float64 if config.dtype == "float64" else jax.numpy.float32
    device_problem = solve_module._device_problem(compact_problem(prepared, lot_layout(prepared)), dtype)
    households = np.shape(problem.target)[0]
    if config.method == "ipm":
        init, chunk, steps = solve_module._ipm_init, solve_module._ipm_chunk, config.ipm_check_interval
    else:
        init, chunk, steps = solve_module._init, solve_module._chunk, config.check_interval
    state = init(device_problem, config)
    jax.block_until_ready(chunk(device_problem, state, config))
    start = time.perf_counter()
    jax.block_until_ready(chunk(device_problem, state, config))
    per_iteration = (time.perf_counter() - start) / steps / households
    mean_iterations = float(np.mean(result.iterations))
    return {"seconds_per_iteration_per_household": per_iteration,
            "mean_iterations": mean_iterations,
            "iterations_share": mean_iterations * per_iteration / seconds_per_household}


def run_case(size: int, accounts: int, batch: int, config, oracle_households: int, seed: int = 0,
             factors: int = 20, lots: int = 9):
    """One (securities, accounts) case: Canopy on ``batch`` households, Clarabel on the first few."""
    from engine.solver import evaluate, solve
    from engine.solver.driver import trim_compiled
    from engine.testing.instances import random_batch

    problem = random_batch(batch, n=size, accounts=accounts, lots=lots, factors=factors, classes=8,
                           seed=seed, lots_per_account=5 * size)
    # room for this case's programs: were ``solve`` to drop them between the compile and the
    # timed solve (past half the memory-map limit), the timed solve would compile again
    trim_compiled(share=0.25)
    start = time.perf_counter()
    solve(problem, config)                          # compiles (or reads the persistent cache)
    first = time.perf_counter() - start
    start, cpu = time.perf_counter(), time.process_time()
    result = solve(problem, config)
    canopy = time.perf_counter() - start
    canopy_cpu = time.process_time() - cpu
    final = result.problem
    gaps, seconds, cpu_seconds = [], [], []
    if oracle_households:                           # cvxpy is a test dependency: absent on a GPU box
        from engine.testing import oracle
        oracle.solve_household(final, 0)            # cvxpy's first call pays its own set-up
    for h in range(min(oracle_households, batch)):
        start, cpu = time.perf_counter(), time.process_time()
        buy, sell, status = oracle.solve_household(final, h)
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - cpu)
        best = evaluate.objective(final, np.broadcast_to(buy, result.buy.shape),
                                  np.broadcast_to(sell, result.sell.shape))[h]
        # the test's criterion: |gap| ≤ max(1e-4 |best|, 1e-7); reported as |gap| / max(|best|, 1e-3)
        gaps.append(abs(result.objective[h] - best) / max(abs(best), 1e-3))
    lots_held = float((np.asarray(problem.lot_width) > 0).sum(axis=(2, 3)).mean())
    canopy_rate = batch * accounts / canopy
    clarabel_rate = accounts / float(np.mean(seconds)) if seconds else float("nan")
    return {
        "securities": size, "accounts_per_household": accounts, "households": batch,
        "factors": factors, "lots_per_account": lots_held,
        "canopy_accounts_per_s": canopy_rate, "clarabel_accounts_per_s": clarabel_rate,
        "ratio": canopy_rate / clarabel_rate,
        "clarabel_ms_per_account": 1e3 * float(np.mean(seconds)) / accounts if seconds else None,
        "canopy_ms_per_account": 1e3 * canopy / (batch * accounts),
        # CPU seconds of the process (both cores for Canopy's threads; Clarabel uses one):
        # steadier than wall time on a loaded machine
        "clarabel_cpu_ms_per_account": 1e3 * float(np.mean(cpu_seconds)) / accounts if seconds else None,
        "canopy_cpu_ms_per_account": 1e3 * canopy_cpu / (batch * accounts),
        "canopy_first_call_s": first,
        "worst_objective_gap": float(max(gaps)) if gaps else None,
        "iterations_mean": float(result.iterations.mean()), "iterations_max": int(result.iterations.max()),
        "status_counts": {int(s): int((result.status == s).sum()) for s in np.unique(result.status)},
        "profile": _profile(problem, config, result, canopy / batch),
    }


def main(sizes: Sequence[int] = (50, 100, 200, 500, 600), batch: int = 64, iterations: int = 4000,
         tolerance: float = 1e-5, dtype: str = "float64", device: str = "cpu",
         households: Sequence[int] = (1, 2, 4), oracle_households: int = 4,
         out: str | Path | None = DEFAULT_OUT, seed: int = 0, method: str = "ipm") -> list[dict]:
    """Run the benchmark, print a table and write JSON.

    Parameters
    ----------
    sizes
        Numbers of securities per instance.
    batch
        Households solved at once by Canopy.
    iterations, tolerance, dtype
        ``SolverConfig.max_iterations``, ``eps_abs = eps_rel`` and ``dtype``
        (1e-5 keeps the interior-point method within 1e-4 of Clarabel's
        objective on the slow oracle test; ADMM needs 1e-7 for that).
    device
        ``cpu`` or ``gpu`` (JAX platform).
    households
        Accounts per household to run (1 to 4).
    oracle_households
        Households solved one at a time by cvxpy + Clarabel per case (0: none,
        for a machine without cvxpy, such as a GPU node; Clarabel's columns
        are then NaN).
    out
        JSON file to write (None: do not write).
    method
        ``SolverConfig.method``: ``ipm`` (default) or ``admm``.
    """
    import jax

    from engine.contract.config import SolverConfig

    config = SolverConfig(max_iterations=iterations, eps_abs=tolerance, eps_rel=tolerance, dtype=dtype,
                          method=method)
    rows = []
    with jax.default_device(jax.devices(device)[0]):
        print(f"{'n':>5} {'m':>2} {'canopy acc/s':>13} {'clarabel acc/s':>15} {'ratio':>7} "
              f"{'cpu ratio':>9} {'iters':>7} {'worst gap':>10} {'ms/it/hh':>9} {'it share':>8}")
        for size in sizes:
            for accounts in households:
                row = run_case(size, accounts, batch, config, oracle_households, seed=seed)
                rows.append(row)
                cpu_ratio = (row["clarabel_cpu_ms_per_account"] or np.nan) / row["canopy_cpu_ms_per_account"]
                gap = np.nan if row["worst_objective_gap"] is None else row["worst_objective_gap"]
                print(f"{size:>5} {accounts:>2} {row['canopy_accounts_per_s']:>13.1f} "
                      f"{row['clarabel_accounts_per_s']:>15.2f} {row['ratio']:>7.1f} "
                      f"{cpu_ratio:>9.1f} {row['iterations_mean']:>7.0f} {gap:>10.2e} "
                      f"{1e3 * row['profile']['seconds_per_iteration_per_household']:>9.4f} "
                      f"{row['profile']['iterations_share']:>8.2f}", flush=True)
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"config": config.__dict__, "device": device, "cases": rows}, indent=2))
    return rows
