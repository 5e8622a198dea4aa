"""NumPy functions of a solution: preparation of a batch, objective, constraint checks, wash sales.

These define the problem of :mod:`engine.solver.types` once, outside jit; the
solver, its cvxpy oracle, the tests and the benchmark all measure with them.
Each takes a batch in either lot layout (:mod:`engine.solver.layout`): lot
arrays (B, m, n, L) dense, or (B, P) compact with ``lot_position`` set; sums
over a position's lots go through :func:`position_sums`, and a position's
value reaches its lots through :func:`to_lots`.  ``solve`` does its host-side
steps in the compact layout, where the dense one is mostly padding.
"""

from __future__ import annotations

import numpy as np

from engine.solver.types import (PENALTY_BAND, PENALTY_CASH_CAP, PENALTY_TAX, PENALTY_TURNOVER,
                                 ProblemBatch)


def _positions(problem: ProblemBatch) -> tuple[int, int]:
    """(m, n): accounts and securities of a household."""
    return np.shape(problem.holdings)[1:]


def position_sums(problem: ProblemBatch, lots) -> np.ndarray:
    """Sums of a lot array over each position's lots, (B, m, n), floats."""
    lots = np.asarray(lots)
    if problem.lot_position is None:
        return lots.sum(axis=3, dtype=float)
    (B, P), (m, n) = lots.shape, _positions(problem)
    index = np.asarray(problem.lot_position) + (m * n + 1) * np.arange(B)[:, None]
    sums = np.bincount(index.ravel(), weights=lots.ravel().astype(float, copy=False), minlength=B * (m * n + 1))
    return sums.reshape(B, m * n + 1)[:, :m * n].reshape(B, m, n)


def position_max(problem: ProblemBatch, lots) -> np.ndarray:
    """Largest of a nonnegative lot array over each position's lots, (B, m, n) (0 where a position has none)."""
    lots = np.asarray(lots, dtype=float)
    if problem.lot_position is None:
        return lots.max(axis=3, initial=0.0)
    (B, P), (m, n) = lots.shape, _positions(problem)
    out = np.zeros((B, m * n + 1))
    np.maximum.at(out, (np.arange(B)[:, None], np.asarray(problem.lot_position)), lots)
    return out[:, :m * n].reshape(B, m, n)


def to_lots(problem: ProblemBatch, values) -> np.ndarray:
    """A value per position (B, m, n), or per account (B, m), on each of its lots (padding lots: 0)."""
    values = np.asarray(values)
    B, (m, n) = values.shape[0], _positions(problem)
    if values.ndim == 2:
        values = np.broadcast_to(values[:, :, None], (B, m, n))
    if problem.lot_position is None:
        return values[..., None]
    flat = np.concatenate([values.reshape(B, m * n), np.zeros((B, 1), values.dtype)], axis=1)
    return np.take_along_axis(flat, np.asarray(problem.lot_position, np.int64), axis=1)


def lot_totals(lots) -> np.ndarray:
    """Sums of a lot array over all of a household's lots, (B,), in either layout."""
    lots = np.asarray(lots)
    return lots.reshape(lots.shape[0], -1).sum(axis=1)


def max_cash(problem: ProblemBatch) -> np.ndarray:
    """Most cash each account can reach: ``cash + Σ_{i,l} sell_upper`` (no buys), (B, m), units of V."""
    return np.asarray(problem.cash) + position_sums(problem, problem.sell_upper).sum(axis=2)


def prepare(problem: ProblemBatch) -> tuple[ProblemBatch, np.ndarray]:
    """Make every household feasible; return it and the missing cash.

    * Where the cash floor is out of reach of :func:`max_cash` (docs/contract.md §3
      rule 4: the household is then ``infeasible``), the account's solution is
      the closest it can come: everything it may sell is sold (``sell_lower =
      sell_upper``), nothing is bought, and the floor row is dropped.  The amount
      missing, ``max(0, cash_floor − max_cash)``, is returned, (B, m), units of V.
    * The cash cap is dropped (``inf``) for accounts that may buy nothing
      (rule 5) and raised to at least the floor.

    Returns
    -------
    problem : ProblemBatch
        With ``cash_floor`` and ``cash_cap`` replaced.
    missing_cash : (B, m) ndarray
    """
    reach = max_cash(problem)
    floor = np.asarray(problem.cash_floor, dtype=float)
    missing = np.maximum(floor - reach, 0.0)
    short = missing > 0
    # out of reach: the one point that comes closest, everything sold and nothing bought, is
    # fixed outright (a floor met only at a vertex of the bounds is slow for ADMM)
    buy_upper = np.where(short[:, :, None], 0.0, np.asarray(problem.buy_upper, dtype=float))
    sell_upper = np.asarray(problem.sell_upper, dtype=float)
    sell_lower = np.where(to_lots(problem, short), sell_upper, np.asarray(problem.sell_lower, dtype=float))
    floor = np.where(short, -np.inf, floor)
    can_buy = (buy_upper > 0).any(axis=2)
    cap = np.where(can_buy, np.asarray(problem.cash_cap, dtype=float), np.inf)
    cap = np.maximum(cap, floor)
    return problem._replace(cash_floor=floor, cash_cap=cap, buy_upper=buy_upper,
                            sell_lower=sell_lower), missing


def class_matrix(problem: ProblemBatch) -> np.ndarray:
    """One-hot (n, C) matrix of asset classes, C = ``class_target.shape[1]``."""
    n_classes = np.shape(problem.class_target)[1]
    return (np.asarray(problem.asset_class)[:, None] == np.arange(n_classes)[None, :]).astype(float)


def rows(problem: ProblemBatch, buy: np.ndarray, sell: np.ndarray):
    """Constraint rows of a solution.

    Returns
    -------
    cash_after : (B, m)
        ``cash + Σ sell − Σ buy``, units of V.
    tax : (B, m)
        ``Σ lot_tax · sell``, units of V.
    turnover : (B, m)
        ``Σ buy + Σ sell``, units of V.
    class_weight : (B, C)
        ``Σ_{i∈c} w_i`` after trading.
    """
    return _rows(problem, buy, sell, position_sums(problem, sell))


def _rows(problem: ProblemBatch, buy, sell, sold):
    """:func:`rows`, with the value sold per position, (B, m, n), already summed."""
    cash_after = np.asarray(problem.cash) + sold.sum(axis=2) - buy.sum(axis=2)
    tax = position_sums(problem, np.asarray(problem.lot_tax) * sell).sum(axis=2)
    turnover = buy.sum(axis=2) + sold.sum(axis=2)
    weights = (np.asarray(problem.holdings) + buy - sold).sum(axis=1)
    return cash_after, tax, turnover, weights @ class_matrix(problem)


def objective(problem: ProblemBatch, buy: np.ndarray, sell: np.ndarray) -> np.ndarray:
    """Objective of :mod:`engine.solver.types` per household, (B,), units of V.

    ``λ (w − w*)ᵀ(X F Xᵀ + diag d)(w − w*) + Σ c (b + z) + Σ lot_cost z + exact penalties``.
    """
    buy = np.asarray(buy, dtype=float)
    sell = np.asarray(sell, dtype=float)
    X = np.asarray(problem.exposures, dtype=float)
    F = np.asarray(problem.factor_covariance, dtype=float)
    d = np.asarray(problem.specific_variance, dtype=float)
    c = np.asarray(problem.spread, dtype=float)
    pen = np.asarray(problem.penalties, dtype=float)
    sold = position_sums(problem, sell)
    r = (np.asarray(problem.holdings) + buy - sold).sum(axis=1) - np.asarray(problem.target)
    f = r @ X
    tracking = np.asarray(problem.risk_aversion) * (np.einsum("bk,kl,bl->b", f, F, f) + (d * r * r).sum(axis=1))
    spread = ((buy + sold) * c).sum(axis=(1, 2))
    tax = lot_totals(np.asarray(problem.lot_cost) * sell)
    cash_after, tax_real, turnover, class_weight = _rows(problem, buy, sell, sold)

    def excess(value, limit):
        with np.errstate(invalid="ignore"):
            return np.where(np.isfinite(limit), np.maximum(value - limit, 0.0), 0.0)

    band = np.asarray(problem.class_band, dtype=float)
    target = np.asarray(problem.class_target, dtype=float)
    penalties = (pen[PENALTY_CASH_CAP] * excess(cash_after, np.asarray(problem.cash_cap)).sum(axis=1)
                 + pen[PENALTY_TAX] * excess(tax_real, np.asarray(problem.tax_budget)).sum(axis=1)
                 + pen[PENALTY_TURNOVER] * excess(turnover, np.asarray(problem.turnover_limit)).sum(axis=1)
                 + pen[PENALTY_BAND] * (excess(class_weight, target + band)
                                        + excess(-class_weight, band - target)).sum(axis=1))
    return tracking + spread + tax + penalties


def violations(problem: ProblemBatch, buy: np.ndarray, sell: np.ndarray) -> np.ndarray:
    """Largest violation of a hard constraint per household, (B,), units of account value.

    Hard constraints: ``0 ≤ b ≤ buy_upper``, ``sell_lower ≤ z ≤ sell_upper``,
    ``cash_after ≥ cash_floor`` (of the prepared problem) and ``cash_after ≥ 0``
    where the account's cash can reach 0.  Bounds are measured in units of V
    divided by the account's share of V.
    """
    value = np.maximum(np.asarray(problem.account_value, dtype=float), 1e-12)
    buy = np.asarray(buy, dtype=float)
    sell = np.asarray(sell, dtype=float)
    over_b = np.maximum(np.maximum(-buy, buy - np.asarray(problem.buy_upper)), 0.0).max(axis=2)
    over_z = position_max(problem, np.maximum(np.maximum(np.asarray(problem.sell_lower) - sell,
                                                         sell - np.asarray(problem.sell_upper)), 0.0)).max(axis=2)
    cash_after = rows(problem, buy, sell)[0]
    floor = np.maximum(np.asarray(problem.cash_floor), np.minimum(0.0, max_cash(problem)))
    short = np.maximum(floor - cash_after, 0.0)
    return (np.maximum(np.maximum(over_b, over_z), short) / value).max(axis=1)


def wash_two_sided(problem: ProblemBatch, buy: np.ndarray, sell: np.ndarray,
                   tolerance: float = 1e-7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Wash groups bought and sold at a loss in the same household.

    Returns
    -------
    two_sided : (B, G) bool
        Group ``g`` of household ``b`` has buys and loss sales above ``tolerance``.
    bought, loss_sold : (B, G)
        Value bought and value of loss lots sold per group, units of V.
    """
    groups = np.asarray(problem.wash_group)
    n_groups = int(groups.max()) + 1 if groups.size else 0
    bought = group_sums(np.asarray(buy).sum(axis=1), groups, n_groups)
    loss_sold = group_sums(position_sums(problem, np.asarray(sell) * np.asarray(problem.lot_loss)).sum(axis=1),
                           groups, n_groups)
    return (bought > tolerance) & (loss_sold > tolerance), bought, loss_sold


def group_sums(values: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Sums of ``values`` (..., n) over the securities of each group: (..., n_groups).

    ``groups`` (n,) holds each security's group in ``[0, n_groups)``; one
    ``bincount`` instead of a product with an n × G one-hot matrix.
    """
    values = np.asarray(values, dtype=float)
    lead = values.shape[:-1]
    rows = int(np.prod(lead)) if lead else 1
    index = (np.arange(rows)[:, None] * n_groups + groups[None, :]).ravel()
    sums = np.bincount(index, weights=values.reshape(rows, -1).ravel(), minlength=rows * n_groups)
    return sums.reshape(lead + (n_groups,))
