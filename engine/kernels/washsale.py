"""Wash-sale accounting over time (IRS Publication 550, "Wash Sales").

Where :mod:`engine.kernels.wash` answers "may the household trade this group
today?", this module replays a household's chronological trades and says what
the wash-sale rule did to each sale and each lot: for simulations over many
days and for checking a run after the fact.

Rules applied (Publication 550; Rev. Rul. 2008-5 for IRAs):

* A sale of shares at a loss in a taxable account is a wash sale to the
  extent that substantially identical shares (same ``wash_group``, any
  account of the household) are acquired within 30 days before or after it
  (``sale_day - 30 <= buy_day <= sale_day + 30``).
* Partial wash sales: the disallowed loss is in proportion to the shares
  replaced, ``disallowed = replaced_shares · loss_per_share``; so it never
  exceeds the realized loss.
* Replacement shares are matched in the order they were acquired (earliest
  first), loss shares in the order they were sold; each replacement share
  replaces at most one loss share.  Shares bought before the sale count only
  while still held, and never when they come from the same purchase as the
  shares sold (selling part of one purchase is no wash sale).
* The disallowed loss is added to the basis of the replacement shares, and
  their holding period includes that of the shares sold:
  ``acquired_adjusted = acquired - (sale_day - acquired_of_sold)``.
* A replacement bought in a tax-deferred or tax-exempt account makes the
  loss permanently disallowed: no basis adjustment (reported in
  ``disp_permanent``).
* Sells relieve the account's lots of the security first-in-first-out by
  purchase (opening lots first, in the order given, then buys in trade order).

Dates are int64 days since 1970-01-01.  One household per call.  Nothing
raises inside the kernel: each trade gets status bit flags.
"""

from __future__ import annotations

from typing import NamedTuple

import numba as nb
import numpy as np

from engine.kernels.dates import NO_DAY, first_long_day_scalar
from engine.kernels.wash import BUY, SELL, WINDOW_DAYS

__all__ = ["OK", "OVERSOLD", "BAD_TRADE", "OVERFLOW", "WashAccounting", "wash_sale_accounting"]

OK = 0
OVERSOLD = 1
"""A sell asked for more shares than the account held: what was held was sold."""
BAD_TRADE = 2
"""Unknown side, or quantity or price NaN or <= 0: the trade is ignored."""
OVERFLOW = 4
"""Internal: the preallocated lot or disposition arrays were too small (the wrapper retries)."""

_DUST = 1e-9


@nb.njit(cache=True, nogil=True)
def _split(lot, keep, n_lots, cap, lot_account, lot_security, lot_group, lot_quantity,
           lot_basis, lot_acquired, lot_buy_day, lot_seq, lot_used, lot_source):
    """Keep ``keep`` shares in ``lot``; move the rest to a new lot (same purchase).

    Returns the new lot count, or -1 when out of room.
    """
    q = lot_quantity[lot]
    if keep >= q * (1.0 - _DUST):
        return n_lots
    if n_lots >= cap:
        return -1
    rest = q - keep
    moved_basis = lot_basis[lot] * rest / q
    j = n_lots
    lot_account[j] = lot_account[lot]
    lot_security[j] = lot_security[lot]
    lot_group[j] = lot_group[lot]
    lot_quantity[j] = rest
    lot_basis[j] = moved_basis
    lot_acquired[j] = lot_acquired[lot]
    lot_buy_day[j] = lot_buy_day[lot]
    lot_seq[j] = lot_seq[lot]
    lot_used[j] = lot_used[lot]
    lot_source[j] = lot_source[lot]
    lot_quantity[lot] = keep
    lot_basis[lot] -= moved_basis
    return n_lots + 1


@nb.njit(cache=True, nogil=True)
def _replace(d, lot, shares, taxable_account, disp_loss_per_share, disp_pending, disp_disallowed,
             disp_permanent, disp_sale_day, disp_sold_acquired, lot_account, lot_basis,
             lot_acquired, lot_used):
    """``shares`` of ``lot`` (already split to that size) replace loss shares of ``d``.

    Returns the USD of loss disallowed.
    """
    matched = min(shares, disp_pending[d])
    amount = matched * disp_loss_per_share[d]
    disp_pending[d] -= matched
    disp_disallowed[d] += amount
    lot_used[lot] = True
    if taxable_account[lot_account[lot]]:
        lot_basis[lot] += amount
        lot_acquired[lot] -= disp_sale_day[d] - disp_sold_acquired[d]
    else:
        disp_permanent[d] += amount
    return amount


@nb.njit(cache=True, nogil=True)
def _replace_from(lot, d, n_lots, cap_lots, taxable_account, lot_account, lot_security, lot_group,
                  lot_quantity, lot_basis, lot_acquired, lot_buy_day, lot_seq, lot_used, lot_source,
                  disp_loss_per_share, disp_pending, disp_disallowed, disp_permanent, disp_sale_day,
                  disp_sold_acquired):
    """Shares of ``lot`` replace disposition ``d``'s pending loss shares, as many as it has and ``d`` needs.

    The lot keeps the replacing shares and the rest moves to a new lot
    (:func:`_split`).  Returns ``(n_lots, USD of loss disallowed)``;
    ``n_lots`` is -1 when out of room.
    """
    m = min(disp_pending[d], lot_quantity[lot])
    n_new = _split(lot, m, n_lots, cap_lots, lot_account, lot_security, lot_group,
                   lot_quantity, lot_basis, lot_acquired, lot_buy_day, lot_seq,
                   lot_used, lot_source)
    if n_new < 0:
        return n_new, 0.0
    return n_new, _replace(d, lot, lot_quantity[lot], taxable_account, disp_loss_per_share, disp_pending,
                           disp_disallowed, disp_permanent, disp_sale_day, disp_sold_acquired,
                           lot_account, lot_basis, lot_acquired, lot_used)


@nb.njit(cache=True, nogil=True)
def _valid_trade(side, quantity, price):
    """Whether a trade can be replayed: a buy or a sell of a finite quantity > 0 at a finite price > 0."""
    return (quantity > 0.0 and np.isfinite(quantity) and price > 0.0 and np.isfinite(price)) \
        and (side == BUY or side == SELL)


@nb.njit(cache=True, nogil=True)
def _open_lot(lot, t, day, account, security, group, quantity, price, lot_account, lot_security,
              lot_group, lot_quantity, lot_basis, lot_acquired, lot_buy_day, lot_seq, lot_used,
              lot_source):
    """Record buy trade ``t`` as lot ``lot``: ``quantity`` shares at ``price`` USD each, bought on ``day``.

    Its basis is ``quantity * price`` USD and its holding period starts on ``day``.
    """
    lot_account[lot] = account
    lot_security[lot] = security
    lot_group[lot] = group
    lot_quantity[lot] = quantity
    lot_basis[lot] = quantity * price
    lot_acquired[lot] = day
    lot_buy_day[lot] = day
    lot_seq[lot] = t
    lot_used[lot] = False
    lot_source[lot] = t


@nb.njit(cache=True, nogil=True)
def _replace_earlier_sales(lot, day, group, window, n_lots, n_disp, cap_lots, taxable_account,
                           trade_disallowed, lot_account, lot_security, lot_group, lot_quantity,
                           lot_basis, lot_acquired, lot_buy_day, lot_seq, lot_used, lot_source,
                           disp_trade, disp_disallowed, disp_permanent, disp_loss_per_share,
                           disp_pending, disp_sale_day, disp_sold_acquired, disp_group):
    """The new ``lot`` of wash ``group``, bought on ``day``, replaces loss shares sold up to ``window`` days before.

    Loss shares still waiting for a replacement are matched earliest sale
    first.  The lot is split so that each part replaces one disposition's
    shares, and the USD of loss disallowed is added to the selling trade's
    ``trade_disallowed``.  Returns ``(n_lots, overflow)``.
    """
    for d in range(n_disp):
        if disp_pending[d] <= 0.0 or disp_group[d] != group or disp_sale_day[d] + window < day:
            continue
        n_new, disallowed = _replace_from(
            lot, d, n_lots, cap_lots, taxable_account, lot_account, lot_security, lot_group, lot_quantity,
            lot_basis, lot_acquired, lot_buy_day, lot_seq, lot_used, lot_source, disp_loss_per_share,
            disp_pending, disp_disallowed, disp_permanent, disp_sale_day, disp_sold_acquired)
        if n_new < 0:
            return n_lots, True
        rest = n_new > n_lots
        n_lots = n_new
        trade_disallowed[disp_trade[d]] += disallowed
        if not rest:
            break
        lot = n_lots - 1
    return n_lots, False


@nb.njit(cache=True, nogil=True)
def _first_lot_held(account, security, n_lots, lot_account, lot_security, lot_quantity, lot_seq):
    """The open lot of ``security`` in ``account`` purchased first (FIFO), or -1 when none is left."""
    best = -1
    for i in range(n_lots):
        if lot_quantity[i] > 0.0 and lot_account[i] == account \
                and lot_security[i] == security:
            if best < 0 or lot_seq[i] < lot_seq[best]:
                best = i
    return best


@nb.njit(cache=True, nogil=True)
def _relieve_lots(t, day, account, security, quantity, price, n_lots, n_disp, cap_disp,
                  taxable_account, shares_filled, trade_gain, trade_status,
                  lot_account, lot_security, lot_group, lot_quantity, lot_basis, lot_acquired, lot_seq,
                  disp_trade, disp_lot, disp_shares, disp_proceeds, disp_cost_basis,
                  disp_gain, disp_disallowed, disp_permanent, disp_long,
                  disp_loss_per_share, disp_pending, disp_sale_day, disp_sold_acquired,
                  disp_group, disp_seq):
    """Sell trade ``t``: relieve ``account``'s lots of ``security``, first purchase first.

    Each lot relieved is one disposition: its shares, proceeds and relieved
    cost basis (USD), its gain before the rule (USD), long-term or not.  A
    loss in a taxable account leaves its shares pending a replacement, at
    the USD of loss per share.  Sets ``OVERSOLD`` when the lots run out.
    Returns ``(n_dispositions, overflow)``.
    """
    remaining = quantity
    while remaining > _DUST * quantity:
        best = _first_lot_held(account, security, n_lots, lot_account, lot_security, lot_quantity, lot_seq)
        if best < 0:
            trade_status[t] |= OVERSOLD
            break
        if n_disp >= cap_disp:
            return n_disp, True
        lq = lot_quantity[best]
        if remaining >= lq * (1.0 - _DUST):
            take = lq
            basis = lot_basis[best]
        else:
            take = remaining
            basis = lot_basis[best] * take / lq
        remaining -= take
        gain = take * price - basis
        d = n_disp
        n_disp += 1
        disp_trade[d] = t
        disp_lot[d] = best
        disp_shares[d] = take
        disp_proceeds[d] = take * price
        disp_cost_basis[d] = basis
        disp_gain[d] = gain
        disp_disallowed[d] = 0.0
        disp_permanent[d] = 0.0
        disp_long[d] = day >= first_long_day_scalar(lot_acquired[best])
        disp_sale_day[d] = day
        disp_sold_acquired[d] = lot_acquired[best]
        disp_group[d] = lot_group[best]
        disp_seq[d] = lot_seq[best]
        is_loss = gain < 0.0 and taxable_account[account]
        disp_loss_per_share[d] = -gain / take if is_loss else 0.0
        disp_pending[d] = take if is_loss else 0.0
        shares_filled[t] += take
        trade_gain[t] += gain
        if take == lq:
            lot_quantity[best] = 0.0
            lot_basis[best] = 0.0
        else:
            lot_quantity[best] = lq - take
            lot_basis[best] -= basis
    return n_disp, False


@nb.njit(cache=True, nogil=True)
def _first_replacement_held(d, day, window, n_lots, lot_group, lot_quantity, lot_buy_day, lot_seq,
                            lot_used, disp_group, disp_seq):
    """The lot that replaces disposition ``d``'s loss shares sold on ``day``, or -1 when none does.

    The earliest purchase still held, not yet a replacement, of the same
    wash group, bought in the ``window`` days up to ``day``, and not the
    purchase the shares were sold from.
    """
    best = -1
    for i in range(n_lots):
        if lot_quantity[i] > 0.0 and not lot_used[i] and lot_group[i] == disp_group[d] \
                and lot_buy_day[i] >= day - window and lot_buy_day[i] <= day \
                and lot_seq[i] != disp_seq[d]:
            if best < 0 or lot_seq[i] < lot_seq[best] \
                    or (lot_seq[i] == lot_seq[best] and i < best):
                best = i
    return best


@nb.njit(cache=True, nogil=True)
def _replace_by_earlier_purchases(t, day, window, first_disp, n_disp, n_lots, cap_lots, taxable_account,
                                  trade_disallowed, lot_account, lot_security, lot_group, lot_quantity,
                                  lot_basis, lot_acquired, lot_buy_day, lot_seq, lot_used, lot_source,
                                  disp_disallowed, disp_permanent, disp_loss_per_share, disp_pending,
                                  disp_sale_day, disp_sold_acquired, disp_group, disp_seq):
    """Sell trade ``t``'s loss shares (dispositions ``first_disp:n_disp``) replaced by shares bought before.

    Replacement shares bought in the ``window`` days before the sale and
    still held are matched earliest purchase first, each lot split to the
    shares it replaces; the USD of loss disallowed is added to
    ``trade_disallowed[t]``.  Returns ``(n_lots, overflow)``.
    """
    for d in range(first_disp, n_disp):
        while disp_pending[d] > 0.0:
            best = _first_replacement_held(d, day, window, n_lots, lot_group, lot_quantity, lot_buy_day,
                                           lot_seq, lot_used, disp_group, disp_seq)
            if best < 0:
                break
            n_new, disallowed = _replace_from(
                best, d, n_lots, cap_lots, taxable_account, lot_account, lot_security, lot_group,
                lot_quantity, lot_basis, lot_acquired, lot_buy_day, lot_seq, lot_used, lot_source,
                disp_loss_per_share, disp_pending, disp_disallowed, disp_permanent, disp_sale_day,
                disp_sold_acquired)
            if n_new < 0:
                return n_lots, True
            n_lots = n_new
            trade_disallowed[t] += disallowed
    return n_lots, False


@nb.njit(cache=True, nogil=True)
def _account_trades(trade_day, account, security, wash_group, side, quantity, price,
                    taxable_account, window, n_open,
                    shares_filled, trade_gain, trade_disallowed, trade_status,
                    lot_account, lot_security, lot_group, lot_quantity, lot_basis, lot_acquired,
                    lot_buy_day, lot_seq, lot_used, lot_source,
                    disp_trade, disp_lot, disp_shares, disp_proceeds, disp_cost_basis,
                    disp_gain, disp_disallowed, disp_permanent, disp_long,
                    disp_loss_per_share, disp_pending, disp_sale_day, disp_sold_acquired,
                    disp_group, disp_seq):
    """Replay the trades; returns ``(n_lots, n_dispositions, overflow)``.

    A buy opens a lot that replaces loss shares sold in the window before
    it; a sell relieves lots first-in-first-out, and its loss shares are
    replaced by shares bought in the window before it (and still held).
    """
    cap_lots = lot_quantity.shape[0]
    cap_disp = disp_trade.shape[0]
    n_lots = n_open
    n_disp = 0
    for t in range(trade_day.shape[0]):
        day = trade_day[t]
        q = quantity[t]
        px = price[t]
        shares_filled[t] = 0.0
        trade_gain[t] = 0.0
        trade_disallowed[t] = 0.0
        trade_status[t] = OK
        if not _valid_trade(side[t], q, px):
            trade_status[t] = BAD_TRADE
            continue
        if side[t] == BUY:
            if n_lots >= cap_lots:
                return n_lots, n_disp, True
            lot = n_lots
            n_lots += 1
            _open_lot(lot, t, day, account[t], security[t], wash_group[t], q, px, lot_account,
                      lot_security, lot_group, lot_quantity, lot_basis, lot_acquired, lot_buy_day,
                      lot_seq, lot_used, lot_source)
            shares_filled[t] = q
            n_lots, overflow = _replace_earlier_sales(
                lot, day, wash_group[t], window, n_lots, n_disp, cap_lots, taxable_account,
                trade_disallowed, lot_account, lot_security, lot_group, lot_quantity, lot_basis,
                lot_acquired, lot_buy_day, lot_seq, lot_used, lot_source, disp_trade,
                disp_disallowed, disp_permanent, disp_loss_per_share, disp_pending, disp_sale_day,
                disp_sold_acquired, disp_group)
            if overflow:
                return n_lots, n_disp, True
            continue
        first_disp = n_disp
        n_disp, overflow = _relieve_lots(
            t, day, account[t], security[t], q, px, n_lots, n_disp, cap_disp, taxable_account,
            shares_filled, trade_gain, trade_status, lot_account, lot_security, lot_group,
            lot_quantity, lot_basis, lot_acquired, lot_seq, disp_trade, disp_lot, disp_shares,
            disp_proceeds, disp_cost_basis, disp_gain, disp_disallowed, disp_permanent, disp_long,
            disp_loss_per_share, disp_pending, disp_sale_day, disp_sold_acquired, disp_group,
            disp_seq)
        if overflow:
            return n_lots, n_disp, True
        n_lots, overflow = _replace_by_earlier_purchases(
            t, day, window, first_disp, n_disp, n_lots, cap_lots, taxable_account, trade_disallowed,
            lot_account, lot_security, lot_group, lot_quantity, lot_basis, lot_acquired, lot_buy_day,
            lot_seq, lot_used, lot_source, disp_disallowed, disp_permanent, disp_loss_per_share,
            disp_pending, disp_sale_day, disp_sold_acquired, disp_group, disp_seq)
        if overflow:
            return n_lots, n_disp, True
    return n_lots, n_disp, False


class WashAccounting(NamedTuple):
    """What the wash-sale rule did to a household's trades.

    Attributes
    ----------
    shares_filled, realized_gain, disallowed_loss : float64, per trade
        Shares bought or sold; for sells the USD gain before the rule
        (proceeds - relieved basis, negative for a loss) and the USD of loss
        disallowed (>= 0, <= the loss; includes losses disallowed later by
        purchases in the 30 days after).
    status : int64, per trade
        Bit flags ``OVERSOLD``, ``BAD_TRADE``.
    disp_trade, disp_lot : int64, per disposition (one per sell and lot relieved)
        Indices of the sell trade and of the lot (in the ``lot_*`` arrays).
    disp_shares, disp_proceeds, disp_cost_basis, disp_realized_gain : float64
        Shares, USD.
    disp_disallowed_loss : float64
        USD of the disposition's loss disallowed; ``disp_permanent`` of it
        went to replacements in tax-deferred or exempt accounts (no basis
        adjustment anywhere).
    disp_long_term : bool
        Long-term on the sale day, by the lot's adjusted ``acquired``.
    lot_account, lot_security, lot_group : int64, per lot
    lot_quantity, lot_cost_basis : float64
        Shares still open at the end and their adjusted basis (USD).
    lot_acquired : int64
        Adjusted acquisition day (holding period start).
    lot_source : int64
        The buy trade that created the lot, or ``-1 - i`` for opening lot ``i``.
    lot_replacement : bool
        The lot's shares replaced loss shares of a wash sale.
    """

    shares_filled: np.ndarray
    realized_gain: np.ndarray
    disallowed_loss: np.ndarray
    status: np.ndarray
    disp_trade: np.ndarray
    disp_lot: np.ndarray
    disp_shares: np.ndarray
    disp_proceeds: np.ndarray
    disp_cost_basis: np.ndarray
    disp_realized_gain: np.ndarray
    disp_disallowed_loss: np.ndarray
    disp_permanent: np.ndarray
    disp_long_term: np.ndarray
    lot_account: np.ndarray
    lot_security: np.ndarray
    lot_group: np.ndarray
    lot_quantity: np.ndarray
    lot_cost_basis: np.ndarray
    lot_acquired: np.ndarray
    lot_source: np.ndarray
    lot_replacement: np.ndarray


def wash_sale_accounting(trade_day, account, security, wash_group, side, quantity, price,
                         account_taxable, *, open_account=None, open_security=None,
                         open_group=None, open_quantity=None, open_cost_basis=None,
                         open_acquired=None, window: int = WINDOW_DAYS) -> WashAccounting:
    """Replay one household's trades under the wash-sale rule.

    Parameters
    ----------
    trade_day : int64, per trade
        Days since 1970-01-01, non-decreasing (chronological; same-day trades
        in the order they happened).
    account, security, wash_group : int64, per trade
        Codes; ``account`` indexes ``account_taxable``.  A security with no
        wash group is its own group (the caller gives it its own code).
    side : int8, per trade
        ``BUY`` or ``SELL`` (:mod:`engine.kernels.wash`).
    quantity, price : float64, per trade
        Shares (> 0) and USD per share.
    account_taxable : bool, per account code
        False for tax-deferred and tax-exempt accounts.
    open_account, open_security, open_group, open_quantity, open_cost_basis, open_acquired
        Optional lots held before the first trade (in purchase order).  They
        are relieved like any lot but never count as replacement shares; pass
        recent purchases as buy trades instead.
    window : int
        Days either side of a sale (30).

    Returns
    -------
    WashAccounting
    """
    i64 = lambda a: np.ascontiguousarray(a, dtype=np.int64)  # noqa: E731
    f64 = lambda a: np.ascontiguousarray(a, dtype=np.float64)  # noqa: E731
    trade_day = i64(trade_day)
    n = trade_day.size
    args = (trade_day, i64(account), i64(security), i64(wash_group),
            np.ascontiguousarray(side, dtype=np.int8), f64(quantity), f64(price),
            np.ascontiguousarray(account_taxable, dtype=np.bool_), np.int64(window))
    n_open = 0 if open_quantity is None else len(open_quantity)
    cap = 2 * (n + n_open) + 8
    while True:
        trade_out = [np.empty(n), np.empty(n), np.empty(n), np.empty(n, np.int64)]
        lots = [np.empty(cap, np.int64), np.empty(cap, np.int64), np.empty(cap, np.int64),
                np.empty(cap), np.empty(cap), np.empty(cap, np.int64), np.empty(cap, np.int64),
                np.empty(cap, np.int64), np.empty(cap, np.bool_), np.empty(cap, np.int64)]
        if n_open:
            lots[0][:n_open] = i64(open_account)
            lots[1][:n_open] = i64(open_security)
            lots[2][:n_open] = i64(open_group)
            lots[3][:n_open] = f64(open_quantity)
            lots[4][:n_open] = f64(open_cost_basis)
            lots[5][:n_open] = i64(open_acquired)
            lots[6][:n_open] = NO_DAY
            lots[7][:n_open] = np.arange(n_open) - n_open
            lots[8][:n_open] = False
            lots[9][:n_open] = -1 - np.arange(n_open)
        disp = [np.empty(cap, np.int64), np.empty(cap, np.int64), np.empty(cap), np.empty(cap),
                np.empty(cap), np.empty(cap), np.empty(cap), np.empty(cap), np.empty(cap, np.bool_),
                np.empty(cap), np.empty(cap), np.empty(cap, np.int64), np.empty(cap, np.int64),
                np.empty(cap, np.int64), np.empty(cap, np.int64)]
        n_lots, n_disp, overflow = _account_trades(*args, np.int64(n_open), *trade_out, *lots, *disp)
        if not overflow:
            break
        cap *= 2
    lot_account, lot_security, lot_group, lot_quantity, lot_basis, lot_acquired, _, _, \
        lot_used, lot_source = (a[:n_lots] for a in lots)
    return WashAccounting(*trade_out, *(a[:n_disp] for a in disp[:9]),
                          lot_account, lot_security, lot_group, lot_quantity, lot_basis,
                          lot_acquired, lot_source, lot_used)
