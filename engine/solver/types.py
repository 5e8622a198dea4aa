"""The arrays the solver reads and writes: ``ProblemBatch``, ``SolverState``, ``SolverResult``.

One household's problem (see docs/optimization.md), in units
of the household's value V (every amount of money is a fraction of V):

Variables, per account ``a`` (of ``m``), security ``i`` (of ``n``) and lot
``l`` (of ``L``, the lots of a position sorted by tax cost and padded):

* ``b[a,i] ≥ 0``: value bought;
* ``z[a,i,l] ∈ [sell_lower, sell_upper] ⊆ [0, lot_width]``: value of lot ``l``
  sold.  One variable per lot makes the tax curve of a position exactly
  linear per lot: the convex piecewise-linear tax ``g(y)`` of docs/optimization.md is
  ``min Σ_l cost_l z_l  s.t.  Σ_l z_l = y, 0 ≤ z_l ≤ width_l``, and its proximal
  operator is exactly the clip of each lot's variable.

Holdings after trading ``h[a] = h0[a] + b[a] − Σ_l z[a,:,l]``; household
weights ``w = Σ_a h[a]``; ``Σ = X F Xᵀ + diag(d)``.

minimize::

    λ (w − w*)ᵀ Σ (w − w*)                          tracking (λ = risk_aversion)
  + Σ_{a,i} c_i (b[a,i] + Σ_l z[a,i,l])             spread
  + Σ_{a,i,l} lot_cost[a,i,l] z[a,i,l]              tax, θ_a × policy-valued slope
  + Σ_a π_cap   · pos(cash_a − cash_cap_a)          exact penalties ("soft rows")
  + Σ_a π_tax   · pos(Σ lot_tax·z[a] − tax_budget_a)
  + Σ_a π_turn  · pos(Σ b[a] + Σ z[a] − turnover_limit_a)
  + Σ_c π_band  · dist(Σ_{i∈c} w_i, [class_target_c ± class_band_c])

subject to ``cash_a = cash0_a + Σ z[a] − Σ b[a] ≥ cash_floor_a`` (hard; the
floor is lowered to what selling everything sellable reaches, and the
household is then reported infeasible with the missing amount), and the
bounds on ``b`` and ``z``.  An infinite bound or limit means "no row".

Shapes: ``B`` households, ``m`` accounts, ``n`` securities, ``L`` lots per
position, ``k`` factors, ``C`` asset classes.  Fields marked *shared* have no
batch axis: the risk model and security data are the shard's.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

#: Status codes of a household, one per solve (``SolverResult.status``).
SOLVED = 0
MAX_ITERATIONS = 1
INFEASIBLE = 2
NON_FINITE = 3
STATUS_NAMES = {SOLVED: "solved", MAX_ITERATIONS: "max_iterations",
                INFEASIBLE: "infeasible", NON_FINITE: "non_finite"}

#: Order of the exact penalties in ``ProblemBatch.penalties``.
PENALTY_TAX, PENALTY_TURNOVER, PENALTY_CASH_CAP, PENALTY_BAND = range(4)
#: Default exact penalties, per unit of V of violation.  Their order says who
#: yields first: bands, then the cash cap, then turnover and the tax budget.
DEFAULT_PENALTIES = (10.0, 10.0, 2.0, 1.0)


class ProblemBatch(NamedTuple):
    """A padded batch of household problems (units: fractions of household value V).

    Attributes
    ----------
    exposures : (n, k), shared
        Factor exposures X.
    factor_covariance : (k, k), shared
        F, annualized, positive definite.
    specific_variance : (n,), shared
        d, annualized.
    spread : (n,), shared
        One-way trading cost per unit traded, c (5 bps = 5e-4).
    asset_class : (n,) int32, shared
        Asset class index of each security in ``[0, C)``.
    wash_group : (n,) int32, shared
        Wash group index of each security (substantially identical securities
        share one).
    penalties : (4,), shared
        Exact penalties π (see ``PENALTY_*``), per unit of V.
    risk_aversion : (B,)
        λ, per unit of annualized variance.
    target : (B, n)
        w*, target value of each security / V (sums to 1 − cash kept).
    holdings : (B, m, n)
        h0, value held before trading / V.
    buy_upper : (B, m, n)
        Upper bound on ``b`` (0 = may not buy: never-buy, exclude, wash block,
        padding; ``inf`` = free).
    lot_width : (B, m, n, L)
        Value of each lot / V (0 on padding).
    lot_cost : (B, m, n, L)
        Objective cost per unit of lot sold: θ_a × tax slope, losses valued at
        ``harvest_deferral`` and small losses at 0.
    lot_tax : (B, m, n, L)
        Tax per unit of lot sold at the account's real rates (tax budget row).
    lot_loss : (B, m, n, L) bool
        Selling the lot realizes a loss in a taxable account (wash sales).
    sell_lower, sell_upper : (B, m, n, L)
        Bounds on ``z``: ``sell_lower = lot_width`` where a screen forces the
        sale; ``sell_upper = 0`` where selling is not allowed.
    cash : (B, m)
        Cash before trading / V.
    cash_floor : (B, m)
        min_cash + reserve_cash + withdrawal, / V (hard, when reachable).
    cash_cap : (B, m)
        max_cash + withdrawal + reserve_cash, / V (``inf`` = none).
    tax_budget : (B, m)
        Tax still allowed this year / V (``inf`` = none).
    turnover_limit : (B, m)
        Most value that may trade / V (``inf`` = none).
    account_value : (B, m)
        Account value / V (for constraint checks in units of account value).
    class_target, class_band : (B, C)
        Household asset-class target weight and allowed drift (``inf`` band =
        no row).
    lot_position : (B, P) int32 or None
        None in the *dense* layout above, the one assembly, the oracle and
        the host-side steps of ``solve`` read.  The jitted solver runs on it
        or, where a batch is mostly padding, on the *compact* layout
        (:mod:`engine.solver.layout`): the ``lot_*`` and
        ``sell_*`` fields are then (B, P), the household's real lots one
        after another, and ``lot_position`` is the position ``a·n + i`` of
        each (padding lots: width and bounds 0, at position ``m·n``, past the last).
    """

    exposures: np.ndarray
    factor_covariance: np.ndarray
    specific_variance: np.ndarray
    spread: np.ndarray
    asset_class: np.ndarray
    wash_group: np.ndarray
    penalties: np.ndarray
    risk_aversion: np.ndarray
    target: np.ndarray
    holdings: np.ndarray
    buy_upper: np.ndarray
    lot_width: np.ndarray
    lot_cost: np.ndarray
    lot_tax: np.ndarray
    lot_loss: np.ndarray
    sell_lower: np.ndarray
    sell_upper: np.ndarray
    cash: np.ndarray
    cash_floor: np.ndarray
    cash_cap: np.ndarray
    tax_budget: np.ndarray
    turnover_limit: np.ndarray
    account_value: np.ndarray
    class_target: np.ndarray
    class_band: np.ndarray
    lot_position: np.ndarray | None = None


#: Which fields carry the batch axis (``vmap`` in_axes).
SHARED_FIELDS = ("exposures", "factor_covariance", "specific_variance", "spread",
                 "asset_class", "wash_group", "penalties")
BATCH_AXES = ProblemBatch(*[None if f in SHARED_FIELDS else 0 for f in ProblemBatch._fields])


def batch_size(problem: ProblemBatch) -> int:
    return int(np.shape(problem.target)[0])


def take(problem: ProblemBatch, index) -> ProblemBatch:
    """The households ``index`` of a batch (shared fields kept)."""
    return ProblemBatch(*[v if f in SHARED_FIELDS or v is None else v[index]
                          for f, v in zip(ProblemBatch._fields, problem)])


def concatenate(problems: list[ProblemBatch]) -> ProblemBatch:
    """Households of several batches of one shape and one shared universe."""
    first = problems[0]
    return ProblemBatch(*[getattr(first, f) if f in SHARED_FIELDS or getattr(first, f) is None
                          else np.concatenate([np.asarray(getattr(p, f)) for p in problems])
                          for f in ProblemBatch._fields])


class SolverState(NamedTuple):
    """ADMM iterate of a batch (leading axis B); see :mod:`engine.solver.admm`.

    ``x = (buy, sell)`` are the primal variables; ``z_*`` the constraint
    copies (``z_buy``/``z_sell`` for the bounds, ``z_rows`` for the account
    rows ``(m, 3)``: net proceeds, tax, turnover; ``z_class`` for the class
    rows); ``y_*`` the matching duals; ``rho`` the step size ρ of the
    bounds, ``row_scale`` (m, 3) and ``class_scale`` (C,) the multipliers of ρ
    for the account and class rows (the Woodbury core is re-factored from it at every chunk).
    """

    buy: np.ndarray
    sell: np.ndarray
    z_buy: np.ndarray
    z_sell: np.ndarray
    z_rows: np.ndarray
    z_class: np.ndarray
    y_buy: np.ndarray
    y_sell: np.ndarray
    y_rows: np.ndarray
    y_class: np.ndarray
    rho: np.ndarray
    row_scale: np.ndarray
    class_scale: np.ndarray
    iteration: np.ndarray
    primal_residual: np.ndarray
    dual_residual: np.ndarray
    status: np.ndarray


class SolverResult(NamedTuple):
    """What :func:`engine.solver.solve` returns, per household (leading axis B).

    Attributes
    ----------
    buy : (B, m, n)
        Value to buy / V.
    sell : (B, m, n, L)
        Value of each lot to sell / V.
    cash_after : (B, m)
        Cash after trading / V.
    objective : (B,)
        Objective value (see the module docstring), penalties included.
    status : (B,) int32
        ``SOLVED``, ``MAX_ITERATIONS``, ``INFEASIBLE`` or ``NON_FINITE``.
    iterations : (B,) int32
        ADMM iterations, wash-sale re-solves included.
    primal_residual, dual_residual : (B,)
        Final residuals (∞-norm, units of V).
    missing_cash : (B, m)
        How far the cash floor is out of reach / V (0 when reachable).
    state : SolverState
        The final iterate, for a warm start.
    problem : ProblemBatch
        The problem finally solved: unreachable floors lowered, and the
        bounds that separate wash groups (buys or loss sales fixed to 0).
    """

    buy: np.ndarray
    sell: np.ndarray
    cash_after: np.ndarray
    objective: np.ndarray
    status: np.ndarray
    iterations: np.ndarray
    primal_residual: np.ndarray
    dual_residual: np.ndarray
    missing_cash: np.ndarray
    state: SolverState
    problem: ProblemBatch
