"""The tax-alpha backtest as a job: buy-and-hold, a monthly harvester and Canopy, side by side.

    python -m jobs.backtest --history sp500 --history synthetic --out benchmarks/results/backtest

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
    parser.add_argument("--out", default="benchmarks/results/backtest", help="Folder for the JSON and PNG.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    run_study(args.history, stocks=args.stocks, years=args.years, seed=args.seed, start=args.start,
              end=args.end, window_years=args.window_years,
              settings=BacktestSettings(frequency=args.frequency, contribution=args.contribution),
              config=load_config(args.config), out=Path(args.out), tax_budget=args.tax_budget)
    return 0


if __name__ == "__main__":
    sys.exit(main())
