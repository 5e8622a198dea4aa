"""One household's ADMM in ``jax.numpy``: the pure functions that ``solve`` vmaps and jits.

The problem of :mod:`engine.solver.types` is written as OSQP's QP

    minimize ½ xᵀ P x + qᵀ x   subject to   A x = ζ,  ζ ∈ 𝒵 (bounds; soft rows via their prox)

with ``x = (b, z)`` (N = m·n + P variables: a buy per position and the P
lots of the compact layout, :mod:`engine.solver.layout`), ``P = 2λ Mᵀ Σ M`` where
``M x = Σ_a (b[a] − Σ_l z[a,:,l])`` is the household trade per security,
``q = 2λ Mᵀ Σ r0 + c + lot_cost`` with ``r0 = Σ_a h0[a] − w*``, and ``A``
stacking the identity (bounds of b and z), the account rows ``G`` (net
proceeds, tax, turnover; 3 per account) and the class rows ``Cᵀ M``.

ADMM iteration (Stellato et al. 2020, "OSQP", Algorithm 1; line numbers below):

    (3)  x̃ = (P + σI + Aᵀ R A)⁻¹ (σ x − q + Aᵀ (R ζ − y))
    (4)  ζ̃ = A x̃
    (5)  x ← α x̃ + (1 − α) x
    (6)  ζ ← prox_{h/R}(α ζ̃ + (1 − α) ζ + R⁻¹ y)
    (7)  y ← y + R (α ζ̃ + (1 − α) ζ − ζ_new)

The x-update matrix ``K = P + σI + AᵀRA`` is, with ``Δ = σI + R_bounds``,

    K = Δ + Mᵀ diag(2λ d) M + W Wᵀ,   W = [Mᵀ E, √ρ Gᵀ],
    E = [√(2λ) X L_F, √ρ C]           (L_F L_Fᵀ = F; C the (n, C) class one-hot)

``B = Δ + Mᵀ diag(β) M`` (β = 2λd) is block diagonal by security with rank-one
blocks, so Sherman–Morrison inverts it in O(N):

    B⁻¹ v = A v − A Mᵀ (γ ⊙ M A v),  A = Δ⁻¹,  τ = M A Mᵀ (diagonal),  γ = β / (1 + β τ)

and Woodbury removes the rest with one r×r Cholesky per household
(r = k + C + 3m):  ``K⁻¹ = B⁻¹ − B⁻¹ W (I + Wᵀ B⁻¹ W)⁻¹ Wᵀ B⁻¹``.  No n×n matrix
is ever formed; an iteration costs O(m·n + P + n·k), its big products being the
(batch × n) @ (n × k) products with the shared X.

Every function here takes one household in either lot layout
(:mod:`engine.solver.layout`): compact, the lot fields (P,) and a sum over
the lots of a position a segment sum over ``p.lot_position``, or dense,
(m, n, L) and a sum over the last axis.  Only :func:`position_sums`,
:func:`per_lot_security` and :func:`per_lot_account` know which.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np

from engine.contract.config import SolverConfig
from engine.solver.types import (MAX_ITERATIONS, NON_FINITE, PENALTY_BAND, PENALTY_CASH_CAP, PENALTY_TAX,
                                 PENALTY_TURNOVER, SOLVED, ProblemBatch, SolverState)

#: ``status`` of a household still iterating.
RUNNING = -1
#: Coefficients of ``b`` in the account rows (net proceeds, tax, turnover).
_BUY_ROW = (-1.0, 0.0, 1.0)


# --- linear maps of one household ------------------------------------------------------

def position_sums(p: ProblemBatch, *values):
    """Σ over the lots of each position of each of ``values`` (lot arrays): a tuple of (m, n).

    Compact, one segment sum of them all stacked (a scatter costs per index,
    not per channel); dense, a sum over the lot axis of each.
    """
    if p.lot_position is None:                                         # the dense layout
        return tuple(v.sum(axis=2) for v in values)
    m, n = p.holdings.shape
    out = jax.ops.segment_sum(jnp.stack(values, axis=-1), p.lot_position, num_segments=m * n + 1,
                              indices_are_sorted=True)[:m * n]         # padding lots: segment m·n, dropped
    out = out.reshape(m, n, len(values))
    return tuple(out[..., c] for c in range(len(values)))


def _real(p: ProblemBatch):
    m, n = p.holdings.shape
    return p.lot_position < m * n


def per_lot_security(p: ProblemBatch, values):
    """``values[security of each lot]``, (n,) → the lots' shape; 0 on padding lots (the transpose of :func:`position_sums`)."""
    n = p.holdings.shape[1]
    if p.lot_position is None:
        return jnp.broadcast_to(values[None, :, None], p.lot_width.shape)
    return jnp.where(_real(p), values[p.lot_position % n], 0.0)


def per_lot_account(p: ProblemBatch, values):
    """``values[account of each lot]``, (m,) → the lots' shape; 0 on padding lots."""
    m, n = p.holdings.shape
    if p.lot_position is None:
        return jnp.broadcast_to(values[:, None, None], p.lot_width.shape)
    return jnp.where(_real(p), values[jnp.minimum(p.lot_position // n, m - 1)], 0.0)


def trade(p: ProblemBatch, buy, sell):
    """``M x``: household net purchase per security, (n,)."""
    return buy.sum(0) - position_sums(p, sell)[0].sum(0)


def trade_adjoint(p: ProblemBatch, q):
    """``Mᵀ q``: +q on every buy of security i, −q on every lot of i."""
    return jnp.broadcast_to(q[None, :], p.holdings.shape), -per_lot_security(p, q)


def trade_and_rows(p: ProblemBatch, buy, sell):
    """``(M x, G x)`` from one segment sum: the trade per security (n,) and the account rows (m, 3)."""
    sold_at, taxed_at = position_sums(p, sell, p.lot_tax * sell)              # (m, n) each
    bought = buy.sum(1)
    sold = sold_at.sum(1)
    tax = taxed_at.sum(1)
    return buy.sum(0) - sold_at.sum(0), jnp.stack([sold - bought, tax, sold + bought], axis=1)


def account_rows(p: ProblemBatch, buy, sell):
    """``G x`` per account: (net proceeds, tax, turnover), (m, 3)."""
    return trade_and_rows(p, buy, sell)[1]


def account_rows_adjoint(p: ProblemBatch, s):
    """``Gᵀ s`` for s of shape (m, 3)."""
    buy = (_BUY_ROW[0] * s[:, 0] + _BUY_ROW[2] * s[:, 2])[:, None]
    sell = per_lot_account(p, s[:, 0] + s[:, 2]) + per_lot_account(p, s[:, 1]) * p.lot_tax
    m, n = p.holdings.shape
    return jnp.broadcast_to(buy, (m, n)), sell


def covariance_apply(p: ProblemBatch, w):
    """``Σ w = d ⊙ w + X (F (Xᵀ w))``."""
    return p.specific_variance * w + p.exposures @ (p.factor_covariance @ (p.exposures.T @ w))


def class_onehot(p: ProblemBatch):
    n_classes = p.class_target.shape[-1]
    return (p.asset_class[:, None] == jnp.arange(n_classes)[None, :]).astype(p.holdings.dtype)


# --- bounds and row limits ---------------------------------------------------------------

class Limits(NamedTuple):
    """Bounds of ζ: lower/upper and the exact penalties beyond them (``inf`` = hard)."""

    rows_lower: jnp.ndarray
    rows_upper: jnp.ndarray
    rows_pen_lower: jnp.ndarray
    rows_pen_upper: jnp.ndarray
    class_lower: jnp.ndarray
    class_upper: jnp.ndarray
    class_pen: jnp.ndarray


def limits(p: ProblemBatch) -> Limits:
    """Row limits of a prepared household (see :func:`engine.solver.evaluate.prepare`)."""
    inf = jnp.inf
    m = p.cash.shape[0]
    lower = jnp.stack([p.cash_floor - p.cash, jnp.full(m, -inf), jnp.full(m, -inf)], axis=1)
    upper = jnp.stack([p.cash_cap - p.cash, p.tax_budget, p.turnover_limit], axis=1)
    pen_lower = jnp.broadcast_to(jnp.asarray([inf, 0.0, 0.0], p.cash.dtype), (m, 3))
    pen_upper = jnp.broadcast_to(jnp.stack([p.penalties[PENALTY_CASH_CAP], p.penalties[PENALTY_TAX],
                                            p.penalties[PENALTY_TURNOVER]]), (m, 3))
    held = p.holdings.sum(0) @ class_onehot(p)
    class_lower = p.class_target - p.class_band - held
    class_upper = p.class_target + p.class_band - held
    return Limits(lower, upper, pen_lower, pen_upper, class_lower, class_upper,
                  jnp.broadcast_to(p.penalties[PENALTY_BAND], class_lower.shape))


def prox_interval(v, lower, upper, pen_lower, pen_upper, rho):
    """Prox of ``π_u·pos(ζ − u) + π_l·pos(l − ζ)`` with step 1/ρ (π = inf: a hard bound).

    ``argmin_ζ π_u pos(ζ − u) + π_l pos(l − ζ) + ρ/2 (ζ − v)²``: v itself inside
    [l, u]; beyond u it is held at u until v passes u + π_u/ρ, then v − π_u/ρ.
    """
    above = jnp.maximum(v - pen_upper / rho, upper)
    below = jnp.minimum(v + pen_lower / rho, lower)
    return jnp.where(v > upper, above, jnp.where(v < lower, below, v))


def linear_cost(p: ProblemBatch):
    """``q = 2λ Mᵀ Σ r0 + spread + lot_cost`` as (buy, sell) arrays."""
    r0 = p.holdings.sum(0) - p.target
    g = 2.0 * p.risk_aversion * covariance_apply(p, r0)
    qb, qz = trade_adjoint(p, g)
    return qb + p.spread[None, :], qz + per_lot_security(p, p.spread) + p.lot_cost


def bound_rho(p: ProblemBatch, rho, config: SolverConfig):
    """ρ of each bound row.

    A lot's row gets ``ρ (w̄ / width)^e`` (e = ``config.bound_scaling``, w̄ the
    household's mean lot width): the same as scaling each lot to [0, 1] the
    way OSQP's equilibration scales variables, so that small and large lots
    converge alike.  Rows whose lower and upper bound are equal (fixed
    variables) get ``fixed_rho_scale`` × that, OSQP's rule for equality rows.
    """
    width = p.lot_width
    count = jnp.maximum(jnp.sum(width > 0), 1)
    mean = jnp.sum(width) / count
    scale = jnp.where(width > 0, (mean / jnp.maximum(width, 1e-12 * mean + 1e-300)) ** config.bound_scaling, 1.0)
    scale = jnp.clip(scale, 1e-3, 1e3)
    size = jnp.maximum(p.holdings.sum(0), p.target)
    size_mean = jnp.sum(size) / jnp.maximum(jnp.sum(size > 0), 1)
    buy_scale = jnp.clip(jnp.where(size > 0, (mean / jnp.maximum(size, 1e-12 * size_mean + 1e-300)) ** config.bound_scaling, 1.0), 1e-3, 1e3)
    buy_scale = jnp.where(config.buy_scaling, buy_scale, 1.0)
    rb = jnp.where(p.buy_upper <= 0.0, config.fixed_rho_scale * rho, rho * buy_scale[None, :])
    rz = jnp.where(p.sell_upper <= p.sell_lower, config.fixed_rho_scale * rho, rho * scale)
    return rb, rz


# --- the x-update system -------------------------------------------------------------------

class Factor(NamedTuple):
    """What the x-update needs for one ρ: Δ⁻¹, γ, the Woodbury core's Cholesky factor."""

    inv_buy: jnp.ndarray      # A on buys, (m, n)
    inv_sell: jnp.ndarray     # A on lots, (P,) compact or (m, n, L) dense
    gamma: jnp.ndarray        # (n,)
    chol: jnp.ndarray         # (r, r)
    factor_scale: jnp.ndarray  # √(2λ) L_F, (k, k)
    root_rows: jnp.ndarray    # √ρ of the account rows, (m, 3)
    root_class: jnp.ndarray   # √ρ of the class rows, (C,)
    tau: jnp.ndarray          # diag(M A Mᵀ), (n,)
    psi: jnp.ndarray          # 1 / (1 + β τ), (n,)
    coupling: jnp.ndarray     # M A Gᵀ with √ρ folded in, (n, 3m)


def factorize(p: ProblemBatch, rho, row_scale, class_scale, config: SolverConfig) -> Factor:
    """Sherman–Morrison pieces of B and the Cholesky factor of ``I + Wᵀ B⁻¹ W``."""
    rb, rz = bound_rho(p, rho, config)
    root_rows = jnp.sqrt(rho * row_scale)
    root_class = jnp.sqrt(rho * class_scale)
    return factorize_diagonal(p, 1.0 / (config.sigma + rb), 1.0 / (config.sigma + rz),
                              root_rows, root_class, jnp.ones_like(root_rows), jnp.ones_like(root_class))


def shared_columns(p: ProblemBatch):
    """The columns of W's first block before their per-household scales: ``[X L_F, C]``, (n, k + C).

    Shared by every household of a batch (``L_F L_Fᵀ = F``); the household's
    √(2λ) and the class rows' √ρ scale its columns (``E = Ẽ S``).
    """
    return jnp.concatenate([p.exposures @ jnp.linalg.cholesky(p.factor_covariance), class_onehot(p)], axis=1)


def _packed(r: int):
    """The upper triangle of an r×r symmetric matrix packed: its (rows, columns), and for each
    entry of the matrix its place in the packing (static, NumPy)."""
    upper = np.triu_indices(r)
    place = np.empty((r, r), np.int64)
    place[upper] = np.arange(upper[0].size)
    place[upper[1], upper[0]] = place[upper]
    return upper, place


def factorize_diagonal(p: ProblemBatch, inv_buy, inv_sell, root_rows, root_class,
                       rows_diagonal, class_diagonal) -> Factor:
    """The factor of ``K = Δ + P + Gᵀ diag(root²/diagonal) G + (CᵀM)ᵀ diag(root²/diagonal) CᵀM``.

    ``inv_buy``, ``inv_sell`` are Δ⁻¹ on the variables (0 fixes a variable:
    its row of K⁻¹ is 0); ``root_*`` (m, 3) and (C,) scale the account and
    class rows in W and ``*_diagonal`` is their block of the Woodbury core's
    diagonal (1 for the factor columns).  ADMM passes √ρ and 1; the
    interior-point method, whose row weights w run to 10¹² on active rows,
    passes 1 and 1/w, which keeps the core bounded as w grows (a row with
    w = 0 passes root 0 and diagonal 1: it drops out).

    The core's largest block, ``Eᵀ diag(ω) E`` (n·(k + C)² per household),
    is ``S (Ẽᵀ diag(ω) Ẽ) S`` with ``Ẽ`` shared by the batch
    (:func:`shared_columns`), computed as ω @ (the rows of Ẽ's outer
    products, their upper triangle): under ``vmap`` one (B × n) @
    (n × (k + C)(k + C + 1)/2) matrix product for the whole batch instead of
    B small ones.
    """
    beta = 2.0 * p.risk_aversion * p.specific_variance
    taxed_sell = inv_sell * p.lot_tax
    sell_sum, sell_tax, sell_tax2 = position_sums(p, inv_sell, taxed_sell, taxed_sell * p.lot_tax)
    tau = inv_buy.sum(0) + sell_sum.sum(0)                 # diag(M A Mᵀ)
    psi = 1.0 / (1.0 + beta * tau)
    gamma = beta * psi
    omega = tau * psi                                      # diag(M B⁻¹ Mᵀ)
    root_risk = jnp.sqrt(2.0 * p.risk_aversion)
    factor_scale = root_risk * jnp.linalg.cholesky(p.factor_covariance)
    columns = shared_columns(p)                            # (n, rE), no batch axis
    k = factor_scale.shape[0]
    r_e = columns.shape[1]
    upper, symmetric = _packed(r_e)
    outer = columns[:, upper[0]] * columns[:, upper[1]]     # (n, rE(rE + 1)/2): the upper triangle
    scale = jnp.concatenate([jnp.broadcast_to(root_risk, (k,)), root_class])
    s_ee = scale[:, None] * (omega @ outer)[symmetric] * scale[None, :]
    # P = M A Gᵀ (n, m, 3), √ρ folded in: column (a, r) = Σ over a's variables of security i of s·a·g_r
    gb = jnp.asarray(_BUY_ROW, p.holdings.dtype)
    Pm = root_rows.T[:, :, None] * (gb[:, None, None] * inv_buy[None]
                                    - jnp.stack([sell_sum, sell_tax, sell_sum]))          # (3, m, n)
    m, n = inv_buy.shape
    Pm = jnp.transpose(Pm, (2, 1, 0)).reshape(n, 3 * m)
    # G A Gᵀ, block diagonal by account: rows (proceeds, tax, turnover) of sells are (1, τ, 1),
    # of buys (−1, 0, 1)
    bought = inv_buy.sum(1)
    sold = sell_sum.sum(1)
    taxed = sell_tax.sum(1)
    taxed2 = sell_tax2.sum(1)
    gag = jnp.stack([jnp.stack([sold + bought, taxed, sold - bought], -1),
                     jnp.stack([taxed, taxed2, taxed], -1),
                     jnp.stack([sold - bought, taxed, sold + bought], -1)], 1)                 # (m, 3, 3)
    gag = root_rows[:, :, None] * root_rows[:, None, :] * gag
    eye_m = jnp.eye(m, dtype=gag.dtype)
    gag_full = (eye_m[:, None, :, None] * gag[:, :, None, :]).reshape(3 * m, 3 * m)
    s_eg = scale[:, None] * (columns.T @ (psi[:, None] * Pm))
    s_gg = gag_full - Pm.T @ (gamma[:, None] * Pm)
    core = jnp.concatenate([jnp.concatenate([s_ee, s_eg], axis=1),
                            jnp.concatenate([s_eg.T, s_gg], axis=1)], axis=0)
    diagonal = jnp.concatenate([jnp.ones(k, core.dtype), class_diagonal, rows_diagonal.reshape(-1)])
    core = core + jnp.diag(diagonal)
    return Factor(inv_buy, inv_sell, gamma, jnp.linalg.cholesky(core), factor_scale, root_rows, root_class,
                  tau, psi, Pm)


def _b_inverse(p: ProblemBatch, fac: Factor, ab, az, q):
    """``B⁻¹ v = A v − A Mᵀ q`` (Sherman–Morrison per security), given ``A v`` and ``q = γ ⊙ M A v``."""
    return ab - fac.inv_buy * q[None, :], az + fac.inv_sell * per_lot_security(p, q)


def solve_kkt(p: ProblemBatch, fac: Factor, vb, vz):
    """``K⁻¹ v`` by Woodbury: ``u = B⁻¹v;  x = u − B⁻¹ W (I + WᵀB⁻¹W)⁻¹ Wᵀ u``.

    One segment sum over the lots: ``M u`` and ``G u`` follow from ``A v``'s
    sums by the factor's ``ψ`` and ``M A Gᵀ`` (``M B⁻¹ = ψ ⊙ M A`` and
    ``G B⁻¹ = G A − (M A Gᵀ)ᵀ γ M A``), and ``M A W`` from ``τ`` and ``M A Gᵀ``.
    """
    ab = fac.inv_buy * vb
    az = fac.inv_sell * vz
    sold, taxed = position_sums(p, az, p.lot_tax * az)                   # (m, n) each
    bought = ab.sum(1)
    ma = ab.sum(0) - sold.sum(0)
    q = fac.gamma * ma
    ub, uz = _b_inverse(p, fac, ab, az, q)
    mu = fac.psi * ma
    sold_a = sold.sum(1)
    rows = jnp.stack([sold_a - bought, taxed.sum(1), sold_a + bought], axis=1)
    scaled_rows = (fac.root_rows * rows).reshape(-1) - q @ fac.coupling
    t = jnp.concatenate([fac.factor_scale.T @ (p.exposures.T @ mu),
                         fac.root_class * (mu @ class_onehot(p)),
                         scaled_rows])
    s = jsl.cho_solve((fac.chol, True), t)
    k = fac.factor_scale.shape[0]
    n_classes = p.class_target.shape[-1]
    s_rows = s[k + n_classes:]
    en = p.exposures @ (fac.factor_scale @ s[:k]) + class_onehot(p) @ (fac.root_class * s[k:k + n_classes])
    wb, wz = trade_adjoint(p, en)
    gb, gz = account_rows_adjoint(p, fac.root_rows * s_rows.reshape(-1, 3))
    cb, cz = _b_inverse(p, fac, fac.inv_buy * (wb + gb), fac.inv_sell * (wz + gz),
                        fac.gamma * (fac.tau * en + fac.coupling @ s_rows))
    return ub - cb, uz - cz


# --- ADMM ------------------------------------------------------------------------------------

def init(p: ProblemBatch, config: SolverConfig, warm: SolverState | None = None) -> SolverState:
    """Cold start at "no trade" (x = 0, y = 0), or a warm start from ``warm``."""
    dtype = p.holdings.dtype
    if warm is not None:
        return warm._replace(status=jnp.asarray(RUNNING, jnp.int32))
    zb = jnp.zeros_like(p.holdings)
    zz = jnp.zeros_like(p.lot_width)
    lim = limits(p)
    rows0 = jnp.clip(jnp.zeros_like(lim.rows_lower), lim.rows_lower, lim.rows_upper)
    class0 = jnp.clip(jnp.zeros_like(lim.class_lower), lim.class_lower, lim.class_upper)
    zero = jnp.asarray(0.0, dtype)
    return SolverState(zb, zz, jnp.clip(zb, 0.0, p.buy_upper), jnp.clip(zz, p.sell_lower, p.sell_upper),
                       rows0, class0, zb, zz, jnp.zeros_like(rows0), jnp.zeros_like(class0),
                       jnp.asarray(config.rho, dtype),
                       jnp.full(rows0.shape, config.row_rho_scale, dtype),
                       jnp.full(class0.shape, config.row_rho_scale, dtype),
                       jnp.asarray(0, jnp.int32), zero, zero,
                       jnp.asarray(RUNNING, jnp.int32))


def step(p: ProblemBatch, s: SolverState, fac: Factor, q, lim: Limits, rho_bounds,
         config: SolverConfig) -> SolverState:
    """One ADMM iteration (OSQP Algorithm 1, lines 3–7)."""
    rho = s.rho * s.row_scale            # ρ of the account rows, (m, 3)
    rho_c = s.rho * s.class_scale        # ρ of the class rows, (C,)
    rb, rz = rho_bounds
    onehot = class_onehot(p)
    # line 3: right-hand side σx − q + Aᵀ(Rζ − y), then x̃ = K⁻¹(...)
    vr = rho * s.z_rows - s.y_rows
    vc = rho_c * s.z_class - s.y_class
    gb, gz = account_rows_adjoint(p, vr)
    cb, cz = trade_adjoint(p, onehot @ vc)
    vb = config.sigma * s.buy - q[0] + rb * s.z_buy - s.y_buy + gb + cb
    vz = config.sigma * s.sell - q[1] + rz * s.z_sell - s.y_sell + gz + cz
    xb, xz = solve_kkt(p, fac, vb, vz)
    # line 4: ζ̃ = A x̃
    trade_t, zr_t = trade_and_rows(p, xb, xz)
    zc_t = trade_t @ onehot
    a = config.alpha
    # line 5: relaxed x
    buy = a * xb + (1 - a) * s.buy
    sell = a * xz + (1 - a) * s.sell
    # lines 6-7 per block of rows: relaxed ζ, its prox (projection / exact penalty), dual ascent
    hb = a * xb + (1 - a) * s.z_buy
    hz = a * xz + (1 - a) * s.z_sell
    hr = a * zr_t + (1 - a) * s.z_rows
    hc = a * zc_t + (1 - a) * s.z_class
    z_buy = jnp.clip(hb + s.y_buy / rb, 0.0, p.buy_upper)
    z_sell = jnp.clip(hz + s.y_sell / rz, p.sell_lower, p.sell_upper)
    z_rows = prox_interval(hr + s.y_rows / rho, lim.rows_lower, lim.rows_upper,
                           lim.rows_pen_lower, lim.rows_pen_upper, rho)
    z_class = prox_interval(hc + s.y_class / rho_c, lim.class_lower, lim.class_upper,
                            lim.class_pen, lim.class_pen, rho_c)
    return s._replace(buy=buy, sell=sell, z_buy=z_buy, z_sell=z_sell, z_rows=z_rows, z_class=z_class,
                      y_buy=s.y_buy + rb * (hb - z_buy), y_sell=s.y_sell + rz * (hz - z_sell),
                      y_rows=s.y_rows + rho * (hr - z_rows), y_class=s.y_class + rho_c * (hc - z_class),
                      iteration=s.iteration + 1)


def _amax(*arrays):
    return jnp.max(jnp.stack([jnp.max(jnp.abs(a)) for a in arrays]))


def residuals(p: ProblemBatch, s: SolverState, q):
    """OSQP's residuals and their normalizers (∞-norms).

    ``r_prim = ‖Ax − ζ‖``, normalized by ``max(‖Ax‖, ‖ζ‖)``;
    ``r_dual = ‖Px + q + Aᵀy‖``, normalized by ``max(‖Px‖, ‖Aᵀy‖, ‖q‖)``.
    """
    onehot = class_onehot(p)
    traded, ax_rows = trade_and_rows(p, s.buy, s.sell)
    ax_class = traded @ onehot
    prim = _amax(s.buy - s.z_buy, s.sell - s.z_sell, ax_rows - s.z_rows, ax_class - s.z_class)
    prim_norm = jnp.maximum(_amax(s.buy, s.sell, ax_rows, ax_class),
                            _amax(s.z_buy, s.z_sell, s.z_rows, s.z_class))
    px = 2.0 * p.risk_aversion * covariance_apply(p, traded)
    pxb, pxz = trade_adjoint(p, px)
    gb, gz = account_rows_adjoint(p, s.y_rows)
    cb, cz = trade_adjoint(p, onehot @ s.y_class)
    ayb = s.y_buy + gb + cb
    ayz = s.y_sell + gz + cz
    dual = _amax(pxb + q[0] + ayb, pxz + q[1] + ayz)
    dual_norm = jnp.maximum(jnp.maximum(_amax(pxb, pxz), _amax(ayb, ayz)), _amax(q[0], q[1]))
    return prim, prim_norm, dual, dual_norm


def chunk(p: ProblemBatch, s: SolverState, config: SolverConfig) -> SolverState:
    """``check_interval`` iterations, then the convergence check and the ρ update."""
    q = linear_cost(p)
    lim = limits(p)
    fac = factorize(p, s.rho, s.row_scale, s.class_scale, config)
    rho_bounds = bound_rho(p, s.rho, config)
    s = jax.lax.fori_loop(0, config.check_interval,
                          lambda _, st: step(p, st, fac, q, lim, rho_bounds, config), s)
    prim, prim_norm, dual, dual_norm = residuals(p, s, q)
    tiny = jnp.asarray(1e-30, prim.dtype)
    converged = ((prim <= config.eps_abs + config.eps_rel * prim_norm)
                 & (dual <= config.eps_abs + config.eps_rel * dual_norm))
    finite = jnp.isfinite(prim) & jnp.isfinite(dual)
    status = jnp.where(~finite, NON_FINITE,
                       jnp.where(converged, SOLVED,
                                 jnp.where(s.iteration >= config.max_iterations, MAX_ITERATIONS, RUNNING)))
    rho = s.rho
    if config.adaptive_rho:
        # OSQP §5.2: ρ ← ρ √((r_prim/‖·‖) / (r_dual/‖·‖))
        ratio = jnp.sqrt((prim / (prim_norm + tiny) + tiny) / (dual / (dual_norm + tiny) + tiny))
        change = (ratio > config.adaptive_rho_tolerance) | (ratio < 1.0 / config.adaptive_rho_tolerance)
        rho = jnp.where(change & finite, jnp.clip(rho * ratio, config.rho_min, config.rho_max), rho)
    # rows with a nonzero dual (binding, or paying their penalty) get the full ρ; the others a
    # small one (row_rho_scale), so that rows that do not bind hold the bounds back little
    small = jnp.asarray(config.row_rho_scale, rho.dtype)
    row_scale = jnp.where(jnp.abs(s.y_rows) > 0, 1.0, small)
    class_scale = jnp.where(jnp.abs(s.y_class) > 0, 1.0, small)
    return s._replace(rho=rho.astype(s.rho.dtype), row_scale=row_scale.astype(rho.dtype),
                      class_scale=class_scale.astype(rho.dtype),
                      primal_residual=prim, dual_residual=dual,
                      status=status.astype(jnp.int32))


def stack_rows(p: ProblemBatch, traded, rows):
    """The account rows (m, 3) and the class rows of the trade ``traded`` (n,), as one vector (3m + C,)."""
    return jnp.concatenate([rows.reshape(-1), traded @ class_onehot(p)])


def _all_rows(p: ProblemBatch, buy, sell):
    return stack_rows(p, *trade_and_rows(p, buy, sell))


def _all_rows_adjoint(p: ProblemBatch, s):
    m = p.cash.shape[0]
    gb, gz = account_rows_adjoint(p, s[:3 * m].reshape(m, 3))
    cb, cz = trade_adjoint(p, class_onehot(p) @ s[3 * m:])
    return gb + cb, gz + cz


def _room(x, lower, upper, dual, reduced_cost: float = 1e-6):
    """Weight of a variable in the polish: its distance to the nearest bound when inside;
    at a bound, the distance to the other bound times ``τ / (τ + |y|)``, so that only a
    variable whose bound is not binding (dual y ≈ 0, a degenerate vertex) leaves it."""
    near = jnp.minimum(x - lower, upper - x)
    far = jnp.minimum(jnp.maximum(x - lower, upper - x), 1.0)
    return jnp.where(near > 0, jnp.minimum(near, 1.0),
                     far * reduced_cost / (reduced_cost + jnp.abs(dual)))


def polish(p: ProblemBatch, s: SolverState, tolerance: float = 1e-9, rounds: int = 10):
    """Put the rows that ADMM holds at a kink exactly on it.

    ADMM's iterate meets a row only to the primal residual summed over the
    row's variables; beyond a soft limit that costs π × the excess, so a tiny
    excess on a binding row with a large exact penalty is a visible error of
    the objective.  The rows whose ζ sits on a limit (hard or soft) are made
    to hold exactly by a weighted least-norm change of the variables,
    ``δ = D Aₖᵀ (Aₖ D Aₖᵀ)⁻¹ (ζₖ − Aₖ x)``, with D the distance of each variable
    to its nearest bound (a variable near a bound moves little; one at a bound
    moves only when its bound's dual is ≈ 0, see :func:`_room`), clipped to the
    bounds and repeated ``rounds`` times.  Returns ``(buy, sell)`` within the bounds.
    """
    buy = jnp.clip(s.z_buy, 0.0, p.buy_upper)
    sell = jnp.clip(s.z_sell, p.sell_lower, p.sell_upper)
    lim = limits(p)
    lower = jnp.concatenate([lim.rows_lower.reshape(-1), lim.class_lower])
    upper = jnp.concatenate([lim.rows_upper.reshape(-1), lim.class_upper])
    zeta = jnp.concatenate([s.z_rows.reshape(-1), s.z_class])
    kink = (jnp.abs(zeta - lower) <= tolerance) | (jnp.abs(zeta - upper) <= tolerance)
    keep = kink.astype(buy.dtype)
    count = zeta.shape[0]
    eye = jnp.eye(count, dtype=buy.dtype)

    def one_round(_, x):
        buy, sell = x
        room_b = _room(buy, 0.0, p.buy_upper, s.y_buy)
        room_z = _room(sell, p.sell_lower, p.sell_upper, s.y_sell)

        def column(e):
            vb, vz = _all_rows_adjoint(p, e)
            return _all_rows(p, room_b * vb, room_z * vz)

        gram = jax.vmap(column)(eye)
        gram = gram * keep[:, None] * keep[None, :] + jnp.diag(1.0 - keep)
        gram = gram + 1e-12 * (jnp.max(jnp.abs(gram)) + 1.0) * eye
        gap = keep * (zeta - _all_rows(p, buy, sell))
        step_ = jnp.linalg.solve(gram, gap) * keep
        db, dz = _all_rows_adjoint(p, step_)
        ok = jnp.all(jnp.isfinite(step_))
        new_b = jnp.clip(buy + jnp.where(ok, room_b * db, 0.0), 0.0, p.buy_upper)
        new_z = jnp.clip(sell + jnp.where(ok, room_z * dz, 0.0), p.sell_lower, p.sell_upper)
        return new_b, new_z

    return jax.lax.fori_loop(0, rounds, one_round, (buy, sell))
