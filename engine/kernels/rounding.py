"""Rounding: dollar trades to share quantities that obey the contract.

docs/contract.md §3 rules 4, 10 and 11.  The input is a shard of *trade lines*,
segmented by account CSR-style (lines of account ``a`` are
``account_offsets[a]:account_offsets[a + 1]``): a buy line per security
bought, and a sell line per lot sold (as :func:`engine.kernels.lots.relieve_lots`
picked them), each with the dollars the solver asked for.

Per account, in this order:

1. Shares: ``dollars / price``; whole shares (nearest) unless ``fractional``.
   A sell within a relative 1e-9 of its lot, or rounding to at least the lot,
   sells the whole lot (``lot_quantity``, fractional or not).
2. Minimum trade: a line worth less than ``min_trade`` is dropped, except a
   sell that closes its whole lot.
3. Cash repair, ``cash_after = cash + Σ sells·price - Σ buys·price`` (USD,
   spread costs are the caller's): while ``cash_after < cash_floor``, buys
   are cut, largest value first (ties by line), each by the shares the
   deficit needs (rounded up to whole shares), dropped entirely when what is
   left is under ``min_trade``; then sells are raised, in line order, toward
   their lot's quantity, to at least ``min_trade`` or the whole lot.  Every
   sell line may be raised: pass only lots that may be sold.

``cash_floor`` is ``min_cash + reserve_cash + withdrawal``.  Where the floor
cannot be reached the account is flagged ``FLOOR_UNMET``; where even 0 cannot,
``NEGATIVE_CASH`` (only possible when selling every lot given cannot cure it).
Nothing raises inside; statuses are bit flags per account.
"""

from __future__ import annotations

from typing import NamedTuple

import numba as nb
import numpy as np

from engine.kernels.wash import BUY, SELL

__all__ = ["OK", "FLOOR_UNMET", "NEGATIVE_CASH", "BAD_LINE", "CASH_TOLERANCE", "Rounded",
           "round_trades"]

OK = 0
FLOOR_UNMET = 1
"""Cash after is below ``cash_floor`` even with every buy cut and every sell line at its lot."""
NEGATIVE_CASH = 2
"""Cash after is below 0 even then."""
BAD_LINE = 4
"""A line with a price NaN or <= 0, dollars NaN or < 0, or an unknown side: it trades 0."""

CASH_TOLERANCE = 1e-6
"""USD within which cash counts as meeting the floor."""
_DUST = 1e-9


@nb.njit(cache=True, nogil=True)
def _whole_up(x):
    """Shares rounded up to a whole number, forgiving float noise just above an integer."""
    return np.ceil(x - 1e-9)


@nb.njit(cache=True, nogil=True)
def _line_ok(side, px, want, lot):
    if not (px > 0.0 and np.isfinite(px) and want >= 0.0 and np.isfinite(want)):
        return False
    if side == SELL:
        return lot > 0.0 and np.isfinite(lot)
    return side == BUY


@nb.njit(cache=True, nogil=True)
def _round_trades_into(account_offsets, side, price, fractional, dollars, lot_quantity,
                       cash, cash_floor, min_trade, shares, cash_after, status):
    n_accounts = account_offsets.shape[0] - 1
    for a in range(n_accounts):
        start = account_offsets[a]
        end = account_offsets[a + 1]
        st = OK
        balance = cash[a]
        floor = cash_floor[a]
        smallest = min_trade[a]
        for i in range(start, end):
            px = price[i]
            want = dollars[i]
            shares[i] = 0.0
            if not _line_ok(side[i], px, want, lot_quantity[i]):
                st |= BAD_LINE
                continue
            s = want / px
            if side[i] == SELL:
                lot = lot_quantity[i]
                if s >= lot * (1.0 - _DUST):
                    s = lot
                else:
                    if not fractional[i]:
                        s = np.floor(s + 0.5)
                    if s >= lot:
                        s = lot
                    elif s * px < smallest:
                        s = 0.0
                balance += s * px
            else:
                if not fractional[i]:
                    s = np.floor(s + 0.5)
                if s * px < smallest:
                    s = 0.0
                balance -= s * px
            shares[i] = s
        if balance < floor - CASH_TOLERANCE:
            # Cut buys, largest value first.
            n = end - start
            value = np.zeros(n)
            for k in range(n):
                i = start + k
                if side[i] == BUY:
                    value[k] = -shares[i] * price[i]
            order = np.argsort(value, kind="mergesort")
            for k in range(n):
                if balance >= floor - CASH_TOLERANCE:
                    break
                i = start + order[k]
                if side[i] != BUY or shares[i] <= 0.0:
                    continue
                px = price[i]
                cut = (floor - balance) / px
                if not fractional[i]:
                    cut = _whole_up(cut)
                left = shares[i] - cut
                if left <= shares[i] * _DUST or left * px < smallest:
                    left = 0.0
                balance += (shares[i] - left) * px
                shares[i] = left
            # Then raise sells toward their lots, in line order.
            for i in range(start, end):
                if balance >= floor - CASH_TOLERANCE:
                    break
                if side[i] != SELL or not _line_ok(side[i], price[i], dollars[i], lot_quantity[i]) \
                        or shares[i] >= lot_quantity[i]:
                    continue
                px = price[i]
                lot = lot_quantity[i]
                add = (floor - balance) / px
                new = shares[i] + add
                if not fractional[i]:
                    new = _whole_up(new)
                if new * px < smallest:
                    new = smallest / px
                    if not fractional[i]:
                        new = _whole_up(new)
                if new >= lot * (1.0 - _DUST):
                    new = lot
                balance += (new - shares[i]) * px
                shares[i] = new
        if balance < floor - CASH_TOLERANCE:
            st |= FLOOR_UNMET
        if balance < -CASH_TOLERANCE:
            st |= NEGATIVE_CASH
        cash_after[a] = balance
        status[a] = st


class Rounded(NamedTuple):
    """Rounded trades.

    Attributes
    ----------
    shares : float64, per line
        Shares to trade (>= 0; 0 = dropped).  Whole unless the security is
        fractional or the sell closes a fractional lot; ``<= lot_quantity`` on sells.
    cash_after : float64, per account
        USD: ``cash + Σ sells·price - Σ buys·price``.
    status : int64, per account
        Bit flags ``FLOOR_UNMET``, ``NEGATIVE_CASH``, ``BAD_LINE``.
    """

    shares: np.ndarray
    cash_after: np.ndarray
    status: np.ndarray


def round_trades(account_offsets, side, price, fractional, dollars, lot_quantity, cash, cash_floor,
                 min_trade, out: Rounded | None = None) -> Rounded:
    """Round a shard's dollar trades to shares and repair cash (see the module docstring).

    Parameters
    ----------
    account_offsets : int64, length A+1
        Lines of account ``a`` are ``account_offsets[a]:account_offsets[a + 1]``.
    side : int8, per line
        ``BUY`` or ``SELL`` (:mod:`engine.kernels.wash`).
    price : float64, per line
        USD per share.
    fractional : bool, per line
        The security may be traded in fractional shares.
    dollars : float64, per line
        USD the solver asked to trade (>= 0).
    lot_quantity : float64, per line
        Sells: shares in the lot sold; buys: ignored.
    cash, cash_floor, min_trade : float64, per account
        USD before trading; ``min_cash + reserve_cash + withdrawal``; smallest trade.
    out : Rounded, optional
        Preallocated outputs to write into.

    Returns
    -------
    Rounded
    """
    account_offsets = np.ascontiguousarray(account_offsets, dtype=np.int64)
    n_lines = int(account_offsets[-1]) if account_offsets.size else 0
    n_accounts = max(account_offsets.size - 1, 0)
    if out is None:
        out = Rounded(np.empty(n_lines), np.empty(n_accounts), np.empty(n_accounts, np.int64))
    f64 = lambda a: np.ascontiguousarray(a, dtype=np.float64)  # noqa: E731
    if n_accounts:
        _round_trades_into(account_offsets, np.ascontiguousarray(side, dtype=np.int8), f64(price),
                           np.ascontiguousarray(fractional, dtype=np.bool_), f64(dollars),
                           f64(lot_quantity), f64(cash), f64(cash_floor), f64(min_trade), *out)
    return out
