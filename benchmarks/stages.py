"""The nightly job's stages other than the solver, in one process, with a stand-in solver.

    .venv/bin/python benchmarks/stages.py --accounts 2000 --accounts 10000
    .venv/bin/python benchmarks/stages.py --accounts 2000 --profile benchmarks/results/stages-2000.txt

The solver is being made fast on its own (``benchmarks/solver.py``); this
benchmark times everything around it: read and validate, targets, plan, and
per shard the slicing of its tables, problem assembly and proposals, then
the write.  It runs the driver of ``engine.actors.nightly`` as it is, with the Ray
dispatcher replaced by a loop in this process and ``engine.solver.solve``
replaced by a cheap stand-in that returns a plausible solution (a quarter of
every sellable lot, and the household's underweights bought back) in no
time, so that proposals do realistic work.  It prints seconds per stage, the
accounts per second of the non-solver stages and the peak memory of this
process, and the CPU seconds it used (wall time on a shared machine is not a measure); results
go to ``benchmarks/results/stages.json``.  With
``--profile FILE`` it writes pyinstrument's profile of the whole run there
(pyinstrument is not a dependency: ``pip install pyinstrument``).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def stand_in_solve(problem, config=None, warm=None, *, lots=None, households=None):
    """A cheap, plausible ``SolverResult``: not optimal, only shaped like one."""
    from engine.solver.types import SOLVED, SolverResult

    width = np.asarray(problem.lot_width)
    sell = np.clip(0.25 * width, np.asarray(problem.sell_lower), np.asarray(problem.sell_upper))
    held = np.asarray(problem.holdings).sum(axis=1)                         # (B, n)
    under = np.maximum(np.asarray(problem.target) - held, 0.0)
    value = np.asarray(problem.account_value)
    share = value / np.where(value.sum(axis=1, keepdims=True) > 0, value.sum(axis=1, keepdims=True), 1.0)
    buy = np.minimum(np.asarray(problem.buy_upper), under[:, None, :] * share[:, :, None])
    cash_after = np.asarray(problem.cash) + sell.sum(axis=(2, 3)) - buy.sum(axis=2)
    B = width.shape[0]
    return SolverResult(buy=buy, sell=sell, cash_after=cash_after, objective=np.zeros(B),
                        status=np.full(B, SOLVED, np.int32), iterations=np.zeros(B, np.int32),
                        primal_residual=np.zeros(B), dual_residual=np.zeros(B),
                        missing_cash=np.zeros_like(cash_after), state=None, problem=problem)


class LoopDispatcher:
    """``engine.actors.dispatch.Dispatcher``'s interface, one shard after another in this process."""

    def __init__(self, shared, as_of, config, actors=None):
        self.shared, self.as_of, self.config = shared, as_of, config
        self.size = self.started = 1

    def run(self, work, collect):
        from engine.rebalance.pipeline import solve_shard

        clock = time.perf_counter()
        for shard, tables, targets in work:
            sliced = time.perf_counter() - clock
            output = solve_shard(self.shared, tables, targets, shard, self.as_of, self.config)
            output.timings["slice"] = sliced
            collect(output)
            clock = time.perf_counter()
        return []

    def shutdown(self):
        pass


def run_one(book: str, out: str, config_path: str | None) -> dict:
    import engine.actors.dispatch as dispatch
    import engine.solver as solver
    from engine.actors import nightly
    from engine.book.runs import RunWriter
    from engine.book.storage import read_book
    from engine.contract.config import load_config

    dispatch.Dispatcher = LoopDispatcher
    solver.solve = stand_in_solve
    config = load_config(config_path)
    timings: dict[str, float] = {}
    cpu = time.process_time()
    started = time.perf_counter()
    loaded = read_book(book, config.policy)
    timings["read"] = time.perf_counter() - started
    read_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    writer = RunWriter(out, loaded.as_of, replace=True)
    nightly._run(loaded, writer, config, timings, False, 1, None)
    wall = time.perf_counter() - started
    accounts = loaded.accounts.num_rows
    return {"accounts": accounts, "lots": loaded.lots.num_rows, "seconds": round(wall, 2),
            "cpu_seconds": round(time.process_time() - cpu, 2),
            "accounts_per_second": round(accounts / wall, 1),
            "peak_memory_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "peak_memory_after_read_gb": round(read_peak, 2),
            "timings": {k: round(v, 2) for k, v in timings.items() if k != "solve.solve"}}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, action="append", help="book sizes (repeat)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--books", default="benchmarks/books", help="where generated books are kept")
    parser.add_argument("--runs", default="benchmarks/runs", help="where the runs are written")
    parser.add_argument("--config", default=None, help="canopy.toml for the runs")
    parser.add_argument("--profile", default=None, help="write a pyinstrument profile of the last size here")
    parser.add_argument("--out", default="benchmarks/results/stages.json")
    args = parser.parse_args(argv)
    from engine.book import synth

    results = []
    for accounts in args.accounts or [2_000, 10_000]:
        book = Path(args.books) / f"book-{accounts}-{args.seed}"
        if not (book / "book.json").exists():
            synth.generate(str(book), accounts, args.seed, overwrite=True)
        profiler = None
        if args.profile:
            from pyinstrument import Profiler
            profiler = Profiler()
            profiler.start()
        result = run_one(str(book), str(Path(args.runs) / f"stages-{accounts}"), args.config)
        if profiler is not None:
            profiler.stop()
            Path(args.profile).parent.mkdir(parents=True, exist_ok=True)
            Path(args.profile).write_text(profiler.output_text(unicode=False, color=False))
        results.append(result)
        stages = ", ".join(f"{k} {v:.2f}s" for k, v in result["timings"].items())
        print(f"{accounts:>8,} accounts: {result['seconds']:>7.1f} s ({result['cpu_seconds']:.1f} s of CPU), "
              f"{result['accounts_per_second']:>7.1f} "
              f"accounts/s, peak {result['peak_memory_gb']:.1f} GB; {stages}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
