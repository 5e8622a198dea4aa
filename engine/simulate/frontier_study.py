"""The frontier study: every setting on every history, the spread over seeds, the summary, JSON and chart.

    canopy backtest --frontier --out docs/results

Histories: the simulated 500-stock universe drawn with ``seeds`` seeds over
``years``, and the real S&P 500 stocks cut into windows
(:func:`engine.simulate.study.load_histories`).  Each history is one
:func:`engine.simulate.frontier.run_frontier` (every account in lockstep, each
day's Canopy accounts in one engine call); histories run in ``workers``
processes.  Written: ``frontier.json`` (settings, every point, the curves
with their spread over seeds, the summary, the targets) and ``frontier.png``
(:func:`engine.review.charts.frontier_chart`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from engine.contract.config import Config
from engine.simulate.backtest import BacktestSettings
from engine.simulate.frontier import CANOPY, FrontierGrid, frontier_summary, history_points, run_frontier, settings_of
from engine.simulate.histories import synthetic_history
from engine.simulate.study import load_histories

__all__ = ["FrontierStudy", "run_frontier_study", "print_frontier", "seed_spread", "mean_summary", "TARGETS"]

log = logging.getLogger("canopy.frontier")

#: The issue's targets: Canopy's tax alpha at the harvester's tracking error over the harvester's.
TARGETS = {"simulated_mean_ratio": 1.5, "real_ratio": 1.0, "disallowed_losses": 0.0}
#: Disallowed losses below this (USD) are rounding dust, not wash sales.
DUST_USD = 0.01


@dataclasses.dataclass(frozen=True)
class FrontierStudy:
    """What the study runs.

    Attributes
    ----------
    seeds, stocks, years
        The simulated universes: ``seeds`` draws (0, 1, ...) of ``stocks`` names over ``years``.
    daily_seeds
        How many of the seeds also run Canopy daily (its daily curve).
    real
        Run the S&P 500 windows of ``window_years`` too.
    grid
        The settings (:class:`engine.simulate.frontier.FrontierGrid`).
    workers
        Processes the histories are spread over.
    """

    seeds: int = 10
    stocks: int = 500
    years: int = 3
    daily_seeds: int = 1
    real: bool = True
    window_years: int = 10
    grid: FrontierGrid = FrontierGrid()
    workers: int = 2


def _one_history(job: tuple) -> tuple[str, dict]:
    """Run one history's frontier (a worker's task): its name and its points."""
    kind, key, study, backtest, config = job
    clock = time.perf_counter()
    if kind == "synthetic":
        history = synthetic_history(study.stocks, study.years, key)
        name = f"{history.name} seed {key}"
        daily = key < study.daily_seeds
    else:
        name, history = key, load_histories("sp500", window_years=study.window_years)[key]
        daily = False
    settings = settings_of(study.grid, canopy_daily=daily)
    last = [time.monotonic()]

    def progress(_, done, total):
        if time.monotonic() - last[0] > 60 or done == total:
            last[0] = time.monotonic()
            log.info("%s: day %d of %d", name, done, total)
    runs = run_frontier(history, settings, config, backtest, progress)
    first = next(iter(runs.values()))
    return name, {"source": kind, "first_day": str(first.dates[0]), "last_day": str(first.dates[-1]),
                  "stocks": int(history.security_ids.size), "seconds": time.perf_counter() - clock,
                  "points": history_points(runs, backtest)}


def seed_spread(histories: list[dict]) -> dict[str, list[dict]]:
    """Per curve, per setting: the mean, standard deviation, min and max over ``histories`` (seeds)."""
    labels = [label for label in histories[0]["points"] if all(label in h["points"] for h in histories)]
    curves: dict[str, list[dict]] = {}
    for label in labels:
        pts = [h["points"][label] for h in histories]
        first = pts[0]
        row = {"setting": label, "knob": first["knob"], "risk_aversion": first.get("risk_aversion"),
               "seeds": len(pts)}
        for key in ("tax_alpha", "tax_alpha_liquidated", "tracking_error", "turnover_rate", "losses_harvested",
                    "gains_taxed", "net_tax_saved", "gains_deferred", "short_term_gains_avoided",
                    "wash_sales_cost", "disallowed_losses"):
            values = np.asarray([p[key] for p in pts], float)
            row[key] = float(values.mean())
            row[f"{key}_std"] = float(values.std(ddof=1)) if values.size > 1 else 0.0
            row[f"{key}_min"], row[f"{key}_max"] = float(values.min()), float(values.max())
        curves.setdefault(first["curve"], []).append(row)
    return curves


def mean_summary(rows: list[dict], history: str) -> list[dict]:
    """Per harvester setting: the mean over the rows (one per seed) of the summary's figures."""
    out = []
    for harvester in dict.fromkeys(r["harvester"] for r in rows):
        mine = [r for r in rows if r["harvester"] == harvester]
        mean = {k: float(np.nanmean([r[k] for r in mine])) for k in
                ("harvester_te", "harvester_tax_alpha", "canopy_tax_alpha_at_harvester_te", "ratio")}
        mean["ratio_of_means"] = mean["canopy_tax_alpha_at_harvester_te"] / mean["harvester_tax_alpha"] \
            if mean["harvester_tax_alpha"] > 0 else float("nan")
        out.append({"history": history, "harvester": harvester, **mean, "seeds": len(mine),
                    "ratio_min": float(np.nanmin([r["ratio"] for r in mine])),
                    "canopy_curve": mine[0]["canopy_curve"]})
    return out


def _summaries(histories: dict[str, dict], seeds: int, stocks: int) -> tuple[dict, list[dict]]:
    """The curves per history group (the seeds' spread, each real window) and the summary rows."""
    simulated = {n: h for n, h in histories.items() if h["source"] == "synthetic"}
    real = {n: h for n, h in histories.items() if h["source"] != "synthetic"}
    curves, summary = {}, []
    group = f"synthetic_{stocks} mean of {len(simulated)} seeds"
    if simulated:
        curves[group] = seed_spread(list(simulated.values()))
        per_seed = [row for name, h in simulated.items() for row in frontier_summary(h["points"], name)]
        summary += mean_summary(per_seed, group) + per_seed
        daily = [h for h in simulated.values() if any(p["curve"] == f"{CANOPY}/daily"
                                                      for p in h["points"].values())]
        if daily:
            curves[f"synthetic_{stocks} the {len(daily)} seed(s) with Canopy daily"] = seed_spread(daily)
    for name, h in real.items():
        curves[name] = seed_spread([h])
        summary += frontier_summary(h["points"], name)
    return curves, summary


def _targets(histories: dict[str, dict], summary: list[dict]) -> dict:
    """Each target with the figure it is judged on and whether it is met."""
    out = {}
    for row in summary:
        if row.get("seeds"):                           # the mean over the seeds
            out[f"{row['history']} / {row['harvester']}"] = {
                "ratio": row["ratio"], "target": TARGETS["simulated_mean_ratio"],
                "met": bool(row["ratio"] >= TARGETS["simulated_mean_ratio"])}
        elif histories[row["history"]]["source"] != "synthetic":
            # a harvester that saved no tax has no ratio: Canopy meets it by saving at least as much
            met = (row["ratio"] >= TARGETS["real_ratio"] if row["harvester_tax_alpha"] > 0
                   else row["canopy_tax_alpha_at_harvester_te"] >= row["harvester_tax_alpha"])
            out[f"{row['history']} / {row['harvester']}"] = {
                "ratio": row["ratio"], "target": TARGETS["real_ratio"], "met": bool(met)}
    # under a cent is the ledger's floating-point dust (a lot's basis split and summed again), not a wash sale
    disallowed = {n: p["disallowed_losses"] for n, h in histories.items() for p in h["points"].values()
                  if p["strategy"] == CANOPY and p["disallowed_losses"] >= DUST_USD}
    out["canopy disallowed losses"] = {"histories_with_any": disallowed, "met": not disallowed}
    return out


def _job_name(job: tuple, study: FrontierStudy) -> str:
    return f"synthetic_{study.stocks} seed {job[1]}" if job[0] == "synthetic" else job[1]


def _fingerprint(study: FrontierStudy, backtest: BacktestSettings, config: Config) -> str:
    """What a finished history's results depend on; a part written under another is run again."""
    return json.dumps([dataclasses.asdict(study) | {"workers": 0, "seeds": 0, "real": 0},
                       dataclasses.asdict(backtest), config.to_dict()], sort_keys=True, default=str)


def _save_part(parts: Path, name: str, result: dict, study, backtest, config) -> dict:
    """Write one finished history to ``parts`` (a rerun resumes from it); returns ``result``."""
    parts.mkdir(parents=True, exist_ok=True)
    (parts / f"{name.replace(' ', '_')}.json").write_text(json.dumps(
        {"name": name, "fingerprint": _fingerprint(study, backtest, config), "result": result}, default=float))
    return result


def _load_parts(parts: Path, study, backtest, config) -> dict[str, dict]:
    """The histories a previous run of the same study finished (:func:`_save_part`)."""
    fingerprint = _fingerprint(study, backtest, config)
    found = {}
    for path in sorted(parts.glob("*.json")) if parts.is_dir() else []:
        part = json.loads(path.read_text())
        if part.get("fingerprint") == fingerprint:
            found[part["name"]] = part["result"]
    return found


def _log_like(level: int) -> None:
    """A worker logs its progress as the parent does."""
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(message)s")


def _jobs(study: FrontierStudy, backtest: BacktestSettings, config: Config) -> list[tuple]:
    jobs = [("synthetic", seed, study, backtest, config) for seed in range(study.seeds)]
    if study.real:
        jobs += [("sp500", name, study, backtest, config)
                 for name in load_histories("sp500", window_years=study.window_years)]
    return jobs                     # the simulated universes first: the main targets


def run_frontier_study(study: FrontierStudy, out: Path, *, backtest: BacktestSettings = BacktestSettings(),
                       config: Config = Config(), run: bool = True) -> dict:
    """Run every history, write ``frontier.json`` and ``frontier.png`` to ``out``; the report.

    Each finished history is kept in ``out/frontier_parts`` (a rerun of the
    same study resumes from them).  ``run=False`` runs nothing and reports
    the histories already finished there (a partial sweep says so in
    ``settings.finished``).
    """
    from engine.review.charts import frontier_chart

    clock = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = _jobs(study, backtest, config)
    parts = out / "frontier_parts"
    done = _load_parts(parts, study, backtest, config)
    todo = [j for j in jobs if _job_name(j, study) not in done] if run else []
    if not done and not todo:
        raise ValueError(f"no finished history of this study in {parts}: run it first")
    if study.workers > 1 and len(todo) > 1:
        import multiprocessing

        with ProcessPoolExecutor(study.workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_log_like, initargs=(logging.getLogger().level,)) as pool:
            for future in as_completed([pool.submit(_one_history, job) for job in todo]):
                name, result = future.result()
                done[name] = _save_part(parts, name, result, study, backtest, config)
    else:
        for name, result in map(_one_history, todo):
            done[name] = _save_part(parts, name, result, study, backtest, config)
    order = [_job_name(j, study) for j in sorted(jobs, key=lambda j: (j[0], j[1]))]
    histories = {name: done[name] for name in order if name in done}
    curves, summary = _summaries(histories, study.seeds, study.stocks)
    report = {"settings": {**dataclasses.asdict(backtest), "seeds": study.seeds, "stocks": study.stocks,
                           "years": study.years, "daily_seeds": study.daily_seeds,
                           "window_years": study.window_years, "grid": dataclasses.asdict(study.grid),
                           "finished": f"{len(histories)} of {len(jobs)} histories",
                           "costs": "each trade pays its stock's spread one way (2 bps real, 2-8 bps simulated)",
                           "taxes": "a year's tax paid (or credited) on April 15 of the next year"},
              "engine_config": config.to_dict(), "targets": _targets(histories, summary),
              "summary": summary, "curves": curves, "histories": histories,
              "seconds": time.perf_counter() - clock}
    (out / "frontier.json").write_text(json.dumps(report, indent=1, default=float))
    frontier_chart(curves, out / "frontier.png")
    return report


def print_frontier(report: dict) -> None:
    """The summary as a table on stdout."""
    print(f"{'history':<40}{'harvester':<36}{'h TE':>7}{'h alpha':>9}{'Canopy@TE':>11}{'ratio':>7}")
    for row in report["summary"]:
        print(f"{row['history'][:39]:<40}{row['harvester']:<36}{row['harvester_te']:>7.2%}"
              f"{row['harvester_tax_alpha']:>9.2%}{row['canopy_tax_alpha_at_harvester_te']:>11.2%}"
              f"{row['ratio']:>7.2f}")
    print(f"seconds: {report['seconds']:.0f}")

