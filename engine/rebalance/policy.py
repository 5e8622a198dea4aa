"""The firm's tax policy as numbers of the problem: what a lot's sale is worth, and what may not trade.

:func:`engine.rebalance.problem.build_problem_batch` asks this module, for every lot of
a shard at once, what selling it costs in the objective and which sales and
purchases the policy fixes; :func:`engine.rebalance.proposals.propose` asks it for the
tax budget left.  The settings are :class:`engine.contract.config.PolicyConfig`'s;
each formula below names them.

* Lot cost (USD of objective per USD sold, before ``θ_a = tax_sensitivity``):
  a gain costs its tax, ``slope = rate × gain / proceeds``, a long-term gain
  ``long_term_gain_weight × slope`` (below 1 the tax of a long-term gain,
  paid some day anyway, weighs less against the tracking error it removes);
  a loss in a harvesting account is worth :func:`loss_value` per USD of loss,
  ``rate − (1 − harvest_deferral) × lt_rate``: it saves its term's rate now,
  and the replacement's basis is lower by the loss, so a gain as large is
  taxed some day at the long-term rate; ``harvest_deferral`` is the share of
  that later tax the deferral saves.  A long-term loss is worth
  ``harvest_deferral × lt_rate``; a short-term one more, since it offsets
  short-term rates now against a long-term tax later.  It is 0 where the
  account does not harvest or the loss is below the harvest thresholds,
  ``harvest_min_fraction`` of the lot's value and ``harvest_min_dollars``,
  both scaled by :func:`threshold_scale` on the day (they tighten through
  the year toward ``harvest_year_end_scale`` × themselves on December 31).
* Near long-term: a lot at a short-term gain that turns long-term within
  ``long_term_wait_days`` is not sold (unless a screen forces it or the
  account starts below its cash floor): waiting turns ``st_rate`` into ``lt_rate``.
* Forced harvest: in a taxable harvesting account, the loss lots with the
  largest loss per dollar are sold, whole and the last in part, until
  ``forced_harvest_dollars`` of loss is reached (lots the wash-sale rule
  blocks are left out by the caller).
* Asset location: in a household with a tax-deferred or exempt account
  whose investable value covers the household's target of the
  ``tax_inefficient_classes`` (bonds' coupons and REITs' dividends are taxed
  as income each year), the taxable accounts buy none of them: the household
  target of them is bought in the tax-advantaged accounts; and a taxable
  holding of such a class earns ``asset_location_credit`` per USD sold, so
  it moves where that costs little tax.
* Tax budget: ``tax_budget`` of the calendar year, prorated to the day of
  the year when ``prorate_tax_budget`` (a budget of 12,000 on April 1 allows
  about 3,000 so far).

Pure: NumPy, no storage, no ray.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from engine.contract.config import PolicyConfig
from engine.kernels.dates import first_long_day

__all__ = ["year_fraction", "threshold_scale", "loss_value", "lot_costs", "near_long_term", "forced_harvest",
           "prorated_budget"]


def year_fraction(as_of: dt.date) -> float:
    """Share of the calendar year gone by the end of ``as_of`` (Jan 1 → 1/365, Dec 31 → 1)."""
    start = dt.date(as_of.year, 1, 1)
    days = (dt.date(as_of.year + 1, 1, 1) - start).days
    return ((as_of - start).days + 1) / days


def threshold_scale(as_of: dt.date, policy: PolicyConfig) -> float:
    """Multiplier of the harvest thresholds on ``as_of``: 1 on January 1, ``harvest_year_end_scale`` on December 31."""
    return 1.0 - (1.0 - policy.harvest_year_end_scale) * year_fraction(as_of)


def loss_value(tax_saved: np.ndarray, loss: np.ndarray, lt_rate: np.ndarray, policy: PolicyConfig) -> np.ndarray:
    """What harvesting ``loss`` USD is worth (USD): ``tax_saved − (1 − harvest_deferral) × lt_rate × loss``.

    ``tax_saved`` is the loss times the rate of its term (USD); the second
    term is the long-term tax that the replacement's lower basis costs later,
    less the share ``harvest_deferral`` that deferring it saves.
    """
    return tax_saved - (1.0 - policy.harvest_deferral) * lt_rate * loss


def lot_costs(slope: np.ndarray, gain_per_dollar: np.ndarray, width: np.ndarray, long_term: np.ndarray,
              harvest: np.ndarray, theta: np.ndarray, lt_rate: np.ndarray, as_of: dt.date,
              policy: PolicyConfig) -> np.ndarray:
    """Objective cost per USD sold of each lot (see the module docstring), USD per USD.

    ``slope``, ``gain_per_dollar``, ``width`` (USD), ``long_term``: per lot (the
    tax curves'); ``harvest``, ``theta``, ``lt_rate``: the lot's account's flag,
    tax sensitivity and long-term rate.
    """
    scale = threshold_scale(as_of, policy)
    loss_dollars = -gain_per_dollar * width
    small = (gain_per_dollar < 0) & ((loss_dollars < scale * policy.harvest_min_fraction * width)
                                     | (loss_dollars < scale * policy.harvest_min_dollars))
    gain_cost = np.where(long_term, policy.long_term_gain_weight * slope, slope)
    harvested = -loss_value(-slope, -gain_per_dollar, lt_rate, policy)
    valued = np.where(slope < 0, np.where(harvest, np.minimum(harvested, 0.0), 0.0), gain_cost)
    return np.where(small, 0.0, valued) * theta


def near_long_term(acquired: np.ndarray, gain_per_dollar: np.ndarray, long_term: np.ndarray,
                   as_of_day: int, policy: PolicyConfig) -> np.ndarray:
    """Short-term gain lots that turn long-term within ``long_term_wait_days`` of ``as_of_day``."""
    if policy.long_term_wait_days <= 0:
        return np.zeros(np.shape(acquired), bool)
    first = first_long_day(np.asarray(acquired, dtype=np.int64))
    return ~long_term & (gain_per_dollar > 0) & (first - as_of_day <= policy.long_term_wait_days)


def forced_harvest(account: np.ndarray, gain_per_dollar: np.ndarray, width: np.ndarray,
                   eligible: np.ndarray, policy: PolicyConfig) -> np.ndarray:
    """USD of each lot to sell so that each account realizes ``forced_harvest_dollars`` of loss.

    Per account, its ``eligible`` loss lots by largest loss per dollar first,
    whole, the last one in part, until the amount is reached (or the lots run
    out).  Returns USD of proceeds per lot (0 for the others).
    """
    forced = np.zeros(np.shape(width))
    if policy.forced_harvest_dollars <= 0:
        return forced
    loss_per_dollar = -np.asarray(gain_per_dollar, float)
    candidates = np.flatnonzero(eligible & (loss_per_dollar > 0) & (width > 0))
    order = candidates[np.lexsort((candidates, -loss_per_dollar[candidates], account[candidates]))]
    left: dict[int, float] = {}
    for lot in order:
        a = int(account[lot])
        need = left.setdefault(a, policy.forced_harvest_dollars)
        if need <= 0:
            continue
        loss = loss_per_dollar[lot] * width[lot]
        forced[lot] = width[lot] if loss <= need else need / loss_per_dollar[lot]
        left[a] = need - min(loss, need)
    return forced


def prorated_budget(tax_budget: np.ndarray, as_of: dt.date, policy: PolicyConfig) -> np.ndarray:
    """The tax budget allowed so far this year (USD; NaN = none stays NaN)."""
    budget = np.asarray(tax_budget, dtype=float)
    return budget * year_fraction(as_of) if policy.prorate_tax_budget else budget
