"""Wash-sale windows: which wash groups a household may not buy or sell at a loss today.

docs/contract.md §3 rule 6.  Everything is on integer codes that the caller assigns:

* ``household``: one code per household; an account with a null
  ``household_id`` is its own household (the caller gives it a fresh code).
* ``wash_group``: one code per wash group; a security with a null
  ``wash_group`` is its own group (the caller gives it a fresh code, e.g. one
  per security id not in any group).  Securities sharing a group are
  substantially identical.
* ``account``, ``security``: codes for the detail output.

Windows are calendar days, integers since 1970-01-01: a trade on day ``t`` is
"in the 30 days before ``as_of``" when ``as_of - 30 <= t <= as_of`` (a sale
30 days ago is in; 31 days ago is out).  Trades dated after ``as_of`` are
ignored and flagged.  Every account of the household counts, tax-deferred and
exempt included, for purchases; a sale counts as a loss sale only where it
is taxable (a loss inside an IRA or Roth is no deductible loss).
"""

from __future__ import annotations

from typing import NamedTuple

import numba as nb
import numpy as np

from engine.kernels.dates import NO_DAY

__all__ = ["BUY", "SELL", "WINDOW_DAYS", "OK", "UNKNOWN_GAIN", "FUTURE_TRADE", "BAD_TRADE",
           "WashBlocks", "wash_sale_blocks", "side_codes"]

BUY = 0
SELL = 1
WINDOW_DAYS = 30

OK = 0
UNKNOWN_GAIN = 1
"""A taxable sell in the window has a NaN realized_gain: counted as a loss (the safe side)."""
FUTURE_TRADE = 2
"""A trade is dated after ``as_of``: ignored."""
BAD_TRADE = 4
"""A trade has an unknown side or a quantity that is NaN or <= 0: ignored."""


def side_codes(sides) -> np.ndarray:
    """Contract ``side`` strings (``buy``/``sell``) to ``BUY``/``SELL`` codes (-1 if neither)."""
    sides = np.asarray(sides, dtype=object)
    return np.where(sides == "buy", BUY, np.where(sides == "sell", SELL, -1)).astype(np.int8)


class WashBlocks(NamedTuple):
    """Blocks per (household, wash group), plus window purchases per account and security.

    Pairs are every (household, wash_group) present in the transactions,
    sorted ascending by ``(household, wash_group)``.  Details are every
    (pair, account, security) with a purchase in the window, sorted ascending
    by ``(pair, account, security)``.

    Attributes
    ----------
    household, wash_group : int64, per pair
    buy_blocked : bool, per pair
        A taxable loss sale of the group in the window: no purchase today.
    loss_sale_blocked : bool, per pair
        A purchase of the group in the window: no loss sale today, unless every
        share bought in the window (``detail_shares_bought``) is sold today.
    shares_bought : float64, per pair
        Shares of the group bought in the window, household-wide.
    last_loss_sale_day, last_buy_day : int64, per pair
        Latest such trade in the window, days since 1970-01-01; ``NO_DAY`` if none.
    status : int64, per pair
        Bit flags ``UNKNOWN_GAIN``, ``FUTURE_TRADE``, ``BAD_TRADE``.
    detail_pair : int64, per detail
        Index into the pair arrays.
    detail_account, detail_security : int64, per detail
    detail_shares_bought : float64, per detail
        Shares of that security bought in that account in the window.
    detail_last_buy_day : int64, per detail
        Its latest purchase in the window, days since 1970-01-01: a loss sale
        is clear of it from ``detail_last_buy_day + window + 1`` on.
    """

    household: np.ndarray
    wash_group: np.ndarray
    buy_blocked: np.ndarray
    loss_sale_blocked: np.ndarray
    shares_bought: np.ndarray
    last_loss_sale_day: np.ndarray
    last_buy_day: np.ndarray
    status: np.ndarray
    detail_pair: np.ndarray
    detail_account: np.ndarray
    detail_security: np.ndarray
    detail_shares_bought: np.ndarray
    detail_last_buy_day: np.ndarray


@nb.njit(cache=True, nogil=True)
def _wash_blocks_sorted(order, household, wash_group, account, security, trade_day, side,
                        quantity, realized_gain, taxable, as_of, window,
                        pair_household, pair_group, buy_blocked, loss_sale_blocked,
                        shares_bought, last_loss_sale_day, last_buy_day, status,
                        detail_pair, detail_account, detail_security, detail_shares, detail_last_buy):
    """One pass over transactions sorted by (household, group, account, security).

    Writes into the preallocated outputs (length >= number of transactions)
    and returns ``(n_pairs, n_details)``.
    """
    n = order.shape[0]
    n_pairs = 0
    n_details = 0
    first = as_of - window
    for k in range(n):
        t = order[k]
        new_pair = k == 0 or household[t] != household[order[k - 1]] \
            or wash_group[t] != wash_group[order[k - 1]]
        if new_pair:
            pair_household[n_pairs] = household[t]
            pair_group[n_pairs] = wash_group[t]
            buy_blocked[n_pairs] = False
            loss_sale_blocked[n_pairs] = False
            shares_bought[n_pairs] = 0.0
            last_loss_sale_day[n_pairs] = NO_DAY
            last_buy_day[n_pairs] = NO_DAY
            status[n_pairs] = OK
            n_pairs += 1
        p = n_pairs - 1
        day = trade_day[t]
        q = quantity[t]
        if day > as_of:
            status[p] |= FUTURE_TRADE
            continue
        if not (q > 0.0) or (side[t] != BUY and side[t] != SELL):
            status[p] |= BAD_TRADE
            continue
        if day < first:
            continue
        if side[t] == SELL:
            if not taxable[t]:
                continue
            gain = realized_gain[t]
            if gain != gain:
                status[p] |= UNKNOWN_GAIN
            elif gain >= 0.0:
                continue
            buy_blocked[p] = True
            last_loss_sale_day[p] = max(last_loss_sale_day[p], day)
        else:
            loss_sale_blocked[p] = True
            last_buy_day[p] = max(last_buy_day[p], day)
            shares_bought[p] += q
            d = n_details - 1
            if n_details == 0 or detail_pair[d] != p or detail_account[d] != account[t] \
                    or detail_security[d] != security[t]:
                detail_pair[n_details] = p
                detail_account[n_details] = account[t]
                detail_security[n_details] = security[t]
                detail_shares[n_details] = 0.0
                detail_last_buy[n_details] = NO_DAY
                n_details += 1
            detail_shares[n_details - 1] += q
            detail_last_buy[n_details - 1] = max(detail_last_buy[n_details - 1], day)
    return n_pairs, n_details


def wash_sale_blocks(household, wash_group, account, security, trade_day, side, quantity,
                     realized_gain, as_of, *, taxable=None, window: int = WINDOW_DAYS) -> WashBlocks:
    """Per (household, wash group): may the household buy it today, sell it at a loss today?

    Parameters
    ----------
    household, wash_group, account, security : int64, per transaction
        Codes (see the module docstring for null households and groups).
    trade_day : int64, per transaction
        Days since 1970-01-01.
    side : int8, per transaction
        ``BUY`` or ``SELL`` (see :func:`side_codes`).
    quantity : float64, per transaction
        Shares, > 0.
    realized_gain : float64, per transaction
        USD, set on sells (negative for a loss); ignored on buys.
    as_of : int
        Days since 1970-01-01.
    taxable : bool, per transaction, optional
        Whether the trade's account is taxable; default all True.  Only
        taxable sells are loss sales.
    window : int
        Days of the window before ``as_of`` (30).

    Returns
    -------
    WashBlocks
    """
    household = np.ascontiguousarray(household, dtype=np.int64)
    n = household.size
    wash_group = np.ascontiguousarray(wash_group, dtype=np.int64)
    account = np.ascontiguousarray(account, dtype=np.int64)
    security = np.ascontiguousarray(security, dtype=np.int64)
    taxable = (np.ones(n, np.bool_) if taxable is None
               else np.ascontiguousarray(taxable, dtype=np.bool_))
    order = np.lexsort((np.arange(n), security, account, wash_group, household)).astype(np.int64)
    i64, f64, b = (lambda: np.empty(n, np.int64)), (lambda: np.empty(n)), (lambda: np.empty(n, np.bool_))
    pairs = [i64(), i64(), b(), b(), f64(), i64(), i64(), i64()]
    details = [i64(), i64(), i64(), f64(), i64()]
    n_pairs, n_details = _wash_blocks_sorted(
        order, household, wash_group, account, security,
        np.ascontiguousarray(trade_day, dtype=np.int64), np.ascontiguousarray(side, dtype=np.int8),
        np.ascontiguousarray(quantity, dtype=np.float64),
        np.ascontiguousarray(realized_gain, dtype=np.float64), taxable,
        np.int64(as_of), np.int64(window), *pairs, *details)
    return WashBlocks(*(a[:n_pairs] for a in pairs), *(a[:n_details] for a in details))
