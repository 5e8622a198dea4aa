"""Price histories for simulations: real S&P 500 stocks, and universes simulated from the synthetic risk model.

A :class:`History` is a daily price panel of the stocks of one direct index,
the index's starting weights, and a risk model for any day of it.  The index
is the buy-and-hold portfolio of its starting weights (weights then drift
with prices, as a cap-weighted index does between reconstitutions), so a
buy-and-hold account tracks it exactly and every other strategy's tracking
error is measured against it.

* :func:`sp500_history`: the 20 S&P 500 stocks of the ``skfolio`` package
  (``skfolio.datasets.load_sp500_dataset``, daily adjusted closes,
  1990-01-02 to 2022-12-28), equally weighted at the start.  Its risk model
  is statistical, re-estimated on each day asked for from the trailing
  ``RISK_WINDOW_DAYS`` daily returns: the first ``RISK_FACTORS`` principal
  components of their sample covariance are the factors, the rest of each
  stock's variance its specific variance; annualized × 252.
* :func:`synthetic_history`: ``stocks`` names of the synthetic 500-stock
  direct index (:func:`engine.book.synth.build_universe`: 23 factors, cap
  weights), with a fresh daily path of ``years`` simulated from the same
  factor model (the model is then the true one, known to the strategies).

Pure: NumPy in memory; ``skfolio`` ships its data inside the package (no network).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from engine.contract.schema import Col

__all__ = ["History", "RiskModel", "sp500_history", "synthetic_history",
           "RISK_WINDOW_DAYS", "RISK_FACTORS"]

#: Trailing daily returns of the S&P 500 history's statistical risk model.
RISK_WINDOW_DAYS = 504
#: Principal components taken as its factors.
RISK_FACTORS = 3
#: Trading days per year (annualization).
TRADING_DAYS = 252


@dataclass(frozen=True)
class RiskModel:
    """``Σ = X F Xᵀ + diag(d)``, annualized: ``exposures`` (N × k), ``factor_covariance`` (k × k),
    ``specific_variance`` (N,), and the factors' names."""

    exposures: np.ndarray
    factor_covariance: np.ndarray
    specific_variance: np.ndarray
    factors: tuple[str, ...]

    def covariance(self) -> np.ndarray:
        """The full N × N covariance (for small universes and the harvester's correlations)."""
        X = self.exposures
        return X @ self.factor_covariance @ X.T + np.diag(self.specific_variance)


@dataclass(frozen=True)
class History:
    """A daily price panel and what a book needs besides prices.

    Attributes
    ----------
    name : str
    days : (T,) datetime64[D]
        Business days.
    security_ids : (N,) str
    prices : (T, N) float64
        USD per share, adjusted (no dividends paid out).
    start_weights : (N,) float64
        The index's weights on ``days[first]``, summing to 1.
    spread_bps : (N,) float64
        One-way trading cost.
    asset_class : str
        The asset class of every stock.
    first : int
        The first day a simulation may start (the S&P 500 history keeps a
        year of returns before it for its risk model).
    risk : callable
        ``risk(t) -> RiskModel`` for day index ``t`` (using prices up to ``t`` only).
    """

    name: str
    days: np.ndarray
    security_ids: np.ndarray
    prices: np.ndarray
    start_weights: np.ndarray
    spread_bps: np.ndarray
    asset_class: str
    first: int
    risk: Callable[[int], RiskModel] = field(repr=False)

    def window(self, start: dt.date | None = None, end: dt.date | None = None) -> "History":
        """The same history between two dates (inclusive); the risk model keeps its past."""
        lo = self.first if start is None else max(self.first, int(np.searchsorted(self.days, np.datetime64(start, "D"))))
        hi = self.days.size if end is None else int(np.searchsorted(self.days, np.datetime64(end, "D"), "right"))
        return History(self.name, self.days[:hi], self.security_ids, self.prices[:hi], self.start_weights,
                       self.spread_bps, self.asset_class, lo, self.risk)


def _statistical_risk(prices: np.ndarray, window: int, factors: int) -> Callable[[int], RiskModel]:
    log_returns = np.diff(np.log(prices), axis=0)
    names = tuple(f"pc{i + 1}" for i in range(factors))
    cache: dict[int, RiskModel] = {}

    def risk(t: int) -> RiskModel:
        # re-estimated monthly (every 21 trading days): the model moves slowly, a step often
        key = t - t % 21
        if key not in cache:
            sample = log_returns[max(0, key - window):max(key, 2)]
            cov = np.cov(sample, rowvar=False) * TRADING_DAYS
            values, vectors = np.linalg.eigh(cov)
            top = np.argsort(values)[::-1][:factors]
            X = vectors[:, top]
            F = np.diag(values[top])
            specific = np.maximum(np.diag(cov) - np.einsum("ik,k,ik->i", X, values[top], X),
                                  0.05 * np.diag(cov))
            cache[key] = RiskModel(X, F, specific, names)
        return cache[key]

    return risk


def sp500_history(spread_bps: float = 2.0) -> History:
    """The 20 stocks of skfolio's S&P 500 dataset, 1990–2022, equally weighted at the start."""
    from skfolio.datasets import load_sp500_dataset

    frame = load_sp500_dataset()
    days = np.asarray(frame.index.values.astype("datetime64[D]"))
    prices = frame.to_numpy(dtype=np.float64)
    n = prices.shape[1]
    first = int(np.searchsorted(days, np.datetime64("1991-01-01", "D")))
    return History("sp500_20", days, np.asarray(frame.columns, dtype=object), prices,
                   np.full(n, 1.0 / n), np.full(n, spread_bps), "us_large_cap", first,
                   _statistical_risk(prices, RISK_WINDOW_DAYS, RISK_FACTORS))


def synthetic_history(stocks: int = 500, years: int = 5, seed: int = 0,
                      start: dt.date = dt.date(2015, 1, 2)) -> History:
    """``stocks`` names of the synthetic direct index, ``years`` of daily prices from its factor model."""
    from engine.book import synth

    universe = synth.build_universe(seed)
    members = universe.products["DI-US-LARGE"]
    caps = universe.product_weights["DI-US-LARGE"]
    chosen = np.sort(np.linspace(0, members.size - 1, min(stocks, members.size)).round().astype(int))
    rows = members[chosen]
    tables = universe.tables
    ids = universe.security_ids[rows]
    secs = tables["securities"]
    sec_ids = np.asarray(secs.column(Col.security_id).to_pylist(), dtype=object)
    position = {s: i for i, s in enumerate(sec_ids)}
    take = np.asarray([position[s] for s in ids])
    specific = np.asarray(secs.column(Col.specific_variance).to_numpy())[take]
    spread = np.asarray(secs.column(Col.spread_bps).to_numpy())[take]
    factors = tuple(synth.FACTORS)
    f_index = {f: i for i, f in enumerate(factors)}
    X = np.zeros((ids.size, len(factors)))
    expo = tables["factor_exposures"]
    e_sec = np.asarray(expo.column(Col.security_id).to_pylist(), dtype=object)
    e_fac = np.asarray(expo.column(Col.factor).to_pylist(), dtype=object)
    e_val = expo.column(Col.exposure).to_numpy()
    local = {s: i for i, s in enumerate(ids)}
    for s, f, v in zip(e_sec, e_fac, e_val):
        if s in local:
            X[local[s], f_index[f]] = v
    cov = tables["factor_covariance"]
    F = np.zeros((len(factors), len(factors)))
    for a, b, v in zip(cov.column(Col.factor_1).to_pylist(), cov.column(Col.factor_2).to_pylist(),
                       cov.column(Col.covariance).to_numpy()):
        F[f_index[a], f_index[b]] = F[f_index[b], f_index[a]] = v

    rng = np.random.default_rng([seed, 7])
    days = np.arange(np.datetime64(start, "D"), np.datetime64(start, "D") + 366 * years + 1)
    days = days[np.is_busday(days)]
    step = 1.0 / TRADING_DAYS
    drift = 0.05 + 0.03 * X[:, f_index["market"]]       # as the synthetic universe's stocks
    total = np.einsum("ij,jk,ik->i", X, F, X) + specific
    shocks = rng.standard_normal((days.size, len(factors))) @ np.linalg.cholesky(F * step).T @ X.T \
        + rng.standard_normal((days.size, ids.size)) * np.sqrt(specific * step)
    log_returns = shocks + (drift - total / 2) * step
    log_returns[0] = 0.0
    prices = universe.prices[-1, rows] * np.exp(np.cumsum(log_returns, axis=0))
    weights = caps[chosen] / caps[chosen].sum()
    model = RiskModel(X, F, specific, factors)
    return History(f"synthetic_{ids.size}", days, ids.astype(object), prices, weights, spread,
                   "us_large_cap", 0, lambda t: model)
