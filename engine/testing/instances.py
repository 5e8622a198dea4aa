"""Random, realistic household problems, shared by the oracle tests and the benchmark.

A universe of ``n`` securities with a ``k``-factor risk model, ``C`` asset
classes, a few wash groups of two substantially identical securities; per
household ``m`` accounts (the first taxable, the others taxable, IRA or Roth),
positions of 1 to ``L`` lots with gains and losses short and long term, a
drifted target, and a mix of constraints chosen per household: cash floors
(some out of reach), cash caps, binding tax budgets, turnover limits, class
bands, screens (exclude, never-buy, never-sell) and wash-sale blocks.
"""

from __future__ import annotations

import numpy as np

from engine.solver.types import DEFAULT_PENALTIES, ProblemBatch

#: Constraint mixes a household can draw (``mix`` argument).
MIXES = ("plain", "cash_floor", "infeasible_floor", "budget", "turnover_cap", "screens",
         "bands", "wash", "all")


def random_universe(n: int, k: int, classes: int, rng: np.random.Generator):
    """X (n, k), F (k, k), d (n,), spread (n,), asset_class (n,), wash_group (n,)."""
    X = rng.normal(0.0, 0.35, (n, k))
    X[:, 0] = rng.normal(1.0, 0.25, n)                       # market beta
    vols = np.concatenate([[0.16], rng.uniform(0.02, 0.06, k - 1)])
    corr = 0.2 * rng.normal(size=(k, k))
    corr = corr @ corr.T + np.eye(k)
    dcorr = np.sqrt(np.diag(corr))
    F = (corr / dcorr[:, None] / dcorr[None, :]) * vols[:, None] * vols[None, :]
    d = rng.uniform(0.15, 0.40, n) ** 2
    spread = rng.uniform(1e-4, 2e-3, n)
    asset_class = rng.integers(0, classes, n).astype(np.int32)
    wash_group = np.arange(n, dtype=np.int32)
    pairs = rng.choice(n, size=2 * (n // 20), replace=False).reshape(-1, 2)
    wash_group[pairs[:, 1]] = wash_group[pairs[:, 0]]
    _, wash_group = np.unique(wash_group, return_inverse=True)
    return X, F, d, spread, asset_class, wash_group.astype(np.int32)


def random_batch(batch: int, n: int = 50, accounts: int = 1, lots: int = 4, factors: int = 5,
                 classes: int = 4, seed: int = 0, mix: str | None = None,
                 lots_per_account: int | None = None, harvest_deferral: float = 0.5) -> ProblemBatch:
    """A ``ProblemBatch`` of ``batch`` random households over one random universe.

    Parameters
    ----------
    batch, n, accounts, lots, factors, classes
        B households, n securities, m accounts each, L lots per position
        (padding), k factors, C asset classes.
    seed
        Random seed; the same arguments give the same batch.
    mix
        One of :data:`MIXES` for every household, or None to draw one per household.
    lots_per_account
        Average number of lots per account (e.g. 2,500 for 500 securities);
        default ``n × L / 3``.
    harvest_deferral
        Value of a harvested loss per unit of tax (``PolicyConfig.harvest_deferral``).
    """
    rng = np.random.default_rng(seed)
    X, F, d, spread, asset_class, wash_group = random_universe(n, factors, classes, rng)
    m, L = accounts, lots
    per_account = lots_per_account or max(1, n * L // 3)
    shape = (batch, m, n, L)
    holdings = np.zeros((batch, m, n))
    width = np.zeros(shape)
    cost = np.zeros(shape)
    tax = np.zeros(shape)
    loss = np.zeros(shape, bool)
    lower = np.zeros(shape)
    buy_upper = np.full((batch, m, n), np.inf)
    cash = np.zeros((batch, m))
    floor = np.zeros((batch, m))
    cap = np.full((batch, m), np.inf)
    budget = np.full((batch, m), np.inf)
    turnover = np.full((batch, m), np.inf)
    value = np.zeros((batch, m))
    target = np.zeros((batch, n))
    class_target = np.zeros((batch, classes))
    class_band = np.full((batch, classes), np.inf)
    risk_aversion = np.exp(rng.uniform(np.log(2.0), np.log(50.0), batch))
    sell_blocked = np.zeros(shape, bool)
    for h in range(batch):
        kind = mix or MIXES[rng.integers(len(MIXES))]
        taxable = np.ones(m, bool)
        if m > 1:
            taxable[1:] = rng.random(m - 1) < 0.3
        sizes = rng.dirichlet(np.full(m, 2.0))
        for a in range(m):
            held = rng.random(n) < min(1.0, per_account / (n * (L + 1) / 2))
            held[rng.integers(n)] = True
            for i in np.flatnonzero(held):
                count = rng.integers(1, L + 1)
                lot_value = rng.lognormal(0.0, 0.6, count)
                growth = rng.lognormal(0.05, 0.25, count)          # price / basis per share
                gain = 1.0 - 1.0 / growth                            # gain per unit of proceeds
                short = rng.random(count) < 0.3
                rate = np.where(short, rng.uniform(0.3, 0.45), rng.uniform(0.15, 0.24)) if taxable[a] else 0.0
                slope = rate * gain
                valued = np.where(slope < 0, harvest_deferral * slope, slope)
                small = (gain < 0) & (-gain < 0.05)
                valued = np.where(small, 0.0, valued)
                order = np.argsort(valued)
                width[h, a, i, :count] = lot_value[order]
                cost[h, a, i, :count] = valued[order]
                tax[h, a, i, :count] = slope[order]
                loss[h, a, i, :count] = (gain[order] < 0) & taxable[a]
            total = width[h, a].sum()
            scale = sizes[a] / max(total, 1e-12) * 0.97
            width[h, a] *= scale
            cash[h, a] = sizes[a] * 0.03 * rng.uniform(0.0, 2.0)
            holdings[h, a] = width[h, a].sum(-1)
        V = holdings[h].sum() + cash[h].sum()
        holdings[h] /= V
        width[h] /= V
        cash[h] /= V
        value[h] = holdings[h].sum(-1) + cash[h]
        # target: a drifted model, cash kept aside
        model = rng.random(n) < 0.8
        tw = np.where(model, rng.lognormal(0.0, 0.5, n), 0.0)
        floor[h] = 0.005 * value[h]
        kept = floor[h].sum() + 0.01
        target[h] = tw / tw.sum() * (1.0 - kept)
        for c in range(classes):
            class_target[h, c] = target[h, asset_class == c].sum()
        theta = np.where(taxable, rng.uniform(0.5, 1.5, m), 0.0)      # tax_sensitivity
        cost[h] *= theta[:, None, None]
        if kind in ("cash_floor", "all"):
            a = rng.integers(m)
            floor[h, a] = cash[h, a] + rng.uniform(0.02, 0.1) * value[h, a]
        if kind == "infeasible_floor":
            a = rng.integers(m)
            floor[h, a] = value[h, a] * rng.uniform(1.05, 1.3)
        if kind in ("cash_floor", "turnover_cap", "all") or rng.random() < 0.3:
            cap[h] = floor[h] + 0.02 * value[h]
        if kind in ("budget", "all"):
            budget[h] = np.where(taxable, rng.uniform(0.0, 0.002), np.inf) * 1.0
        if kind in ("turnover_cap", "all"):
            turnover[h] = rng.uniform(0.02, 0.1) * value[h]
        if kind in ("bands", "all"):
            class_band[h] = rng.uniform(0.01, 0.05, classes)
        if kind in ("screens", "all"):
            a = rng.integers(m)
            held_i = np.flatnonzero(holdings[h, a] > 0)
            excluded = rng.choice(held_i, size=min(2, held_i.size), replace=False)
            lower[h, a, excluded] = width[h, a, excluded]
            buy_upper[h, :, excluded] = 0.0
            target[h, excluded] = 0.0
            never_buy = rng.choice(n, size=max(1, n // 20), replace=False)
            buy_upper[h, a, never_buy] = 0.0
            never_sell = rng.choice(held_i, size=min(3, held_i.size), replace=False)
            sell_blocked[h, a, never_sell] = True
            lower[h, a, never_sell] = 0.0
        if kind in ("wash", "all"):
            groups = rng.choice(wash_group.max() + 1, size=max(1, n // 25), replace=False)
            blocked_buy = np.isin(wash_group, groups[: len(groups) // 2 + 1])
            buy_upper[h, :, blocked_buy] = 0.0
            blocked_loss = np.isin(wash_group, groups[len(groups) // 2:])
            sell_blocked[h] |= loss[h] & blocked_loss[None, :, None]
        buy_upper[h, :, ~model & (holdings[h].sum(0) == 0)] = 0.0   # only held or targeted securities
    upper = np.where(sell_blocked, 0.0, width)
    lower = np.minimum(lower, upper)
    return ProblemBatch(
        exposures=X, factor_covariance=F, specific_variance=d, spread=spread,
        asset_class=asset_class, wash_group=wash_group, penalties=np.asarray(DEFAULT_PENALTIES),
        risk_aversion=risk_aversion, target=target, holdings=holdings, buy_upper=buy_upper,
        lot_width=width, lot_cost=cost, lot_tax=tax, lot_loss=loss, sell_lower=lower, sell_upper=upper,
        cash=cash, cash_floor=floor, cash_cap=cap, tax_budget=budget, turnover_limit=turnover,
        account_value=value, class_target=class_target, class_band=class_band)
