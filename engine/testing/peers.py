"""The solver's peers, as a quant would run them: one model built per shape, new numbers per account.

Each peer solves the household problem of :mod:`engine.solver.types` (the
one :mod:`engine.testing.oracle` writes in cvxpy) on the dense lot layout
(account, security, lot slot), so that one model serves every household of
a shape ``(m, n, L, k, C)``; a padding lot is a variable fixed at 0 by its
bounds.  Both peers share one formulation, with the household weights
``w = Σ_a h0[a] + b − Σ_l z − w*`` and the factor exposures ``f = Lᵀ Xᵀ w``
(``F = L Lᵀ``) as variables, and a slack per exact penalty:

    minimize  λ (‖f‖² + Σ d w²) + Σ c b + Σ (c + lot_cost) z
              + π_cap Σ s_cap + π_tax Σ s_tax + π_turn Σ s_turn + π_band Σ (s_hi + s_lo)
    s.t.      w − Σ_a b[a] + Σ_{a,l} z[a,:,l] = Σ_a h0[a] − w*,   f = Lᵀ Xᵀ w
              cash_a + Σ z[a] − Σ b[a] ≥ cash_floor_a
              cash_a + Σ z[a] − Σ b[a] − s_cap ≤ cash_cap_a,  Σ lot_tax z[a] − s_tax ≤ tax_budget_a
              Σ b[a] + Σ z[a] − s_turn ≤ turnover_limit_a
              Cᵀ (w + w*) − s_hi ≤ class_target + band,  Cᵀ (w + w*) + s_lo ≥ class_target − band
              0 ≤ b ≤ buy_upper,  sell_lower ≤ z ≤ sell_upper,  s ≥ 0

* :class:`OsqpPeer`: OSQP through its own API; ``P`` and ``A`` are built once
  with their sparsity fixed, and each account is ``update(q, l, u, Px, Ax)``
  and ``solve``.
* :class:`CvxpyPeer`: cvxpy with Parameters (DPP): the problem is built and
  compiled once, each account only sets parameter values and calls Clarabel.
* :func:`rebuilt` (in :mod:`engine.testing.oracle`): cvxpy's problem built
  anew for each household, what a user writes first.

cvxpy, Clarabel and OSQP are test dependencies; they are imported when a peer is built.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from engine.solver import evaluate
from engine.solver.types import PENALTY_BAND, PENALTY_CASH_CAP, PENALTY_TAX, PENALTY_TURNOVER, ProblemBatch

#: A limit past anything reachable, for cvxpy's parameters (which must be finite): units of V.
FAR = 1e3


@dataclass(frozen=True)
class Household:
    """One household of a dense, prepared batch, flattened for the peers (units of V).

    ``b`` is (m·n,), ``z`` (m·n·L,), in C order of (account, security, lot).
    """

    risk_aversion: float
    exposures_root: np.ndarray    # (k, n): Lᵀ Xᵀ
    specific: np.ndarray          # (n,) d
    buy_cost: np.ndarray          # (m·n,) spread
    sell_cost: np.ndarray         # (m·n·L,) spread + lot_cost
    lot_tax: np.ndarray           # (m·n·L,)
    residual: np.ndarray          # (n,) Σ_a h0[a] − w*
    cash: np.ndarray              # (m,)
    floor: np.ndarray             # (m,) −inf: no row
    cap: np.ndarray               # (m,) inf: no row
    budget: np.ndarray            # (m,)
    turnover: np.ndarray          # (m,)
    band_high: np.ndarray         # (C,) class_target + band − Cᵀ w*
    band_low: np.ndarray          # (C,) class_target − band − Cᵀ w*
    buy_upper: np.ndarray         # (m·n,)
    sell_lower: np.ndarray        # (m·n·L,)
    sell_upper: np.ndarray        # (m·n·L,)
    classes: np.ndarray           # (n, C) one-hot
    penalties: np.ndarray         # (4,)
    shape: tuple[int, int, int]   # (m, n, L)


def household(problem: ProblemBatch, h: int) -> Household:
    """Household ``h`` of a dense batch (``lot_position`` None), prepared (:func:`evaluate.prepare`)."""
    if problem.lot_position is not None:
        raise ValueError("the peers read the dense lot layout: pass a SolverResult.problem, not a compact batch")
    m, n, L = np.shape(problem.lot_width)[1:]
    X = np.asarray(problem.exposures, float)
    root = np.linalg.cholesky(np.asarray(problem.factor_covariance, float))
    spread = np.asarray(problem.spread, float)
    classes = evaluate.class_matrix(problem)
    target = np.asarray(problem.target[h], float)
    band = np.asarray(problem.class_band[h], float)
    class_target = np.asarray(problem.class_target[h], float) - target @ classes
    return Household(
        risk_aversion=float(problem.risk_aversion[h]), exposures_root=(X @ root).T,
        specific=np.asarray(problem.specific_variance, float),
        buy_cost=np.tile(spread, m), sell_cost=(spread[None, :, None] + np.asarray(problem.lot_cost[h], float)).ravel(),
        lot_tax=np.asarray(problem.lot_tax[h], float).ravel(),
        residual=np.asarray(problem.holdings[h], float).sum(0) - target,
        cash=np.asarray(problem.cash[h], float), floor=np.asarray(problem.cash_floor[h], float),
        cap=np.asarray(problem.cash_cap[h], float), budget=np.asarray(problem.tax_budget[h], float),
        turnover=np.asarray(problem.turnover_limit[h], float),
        band_high=class_target + band, band_low=class_target - band,
        buy_upper=np.asarray(problem.buy_upper[h], float).ravel(),
        sell_lower=np.asarray(problem.sell_lower[h], float).ravel(),
        sell_upper=np.asarray(problem.sell_upper[h], float).ravel(),
        classes=classes, penalties=np.asarray(problem.penalties, float), shape=(m, n, L))


def trades(household: Household, b: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(buy (m, n), sell (m, n, L)) of a peer's solution, put on the bounds as any user would."""
    m, n, L = household.shape
    buy = np.clip(b, 0.0, household.buy_upper).reshape(m, n)
    sell = np.clip(z, household.sell_lower, household.sell_upper).reshape(m, n, L)
    return buy, sell


def _account_sums(m: int, per_account: int) -> sp.csr_matrix:
    """(m, m·per_account): sums of each account's entries."""
    return sp.kron(sp.eye(m), np.ones((1, per_account)), format="csr")


class _Layout:
    """The variables ``x = [b, z, w, f, s_cap, s_tax, s_turn, s_hi, s_lo]`` of a shape, as slices."""

    def __init__(self, m: int, n: int, L: int, k: int, C: int):
        sizes = {"b": m * n, "z": m * n * L, "w": n, "f": k, "cap": m, "tax": m, "turn": m, "hi": C, "lo": C}
        self.slices, start = {}, 0
        for name, size in sizes.items():
            self.slices[name] = slice(start, start + size)
            start += size
        self.size = start
        self.m, self.n, self.L, self.k, self.C = m, n, L, k, C


class OsqpPeer:
    """OSQP through its own API, for one shape: ``setup`` once, ``update`` and ``solve`` per household.

    Parameters
    ----------
    first
        A household of the shape (its numbers fill the first setup).
    settings
        OSQP settings (``eps_abs``, ``eps_rel``, ``polish``, ``warm_starting``, ...).
    """

    def __init__(self, first: Household, **settings):
        import osqp

        m, n, L = first.shape
        k, C = first.exposures_root.shape[0], first.classes.shape[1]
        self.layout = _Layout(m, n, L, k, C)
        A = self._constraint_pattern(first)
        P = self._cost_matrix(first)
        q, lower, upper = self._vectors(first)
        self.solver = osqp.OSQP()
        self.solver.setup(P, q, A, lower, upper, verbose=False, **settings)

    def _cost_matrix(self, hh: Household) -> sp.csc_matrix:
        """``P`` (upper triangle, CSC): 2λ d on ``w``, 2λ on ``f``; zeros elsewhere."""
        s = self.layout.slices
        diagonal = np.zeros(self.layout.size)
        diagonal[s["w"]] = 2.0 * hh.risk_aversion * hh.specific
        diagonal[s["f"]] = 2.0 * hh.risk_aversion
        self._diagonal = np.r_[np.arange(s["w"].start, s["w"].stop), np.arange(s["f"].start, s["f"].stop)]
        return sp.csc_matrix((diagonal[self._diagonal], (self._diagonal, self._diagonal)),
                             shape=(self.layout.size, self.layout.size))

    def _cost_values(self, hh: Household) -> np.ndarray:
        k = self.layout.k
        return 2.0 * hh.risk_aversion * np.r_[hh.specific, np.ones(k)]

    def _blocks(self, hh: Household) -> list[list]:
        """The constraint rows as blocks of sparse matrices, by variable (None: no entries)."""
        lay = self.layout
        m, n, L, k, C = lay.m, lay.n, lay.L, lay.k, lay.C
        buys = sp.kron(np.ones((1, m)), sp.eye(n))                          # (n, m n): Σ_a b[a]
        sells = sp.kron(np.ones((1, m)), sp.kron(sp.eye(n), np.ones((1, L))))   # (n, m n L)
        sum_b, sum_z = _account_sums(m, n), _account_sums(m, n * L)
        tax = sum_z.multiply(hh.lot_tax[None, :])
        I_m, I_C, ct = sp.eye(m), sp.eye(C), sp.csr_matrix(hh.classes.T)
        return [
            #   b         z         w                        f            cap    tax    turn   hi     lo
            [-buys,     sells,    sp.eye(n),               None,        None,  None,  None,  None,  None],
            [None,      None,     -sp.csr_matrix(hh.exposures_root), sp.eye(k), None, None, None, None, None],
            [-sum_b,    sum_z,    None,                    None,        None,  None,  None,  None,  None],
            [-sum_b,    sum_z,    None,                    None,        -I_m,  None,  None,  None,  None],
            [None,      tax,      None,                    None,        None,  -I_m,  None,  None,  None],
            [sum_b,     sum_z,    None,                    None,        None,  None,  -I_m,  None,  None],
            [None,      None,     ct,                      None,        None,  None,  None,  -I_C,  None],
            [None,      None,     ct,                      None,        None,  None,  None,  None,  I_C],
            [sp.eye(m * n), None, None, None, None, None, None, None, None],
            [None, sp.eye(m * n * L), None, None, None, None, None, None, None],
            [None, None, None, None, sp.eye(m), None, None, None, None],
            [None, None, None, None, None, sp.eye(m), None, None, None],
            [None, None, None, None, None, None, sp.eye(m), None, None],
            [None, None, None, None, None, None, None, sp.eye(C), None],
            [None, None, None, None, None, None, None, None, sp.eye(C)],
        ]

    def _constraint_pattern(self, hh: Household) -> sp.csc_matrix:
        """``A`` for ``hh``, its sparsity fixed for every household of the shape.

        The pattern is that of a household whose lot taxes and exposures are all nonzero;
        what changes between households (the tax rows, ``Lᵀ Xᵀ``) is remembered as
        indices into ``A``'s CSC data, which :meth:`_constraint_values` fills.
        """
        lay = self.layout
        ones = Household(**{**hh.__dict__, "lot_tax": np.ones_like(hh.lot_tax),
                            "exposures_root": np.ones_like(hh.exposures_root)})
        A = sp.bmat(self._blocks(ones), format="csc")
        A.sort_indices()
        rows = A.indices
        columns = np.repeat(np.arange(A.shape[1]), np.diff(A.indptr))
        tax_row = lay.n + lay.k + 2 * lay.m
        z, w = lay.slices["z"], lay.slices["w"]
        self._tax = np.flatnonzero((rows >= tax_row) & (rows < tax_row + lay.m) & (columns >= z.start)
                                   & (columns < z.stop))
        self._tax_lot = columns[self._tax] - z.start
        self._exposure = np.flatnonzero((rows >= lay.n) & (rows < lay.n + lay.k) & (columns >= w.start)
                                        & (columns < w.stop))
        self._exposure_at = (rows[self._exposure] - lay.n, columns[self._exposure] - w.start)
        self._base = A.data.copy()
        A.data = self._constraint_values(hh)
        return A

    def _constraint_values(self, hh: Household) -> np.ndarray:
        """``A``'s CSC data for ``hh``, in the fixed pattern's order."""
        data = self._base.copy()
        data[self._tax] = hh.lot_tax[self._tax_lot]
        data[self._exposure] = -hh.exposures_root[self._exposure_at]
        return data

    def _vectors(self, hh: Household) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``q``, ``l``, ``u`` of household ``hh``."""
        lay, s = self.layout, self.layout.slices
        pen = hh.penalties
        q = np.zeros(lay.size)
        q[s["b"]], q[s["z"]] = hh.buy_cost, hh.sell_cost
        q[s["cap"]], q[s["tax"]], q[s["turn"]] = pen[PENALTY_CASH_CAP], pen[PENALTY_TAX], pen[PENALTY_TURNOVER]
        q[s["hi"]] = q[s["lo"]] = pen[PENALTY_BAND]
        m, n, k, C = lay.m, lay.n, lay.k, lay.C
        inf_m, inf_C = np.full(m, np.inf), np.full(C, np.inf)
        lower = np.r_[hh.residual, np.zeros(k), hh.floor - hh.cash, -inf_m, -inf_m, -inf_m, -inf_C, hh.band_low,
                      np.zeros(m * n), hh.sell_lower, np.zeros(2 * m + m + 2 * C)]
        upper = np.r_[hh.residual, np.zeros(k), inf_m, hh.cap - hh.cash, hh.budget, hh.turnover, hh.band_high, inf_C,
                      hh.buy_upper, hh.sell_upper, np.full(3 * m + 2 * C, np.inf)]
        return q, lower, upper

    def solve(self, hh: Household) -> tuple[np.ndarray, np.ndarray, int, str]:
        """Update the model with ``hh``'s numbers and solve: ``(b, z, iterations, status)``."""
        q, lower, upper = self._vectors(hh)
        self.solver.update(q=q, l=lower, u=upper, Px=self._cost_values(hh), Ax=self._constraint_values(hh))
        result = self.solver.solve(raise_error=False)
        x = result.x if result.x is not None else np.zeros(self.layout.size)
        s = self.layout.slices
        return x[s["b"]], x[s["z"]], int(result.info.iter), str(result.info.status)

    def update_settings(self, **settings) -> None:
        self.solver.update_settings(**settings)


class CvxpyPeer:
    """cvxpy with Parameters (DPP) for one shape: built and compiled once, parameter values per household.

    The same formulation as :class:`OsqpPeer`; limits that are infinite become
    :data:`FAR` (parameters must be finite), which no solution reaches.

    Parameters
    ----------
    first
        A household of the shape.
    solver, options
        cvxpy's solver name and its options (Clarabel's tolerances).
    """

    def __init__(self, first: Household, solver: str = "CLARABEL", **options):
        import cvxpy as cp

        m, n, L = first.shape
        k, C = first.exposures_root.shape[0], first.classes.shape[1]
        self.solver, self.options = solver, options
        names = {"root": (k, n), "specific": n, "buy_cost": m * n, "sell_cost": m * n * L, "lot_tax": m * n * L,
                 "drift": n, "floor": m, "cap": m, "budget": m, "turnover_cap": m, "band_high": C,
                 "band_low": C, "buy_upper": m * n, "sell_lower": m * n * L, "sell_upper": m * n * L, "classes": (C, n)}
        self.parameters = {name: cp.Parameter(size) for name, size in names.items()}
        p = self.parameters
        self.b, self.z = cp.Variable(m * n), cp.Variable(m * n * L)
        w = cp.Variable(n)
        buys = sp.kron(np.ones((1, m)), sp.eye(n), format="csr")
        sells = sp.kron(np.ones((1, m)), sp.kron(sp.eye(n), np.ones((1, L))), format="csr")
        sum_b, sum_z = _account_sums(m, n), _account_sums(m, n * L)
        pen = first.penalties
        net = sum_z @ self.z - sum_b @ self.b
        class_weight = p["classes"] @ w
        objective = (cp.sum_squares(p["root"] @ w) + cp.sum_squares(cp.multiply(p["specific"], w))
                     + p["buy_cost"] @ self.b + p["sell_cost"] @ self.z
                     + pen[PENALTY_CASH_CAP] * cp.sum(cp.pos(net - p["cap"]))
                     + pen[PENALTY_TAX] * cp.sum(cp.pos(sum_z @ cp.multiply(p["lot_tax"], self.z) - p["budget"]))
                     + pen[PENALTY_TURNOVER] * cp.sum(cp.pos(sum_b @ self.b + sum_z @ self.z - p["turnover_cap"]))
                     + pen[PENALTY_BAND] * cp.sum(cp.pos(class_weight - p["band_high"])
                                                  + cp.pos(p["band_low"] - class_weight)))
        constraints = [w == p["drift"] + buys @ self.b - sells @ self.z, net >= p["floor"],
                       self.b >= 0, self.b <= p["buy_upper"], self.z >= p["sell_lower"], self.z <= p["sell_upper"]]
        self.problem = cp.Problem(cp.Minimize(objective), constraints)
        if not self.problem.is_dpp():
            raise AssertionError("the parametrized peer must be DPP (compiled once)")

    def solve(self, hh: Household) -> tuple[np.ndarray, np.ndarray, int, str]:
        """Set ``hh``'s parameter values and solve: ``(b, z, iterations, status)``."""
        root = np.sqrt(hh.risk_aversion)
        values = {"root": root * hh.exposures_root, "specific": root * np.sqrt(hh.specific),
                  "buy_cost": hh.buy_cost, "sell_cost": hh.sell_cost, "lot_tax": hh.lot_tax,
                  "drift": hh.residual, "classes": hh.classes.T,
                  "floor": np.maximum(hh.floor, -FAR) - hh.cash, "cap": np.minimum(hh.cap, FAR) - hh.cash,
                  "budget": np.minimum(hh.budget, FAR), "turnover_cap": np.minimum(hh.turnover, FAR),
                  "band_high": np.minimum(hh.band_high, FAR), "band_low": np.maximum(hh.band_low, -FAR),
                  "buy_upper": np.minimum(hh.buy_upper, FAR), "sell_lower": hh.sell_lower,
                  "sell_upper": hh.sell_upper}
        for name, value in values.items():
            self.parameters[name].value = value
        self.problem.solve(solver=self.solver, **self.options)
        b = self.b.value if self.b.value is not None else np.zeros(self.b.size)
        z = self.z.value if self.z.value is not None else np.zeros(self.z.size)
        return b, z, int(self.problem.solver_stats.num_iters or 0), self.problem.status
