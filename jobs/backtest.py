"""The tax-alpha backtest as a job: buy-and-hold, a monthly harvester and Canopy, side by side.

    python -m jobs.backtest --history sp500 --history synthetic --out benchmarks/results/backtest
    python -m jobs.backtest --frontier --out docs/results       # the tax-risk frontier

The same as ``canopy backtest``; the work is :func:`engine.simulate.study.run_study`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from pathlib import Path

from engine.contract.config import load_config
from engine.simulate.backtest import BacktestSettings
from engine.simulate.frontier_study import FrontierStudy, print_frontier, run_frontier_study
from engine.simulate.study import STEPS_PER_YEAR, run_study


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--history", action="append", choices=["sp500", "synthetic"],
                        help="Histories to run (default: both).")
    parser.add_argument("--stocks", type=int, default=500, help="Stocks of the synthetic universe.")
    parser.add_argument("--years", type=int, default=3, help="Years of the synthetic history.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the synthetic history.")
    parser.add_argument("--start", type=dt.date.fromisoformat, help="First day of the S&P 500 history.")
    parser.add_argument("--end", type=dt.date.fromisoformat, help="Last day of the S&P 500 history.")
    parser.add_argument("--window-years", type=int, default=10,
                        help="Cut the S&P 500 history into fresh accounts of this many years (0: one run).")
    parser.add_argument("--frequency", choices=list(STEPS_PER_YEAR), default="monthly")
    parser.add_argument("--contribution", type=float, default=0.0, help="USD added each rebalance day.")
    parser.add_argument("--tax-budget", type=float, help="Canopy's yearly tax budget, USD.")
    parser.add_argument("--config", help="canopy.toml for Canopy's [policy] and [solver].")
    parser.add_argument("--out", help="Folder for the JSON and PNG (default: benchmarks/results/backtest; "
                                      "with --frontier, docs/results).")
    parser.add_argument("--frontier", action="store_true",
                        help="Sweep every strategy's settings: tax alpha against tracking error.")
    parser.add_argument("--seeds", type=int, default=10, help="With --frontier: simulated universes (seeds).")
    parser.add_argument("--daily-seeds", type=int, default=1, help="With --frontier: seeds that run Canopy daily.")
    parser.add_argument("--workers", type=int, default=2, help="With --frontier: processes.")
    parser.add_argument("--from-parts", action="store_true",
                        help="With --frontier: report the histories already finished in OUT/frontier_parts.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.frontier:
        study = FrontierStudy(seeds=args.seeds, stocks=args.stocks, years=args.years, daily_seeds=args.daily_seeds,
                              real="sp500" in (args.history or ["sp500"]), window_years=args.window_years,
                              workers=args.workers)
        print_frontier(run_frontier_study(study, Path(args.out or "docs/results"),
                                          backtest=BacktestSettings(contribution=args.contribution),
                                          config=load_config(args.config), run=not args.from_parts))
        return 0
    run_study(args.history, stocks=args.stocks, years=args.years, seed=args.seed, start=args.start,
              end=args.end, window_years=args.window_years,
              settings=BacktestSettings(frequency=args.frequency, contribution=args.contribution),
              config=load_config(args.config), out=Path(args.out or "benchmarks/results/backtest"),
              tax_budget=args.tax_budget)
    return 0


if __name__ == "__main__":
    sys.exit(main())
