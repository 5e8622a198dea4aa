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

from dataclasses import dataclass

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
    b = _Households.empty(batch, m, n, L, classes)
    risk_aversion = np.exp(rng.uniform(np.log(2.0), np.log(50.0), batch))
    for h in range(batch):
        kind = mix or MIXES[rng.integers(len(MIXES))]
        taxable = np.ones(m, bool)
        if m > 1:
            taxable[1:] = rng.random(m - 1) < 0.3
        _draw_holdings(b, h, taxable, per_account, harvest_deferral, rng)
        model = _draw_target(b, h, asset_class, rng)
        theta = np.where(taxable, rng.uniform(0.5, 1.5, m), 0.0)      # tax_sensitivity
        b.cost[h] *= theta[:, None, None]
        _draw_constraints(b, h, kind, taxable, wash_group, rng)
        b.buy_upper[h, :, ~model & (b.holdings[h].sum(0) == 0)] = 0.0   # only held or targeted securities
    upper = np.where(b.sell_blocked, 0.0, b.width)
    lower = np.minimum(b.lower, upper)
    return ProblemBatch(
        exposures=X, factor_covariance=F, specific_variance=d, spread=spread,
        asset_class=asset_class, wash_group=wash_group, penalties=np.asarray(DEFAULT_PENALTIES),
        risk_aversion=risk_aversion, target=b.target, holdings=b.holdings, buy_upper=b.buy_upper,
        lot_width=b.width, lot_cost=b.cost, lot_tax=b.tax, lot_loss=b.loss, sell_lower=lower, sell_upper=upper,
        cash=b.cash, cash_floor=b.floor, cash_cap=b.cap, tax_budget=b.budget, turnover_limit=b.turnover,
        account_value=b.value, class_target=b.class_target, class_band=b.class_band)


@dataclass
class _Households:
    """The arrays of a batch while its households are drawn, as :class:`ProblemBatch` names them
    (``width`` is ``lot_width``, ``lower`` the sell lower bound before the blocks; fractions of
    household value once :func:`_draw_holdings` has normalized them)."""

    holdings: np.ndarray       # (B, m, n)
    width: np.ndarray          # (B, m, n, L)
    cost: np.ndarray           # (B, m, n, L)
    tax: np.ndarray            # (B, m, n, L)
    loss: np.ndarray           # (B, m, n, L) bool
    lower: np.ndarray          # (B, m, n, L)
    buy_upper: np.ndarray      # (B, m, n)
    cash: np.ndarray           # (B, m)
    floor: np.ndarray          # (B, m)
    cap: np.ndarray            # (B, m)
    budget: np.ndarray         # (B, m)
    turnover: np.ndarray       # (B, m)
    value: np.ndarray          # (B, m)
    target: np.ndarray         # (B, n)
    class_target: np.ndarray   # (B, C)
    class_band: np.ndarray     # (B, C)
    sell_blocked: np.ndarray   # (B, m, n, L) bool

    @classmethod
    def empty(cls, batch: int, m: int, n: int, L: int, classes: int) -> "_Households":
        """No holdings, no cash, no target; no cap, budget, turnover limit or band (inf)."""
        shape = (batch, m, n, L)
        return cls(holdings=np.zeros((batch, m, n)), width=np.zeros(shape), cost=np.zeros(shape),
                   tax=np.zeros(shape), loss=np.zeros(shape, bool), lower=np.zeros(shape),
                   buy_upper=np.full((batch, m, n), np.inf), cash=np.zeros((batch, m)),
                   floor=np.zeros((batch, m)), cap=np.full((batch, m), np.inf),
                   budget=np.full((batch, m), np.inf), turnover=np.full((batch, m), np.inf),
                   value=np.zeros((batch, m)), target=np.zeros((batch, n)),
                   class_target=np.zeros((batch, classes)), class_band=np.full((batch, classes), np.inf),
                   sell_blocked=np.zeros(shape, bool))


def _draw_holdings(b: _Households, h: int, taxable: np.ndarray, per_account: int, harvest_deferral: float,
                   rng: np.random.Generator) -> None:
    """Household ``h``'s positions, lots and cash, normalized to fractions of its value.

    Account sizes from a Dirichlet; each account holds about ``per_account`` lots (at least one
    position), 97% invested with 0-6% cash before normalizing.
    """
    m, n, L = b.width.shape[1:]
    sizes = rng.dirichlet(np.full(m, 2.0))
    for a in range(m):
        held = rng.random(n) < min(1.0, per_account / (n * (L + 1) / 2))
        held[rng.integers(n)] = True
        for i in np.flatnonzero(held):
            _draw_lots(b, h, a, i, taxable[a], harvest_deferral, rng)
        total = b.width[h, a].sum()
        scale = sizes[a] / max(total, 1e-12) * 0.97
        b.width[h, a] *= scale
        b.cash[h, a] = sizes[a] * 0.03 * rng.uniform(0.0, 2.0)
        b.holdings[h, a] = b.width[h, a].sum(-1)
    V = b.holdings[h].sum() + b.cash[h].sum()
    b.holdings[h] /= V
    b.width[h] /= V
    b.cash[h] /= V
    b.value[h] = b.holdings[h].sum(-1) + b.cash[h]


def _draw_lots(b: _Households, h: int, a: int, i: int, taxable, harvest_deferral: float,
               rng: np.random.Generator) -> None:
    """One to L lots of security ``i`` in account ``a``, in order of their tax cost per unit of
    proceeds: widths (relative value), the tax slope (rate × gain per unit of proceeds, short- or
    long-term), its valued cost (losses × ``harvest_deferral``, losses under 5% worth 0), and
    whether each is a loss of a taxable account."""
    L = b.width.shape[-1]
    count = rng.integers(1, L + 1)
    lot_value = rng.lognormal(0.0, 0.6, count)
    growth = rng.lognormal(0.05, 0.25, count)          # price / basis per share
    gain = 1.0 - 1.0 / growth                            # gain per unit of proceeds
    short = rng.random(count) < 0.3
    rate = np.where(short, rng.uniform(0.3, 0.45), rng.uniform(0.15, 0.24)) if taxable else 0.0
    slope = rate * gain
    valued = np.where(slope < 0, harvest_deferral * slope, slope)
    small = (gain < 0) & (-gain < 0.05)
    valued = np.where(small, 0.0, valued)
    order = np.argsort(valued)
    b.width[h, a, i, :count] = lot_value[order]
    b.cost[h, a, i, :count] = valued[order]
    b.tax[h, a, i, :count] = slope[order]
    b.loss[h, a, i, :count] = (gain[order] < 0) & taxable


def _draw_target(b: _Households, h: int, asset_class: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Household ``h``'s target: a drifted model of ~80% of the securities, with cash kept aside
    (a cash floor of 0.5% of each account's value, plus 1%); and its asset-class targets.

    Returns which securities the model holds.
    """
    n, classes = b.target.shape[1], b.class_target.shape[1]
    model = rng.random(n) < 0.8
    tw = np.where(model, rng.lognormal(0.0, 0.5, n), 0.0)
    b.floor[h] = 0.005 * b.value[h]
    kept = b.floor[h].sum() + 0.01
    b.target[h] = tw / tw.sum() * (1.0 - kept)
    for c in range(classes):
        b.class_target[h, c] = b.target[h, asset_class == c].sum()
    return model


def _draw_constraints(b: _Households, h: int, kind: str, taxable: np.ndarray, wash_group: np.ndarray,
                      rng: np.random.Generator) -> None:
    """Household ``h``'s constraints of mix ``kind`` (one of :data:`MIXES`): cash floors (some
    out of reach), cash caps (also on 30% of the other households), tax budgets, turnover
    limits, class bands, screens (exclude, never-buy, never-sell) and wash-sale blocks."""
    m, n = b.holdings.shape[1:]
    classes = b.class_band.shape[1]
    if kind in ("cash_floor", "all"):
        a = rng.integers(m)
        b.floor[h, a] = b.cash[h, a] + rng.uniform(0.02, 0.1) * b.value[h, a]
    if kind == "infeasible_floor":
        a = rng.integers(m)
        b.floor[h, a] = b.value[h, a] * rng.uniform(1.05, 1.3)
    if kind in ("cash_floor", "turnover_cap", "all") or rng.random() < 0.3:
        b.cap[h] = b.floor[h] + 0.02 * b.value[h]
    if kind in ("budget", "all"):
        b.budget[h] = np.where(taxable, rng.uniform(0.0, 0.002), np.inf) * 1.0
    if kind in ("turnover_cap", "all"):
        b.turnover[h] = rng.uniform(0.02, 0.1) * b.value[h]
    if kind in ("bands", "all"):
        b.class_band[h] = rng.uniform(0.01, 0.05, classes)
    if kind in ("screens", "all"):
        a = rng.integers(m)
        held_i = np.flatnonzero(b.holdings[h, a] > 0)
        excluded = rng.choice(held_i, size=min(2, held_i.size), replace=False)
        b.lower[h, a, excluded] = b.width[h, a, excluded]
        b.buy_upper[h, :, excluded] = 0.0
        b.target[h, excluded] = 0.0
        never_buy = rng.choice(n, size=max(1, n // 20), replace=False)
        b.buy_upper[h, a, never_buy] = 0.0
        never_sell = rng.choice(held_i, size=min(3, held_i.size), replace=False)
        b.sell_blocked[h, a, never_sell] = True
        b.lower[h, a, never_sell] = 0.0
    if kind in ("wash", "all"):
        groups = rng.choice(wash_group.max() + 1, size=max(1, n // 25), replace=False)
        blocked_buy = np.isin(wash_group, groups[: len(groups) // 2 + 1])
        b.buy_upper[h, :, blocked_buy] = 0.0
        blocked_loss = np.isin(wash_group, groups[len(groups) // 2:])
        b.sell_blocked[h] |= b.loss[h] & blocked_loss[None, :, None]
