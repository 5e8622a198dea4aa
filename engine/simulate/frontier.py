"""The tax–risk frontier: tax alpha against tracking error, per strategy, setting and scan frequency.

A backtest (:mod:`engine.simulate.backtest`) gives one point per strategy.  A
firm setting a risk budget asks how much more tax one strategy saves than
another *at the same tracking error*.  :func:`run_frontier` runs, on one
history, every setting of every strategy side by side in lockstep
(:func:`engine.simulate.backtest.simulate_many`: on each rebalance day every
Canopy account of the history is solved in one engine call):

* Canopy, tax-blind to very tax-sensitive: the account's ``tax_sensitivity``
  θ (the multiplier of the tax against the tracking error in the objective,
  docs/optimization.md), monthly and daily; and without substitutes (the
  engine sees no correlations, so it cannot hold a correlated stock for a
  wash-blocked one);
* the harvester: loss thresholds (a lot is sold at a loss of at least this
  fraction of its basis), scanning monthly or daily, with and without a
  substitute (without: the proceeds wait in cash 31 days);
* buy-and-hold, the benchmark, at each scan frequency.

:func:`point` measures one account against buy-and-hold; :func:`frontier_summary`
interpolates Canopy's curve at each harvester's tracking error.

Pure: NumPy and the engine, no storage, no ray (:mod:`engine.simulate.frontier_study` runs it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from engine.contract.config import Config
from engine.simulate.backtest import BacktestSettings, StrategyRun, _metrics, _step_returns, simulate_many
from engine.simulate.histories import History
from engine.simulate.strategies import BuyAndHold, CanopyStrategy, MonthlyHarvester

__all__ = ["Setting", "FrontierGrid", "settings_of", "run_frontier", "point", "interpolate_at",
           "frontier_summary", "CANOPY", "HARVESTER"]

CANOPY = "canopy"
HARVESTER = "harvester"
BUY_AND_HOLD = "buy_and_hold"


@dataclass(frozen=True)
class Setting:
    """One account of the frontier: a strategy, its knob, its scan frequency, substitutes or not.

    ``knob`` is θ (``tax_sensitivity``) for Canopy and the loss threshold
    (fraction of basis) for the harvester; 0 for buy-and-hold.  ``risk_aversion``
    is Canopy's λ where it is not the config's (``[policy] risk_aversion``).
    """

    strategy: str
    knob: float
    scan: str = "monthly"
    substitutes: bool = True
    risk_aversion: float | None = None

    @property
    def curve(self) -> str:
        """The curve the setting is a point of: strategy, scan and substitutes."""
        return f"{self.strategy}/{self.scan}" + ("" if self.substitutes else "/no_substitutes")

    @property
    def label(self) -> str:
        return f"{self.curve}/{self.knob:g}" + ("" if self.risk_aversion is None else f"/risk{self.risk_aversion:g}")


@dataclass(frozen=True)
class FrontierGrid:
    """The settings a frontier sweeps.

    Attributes
    ----------
    tax_sensitivities
        Canopy's θ, from tax-blind (0) to very tax-sensitive.
    thresholds
        The harvester's loss thresholds, fractions of basis.
    daily_tax_sensitivities
        Canopy's θ run daily as well (empty: Canopy monthly only).
    no_substitutes_tax_sensitivities, no_substitutes_thresholds
        Canopy's θ and the harvester's thresholds run without substitutes too (monthly and daily).
    risk_aversions
        Canopy's λ (``[policy] risk_aversion``) at θ = 1, monthly: points of the same curve.
        Only θ/λ moves the optimum, but the spread is paid at face value, so a small θ also
        makes every trade look dear against the tax it saves and harvests little; a large λ
        at θ = 1 buys a low tracking error the way a selective harvester does, by harvesting
        only where a close substitute exists.
    """

    tax_sensitivities: tuple[float, ...] = (0.0, 0.02, 0.05, 0.1, 0.25, 1.0, 4.0)
    thresholds: tuple[float, ...] = (0.0, 0.05, 0.10, 0.20)
    daily_tax_sensitivities: tuple[float, ...] = (1.0,)
    no_substitutes_tax_sensitivities: tuple[float, ...] = (1.0,)
    no_substitutes_thresholds: tuple[float, ...] = (0.0,)
    risk_aversions: tuple[float, ...] = (0.375, 24.0, 96.0, 384.0, 1536.0)


def settings_of(grid: FrontierGrid, *, canopy_daily: bool = True) -> list[Setting]:
    """Every account of ``grid``: buy-and-hold per scan, Canopy's settings, the harvester's."""
    out = [Setting(BUY_AND_HOLD, 0.0, "monthly"), Setting(BUY_AND_HOLD, 0.0, "daily")]
    out += [Setting(CANOPY, t) for t in grid.tax_sensitivities]
    out += [Setting(CANOPY, 1.0, risk_aversion=r) for r in grid.risk_aversions]
    out += [Setting(CANOPY, t, substitutes=False) for t in grid.no_substitutes_tax_sensitivities]
    if canopy_daily:
        out += [Setting(CANOPY, t, "daily") for t in grid.daily_tax_sensitivities]
    for scan in ("monthly", "daily"):
        out += [Setting(HARVESTER, m, scan) for m in grid.thresholds]
        out += [Setting(HARVESTER, m, scan, substitutes=False) for m in grid.no_substitutes_thresholds]
    return out


def _strategy(setting: Setting, config: Config):
    if setting.strategy == CANOPY:
        if setting.risk_aversion is not None:
            config = dataclasses.replace(config, policy=dataclasses.replace(config.policy,
                                                                            risk_aversion=setting.risk_aversion))
        return CanopyStrategy(config, name=setting.label, tax_sensitivity=setting.knob,
                              substitutes=setting.substitutes)
    if setting.strategy == HARVESTER:
        return MonthlyHarvester(name=setting.label, min_loss=setting.knob, scan=setting.scan,
                                substitutes=setting.substitutes)
    return BuyAndHold()


def run_frontier(history: History, settings: list[Setting], config: Config,
                 backtest: BacktestSettings = BacktestSettings(), progress=None) -> dict[Setting, StrategyRun]:
    """Every setting's account through ``history`` in lockstep; its run per setting."""
    if not any(s.strategy == BUY_AND_HOLD for s in settings):
        raise ValueError("a frontier needs buy-and-hold, the benchmark")
    accounts = [(_strategy(s, config), dataclasses.replace(backtest, frequency=s.scan)) for s in settings]
    runs = simulate_many(history, accounts, progress)
    return dict(zip(settings, runs))


def monthly_tracking_error(run: StrategyRun) -> float:
    """Annualized tracking error of the calendar months' pre-tax returns against the index's.

    Each month's return compounds its steps' returns (one step for a
    monthly account, about 21 for a daily one), so monthly and daily
    accounts are measured on the same grid.
    """
    pre, _ = _step_returns(run)
    index = np.asarray(run.index_return[1:])
    months = np.asarray([d.year * 12 + d.month for d in run.dates[1:]])
    active = []
    for m in np.unique(months):
        rows = months == m
        active.append(np.prod(1 + pre[rows]) - np.prod(1 + index[rows]))
    return float(np.std(active, ddof=1) * np.sqrt(12)) if len(active) > 1 else 0.0


def _tax_components(run: StrategyRun, settings: BacktestSettings) -> dict[str, float]:
    """USD: tax saved by the losses recognized, tax of the gains recognized, and what the wash-sale rule cost."""
    from engine.kernels.wash import SELL

    saved = taxed = long_gains = disallowed_tax = 0.0
    for r in run.ledger.trades:
        if r.side != SELL:
            continue
        for amount, rate in ((r.short_term, settings.st_rate), (r.long_term, settings.lt_rate)):
            if amount < 0:
                saved -= rate * amount
            else:
                taxed += rate * amount
        long_gains += max(r.long_term, 0.0)
        disallowed_tax += settings.st_rate * r.disallowed
    return {"losses_harvested": saved, "gains_taxed": taxed,
            "short_term_gains_avoided": (settings.st_rate - settings.lt_rate) * long_gains,
            "wash_sales_cost": disallowed_tax}


def point(run: StrategyRun, base: StrategyRun, settings: BacktestSettings) -> dict[str, float]:
    """One account's frontier point against buy-and-hold (``base``, the same scan frequency).

    Returns fractions per year unless named otherwise: ``tax_alpha`` (yearly
    tax saved: after-tax minus pre-tax excess return), ``tax_alpha_liquidated``
    (the same after selling everything on the last day and paying its tax),
    ``tracking_error`` (:func:`monthly_tracking_error`), ``turnover_rate``,
    the decomposition (``losses_harvested``, ``gains_taxed``, ``net_tax_saved``,
    ``gains_deferred``: the tax left due at the horizon beyond buy-and-hold's,
    ``short_term_gains_avoided``: (st − lt) × the long-term gains realized,
    ``wash_sales_cost``: the disallowed losses at the short-term rate), each
    per year as a fraction of the initial value; ``harvested_losses`` and
    ``disallowed_losses`` in USD.
    """
    span = (base.dates[-1] - base.dates[0]).days / 365.25
    everything = np.arange(1, len(base.dates))
    m = _metrics(run, base, everything, 12.0, span)
    initial = run.value[0]
    wealth = run.value[-1] - run.accrued_tax[-1] - run.liquidation_tax
    base_wealth = base.value[-1] - base.accrued_tax[-1] - base.liquidation_tax
    contributed = float(np.sum(run.contributions))
    liquidated = (((wealth - contributed) / initial) ** (1 / span)
                  - ((base_wealth - contributed) / base.value[0]) ** (1 / span) - m["pretax_excess"])
    per_year = 1.0 / (initial * span)
    parts = {k: v * per_year for k, v in _tax_components(run, settings).items()}
    return {"tax_alpha": m["tax_alpha"], "tax_alpha_liquidated": float(liquidated),
            "after_tax_excess": m["after_tax_excess"], "pretax_excess": m["pretax_excess"],
            "tracking_error": monthly_tracking_error(run), "turnover_rate": m["turnover_rate"],
            **parts, "net_tax_saved": parts["losses_harvested"] - parts["gains_taxed"],
            "gains_deferred": (run.liquidation_tax - base.liquidation_tax) * per_year,
            "harvested_losses": m["harvested_losses"], "disallowed_losses": m["disallowed_losses"],
            "seconds": run.seconds}


def history_points(runs: dict[Setting, StrategyRun], settings: BacktestSettings) -> dict[str, dict]:
    """Per setting label: its curve, knob and :func:`point` against buy-and-hold of its scan frequency."""
    bases = {s.scan: r for s, r in runs.items() if s.strategy == BUY_AND_HOLD}
    return {s.label: {"curve": s.curve, "strategy": s.strategy, "knob": s.knob, "scan": s.scan,
                      "substitutes": s.substitutes, "risk_aversion": s.risk_aversion,
                      **point(r, bases[s.scan], settings)}
            for s, r in runs.items()}


def interpolate_at(tracking_error: np.ndarray, tax_alpha: np.ndarray, at: float) -> tuple[float, str]:
    """Tax alpha of a curve at tracking error ``at``: linear along its efficient part.

    The efficient part keeps the points no other point beats (more tax
    alpha at no more tracking error), sorted by tracking error; between two
    of them a mix of the two settings is assumed to lie on the line.  Below
    the lowest tracking error the curve does not reach ``at``: NaN,
    ``"below"``; above the highest, its best point, ``"above"`` (no
    extrapolation); else ``"inside"``.
    """
    te = np.asarray(tracking_error, float)
    alpha = np.asarray(tax_alpha, float)
    order = np.lexsort((-alpha, te))
    te, alpha = te[order], alpha[order]
    keep = alpha > np.r_[-np.inf, np.maximum.accumulate(alpha)[:-1]]
    te, alpha = te[keep], alpha[keep]
    if at < te[0]:
        return float("nan"), "below"
    if at >= te[-1]:
        return float(alpha[-1]), "above" if at > te[-1] else "inside"
    return float(np.interp(at, te, alpha)), "inside"


def frontier_summary(points: dict[str, dict], history: str, canopy_curve: str = f"{CANOPY}/monthly"
                     ) -> list[dict]:
    """Per harvester setting of one history: its point and Canopy's tax alpha at its tracking error.

    ``points`` is :func:`history_points`' output; Canopy's curve is
    ``canopy_curve`` (monthly, with substitutes, by default).
    """
    canopy = [p for p in points.values() if p["curve"] == canopy_curve]
    te = np.asarray([p["tracking_error"] for p in canopy])
    alpha = np.asarray([p["tax_alpha"] for p in canopy])
    out = []
    for label, p in points.items():
        if p["strategy"] != HARVESTER:
            continue
        at, where = interpolate_at(te, alpha, p["tracking_error"])
        ratio = at / p["tax_alpha"] if p["tax_alpha"] > 0 and np.isfinite(at) else float("nan")
        out.append({"history": history, "harvester": label, "harvester_te": p["tracking_error"],
                    "harvester_tax_alpha": p["tax_alpha"], "canopy_curve": canopy_curve,
                    "canopy_tax_alpha_at_harvester_te": at, "ratio": ratio, "interpolation": where})
    return out
