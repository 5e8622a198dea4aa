"""Tax lots: holding period, per-position tax curves, and lot relief.

All kernels work on a whole shard at once.  Positions (one per account and
security) are segmented CSR-style over the lot arrays: the lots of position
``p`` are ``lot_offsets[p]:lot_offsets[p + 1]``.  Per lot: ``quantity``
(shares, > 0), ``cost_basis`` (USD, total for the lot, >= 0), ``acquired``
(int64 days since 1970-01-01, see :mod:`engine.kernels.dates`).  Per
position: ``price`` (USD per share), ``st_rate`` and ``lt_rate`` (fractions;
0 in tax-deferred and tax-exempt accounts, which makes their curves zero).

Definitions (docs/contract.md §3 rules 7 and 8), for a lot with value ``q·price``:

* ``gain_per_dollar = (q·price - cost_basis) / (q·price)``, USD of gain per
  USD of proceeds (negative for a loss; may be below -1);
* ``rate = lt_rate`` if the lot is long-term on ``as_of`` else ``st_rate``;
* ``slope = rate · gain_per_dollar``, USD of tax per USD of proceeds;
* ``width = q·price``, USD of proceeds the lot provides.

Nothing inside a kernel raises.  Every position gets a status made of the
bit flags below (``OK`` = 0); see :func:`describe_status`.
"""

from __future__ import annotations

from typing import NamedTuple

import numba as nb
import numpy as np

from engine.kernels.dates import first_long_day, last_long_acquired

__all__ = [
    "CURVE", "TAX_ORDER", "FIFO", "LIFO", "HIFO", "SPECIFIC", "METHODS",
    "OK", "BAD_PRICE", "BAD_LOT", "OVERSOLD", "BAD_REQUEST", "BAD_METHOD",
    "describe_status", "long_term", "first_long_day", "TaxCurves", "tax_curves",
    "curve_tax", "Relief", "relieve_lots",
]

# Lot-relief methods.
CURVE = 0
"""Along the tax curve: cheapest tax per dollar first (the order of :func:`tax_curves`)."""
TAX_ORDER = CURVE
FIFO = 1
"""Earliest ``acquired`` first; ties by lot index."""
LIFO = 2
"""Latest ``acquired`` first; ties by lot index."""
HIFO = 3
"""Highest basis per share first; ties by earliest ``acquired``, then lot index."""
SPECIFIC = 4
"""Ascending ``priority`` (one float per lot); a NaN priority means never sell the lot."""
METHODS = {"curve": CURVE, "fifo": FIFO, "lifo": LIFO, "hifo": HIFO, "specific": SPECIFIC}

# Status bit flags, per position.
OK = 0
BAD_PRICE = 1
"""Price is NaN, infinite or <= 0: width 0, nothing sold."""
BAD_LOT = 2
"""A lot has quantity <= 0 or NaN, or cost_basis < 0 or NaN: it is skipped (width 0)."""
OVERSOLD = 4
"""More was asked than the position holds (or may sell): everything sellable was sold."""
BAD_REQUEST = 8
"""The amount to sell is negative or NaN: nothing sold."""
BAD_METHOD = 16
"""Unknown method code: nothing sold."""

_MESSAGES = {
    BAD_PRICE: "price missing, not finite or not positive",
    BAD_LOT: "a lot has a non-positive quantity or a negative basis",
    OVERSOLD: "asked to sell more than the position holds",
    BAD_REQUEST: "amount to sell is negative or not a number",
    BAD_METHOD: "unknown lot-relief method",
}

# Relative tolerance under which a remaining amount closes the lot whole,
# so that selling "the position's value in dollars" leaves no dust.
DUST = 1e-9

# Segments up to this many lots are sorted by insertion (fast for 1-30 lots).
_INSERTION_MAX = 32


def describe_status(status: int) -> str:
    """Words for a status made of the bit flags of this module."""
    if status == OK:
        return "ok"
    return "; ".join(m for flag, m in _MESSAGES.items() if status & flag)


def long_term(acquired, as_of) -> np.ndarray:
    """Whether each lot is long-term on ``as_of``.

    Parameters
    ----------
    acquired : int64 array
        Adjusted acquisition days since 1970-01-01.
    as_of : int
        The sale day, days since 1970-01-01.

    Returns
    -------
    bool array
        ``as_of >= first_long_day(acquired)``: held more than one year
        (bought 2025-03-14: long from 2026-03-15).
    """
    return first_long_day(np.asarray(acquired, dtype=np.int64)) <= np.int64(as_of)


@nb.njit(cache=True, nogil=True)
def _lot_valid(quantity, cost_basis):
    return quantity > 0.0 and np.isfinite(quantity) and cost_basis >= 0.0 and np.isfinite(cost_basis)


@nb.njit(cache=True, nogil=True)
def _sort_segment(key1, key2, n, idx):
    """Fill ``idx[:n]`` with 0..n-1 sorted by ``(key1, key2, index)`` ascending."""
    if n <= _INSERTION_MAX:
        for i in range(n):
            idx[i] = i
        for i in range(1, n):
            j = i
            cur = idx[i]
            a1 = key1[cur]
            a2 = key2[cur]
            while j > 0:
                prev = idx[j - 1]
                b1 = key1[prev]
                if b1 < a1 or (b1 == a1 and (key2[prev] < a2 or (key2[prev] == a2 and prev < cur))):
                    break
                idx[j] = prev
                j -= 1
            idx[j] = cur
    else:
        # Two stable passes give the lexicographic order with index ties.
        first = np.argsort(key2[:n], kind="mergesort")
        second = np.argsort(key1[:n][first], kind="mergesort")
        for i in range(n):
            idx[i] = first[second[i]]


@nb.njit(cache=True, nogil=True)
def _position_keys(lot_offsets, p, quantity, cost_basis, acquired, price, st_rate, lt_rate,
                   long_cutoff, method, priority, key1, key2, lot_long, lot_gpd):
    """Sort keys of position ``p``'s lots for ``method``; returns its status bits.

    A lot is long-term when ``acquired <= long_cutoff`` (:func:`last_long_acquired`).
    Also fills ``lot_long`` (long-term flag) and ``lot_gpd`` (gain per dollar)
    in lot order, 0-based within the segment.
    """
    start = lot_offsets[p]
    n = lot_offsets[p + 1] - start
    status = OK
    px = price[p]
    price_ok = px > 0.0 and np.isfinite(px)
    if not price_ok:
        status |= BAD_PRICE
    for k in range(n):
        i = start + k
        q = quantity[i]
        basis = cost_basis[i]
        valid = _lot_valid(q, basis)
        if not valid:
            status |= BAD_LOT
        is_long = acquired[i] <= long_cutoff
        lot_long[k] = is_long
        gpd = 0.0
        if valid and price_ok:
            value = q * px
            gpd = (value - basis) / value
        lot_gpd[k] = gpd
        if method == CURVE:
            rate = lt_rate[p] if is_long else st_rate[p]
            key1[k] = rate * gpd
            key2[k] = gpd
        elif method == FIFO:
            key1[k] = acquired[i]
            key2[k] = 0.0
        elif method == LIFO:
            key1[k] = -acquired[i]
            key2[k] = 0.0
        elif method == HIFO:
            key1[k] = -(basis / q) if valid else 0.0
            key2[k] = acquired[i]
        elif method == SPECIFIC:
            pr = priority[i]
            key1[k] = pr if pr == pr else np.inf
            key2[k] = 0.0
        else:
            key1[k] = 0.0
            key2[k] = 0.0
    if method < CURVE or method > SPECIFIC:
        status |= BAD_METHOD
    return status


@nb.njit(cache=True, nogil=True)
def _position_scratch(lot_offsets):
    """Work arrays as long as the longest position: sort keys, order, term, gain per dollar."""
    longest = 0
    for p in range(lot_offsets.shape[0] - 1):
        longest = max(longest, lot_offsets[p + 1] - lot_offsets[p])
    return (np.empty(longest), np.empty(longest), np.empty(longest, dtype=np.int64),
            np.empty(longest, dtype=np.bool_), np.empty(longest))


@nb.njit(cache=True, nogil=True)
def _tax_curves_into(lot_offsets, quantity, cost_basis, acquired, price, st_rate, lt_rate, as_of,
                     order, slope, width, gain_per_dollar, is_long, status):
    n_pos = lot_offsets.shape[0] - 1
    long_cutoff = last_long_acquired(as_of)
    key1, key2, idx, lot_long, lot_gpd = _position_scratch(lot_offsets)
    dummy = np.empty(0)
    for p in range(n_pos):
        start = lot_offsets[p]
        n = lot_offsets[p + 1] - start
        st = _position_keys(lot_offsets, p, quantity, cost_basis, acquired, price, st_rate,
                            lt_rate, long_cutoff, CURVE, dummy, key1, key2, lot_long, lot_gpd)
        status[p] = st
        _sort_segment(key1, key2, n, idx)
        px = price[p]
        price_ok = (st & BAD_PRICE) == 0
        for k in range(n):
            j = idx[k]
            i = start + j
            order[start + k] = i
            slope[start + k] = key1[j]
            gain_per_dollar[start + k] = lot_gpd[j]
            is_long[start + k] = lot_long[j]
            if price_ok and _lot_valid(quantity[i], cost_basis[i]):
                width[start + k] = quantity[i] * px
            else:
                width[start + k] = 0.0


class TaxCurves(NamedTuple):
    """Per-position convex piecewise-linear tax of selling, as sorted lot segments.

    Every array has one entry per lot, in *sorted* order: within position
    ``p``'s slice ``lot_offsets[p]:lot_offsets[p + 1]``, entry ``k`` describes
    lot ``order[k]`` (a global lot index inside the same slice), and the
    slice is sorted cheapest tax per dollar first, by ``(slope,
    gain_per_dollar, lot index)`` ascending: loss lots first (largest tax
    saving per dollar first), then gains by their tax per dollar.  In a
    zero-rate account every slope is 0 and the order is the largest loss per
    dollar first.

    The tax of selling ``y`` USD of position ``p`` is
    ``g_p(y) = Σ_k slope[k] · clip(y - B_k, 0, width[k])`` with breakpoints
    ``B_k = Σ_{j<k} width[j]`` (within the slice); ``g_p`` is convex because
    ``slope`` ascends.  A solver uses one variable per lot segment with
    ``0 <= y_k <= width[k]`` and linear cost ``slope[k] · y_k``.

    Attributes
    ----------
    order : int64
        Lot indices (into the input lot arrays), a permutation within each slice.
    slope : float64
        USD of tax per USD of proceeds: ``rate · gain_per_dollar``.
    width : float64
        USD of proceeds the lot provides: ``quantity · price`` (0 for a bad lot or price).
    gain_per_dollar : float64
        ``(quantity · price - cost_basis) / (quantity · price)``, USD per USD.
    long_term : bool
        The lot is long-term on ``as_of``.
    status : int64, per position
        Bit flags (``BAD_PRICE``, ``BAD_LOT``).
    """

    order: np.ndarray
    slope: np.ndarray
    width: np.ndarray
    gain_per_dollar: np.ndarray
    long_term: np.ndarray
    status: np.ndarray


def _f64(a):
    return np.ascontiguousarray(a, dtype=np.float64)


def _i64(a):
    return np.ascontiguousarray(a, dtype=np.int64)


def tax_curves(lot_offsets, quantity, cost_basis, acquired, price, st_rate, lt_rate, as_of,
               out: TaxCurves | None = None) -> TaxCurves:
    """Tax curves of every position of a shard (see :class:`TaxCurves`).

    Parameters
    ----------
    lot_offsets : int64, length P+1
        Lots of position ``p`` are ``lot_offsets[p]:lot_offsets[p + 1]``.
    quantity, cost_basis : float64, per lot
        Shares; total adjusted basis in USD.
    acquired : int64, per lot
        Adjusted acquisition day, days since 1970-01-01.
    price, st_rate, lt_rate : float64, per position
        USD per share; short- and long-term rates as fractions (0 where not taxable).
    as_of : int
        The sale day, days since 1970-01-01.
    out : TaxCurves, optional
        Preallocated outputs to write into.

    Returns
    -------
    TaxCurves
    """
    lot_offsets = _i64(lot_offsets)
    n_lots = int(lot_offsets[-1]) if lot_offsets.size else 0
    n_pos = max(lot_offsets.size - 1, 0)
    if out is None:
        out = TaxCurves(np.empty(n_lots, np.int64), np.empty(n_lots), np.empty(n_lots),
                        np.empty(n_lots), np.empty(n_lots, np.bool_), np.empty(n_pos, np.int64))
    if n_pos:
        _tax_curves_into(lot_offsets, _f64(quantity), _f64(cost_basis), _i64(acquired),
                         _f64(price), _f64(st_rate), _f64(lt_rate), np.int64(as_of), *out)
    return out


@nb.njit(cache=True, nogil=True)
def _curve_tax_into(lot_offsets, slope, width, sell_dollars, tax):
    for p in range(lot_offsets.shape[0] - 1):
        remaining = sell_dollars[p]
        total = 0.0
        for k in range(lot_offsets[p], lot_offsets[p + 1]):
            if remaining <= 0.0:
                break
            take = min(remaining, width[k])
            total += slope[k] * take
            remaining -= take
        tax[p] = total


def curve_tax(lot_offsets, slope, width, sell_dollars) -> np.ndarray:
    """Evaluate ``g_p(sell_dollars[p])`` for every position, USD of tax.

    ``slope`` and ``width`` are the sorted arrays of :func:`tax_curves`;
    dollars beyond the position's value add no tax.
    """
    lot_offsets = _i64(lot_offsets)
    tax = np.zeros(max(lot_offsets.size - 1, 0))
    _curve_tax_into(lot_offsets, _f64(slope), _f64(width), _f64(sell_dollars), tax)
    return tax


@nb.njit(cache=True, nogil=True)
def _relieve_lots_into(lot_offsets, quantity, cost_basis, acquired, price, st_rate, lt_rate, as_of,
                       sell_amount, in_dollars, method, priority,
                       shares_sold, realized_gain, is_long, est_tax, status):
    n_pos = lot_offsets.shape[0] - 1
    long_cutoff = last_long_acquired(as_of)
    key1, key2, idx, lot_long, lot_gpd = _position_scratch(lot_offsets)
    for p in range(n_pos):
        start = lot_offsets[p]
        n = lot_offsets[p + 1] - start
        st = _position_keys(lot_offsets, p, quantity, cost_basis, acquired, price, st_rate,
                            lt_rate, long_cutoff, method, priority, key1, key2, lot_long, lot_gpd)
        for k in range(n):
            i = start + k
            shares_sold[i] = 0.0
            realized_gain[i] = 0.0
            est_tax[i] = 0.0
            is_long[i] = lot_long[k]
        px = price[p]
        amount = sell_amount[p]
        if not (amount >= 0.0):
            st |= BAD_REQUEST
        if (st & (BAD_PRICE | BAD_REQUEST | BAD_METHOD)) != 0 or amount == 0.0:
            status[p] = st
            continue
        remaining = amount / px if in_dollars else amount
        _sort_segment(key1, key2, n, idx)
        for k in range(n):
            if remaining <= 0.0:
                break
            i = start + idx[k]
            q = quantity[i]
            basis = cost_basis[i]
            if not _lot_valid(q, basis):
                continue
            if method == SPECIFIC and priority[i] != priority[i]:
                continue
            if remaining >= q * (1.0 - DUST):
                take = q
                gain = q * px - basis
            else:
                take = remaining
                gain = take * px - basis * take / q
            remaining -= take
            shares_sold[i] = take
            realized_gain[i] = gain
            est_tax[i] = gain * (lt_rate[p] if lot_long[idx[k]] else st_rate[p])
        if remaining > DUST * max(amount / px if in_dollars else amount, 1.0):
            st |= OVERSOLD
        status[p] = st


class Relief(NamedTuple):
    """Lots relieved, one entry per input lot (input order, not sorted).

    Attributes
    ----------
    shares_sold : float64
        Shares sold from the lot, ``0 <= shares_sold <= quantity``.
    realized_gain : float64
        USD: ``shares_sold · price - cost_basis · shares_sold / quantity``.
    long_term : bool
        The lot is long-term on ``as_of`` (set for every lot, sold or not).
    est_tax : float64
        USD: ``realized_gain · (lt_rate if long_term else st_rate)``.
    status : int64, per position
        Bit flags (``BAD_PRICE``, ``BAD_LOT``, ``OVERSOLD``, ``BAD_REQUEST``, ``BAD_METHOD``).
    """

    shares_sold: np.ndarray
    realized_gain: np.ndarray
    long_term: np.ndarray
    est_tax: np.ndarray
    status: np.ndarray


def relieve_lots(lot_offsets, quantity, cost_basis, acquired, price, st_rate, lt_rate, as_of, *,
                 sell_dollars=None, sell_shares=None, method: int = CURVE, priority=None,
                 out: Relief | None = None) -> Relief:
    """Pick the lots that a sale of each position relieves.

    Lots are taken whole in the method's order until the amount is reached;
    the last one partially.  A remaining amount within a relative ``DUST``
    (1e-9) of a lot's quantity closes that lot whole.  Shares sold never
    exceed shares held; asking for more sells everything and flags
    ``OVERSOLD``.

    Parameters
    ----------
    lot_offsets, quantity, cost_basis, acquired, price, st_rate, lt_rate, as_of
        As in :func:`tax_curves`.
    sell_dollars : float64, per position, optional
        USD of proceeds to sell (``sell_dollars / price`` shares).
    sell_shares : float64, per position, optional
        Shares to sell.  Exactly one of ``sell_dollars`` and ``sell_shares``.
    method : int
        ``CURVE`` (= ``TAX_ORDER``), ``FIFO``, ``LIFO``, ``HIFO`` or ``SPECIFIC``.
    priority : float64, per lot, optional
        For ``SPECIFIC``: lots are taken in ascending priority (ties by lot
        index); a NaN priority means the lot is not sold.
    out : Relief, optional
        Preallocated outputs to write into.

    Returns
    -------
    Relief
    """
    if (sell_dollars is None) == (sell_shares is None):
        raise ValueError("give exactly one of sell_dollars and sell_shares")
    lot_offsets = _i64(lot_offsets)
    n_lots = int(lot_offsets[-1]) if lot_offsets.size else 0
    n_pos = max(lot_offsets.size - 1, 0)
    if method == SPECIFIC and priority is None:
        raise ValueError("method SPECIFIC needs a priority per lot")
    priority = _f64(priority) if priority is not None else np.empty(0)
    amount = _f64(sell_dollars if sell_dollars is not None else sell_shares)
    if out is None:
        out = Relief(np.empty(n_lots), np.empty(n_lots), np.empty(n_lots, np.bool_),
                     np.empty(n_lots), np.empty(n_pos, np.int64))
    if n_pos:
        _relieve_lots_into(lot_offsets, _f64(quantity), _f64(cost_basis), _i64(acquired),
                           _f64(price), _f64(st_rate), _f64(lt_rate), np.int64(as_of),
                           amount, sell_dollars is not None, np.int64(method), priority, *out)
    return out
