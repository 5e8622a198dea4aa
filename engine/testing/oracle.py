"""The same household problem in cvxpy, solved by Clarabel: the oracle of the tests and benchmark.

What a user would write today, one household at a time.  cvxpy and Clarabel
are test dependencies only: they are imported when :func:`solve_household` is
called, never by the solver.  Variables are the free buys and lots only
(fixed ones enter as constants), so Clarabel is not slowed by padding.
"""

from __future__ import annotations

import numpy as np

from engine.solver import evaluate
from engine.solver.types import PENALTY_BAND, PENALTY_CASH_CAP, PENALTY_TAX, PENALTY_TURNOVER, ProblemBatch


def solve_household(problem: ProblemBatch, h: int, solver: str = "CLARABEL", stats: dict | None = None,
                    **options):
    """Solve household ``h`` of a prepared batch (see :func:`evaluate.prepare`).

    ``options`` go to the solver (Clarabel's tolerances); ``stats``, when given,
    gets the solver's ``iteration_count``.

    Returns
    -------
    buy : (m, n), sell : (m, n, L)
        The optimal trades, units of V.
    status : str
        cvxpy's status.
    """
    import cvxpy as cp
    import scipy.sparse as sp

    X = np.asarray(problem.exposures, float)
    F = np.asarray(problem.factor_covariance, float)
    d = np.asarray(problem.specific_variance, float)
    c = np.asarray(problem.spread, float)
    pen = np.asarray(problem.penalties, float)
    lam = float(problem.risk_aversion[h])
    holdings = np.asarray(problem.holdings[h], float)
    m, n = holdings.shape
    L = np.shape(problem.lot_width)[-1]
    buy_upper = np.asarray(problem.buy_upper[h], float)
    lower = np.asarray(problem.sell_lower[h], float)
    upper = np.asarray(problem.sell_upper[h], float)
    lot_cost = np.asarray(problem.lot_cost[h], float)
    lot_tax = np.asarray(problem.lot_tax[h], float)

    free_b = np.flatnonzero(buy_upper.reshape(-1) > 0)
    free_z = np.flatnonzero((upper > lower).reshape(-1))
    fixed_z = np.where(upper > lower, 0.0, lower).reshape(-1)
    b = cp.Variable(free_b.size, nonneg=True)
    z = cp.Variable(free_z.size)
    account_b = free_b // n
    security_b = free_b % n
    account_z = free_z // (n * L)
    security_z = (free_z // L) % n

    def onehot(rows, count, cols):
        return sp.csr_matrix((np.ones(cols.size), (rows, np.arange(cols.size))), shape=(count, cols.size))

    Sb, Sz = onehot(security_b, n, free_b), onehot(security_z, n, free_z)
    Ab, Az = onehot(account_b, m, free_b), onehot(account_z, m, free_z)
    fixed_sold = fixed_z.reshape(m, n, L).sum(-1)
    r0 = holdings.sum(0) - fixed_sold.sum(0) - np.asarray(problem.target[h], float)
    w = r0 + Sb @ b - Sz @ z
    LF = np.linalg.cholesky(F)
    tracking = lam * (cp.sum_squares((X @ LF).T @ w) + cp.sum_squares(cp.multiply(np.sqrt(d), w)))
    zc = (c[security_z] + lot_cost.reshape(-1)[free_z])
    cost = (c[security_b] @ b + zc @ z + (fixed_z * np.repeat(c, L)[None].repeat(m, 0).reshape(-1)).sum()
            + (lot_cost.reshape(-1) * fixed_z).sum())
    ztax = lot_tax.reshape(-1)[free_z]
    Tz = sp.csr_matrix((ztax, (account_z, np.arange(free_z.size))), shape=(m, free_z.size))
    fixed_tax = (lot_tax.reshape(-1) * fixed_z).reshape(m, -1).sum(1)
    fixed_proceeds = fixed_z.reshape(m, -1).sum(1)
    cash_after = np.asarray(problem.cash[h], float) + fixed_proceeds + Az @ z - Ab @ b
    tax = fixed_tax + Tz @ z
    turnover = fixed_proceeds + Az @ z + Ab @ b
    weights = holdings.sum(0) - fixed_sold.sum(0) + Sb @ b - Sz @ z
    classes = evaluate.class_matrix(problem)
    class_weight = classes.T @ weights

    def excess(expr, limit):
        limit = np.asarray(limit, float)
        keep = np.flatnonzero(np.isfinite(limit))
        if keep.size == 0:
            return 0.0
        return cp.sum(cp.pos(expr[keep] - limit[keep]))

    band = np.asarray(problem.class_band[h], float)
    target = np.asarray(problem.class_target[h], float)
    objective = (tracking + cost
                 + pen[PENALTY_CASH_CAP] * excess(cash_after, problem.cash_cap[h])
                 + pen[PENALTY_TAX] * excess(tax, problem.tax_budget[h])
                 + pen[PENALTY_TURNOVER] * excess(turnover, problem.turnover_limit[h])
                 + pen[PENALTY_BAND] * (excess(class_weight, target + band) + excess(-class_weight, band - target)))
    lower_z = lower.reshape(-1)[free_z]
    upper_z = upper.reshape(-1)[free_z]
    constraints = [z >= lower_z, z <= upper_z, cash_after >= np.asarray(problem.cash_floor[h], float)]
    finite_b = np.isfinite(buy_upper.reshape(-1)[free_b])
    if finite_b.any():
        constraints.append(b[np.flatnonzero(finite_b)] <= buy_upper.reshape(-1)[free_b][finite_b])
    prob = cp.Problem(cp.Minimize(objective), constraints)
    prob.solve(solver=solver, **options)
    if stats is not None:
        stats["iteration_count"] = int(prob.solver_stats.num_iters or 0)
    buy = np.zeros(m * n)
    sell = fixed_z.copy()
    if b.value is not None:
        buy[free_b] = b.value
        sell[free_z] = z.value
    return buy.reshape(m, n), sell.reshape(m, n, L), prob.status
