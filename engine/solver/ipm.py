"""One household's primal–dual interior-point method in ``jax.numpy`` (vmapped and jitted by ``solve``).

The problem of :mod:`engine.solver.types` as a QP with simple bounds and
ranged rows (``x = (b, z)``, ``g = A x`` the account rows and class rows of
:mod:`engine.solver.admm`)::

    minimize ½ xᵀ P x + qᵀ x + π_lᵀ t_l + π_uᵀ t_u
    subject to  x_lo ≤ x ≤ x_hi,   l − t_l ≤ A x ≤ u + t_u,   t ≥ 0

where ``t`` exists only on the soft sides of a row (its exact penalty π
finite) and is 0 on the hard ones.  Every one-sided inequality gets a slack
``s ≥ 0`` and a dual ``λ ≥ 0`` (the bounds of x use x itself as the slack, so
the iterate stays strictly inside them); the dual of ``t ≥ 0`` is ``ν = π − λ``.

Mehrotra's predictor–corrector (Nocedal & Wright, "Numerical Optimization",
2nd ed., Algorithm 16.4; line numbers below).  Eliminating the slacks and
duals from the Newton system leaves

    (P + D + Aᵀ W A) Δx = r,   D = λ_lo/s_lo + λ_hi/s_hi,   W = λ/(s + λ t/ν) per row side,

the same matrix as ADMM's x-update with D in place of σ + ρ and W in place
of the rows' ρ: diagonal plus the factor model plus 3m + C rows, solved
exactly by :func:`engine.solver.admm.factorize_diagonal` (Sherman–Morrison
per security, then an r×r Cholesky per household).  One factorization
serves both solves of an iteration.

The default method (``SolverConfig.method``): about 12 iterations for a
first solve and fewer for a wash-sale re-solve (which starts from the first
solve's point), where ADMM takes hundreds to thousands.  An iteration is a
few hundred elementwise passes over the compact layout's lots
(:mod:`engine.solver.layout`) plus the factorization; it is memory traffic,
not arithmetic.  Near μ ≈ 1e-10 the
Newton matrix of degenerate households is singular to working precision and
the solves lose their digits; such a household stops at its best point (``ipm_accept``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from engine.contract.config import SolverConfig
from engine.solver import admm
from engine.solver.types import MAX_ITERATIONS, NON_FINITE, SOLVED, ProblemBatch, SolverState

RUNNING = admm.RUNNING
#: Fraction of the step to the boundary taken (Nocedal & Wright's τ).
_TO_BOUNDARY = 0.99


class Sides(NamedTuple):
    """The inequalities of one household: bounds of x and the two sides of each row."""

    free_b: jnp.ndarray      # (m, n) bool: b is a variable (not fixed)
    free_z: jnp.ndarray      # the lots (P,) compact, (m, n, L) dense
    hi_b: jnp.ndarray        # (m, n) bool: b has a finite upper bound
    lo_z: jnp.ndarray        # bool: z has its lower bound (always, when free)
    hi_z: jnp.ndarray
    lower: jnp.ndarray       # (R,) row lower limit (−inf: none), R = 3m + C
    upper: jnp.ndarray
    has_lower: jnp.ndarray   # (R,) bool
    has_upper: jnp.ndarray
    soft_lower: jnp.ndarray  # (R,) bool: a finite exact penalty beyond the lower limit
    soft_upper: jnp.ndarray
    pen_lower: jnp.ndarray   # (R,) π (1 where hard or absent: never used)
    pen_upper: jnp.ndarray


class IPMState(NamedTuple):
    """Iterate of one household (a leading batch axis when batched).

    ``buy``, ``sell`` the primal variables; ``zl_*``/``zu_*`` the duals of
    their lower/upper bounds and ``su_*`` the slacks of the upper bounds; per
    row side (R = 3m + C) the slack ``s_*``, the dual ``lam_*``, the excess
    ``t_*`` paid for at the exact penalty and its dual ``nu_* = π − lam_*``.
    Slacks that would be differences of nearby numbers (an upper bound less
    the variable, π less the row's dual) are kept as variables of their own:
    at 1e-12 from the bound the difference has lost every digit.  ``best_*``
    is the primal point of the smallest merit seen (the largest of the
    residuals and the gap, each over its tolerance): what is returned when a
    household stalls.
    """

    buy: jnp.ndarray
    sell: jnp.ndarray
    su_b: jnp.ndarray
    su_z: jnp.ndarray
    zl_b: jnp.ndarray
    zu_b: jnp.ndarray
    zl_z: jnp.ndarray
    zu_z: jnp.ndarray
    s_l: jnp.ndarray
    s_u: jnp.ndarray
    lam_l: jnp.ndarray
    lam_u: jnp.ndarray
    t_l: jnp.ndarray
    t_u: jnp.ndarray
    nu_l: jnp.ndarray
    nu_u: jnp.ndarray
    best_buy: jnp.ndarray
    best_sell: jnp.ndarray
    best_merit: jnp.ndarray
    best_iteration: jnp.ndarray
    iteration: jnp.ndarray
    primal_residual: jnp.ndarray
    dual_residual: jnp.ndarray
    gap: jnp.ndarray
    status: jnp.ndarray


def sides(p: ProblemBatch) -> Sides:
    lim = admm.limits(p)
    free_b = p.buy_upper > 0.0
    free_z = p.sell_upper > p.sell_lower
    lower = jnp.concatenate([lim.rows_lower.reshape(-1), lim.class_lower])
    upper = jnp.concatenate([lim.rows_upper.reshape(-1), lim.class_upper])
    pen_l = jnp.concatenate([lim.rows_pen_lower.reshape(-1), lim.class_pen])
    pen_u = jnp.concatenate([lim.rows_pen_upper.reshape(-1), lim.class_pen])
    has_l = jnp.isfinite(lower)
    has_u = jnp.isfinite(upper)
    soft_l = has_l & jnp.isfinite(pen_l)
    soft_u = has_u & jnp.isfinite(pen_u)
    return Sides(free_b, free_z, free_b & jnp.isfinite(p.buy_upper), free_z, free_z,
                 jnp.where(has_l, lower, 0.0), jnp.where(has_u, upper, 0.0), has_l, has_u,
                 soft_l, soft_u, jnp.where(soft_l, pen_l, 1.0), jnp.where(soft_u, pen_u, 1.0))


def _rows(p, buy, sell):
    return admm._all_rows(p, buy, sell)


def _rows_adjoint(p, v):
    return admm._all_rows_adjoint(p, v)


def _scale(p: ProblemBatch):
    """Typical size of a trade (units of V): the mean nonzero lot width."""
    width = p.lot_width
    return jnp.maximum(jnp.sum(width) / jnp.maximum(jnp.sum(width > 0), 1), 1e-6)


def init(p: ProblemBatch, config: SolverConfig, warm: SolverState | None = None) -> IPMState:
    """A strictly interior start: lots at mid-interval, buys at a typical lot size, duals μ₀/slack.

    From a warm ``SolverState`` (OSQP's sign convention, ``y`` = upper − lower
    dual) the primal point and the duals are taken from it and pushed inside
    by a margin of ``config.ipm_warm_margin`` × the typical trade.
    """
    sd = sides(p)
    dtype = p.holdings.dtype
    w = _scale(p)
    mu0 = config.ipm_initial_mu * w
    zl, zu = p.sell_lower, p.sell_upper
    if warm is None:
        buy = jnp.where(sd.free_b, jnp.minimum(0.5 * p.buy_upper, w), 0.0)
        sell = jnp.where(sd.free_z, 0.5 * (zl + zu), zl)
    else:
        margin = config.ipm_warm_margin
        room_b = jnp.minimum(p.buy_upper, w)
        buy = jnp.where(sd.free_b, jnp.clip(warm.buy, margin * room_b,
                                            p.buy_upper - margin * room_b), 0.0)
        room_z = zu - zl
        sell = jnp.where(sd.free_z, jnp.clip(warm.sell, zl + margin * room_z, zu - margin * room_z), zl)
    sbl = jnp.where(sd.free_b, buy, 1.0)
    sbu = jnp.where(sd.hi_b, p.buy_upper - buy, 1.0)
    szl = jnp.where(sd.lo_z, sell - zl, 1.0)
    szu = jnp.where(sd.hi_z, zu - sell, 1.0)
    g = _rows(p, buy, sell)
    theta = w
    # lower side: s = g − l + t ≥ θ (t only where soft); upper: s = u − g + t
    vl = g - sd.lower
    vu = sd.upper - g
    t_l = jnp.where(sd.soft_lower, jnp.maximum(-vl, 0.0) + theta, 0.0)
    t_u = jnp.where(sd.soft_upper, jnp.maximum(-vu, 0.0) + theta, 0.0)
    s_l = jnp.where(sd.has_lower, jnp.maximum(vl + t_l, theta), 1.0)
    s_u = jnp.where(sd.has_upper, jnp.maximum(vu + t_u, theta), 1.0)
    lam_l = jnp.where(sd.has_lower, jnp.where(sd.soft_lower, jnp.minimum(mu0 / s_l, 0.5 * sd.pen_lower),
                                              mu0 / s_l), 0.0)
    lam_u = jnp.where(sd.has_upper, jnp.where(sd.soft_upper, jnp.minimum(mu0 / s_u, 0.5 * sd.pen_upper),
                                              mu0 / s_u), 0.0)
    zero = jnp.asarray(0.0, dtype)
    state = IPMState(buy, sell, sbu, szu,
                     jnp.where(sd.free_b, mu0 / sbl, 0.0), jnp.where(sd.hi_b, mu0 / sbu, 0.0),
                     jnp.where(sd.lo_z, mu0 / szl, 0.0), jnp.where(sd.hi_z, mu0 / szu, 0.0),
                     s_l, s_u, lam_l, lam_u, t_l, t_u,
                     jnp.where(sd.soft_lower, sd.pen_lower - lam_l, 1.0),
                     jnp.where(sd.soft_upper, sd.pen_upper - lam_u, 1.0),
                     buy, sell, jnp.asarray(jnp.inf, dtype), jnp.asarray(0, jnp.int32),
                     jnp.asarray(0, jnp.int32), zero, zero, zero, jnp.asarray(RUNNING, jnp.int32))
    if warm is not None:
        # duals from y = upper − lower, floored at μ₀/slack so that the start is well centred
        floor = config.ipm_warm_margin * mu0
        yb, yz = warm.y_buy, warm.y_sell
        yr = jnp.concatenate([warm.y_rows.reshape(-1), warm.y_class])
        state = state._replace(
            zl_b=jnp.where(sd.free_b, jnp.maximum(-yb, floor / sbl), 0.0),
            zu_b=jnp.where(sd.hi_b, jnp.maximum(yb, floor / sbu), 0.0),
            zl_z=jnp.where(sd.lo_z, jnp.maximum(-yz, floor / szl), 0.0),
            zu_z=jnp.where(sd.hi_z, jnp.maximum(yz, floor / szu), 0.0),
            lam_l=jnp.where(sd.has_lower, jnp.clip(-yr, floor / s_l,
                                                   jnp.where(sd.soft_lower, 0.99 * sd.pen_lower, jnp.inf)), 0.0),
            lam_u=jnp.where(sd.has_upper, jnp.clip(yr, floor / s_u,
                                                   jnp.where(sd.soft_upper, 0.99 * sd.pen_upper, jnp.inf)), 0.0))
        state = state._replace(nu_l=jnp.where(sd.soft_lower, sd.pen_lower - state.lam_l, 1.0),
                               nu_u=jnp.where(sd.soft_upper, sd.pen_upper - state.lam_u, 1.0))
    return state


class _Point(NamedTuple):
    """Slacks and residuals of an iterate, shared by the predictor and the corrector."""

    sbl: jnp.ndarray
    sbu: jnp.ndarray
    szl: jnp.ndarray
    szu: jnp.ndarray
    inv_sbl: jnp.ndarray   # 1 / slack: a division once an iteration, multiplications after
    inv_sbu: jnp.ndarray
    inv_szl: jnp.ndarray
    inv_szu: jnp.ndarray
    rbu: jnp.ndarray       # bound residuals u − x − s_u
    rzu: jnp.ndarray
    rdb: jnp.ndarray       # dual residual
    rdz: jnp.ndarray
    rpl: jnp.ndarray       # row residuals
    rpu: jnp.ndarray
    rtl: jnp.ndarray       # π − λ − ν
    rtu: jnp.ndarray
    mu: jnp.ndarray
    gap: jnp.ndarray
    objective: jnp.ndarray


def _point(p: ProblemBatch, sd: Sides, q, st: IPMState, constant) -> _Point:
    sbl = jnp.where(sd.free_b, st.buy, 1.0)
    sbu = jnp.where(sd.hi_b, st.su_b, 1.0)
    szl = jnp.where(sd.lo_z, st.sell - p.sell_lower, 1.0)
    szu = jnp.where(sd.hi_z, st.su_z, 1.0)
    rbu = jnp.where(sd.hi_b, p.buy_upper - st.buy - st.su_b, 0.0)
    rzu = jnp.where(sd.hi_z, p.sell_upper - st.sell - st.su_z, 0.0)
    traded, rows = admm.trade_and_rows(p, st.buy, st.sell)
    g = admm.stack_rows(p, traded, rows)
    rpl = jnp.where(sd.has_lower, g - sd.lower + st.t_l - st.s_l, 0.0)
    rpu = jnp.where(sd.has_upper, sd.upper - g + st.t_u - st.s_u, 0.0)
    rtl = jnp.where(sd.soft_lower, sd.pen_lower - st.lam_l - st.nu_l, 0.0)
    rtu = jnp.where(sd.soft_upper, sd.pen_upper - st.lam_u - st.nu_u, 0.0)
    # r_d = P x + q − z_lo + z_hi + Aᵀ(λ_hi − λ_lo)
    px = 2.0 * p.risk_aversion * admm.covariance_apply(p, traded)
    pb, pz = admm.trade_adjoint(p, px)
    ab, az = _rows_adjoint(p, st.lam_u - st.lam_l)
    rdb = jnp.where(sd.free_b, pb + q[0] - st.zl_b + st.zu_b + ab, 0.0)
    rdz = jnp.where(sd.free_z, pz + q[1] - st.zl_z + st.zu_z + az, 0.0)
    gap = (jnp.sum(sbl * st.zl_b) + jnp.sum(sbu * st.zu_b) + jnp.sum(szl * st.zl_z) + jnp.sum(szu * st.zu_z)
           + jnp.sum(jnp.where(sd.has_lower, st.s_l * st.lam_l, 0.0))
           + jnp.sum(jnp.where(sd.has_upper, st.s_u * st.lam_u, 0.0))
           + jnp.sum(jnp.where(sd.soft_lower, st.t_l * st.nu_l, 0.0))
           + jnp.sum(jnp.where(sd.soft_upper, st.t_u * st.nu_u, 0.0)))
    count = (jnp.sum(sd.free_b) + jnp.sum(sd.hi_b) + jnp.sum(sd.lo_z) + jnp.sum(sd.hi_z)
             + jnp.sum(sd.has_lower) + jnp.sum(sd.has_upper) + jnp.sum(sd.soft_lower) + jnp.sum(sd.soft_upper))
    count = jnp.maximum(count, 1).astype(sbl.dtype)
    objective = (constant + 0.5 * jnp.dot(traded, px) + jnp.sum(q[0] * st.buy)
                 + jnp.sum(q[1] * st.sell) + jnp.sum(jnp.where(sd.soft_lower, sd.pen_lower * st.t_l, 0.0))
                 + jnp.sum(jnp.where(sd.soft_upper, sd.pen_upper * st.t_u, 0.0)))
    return _Point(sbl, sbu, szl, szu, 1.0 / sbl, 1.0 / sbu, 1.0 / szl, 1.0 / szu,
                  rbu, rzu, rdb, rdz, rpl, rpu, rtl, rtu, gap / count, gap, objective)


class _Direction(NamedTuple):
    dxb: jnp.ndarray
    dxz: jnp.ndarray
    dsu_b: jnp.ndarray
    dsu_z: jnp.ndarray
    dzl_b: jnp.ndarray
    dzu_b: jnp.ndarray
    dzl_z: jnp.ndarray
    dzu_z: jnp.ndarray
    ds_l: jnp.ndarray
    ds_u: jnp.ndarray
    dlam_l: jnp.ndarray
    dlam_u: jnp.ndarray
    dt_l: jnp.ndarray
    dt_u: jnp.ndarray
    dnu_l: jnp.ndarray
    dnu_u: jnp.ndarray


class _Matrix(NamedTuple):
    """The reduced Newton matrix of an iterate: its diagonal, row weights and factor."""

    d_b: jnp.ndarray
    d_z: jnp.ndarray
    w: jnp.ndarray
    den_l: jnp.ndarray
    den_u: jnp.ndarray
    fac: admm.Factor


def _apply(p, sd: Sides, mat: _Matrix, vb, vz):
    """``K v = P v + D v + Aᵀ (w ⊙ A v)`` on the free variables (0 elsewhere)."""
    traded, rows = admm.trade_and_rows(p, vb, vz)
    pv = 2.0 * p.risk_aversion * admm.covariance_apply(p, traded)
    pb, pz = admm.trade_adjoint(p, pv)
    ab, az = _rows_adjoint(p, mat.w * admm.stack_rows(p, traded, rows))
    return (jnp.where(sd.free_b, pb + mat.d_b * vb + ab, 0.0), jnp.where(sd.free_z, pz + mat.d_z * vz + az, 0.0))


def _direction(p, sd: Sides, st: IPMState, pt: _Point, mat: _Matrix, targets, refine: int) -> _Direction:
    """Solve the Newton system for complementarity targets ``c`` (one per pair).

    Each pair (s, λ) asks ``λ Δs + s Δλ = c``; with ``c = −sλ`` it is the
    affine-scaling (predictor) direction, with ``σμ − sλ − Δs_aff Δλ_aff`` the
    corrector (Algorithm 16.4, lines 4 and 8).  The slacks, duals and
    excesses are eliminated (their linear residuals enter the right-hand
    side), leaving ``K Δx = r``.
    """
    c_bl, c_bu, c_zl, c_zu, c1_l, c1_u, c2_l, c2_u = targets
    # the t-pair with Δν = r_t − Δλ:  ν Δt + t Δν = c2  →  Δt = (c2 − t r_t + t Δλ) / ν
    e_l = c2_l - st.t_l * pt.rtl
    e_u = c2_u - st.t_u * pt.rtu
    nu_l = jnp.where(sd.soft_lower, st.nu_l, 1.0)
    nu_u = jnp.where(sd.soft_upper, st.nu_u, 1.0)
    h_l = jnp.where(sd.has_lower, (c1_l - st.lam_l * pt.rpl - st.lam_l * e_l / nu_l) / mat.den_l, 0.0)
    h_u = jnp.where(sd.has_upper, (c1_u - st.lam_u * pt.rpu - st.lam_u * e_u / nu_u) / mat.den_u, 0.0)
    hb, hz = _rows_adjoint(p, h_u - h_l)
    # upper bounds: Δs_u = −Δx + r_u,  Δz_u = (c − z_u r_u + z_u Δx) / s_u
    fb = c_bu - st.zu_b * pt.rbu
    fz = c_zu - st.zu_z * pt.rzu
    rb = jnp.where(sd.free_b, -pt.rdb + c_bl * pt.inv_sbl - fb * pt.inv_sbu - hb, 0.0)
    rz = jnp.where(sd.free_z, -pt.rdz + c_zl * pt.inv_szl - fz * pt.inv_szu - hz, 0.0)
    dxb, dxz = admm.solve_kkt(p, mat.fac, rb, rz)
    for _ in range(refine):
        # iterative refinement: the Woodbury solve loses digits as D spreads over 10²⁰
        kb, kz = _apply(p, sd, mat, dxb, dxz)
        eb, ez = admm.solve_kkt(p, mat.fac, rb - kb, rz - kz)
        dxb, dxz = dxb + eb, dxz + ez
    dg = _rows(p, dxb, dxz)
    w_l = jnp.where(sd.has_lower, st.lam_l / mat.den_l, 0.0)
    w_u = jnp.where(sd.has_upper, st.lam_u / mat.den_u, 0.0)
    dlam_l = h_l - w_l * dg
    dlam_u = h_u + w_u * dg
    dt_l = jnp.where(sd.soft_lower, (e_l + st.t_l * dlam_l) / nu_l, 0.0)
    dt_u = jnp.where(sd.soft_upper, (e_u + st.t_u * dlam_u) / nu_u, 0.0)
    dnu_l = jnp.where(sd.soft_lower, pt.rtl - dlam_l, 0.0)
    dnu_u = jnp.where(sd.soft_upper, pt.rtu - dlam_u, 0.0)
    ds_l = jnp.where(sd.has_lower, dg + dt_l + pt.rpl, 0.0)
    ds_u = jnp.where(sd.has_upper, -dg + dt_u + pt.rpu, 0.0)
    dsu_b = jnp.where(sd.hi_b, -dxb + pt.rbu, 0.0)
    dsu_z = jnp.where(sd.hi_z, -dxz + pt.rzu, 0.0)
    dzl_b = jnp.where(sd.free_b, (c_bl - st.zl_b * dxb) * pt.inv_sbl, 0.0)
    dzu_b = jnp.where(sd.hi_b, (fb + st.zu_b * dxb) * pt.inv_sbu, 0.0)
    dzl_z = jnp.where(sd.lo_z, (c_zl - st.zl_z * dxz) * pt.inv_szl, 0.0)
    dzu_z = jnp.where(sd.hi_z, (fz + st.zu_z * dxz) * pt.inv_szu, 0.0)
    return _Direction(dxb, dxz, dsu_b, dsu_z, dzl_b, dzu_b, dzl_z, dzu_z, ds_l, ds_u, dlam_l, dlam_u,
                      dt_l, dt_u, dnu_l, dnu_u)


def _pairs(sd: Sides, st: IPMState, pt: _Point, d: _Direction):
    """(slack, dual, Δslack, Δdual, mask) of every complementarity pair."""
    return [(pt.sbl, st.zl_b, d.dxb, d.dzl_b, sd.free_b),
            (pt.sbu, st.zu_b, d.dsu_b, d.dzu_b, sd.hi_b),
            (pt.szl, st.zl_z, d.dxz, d.dzl_z, sd.lo_z),
            (pt.szu, st.zu_z, d.dsu_z, d.dzu_z, sd.hi_z),
            (st.s_l, st.lam_l, d.ds_l, d.dlam_l, sd.has_lower),
            (st.s_u, st.lam_u, d.ds_u, d.dlam_u, sd.has_upper),
            (st.t_l, st.nu_l, d.dt_l, d.dnu_l, sd.soft_lower),
            (st.t_u, st.nu_u, d.dt_u, d.dnu_u, sd.soft_upper)]


def _reciprocals(pairs):
    """(1/slack, 1/dual) of every pair: the step length's divisions, once an iteration.

    The bounds' ``1/slack`` are ``_point``'s own (XLA computes the same division once).
    """
    return [(1.0 / s, 1.0 / z) for s, z, _, _, _ in pairs]


def _max_step(pairs, reciprocals):
    """Largest α that keeps every pair's slack and dual ≥ 0: 1 / the largest ``−Δv / v``.

    One reduction a pair, of products with the iteration's reciprocals
    (masked-out entries, whose reciprocals may be infinite, are dropped by
    the ``where``), instead of two of quotients.
    """
    shrink = jnp.asarray(0.0, pairs[0][0].dtype)
    for (s, z, ds, dz, mask), (inv_s, inv_z) in zip(pairs, reciprocals):
        rate = jnp.where(mask, jnp.maximum(-ds * inv_s, -dz * inv_z), 0.0)
        shrink = jnp.maximum(shrink, jnp.max(rate))
    return jnp.where(shrink > 0.0, 1.0 / shrink, jnp.inf)


def tolerances(config: SolverConfig):
    """(absolute, relative) tolerance of the interior-point method's stopping rule."""
    return config.ipm_absolute * config.eps_abs, config.eps_rel


def _matrix(p: ProblemBatch, sd: Sides, st: IPMState, pt: _Point, config: SolverConfig) -> _Matrix:
    """Lines 2–3: the reduced matrix ``P + D + Aᵀ W A`` at this iterate, factored once."""
    nu_l = jnp.where(sd.soft_lower, st.nu_l, 1.0)
    nu_u = jnp.where(sd.soft_upper, st.nu_u, 1.0)
    den_l = jnp.where(sd.has_lower, st.s_l + st.lam_l * st.t_l / nu_l, 1.0)
    den_u = jnp.where(sd.has_upper, st.s_u + st.lam_u * st.t_u / nu_u, 1.0)
    w = jnp.where(sd.has_lower, st.lam_l / den_l, 0.0) + jnp.where(sd.has_upper, st.lam_u / den_u, 0.0)
    # δ: a primal (proximal) regularization.  On a degenerate household (lots or accounts
    # that trade the same security at the same cost) P + D is singular along the optimal
    # face as μ → 0; δ bounds its smallest eigenvalue, and the direction along that face,
    # which does not change the objective, is damped instead of lost in rounding
    d_b = st.zl_b * pt.inv_sbl + st.zu_b * pt.inv_sbu + config.ipm_regularization
    d_z = st.zl_z * pt.inv_szl + st.zu_z * pt.inv_szu + config.ipm_regularization
    inv_b = jnp.where(sd.free_b, 1.0 / jnp.where(sd.free_b, d_b, 1.0), 0.0)
    inv_z = jnp.where(sd.free_z, 1.0 / jnp.where(sd.free_z, d_z, 1.0), 0.0)
    m = p.cash.shape[0]
    on = w > 0
    root = on.astype(w.dtype)
    diagonal = jnp.where(on, 1.0 / jnp.where(on, w, 1.0), 1.0)
    fac = admm.factorize_diagonal(p, inv_b, inv_z, root[:3 * m].reshape(m, 3), root[3 * m:],
                                  diagonal[:3 * m].reshape(m, 3), diagonal[3 * m:])
    return _Matrix(d_b, d_z, w, den_l, den_u, fac)


def step(p: ProblemBatch, sd: Sides, q, constant, st: IPMState, config: SolverConfig) -> IPMState:
    """One predictor–corrector iteration; a household that has a final status is left as it is.

    Stops (``SOLVED``) when the primal residuals (units of V) and the dual
    residual are below ``eps_abs × ipm_absolute`` and the complementarity gap,
    which bounds the distance to the optimal objective, below that or
    ``eps_rel`` × |objective|.
    """
    pt = _point(p, sd, q, st, constant)
    prim = jnp.max(jnp.stack([jnp.max(jnp.abs(r)) for r in (pt.rpl, pt.rpu, pt.rbu, pt.rzu)]))
    dual = jnp.max(jnp.stack([jnp.max(jnp.abs(r)) for r in (pt.rdb, pt.rdz, pt.rtl, pt.rtu)]))
    absolute, relative = tolerances(config)
    merit = jnp.maximum(jnp.maximum(prim, dual) / absolute,
                        pt.gap / jnp.maximum(absolute, relative * jnp.abs(pt.objective)))
    finite = jnp.isfinite(merit)
    better = finite & (merit < st.best_merit)
    st = st._replace(best_buy=jnp.where(better, st.buy, st.best_buy),
                     best_sell=jnp.where(better, st.sell, st.best_sell),
                     best_merit=jnp.where(better, merit, st.best_merit),
                     best_iteration=jnp.where(better, st.iteration, st.best_iteration))
    # stalled: the Newton solves have lost their digits (the merit is far above the best, or
    # has not improved for a while); the best point is then the answer, solved if it is
    # within ipm_accept of the tolerance
    stalled = (~finite | (merit > 1e3 * st.best_merit)
               | (st.iteration - st.best_iteration >= config.ipm_stall_iterations))
    limit = jnp.minimum(config.max_iterations, config.ipm_max_iterations)
    status = jnp.where(merit <= 1.0, SOLVED,
                       jnp.where(stalled & (st.best_merit <= config.ipm_accept), SOLVED,
                                 jnp.where(st.iteration >= limit, MAX_ITERATIONS, RUNNING)))
    mat = _matrix(p, sd, st, pt, config)
    masks = (sd.free_b, sd.hi_b, sd.lo_z, sd.hi_z, sd.has_lower, sd.has_upper, sd.soft_lower, sd.soft_upper)
    # line 4: affine-scaling direction
    products = (pt.sbl * st.zl_b, pt.sbu * st.zu_b, pt.szl * st.zl_z, pt.szu * st.zu_z,
                st.s_l * st.lam_l, st.s_u * st.lam_u, st.t_l * st.nu_l, st.t_u * st.nu_u)
    aff_targets = tuple(jnp.where(mask, -c, 0.0) for c, mask in zip(products, masks))
    # the predictor only sets the step to the boundary and the centring: no refinement
    aff = _direction(p, sd, st, pt, mat, aff_targets, 0)
    pairs = _pairs(sd, st, pt, aff)
    reciprocals = _reciprocals(pairs)
    # lines 5–7: centring σ = (μ_aff / μ)³
    alpha = jnp.minimum(1.0, _max_step(pairs, reciprocals))
    gap_aff = sum(jnp.sum(jnp.where(mask, (s + alpha * ds) * (z + alpha * dz), 0.0))
                  for s, z, ds, dz, mask in pairs)
    sigma = jnp.clip((gap_aff / jnp.maximum(pt.gap, 1e-300)) ** 3, 0.0, 1.0)
    target = sigma * pt.mu
    # line 8: corrector targets σμ − sλ − Δs_aff Δλ_aff
    cor_targets = tuple(jnp.where(mask, target + c - ds * dz, 0.0)
                        for c, (s, z, ds, dz, mask) in zip(aff_targets, pairs))
    d = _direction(p, sd, st, pt, mat, cor_targets, config.ipm_refine)
    # lines 9–10: one step length for all, a fraction τ of the way to the boundary
    alpha = jnp.minimum(1.0, _TO_BOUNDARY * _max_step(_pairs(sd, st, pt, d), reciprocals))
    moved = [v + alpha * dv for v, dv in zip(
        (st.buy, st.sell, st.su_b, st.su_z, st.zl_b, st.zu_b, st.zl_z, st.zu_z, st.s_l, st.s_u,
         st.lam_l, st.lam_u, st.t_l, st.t_u, st.nu_l, st.nu_u), d)]
    new = IPMState(*moved, st.best_buy, st.best_sell, st.best_merit, st.best_iteration, st.iteration + 1,
                   prim, dual, pt.gap, status.astype(jnp.int32))
    keep = status != RUNNING
    out = IPMState(*[jnp.where(keep, old, fresh) for old, fresh in zip(st, new)])
    return out._replace(primal_residual=prim, dual_residual=dual, gap=pt.gap, status=status.astype(jnp.int32))


def chunk(p: ProblemBatch, st: IPMState, config: SolverConfig) -> IPMState:
    """``config.ipm_check_interval`` iterations (finished households stay as they are)."""
    import jax

    sd = sides(p)
    q = admm.linear_cost(p)
    r0 = p.holdings.sum(0) - p.target
    constant = p.risk_aversion * jnp.dot(r0, admm.covariance_apply(p, r0))
    return jax.lax.fori_loop(0, config.ipm_check_interval, lambda _, s: step(p, sd, q, constant, s, config), st)


def to_solver_state(p: ProblemBatch, st: IPMState) -> SolverState:
    """The best point in ADMM's terms (OSQP's signs: ``y`` = upper − lower dual), for warm starts."""
    buy, sell = st.best_buy, st.best_sell
    g = _rows(p, buy, sell)
    m = p.cash.shape[0]
    y = st.lam_u - st.lam_l
    dtype = buy.dtype
    return SolverState(buy, sell, buy, sell, g[:3 * m].reshape(m, 3), g[3 * m:],
                       st.zu_b - st.zl_b, st.zu_z - st.zl_z, y[:3 * m].reshape(m, 3), y[3 * m:],
                       jnp.asarray(1.0, dtype), jnp.ones((m, 3), dtype), jnp.ones(g[3 * m:].shape, dtype),
                       st.iteration, st.primal_residual, st.dual_residual, st.status)
