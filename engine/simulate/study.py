"""The tax-alpha backtest: buy-and-hold, a monthly harvester and Canopy, side by side, on two histories.

    canopy backtest --history sp500 --history synthetic --out benchmarks/results/backtest
    python -m jobs.backtest ...                           # the same, as a job

For each history (:mod:`engine.simulate.histories`: the 20 S&P 500 stocks that
``skfolio`` ships, 1991–2022 after a year for the risk model; a simulated
universe of ``--stocks`` names of the synthetic 500-stock index over
``--years``) the three strategies of :mod:`engine.simulate.strategies` run through
:func:`engine.simulate.backtest.simulate` with the same settings, Canopy with the
engine settings of ``--config``.  Written to ``--out``: ``backtest.json``
(the settings, and per history and strategy the metrics per year and overall
of :func:`engine.simulate.backtest.summarize`) and ``backtest.png``
(:func:`engine.review.charts.backtest_chart`).

The run is one process (on the 2-core development machine the solver is the
cost: a monthly step of a 500-stock account takes about 0.2 s, and each
new padded shape of the problem compiles once, 10–20 s); set
``JAX_COMPILATION_CACHE_DIR`` to keep the compiles between runs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import time
from pathlib import Path

import numpy as np

from engine.contract.config import Config
from engine.review.charts import backtest_chart
from engine.simulate.backtest import BacktestSettings, simulate, summarize
from engine.simulate.histories import History, sp500_history, synthetic_history
from engine.simulate.strategies import BuyAndHold, CanopyStrategy, MonthlyHarvester

log = logging.getLogger("canopy.backtest")

STEPS_PER_YEAR = {"monthly": 12.0, "weekly": 52.0, "daily": 252.0}


def load_histories(name: str, *, stocks: int = 500, years: int = 3, seed: int = 0,
                   start: dt.date | None = None, end: dt.date | None = None,
                   window_years: int = 0) -> dict[str, History]:
    """``sp500`` (between ``start`` and ``end``, cut into fresh accounts of ``window_years``) or ``synthetic``."""
    if name == "synthetic":
        history = synthetic_history(stocks, years, seed)
        return {history.name: history}
    if name != "sp500":
        raise ValueError(f"history must be sp500 or synthetic, got {name!r}")
    history = sp500_history()
    first = start or history.days[history.first].astype(dt.date)
    last = end or history.days[-1].astype(dt.date)
    if window_years <= 0:
        return {f"{history.name} {first.year}-{last.year}": history.window(first, last)}
    out = {}
    year = first.year
    while year <= last.year:
        stop = min(dt.date(year + window_years - 1, 12, 31), last)
        if last.year - stop.year < (window_years + 1) // 2:    # a short last stub joins the window before
            stop = last
        out[f"{history.name} {year}-{stop.year}"] = history.window(max(first, dt.date(year, 1, 1)), stop)
        year = stop.year + 1
    return out


def mean_of_windows(report: dict, prefix: str) -> dict:
    """The mean of the overall metrics of every window whose name starts with ``prefix``."""
    windows = [v for k, v in report["histories"].items() if k.startswith(prefix)]
    if len(windows) < 2:
        return {}
    strategies = windows[0]["strategies"]
    return {s: {key: float(np.mean([w["strategies"][s]["overall"][key] for w in windows]))
                for key in strategies[s]["overall"]} for s in strategies}


def _cumulative_tax_alpha(run, base) -> list[float]:
    """Per date: (W/W_bh) / (V/V_bh) − 1, wealth W = value − accrued tax; V pre-tax, flows removed."""
    def growth(r, after):
        value = np.asarray(r.value)
        before = np.asarray(r.value_before)
        wealth = value - np.asarray(r.accrued_tax)
        contributions = np.asarray(r.contributions)
        step = (wealth[1:] - contributions[1:]) / wealth[:-1] if after else before[1:] / value[:-1]
        return np.r_[1.0, np.cumprod(step)]
    ratio = (growth(run, True) / growth(base, True)) / (growth(run, False) / growth(base, False))
    return (ratio - 1).tolist()


def run_backtest(histories: dict[str, History], settings: BacktestSettings, config: Config,
                 out: Path, *, tax_budget: float | None = None) -> dict:
    """Run every strategy on every history; write ``backtest.json`` and ``backtest.png`` to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"settings": dataclasses.asdict(settings), "engine_config": config.to_dict(),
                    "histories": {}}
    chart: dict = {}
    for name, history in histories.items():
        runs = {}
        for strategy in (BuyAndHold(), MonthlyHarvester(), CanopyStrategy(config, tax_budget=tax_budget)):
            last = [time.monotonic()]

            def progress(who, done, total, last=last):
                if time.monotonic() - last[0] > 30 or done == total:
                    last[0] = time.monotonic()
                    log.info("%s %s: step %d of %d", name, who, done, total)
            runs[strategy.name] = simulate(history, strategy, settings, progress)
        summary = summarize(runs, STEPS_PER_YEAR[settings.frequency])
        summary["first_day"] = str(runs["canopy"].dates[0])
        summary["last_day"] = str(runs["canopy"].dates[-1])
        summary["stocks"] = int(history.security_ids.size)
        summary["steps"] = len(runs["canopy"].dates)
        summary["strategies"] = {s: {"overall": v["overall"],
                                     "per_year": {str(y): m for y, m in v["per_year"].items()}}
                                 for s, v in summary["strategies"].items()}
        report["histories"][name] = summary
        chart[name] = {"dates": runs["canopy"].dates,
                       "series": {s: _cumulative_tax_alpha(r, runs["buy_and_hold"]) for s, r in runs.items()},
                       "overall": {s: v["overall"] for s, v in summary["strategies"].items()}}
        (out / "backtest.json").write_text(json.dumps(report, indent=1, default=float))
    backtest_chart(chart, out / "backtest.png")
    return report


def print_report(report: dict) -> None:
    for name, summary in report["histories"].items():
        print(f"\n{name}: {summary['stocks']} stocks, {summary['first_day']} to {summary['last_day']}, "
              f"{summary['steps']} steps")
        print(f"{'strategy':<20}{'tax alpha':>11}{'after-tax':>11}{'pre-tax':>10}{'TE':>8}{'turn/yr':>10}"
              f"{'harvested':>14}{'disallowed':>12}{'seconds':>9}")
        for strategy, v in summary["strategies"].items():
            o = v["overall"]
            print(f"{strategy:<20}{o['tax_alpha']:>10.2%} {o['after_tax_excess']:>10.2%} {o['pretax_excess']:>9.2%}"
                  f"{o['tracking_error']:>8.2%}{o['turnover_rate']:>10.2%}{o['harvested_losses']:>14,.0f}"
                  f"{o['disallowed_losses']:>12,.0f}{o['seconds']:>9.0f}")


def run_study(history_names: list[str], *, stocks: int = 500, years: int = 3, seed: int = 0,
              start: dt.date | None = None, end: dt.date | None = None, window_years: int = 10,
              settings: BacktestSettings = BacktestSettings(), config: Config = Config(),
              out: Path = Path("benchmarks/results/backtest"), tax_budget: float | None = None) -> dict:
    """Load the histories, run every strategy on each (:func:`run_backtest`), print and write the report.

    ``backtest.json`` gains ``sp500_windows_mean`` where the S&P 500 history was cut into windows.
    """
    histories = {}
    for name in history_names or ["sp500", "synthetic"]:
        histories.update(load_histories(name, stocks=stocks, years=years, seed=seed,
                                        start=start, end=end, window_years=window_years))
    out = Path(out)
    report = run_backtest(histories, settings, config, out, tax_budget=tax_budget)
    means = mean_of_windows(report, "sp500")
    if means:
        report["sp500_windows_mean"] = means
        (out / "backtest.json").write_text(json.dumps(report, indent=1, default=float))
    print_report(report)
    for strategy, o in means.items():
        print(f"sp500 mean of windows  {strategy:<18} tax alpha {o['tax_alpha']:.2%}  "
              f"TE {o['tracking_error']:.2%}  after-tax {o['after_tax_excess']:.2%}")
    print(f"\nwritten: {out / 'backtest.json'}, {out / 'backtest.png'}")
    return report
