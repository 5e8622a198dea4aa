"""Throughput of Canopy's batched solver against its peers, on the same instances, in one run.

Every system solves the same random instances (:func:`engine.testing.instances.random_batch`:
``k`` = 20 factors, ~5 lots per security per account), on every core: a
pool of one process per core (:func:`worker_pool`), each pinned to its core,
each taking its share of the households; a system's time is the slowest
worker's.  The systems:

* ``canopy``: :func:`engine.solver.solve` on its share of the batch at once,
  in a process with one XLA thread, as a nightly actor runs (a warm solve
  first: the one-off compile is reported apart);
* ``osqp``: OSQP through its own API, set up once per shape, ``update`` per
  account (:class:`engine.testing.peers.OsqpPeer`), at the loosest ``eps``
  that reaches the objective gap on a calibration set of other instances;
* ``cvxpy_dpp``: cvxpy with Parameters and Clarabel, compiled once per shape
  (:class:`engine.testing.peers.CvxpyPeer`);
* ``cvxpy_rebuilt``: cvxpy's problem built anew for each account, solved by
  Clarabel (:func:`engine.testing.oracle.solve_household`).

The peers solve the problem Canopy finally solved (its ``result.problem``:
unreachable floors lowered, wash groups separated), the first
``peer_households`` households of the batch.  The reference is Clarabel at
tight tolerances (:data:`REFERENCE`); a system's gap is
``|objective − reference| / max(|reference|, 1e-3)`` on those households.

    python benchmarks/solver.py --sizes 50 200 500 --households 1 --batch 64 --peer-households 8
    canopy bench solver --size 500 --accounts 1                 # the same, from the command
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import multiprocessing
import os
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

DEFAULT_OUT = Path("benchmarks/results/solver.json")
PEERS = ("osqp", "cvxpy_dpp", "cvxpy_rebuilt")
#: Clarabel's settings for the reference objective.
REFERENCE = {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10, "max_iter": 500}
#: The objective gap every system is held to (the solver tests' criterion).
GAP = 1e-4
#: OSQP's ``eps_abs = eps_rel`` tried on the calibration set, loosest first.
OSQP_EPS = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10)
#: OSQP's other settings, as a user tuning it would set them.
OSQP_SETTINGS = {"polish": True, "warm_starting": True, "max_iter": 200_000}
#: The case whose figures end the printout.
HEADLINE = (500, 1)

_WORKER: dict = {}


def _start_worker(cores, barrier) -> None:
    """A pool process: pin it to the next free core, remember the barrier its timed sections start at."""
    core = cores.get()
    if hasattr(os, "sched_setaffinity") and core is not None:
        os.sched_setaffinity(0, {core})
    _WORKER["barrier"] = barrier


def _start_timing() -> None:
    """Wait for the other workers' tasks of the group (a task run in this process waits for none)."""
    if "barrier" in _WORKER:
        _WORKER["barrier"].wait()


@contextlib.contextmanager
def _environment(env: Mapping[str, str]):
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def worker_pool(workers: int, env: Mapping[str, str] | None = None):
    """``workers`` spawned processes, one per core, with ``env`` set before they import anything.

    Tasks sent in a group of ``workers`` meet at a barrier before their timed
    sections, so each group runs at once, one task per process.  ``workers``
    0 gives no pool (None): the tasks run in this process, one after another.
    """
    if workers == 0:
        yield None
        return
    context = multiprocessing.get_context("spawn")
    cores = context.Queue()
    available = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    for i in range(workers):
        cores.put(available[i % len(available)] if available and workers <= len(available) else None)
    barrier = context.Barrier(workers)
    with _environment(env or {}):
        pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                                                      initargs=(cores, barrier))
        # every process starts now, while the environment holds
        for started in [pool.submit(os.getpid) for _ in range(workers)]:
            started.result()
    try:
        yield pool
    finally:
        pool.shutdown()


def _run_group(pool, task, arguments: list[tuple]) -> list:
    """``task`` on each of ``arguments``, one per worker at once; their results in order.

    Without a pool (None), the tasks run one after another in this process.
    """
    if pool is None:
        return [task(*args) for args in arguments]
    futures = [pool.submit(task, *args) for args in arguments]
    return [f.result() for f in futures]


@contextlib.contextmanager
def _device_time():
    """Seconds spent in the solver's jitted programs (each call waited on), while the block runs.

    Wraps every jitted function of :mod:`engine.solver.driver` for the block's
    duration; the rest of ``solve``'s time is the host's (preparation,
    compaction, wash-sale fixing, repair, transfers, dispatch).
    """
    import jax

    from engine.solver import driver

    spent = [0.0]
    jitted = {name: value for name, value in vars(driver).items()
              if callable(value) and hasattr(value, "lower") and hasattr(value, "trace")}

    def timed(program):
        def call(*args, **kwargs):
            start = time.perf_counter()
            out = jax.block_until_ready(program(*args, **kwargs))
            spent[0] += time.perf_counter() - start
            return out
        return call

    for name, program in jitted.items():
        setattr(driver, name, timed(program))
    try:
        yield spent
    finally:
        for name, program in jitted.items():
            setattr(driver, name, program)


def _canopy_task(problem, config) -> dict:
    """Canopy on a worker's share: a warm-up solve (compile), then the timed one, then one for the host share."""
    from engine.solver import solve
    from engine.solver.driver import trim_compiled

    trim_compiled(share=0.25)
    start = time.perf_counter()
    solve(problem, config)                          # compiles (or reads the persistent cache)
    first = time.perf_counter() - start
    _start_timing()
    start = time.perf_counter()
    result = solve(problem, config)
    seconds = time.perf_counter() - start
    with _device_time() as device:
        start = time.perf_counter()
        solve(problem, config)
        measured = time.perf_counter() - start
    return {"seconds": seconds, "first_s": first, "host_share": 1.0 - device[0] / measured,
            "objective": result.objective, "iteration_counts": result.iterations, "solver_status": result.status,
            "problem": result.problem}


def _peer(system: str, first, settings: Mapping):
    from engine.testing import peers

    if system == "osqp":
        return peers.OsqpPeer(first, **settings)
    if system == "cvxpy_dpp":
        return peers.CvxpyPeer(first, **settings)
    raise ValueError(f"unknown peer {system!r}: use one of {PEERS}")


def _peer_task(system: str, problem, settings: Mapping) -> dict:
    """One peer on a worker's share of households (a dense, prepared batch), one at a time.

    Returns the timed seconds, the set-up seconds (model built and first solve, untimed),
    and per household its trades, iterations and status.
    """
    from engine.testing import oracle, peers

    start = time.perf_counter()
    if system == "cvxpy_rebuilt":
        oracle.solve_household(problem, 0, **settings)                  # cvxpy's first call pays its set-up
    else:
        model = _peer(system, peers.household(problem, 0), settings)
        model.solve(peers.household(problem, 0))                        # cvxpy compiles on the first solve
    build = time.perf_counter() - start
    buys, sells, iterations, statuses = [], [], [], []
    _start_timing()
    start = time.perf_counter()
    for h in range(np.shape(problem.target)[0]):
        if system == "cvxpy_rebuilt":
            stats: dict = {}
            buy, sell, status = oracle.solve_household(problem, h, stats=stats, **settings)
            iterations.append(stats["iteration_count"])
        else:
            household = peers.household(problem, h)
            b, z, count, status = model.solve(household)
            buy, sell = peers.trades(household, b, z)
            iterations.append(count)
        buys.append(buy)
        sells.append(sell)
        statuses.append(status)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "build_s": build, "buy": np.stack(buys), "sell": np.stack(sells),
            "iteration_counts": np.asarray(iterations), "solver_status": statuses}


def _reference_task(problem) -> tuple[np.ndarray, np.ndarray]:
    """Clarabel at :data:`REFERENCE` tolerances on every household of ``problem``: (buy, sell)."""
    from engine.testing import oracle

    solved = [oracle.solve_household(problem, h, **REFERENCE)[:2] for h in range(np.shape(problem.target)[0])]
    return np.stack([s[0] for s in solved]), np.stack([s[1] for s in solved])


def gaps(problem, buy, sell, reference: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Per household, ``|objective − reference objective| / max(|reference objective|, 1e-3)``."""
    from engine.solver import evaluate

    best = evaluate.objective(problem, *reference)
    return np.abs(evaluate.objective(problem, buy, sell) - best) / np.maximum(np.abs(best), 1e-3)


def _calibration_task(problem, candidates: Sequence[float]) -> float | None:
    """The loosest OSQP eps of ``candidates`` (loosest first) at which every household here is within :data:`GAP`."""
    from engine.testing import peers

    reference = _reference_task(problem)
    model = peers.OsqpPeer(peers.household(problem, 0), **OSQP_SETTINGS)
    for eps in candidates:
        model.update_settings(eps_abs=eps, eps_rel=eps)
        solved = []
        for h in range(np.shape(problem.target)[0]):
            household = peers.household(problem, h)
            solved.append(peers.trades(household, *model.solve(household)[:2]))
        buy, sell = np.stack([s[0] for s in solved]), np.stack([s[1] for s in solved])
        if gaps(problem, buy, sell, reference).max() <= GAP:
            return eps
    return None


def calibrate_osqp(pool, workers: int, problem, candidates: Sequence[float] = OSQP_EPS) -> float:
    """The loosest OSQP eps (``eps_abs = eps_rel``) that reaches :data:`GAP` on every household of
    ``problem`` (a dense, prepared calibration batch); the tightest candidate when none does."""
    from engine.solver.types import take

    parts = [part for part in np.array_split(np.arange(np.shape(problem.target)[0]), max(workers, 1)) if part.size]
    found = _run_group(pool, _calibration_task, [(take(problem, part), candidates) for part in parts])
    return min(candidates[-1] if eps is None else eps for eps in found)


def _split(problem, count: int, workers: int) -> list:
    """The first ``count`` households of ``problem``, in one share per worker."""
    from engine.solver.types import take

    return [take(problem, part) for part in np.array_split(np.arange(count), max(workers, 1))]


def _summary(name: str, rate: float, iterations, worst_gap: float | None, violation: float | None,
             **extra) -> dict:
    """A system's figures in a case (a gap or violation not measured: None)."""
    return {"system": name, "accounts_per_s": rate, "iterations_mean": float(np.mean(iterations)),
            "worst_objective_gap": None if worst_gap is None else float(worst_gap),
            "worst_violation": None if violation is None else float(violation), **extra}


def _figure(value: float | None, width: int) -> str:
    return f"{'':>{width}}" if value is None else f"{value:>{width}.1e}"


def run_case(pool, workers: int, size: int, accounts: int, batch: int, config, peer_households: int,
             calibration: int, seed: int = 0, factors: int = 20, lots: int = 9) -> dict:
    """One (securities, accounts) case: Canopy on ``batch`` households, the peers on the first ``peer_households``.

    Returns the case's figures: per system (``systems``, Canopy first) accounts/s, mean
    iterations, worst objective gap and hard-constraint violation against the reference, how
    many households miss :data:`GAP` (``over_gap``), set-up seconds; Canopy's ratio to the
    fastest peer (and to the fastest that kept every household within the gap), its host
    share, and OSQP's calibrated eps.
    ``peer_households`` 0 runs Canopy alone (a node without cvxpy or OSQP): no gap, no ratio.
    """
    from engine.solver.types import concatenate
    from engine.testing.instances import random_batch

    if batch < workers or 0 < peer_households < workers:
        raise ValueError(f"batch ({batch}) and peer households ({peer_households}) must be at least the "
                         f"{workers} workers: each worker takes a share")
    shape = dict(n=size, accounts=accounts, lots=lots, factors=factors, classes=8, lots_per_account=5 * size)
    problem = random_batch(batch, seed=seed, **shape)
    canopy = _run_group(pool, _canopy_task, [(part, config) for part in _split(problem, batch, workers)])
    count = min(peer_households, batch)
    objective = np.concatenate([c["objective"] for c in canopy])[:count]
    case = {"securities": size, "accounts_per_household": accounts, "households": batch, "peer_households": count,
            "factors": factors, "lots_per_account": float((np.asarray(problem.lot_width) > 0).sum(axis=(2, 3)).mean()),
            "workers": workers, "osqp_eps": None, "best_peer": None, "ratio": None, "best_accurate_peer": None,
            "ratio_within_gap": None,
            "host_share": float(np.mean([c["host_share"] for c in canopy]))}
    systems = [_summary("canopy", batch * accounts / max(c["seconds"] for c in canopy),
                        np.concatenate([c["iteration_counts"] for c in canopy]), None, None,
                        setup_s=max(c["first_s"] for c in canopy), host_share=case["host_share"])]
    if count:
        final = concatenate([c["problem"] for c in canopy])
        calibrated = evaluate_prepared(random_batch(max(calibration, workers), seed=seed + 1, **shape))
        case["osqp_eps"] = calibrate_osqp(pool, workers, calibrated)
        systems += _peer_runs(pool, workers, final, count, accounts, case["osqp_eps"], objective, systems[0])
        fastest = max(systems[1:], key=lambda s: s["accounts_per_s"])
        case.update(best_peer=fastest["system"], ratio=systems[0]["accounts_per_s"] / fastest["accounts_per_s"])
        within = [s for s in systems[1:] if s["over_gap"] == 0]
        if within:
            accurate = max(within, key=lambda s: s["accounts_per_s"])
            case.update(best_accurate_peer=accurate["system"],
                        ratio_within_gap=systems[0]["accounts_per_s"] / accurate["accounts_per_s"])
    return {**case, "systems": systems}


def evaluate_prepared(problem):
    """``problem`` as the solver prepares it (:func:`engine.solver.evaluate.prepare`)."""
    from engine.solver import evaluate

    return evaluate.prepare(problem)[0]


def _peer_runs(pool, workers: int, final, count: int, accounts: int, eps: float, objective: np.ndarray,
               canopy: dict) -> list[dict]:
    """Every peer on the first ``count`` households of ``final``, and the reference for them.

    Fills in ``canopy``'s worst gap (its ``objective`` on those households against the reference).
    """
    from engine.solver import evaluate
    from engine.solver.types import concatenate

    shares = _split(final, count, workers)
    subset = concatenate(shares)
    reference = tuple(np.concatenate(r) for r in zip(*_run_group(pool, _reference_task, [(s,) for s in shares])))
    best = evaluate.objective(subset, *reference)
    canopy_gaps = np.abs(objective - best) / np.maximum(np.abs(best), 1e-3)
    canopy.update(worst_objective_gap=float(canopy_gaps.max()), over_gap=int((canopy_gaps > GAP).sum()))
    settings = {"osqp": {**OSQP_SETTINGS, "eps_abs": eps, "eps_rel": eps}, "cvxpy_dpp": {}, "cvxpy_rebuilt": {}}
    systems = []
    for system in PEERS:
        runs = _run_group(pool, _peer_task, [(system, s, settings[system]) for s in shares])
        buy, sell = np.concatenate([r["buy"] for r in runs]), np.concatenate([r["sell"] for r in runs])
        off = gaps(subset, buy, sell, reference)
        systems.append(_summary(system, count * accounts / max(r["seconds"] for r in runs),
                                np.concatenate([r["iteration_counts"] for r in runs]), off.max(),
                                evaluate.violations(subset, buy, sell).max(), over_gap=int((off > GAP).sum()),
                                setup_s=max(r["build_s"] for r in runs),
                                statuses=sorted({s for r in runs for s in r["solver_status"]})))
    return systems


def headline(case: dict) -> str:
    """The case's one-line verdict: ``(n, m): ... ratio vs best peer: R×`` (no ratio without peers)."""
    canopy = case["systems"][0]
    line = (f"({case['securities']}, {case['accounts_per_household']}): canopy "
            f"{canopy['accounts_per_s']:.1f} accounts/s (host share {case['host_share']:.2f}")
    if case["best_peer"] is None:
        return line + "), no peers run"
    best = next(s for s in case["systems"] if s["system"] == case["best_peer"])
    return (f"{line}, worst gap {canopy['worst_objective_gap']:.1e}), best peer {best['system']} "
            f"{best['accounts_per_s']:.1f} accounts/s (worst gap {best['worst_objective_gap']:.1e}), "
            f"ratio vs best peer: {case['ratio']:.2f}×")


def _print_case(case: dict) -> None:
    for s in case["systems"]:
        print(f"{case['securities']:>5} {case['accounts_per_household']:>2} {s['system']:>14} "
              f"{s['accounts_per_s']:>10.1f} {s['iterations_mean']:>7.0f} {_figure(s['worst_objective_gap'], 10)} "
              f"{_figure(s['worst_violation'], 9)} {s.get('over_gap', ''):>5} {s['setup_s']:>8.1f}", flush=True)
    if case["best_peer"] is not None:
        accurate = "" if case["best_accurate_peer"] is None else \
            f"; vs the fastest within the gap ({case['best_accurate_peer']}): {case['ratio_within_gap']:.2f}×"
        print(f"{'':>8} osqp eps {case['osqp_eps']:.0e}; canopy host share {case['host_share']:.2f}; "
              f"ratio vs best peer ({case['best_peer']}): {case['ratio']:.2f}×{accurate}", flush=True)


def main(sizes: Sequence[int] = (50, 200, 500), batch: int = 64, iterations: int = 4000,
         tolerance: float = 1e-5, dtype: str = "float64", device: str = "cpu",
         households: Sequence[int] = (1,), peer_households: int = 8, calibration: int = 16,
         workers: int | None = None, worker_env: Mapping[str, str] | None = None,
         out: str | Path | None = DEFAULT_OUT, seed: int = 0, method: str = "ipm") -> list[dict]:
    """Run the benchmark, print a table and write JSON; the last line is the headline case's (:data:`HEADLINE`,
    else the last case run).

    Parameters
    ----------
    sizes
        Numbers of securities per instance.
    batch
        Households Canopy solves (each worker a share at once).
    iterations, tolerance, dtype, method
        ``SolverConfig.max_iterations``, ``eps_abs = eps_rel``, ``dtype`` and ``method``.
    device
        ``cpu`` or ``gpu`` (JAX platform of Canopy's workers).
    households
        Accounts per household to run (1 to 4).
    peer_households
        Households each peer solves (the first of the batch), at least ``workers``: bounds the run
        (0: Canopy alone, where cvxpy and OSQP are not installed, as on a GPU node).
    calibration
        Households of other instances OSQP's eps is calibrated on.
    workers
        Processes, one per core (default: the cores this process may use); 0: every system in this
        process, one after another (a GPU node: Canopy on the device).
    worker_env
        Environment of the workers (the nightly actors': one XLA thread each).
    out
        JSON file to write (None: do not write).
    """
    from engine.contract.config import SolverConfig

    config = SolverConfig(max_iterations=iterations, eps_abs=tolerance, eps_rel=tolerance, dtype=dtype,
                          method=method)
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    env = {**(worker_env or {}), "JAX_PLATFORMS": device}
    cases = []
    print(f"{'n':>5} {'m':>2} {'system':>14} {'acc/s':>10} {'iters':>7} {'worst gap':>10} {'violation':>9} "
          f"{'>gap':>5} {'setup s':>8}")
    with worker_pool(workers, env) as pool:
        for size in sizes:
            for accounts in households:
                case = run_case(pool, workers, size, accounts, batch, config, peer_households, calibration,
                                seed=seed)
                cases.append(case)
                _print_case(case)
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"config": config.__dict__, "device": device, "cases": cases}, indent=2,
                                  default=_plain))
    last = next((c for c in cases if (c["securities"], c["accounts_per_household"]) == HEADLINE), cases[-1])
    print(headline(last), flush=True)
    return cases


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON")
