"""A shard's trade lines: the solver's dollars, as lines, rounded to shares within the limits.

Steps 1–3 of :func:`engine.rebalance.proposals.propose`, whose docstring states the
rules: :func:`build` makes a line per lot sold and per security bought (and
the lots a cash repair may raise), :func:`round_shares` rounds them to
shares in the direction that keeps the limits, :func:`trim` takes whole
shares off until the tax budget, the turnover limit and the cash floor hold,
and :func:`invest` buys whole shares back where rounding left cash above the
cap.  :class:`Accounts` holds the shard's accounts' settings, which the
proposals' metrics read too.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Mapping

import numpy as np
import pyarrow as pa

from engine.contract.arrow import index_in, numbers, strings, unique_sorted
from engine.contract.rules import cash_floor
from engine.contract.schema import Col, TaxStatus
from engine.kernels.dates import to_days
from engine.kernels.lots import long_term
from engine.kernels.rounding import CASH_TOLERANCE, round_trades
from engine.kernels.wash import BUY, SELL
from engine.rebalance.problem import BatchIndex
from engine.solver.types import ProblemBatch, SolverResult

__all__ = ["Accounts", "Lines", "Lots", "build", "round_shares", "trim", "invest", "LIMIT_TOLERANCE", "DUST"]

#: USD within which a limit (tax budget, turnover) counts as met after trimming.
LIMIT_TOLERANCE = 1e-6
#: Shares within which a sell counts as its whole lot (as the rounding kernel).
DUST = 1e-9


class Accounts:
    """The batch's accounts (slots of ``index.account_ids`` that hold one), in slot order."""

    def __init__(self, tables: Mapping[str, pa.Table], problem: ProblemBatch, index: BatchIndex):
        self.h, self.s = (a.astype(np.int64) for a in np.nonzero(index.account_ids != None))  # noqa: E711
        self.ids = np.asarray(index.account_ids[self.h, self.s], dtype=object)
        self.household = np.asarray(index.household_ids, dtype=object)[self.h]
        book = tables["accounts"]
        rows = index_in(self.ids, book.column(Col.account_id))
        self.cash = numbers(book, Col.cash, rows, dtype=float)
        self.min_cash = numbers(book, Col.min_cash, rows, dtype=float)
        self.reserve = numbers(book, Col.reserve_cash, rows, dtype=float)
        self.withdrawal = numbers(book, Col.withdrawal, rows, dtype=float)
        self.max_cash = numbers(book, Col.max_cash, rows, dtype=float)
        self.min_trade = numbers(book, Col.min_trade, rows, dtype=float)
        self.tax_budget = numbers(book, Col.tax_budget, rows, dtype=float)
        self.turnover_limit = numbers(book, Col.turnover_limit, rows, dtype=float)
        self.taxable = strings(book, Col.tax_status, rows) == TaxStatus.taxable
        self.st_rate = np.where(self.taxable, numbers(book, Col.st_rate, rows), 0.0)
        self.lt_rate = np.where(self.taxable, numbers(book, Col.lt_rate, rows), 0.0)
        self.ytd_tax = (self.st_rate * numbers(book, Col.realized_st_ytd, rows)
                        + self.lt_rate * numbers(book, Col.realized_lt_ytd, rows))
        self.harvest = numbers(book, Col.harvest, rows, False, bool)
        self.suspended = numbers(book, Col.suspended, rows, False, bool)
        V = np.asarray(index.household_value, float)
        self.V = V[self.h]
        self.value = np.asarray(problem.account_value, float)[self.h, self.s] * self.V
        self.held = np.asarray(problem.holdings, float)[self.h, self.s] * self.V[:, None]   # (A, n) USD
        self.floor = cash_floor(book, rows)                                                  # rule 4, USD
        self.cap = self.max_cash + self.withdrawal + self.reserve                            # NaN = none

    def __len__(self) -> int:
        return self.ids.size


class Lines:
    """Trade lines of a shard (one per lot sold and per security bought), account-major."""

    def __init__(self, **columns: np.ndarray):
        self.__dict__.update(columns)


class Lots:
    """The shard's lots, one entry each, account-major (account, security, lot).

    The dense (B, m, n, L) lot arrays are mostly padding (a direct index:
    93%); :meth:`of` reads one at the lots only.
    """

    def __init__(self, index: BatchIndex, accounts: Accounts):
        lot_row = np.asarray(index.lot_row)
        account_of = -np.ones(lot_row.shape[:2], np.int64)
        account_of[accounts.h, accounts.s] = np.arange(len(accounts))
        where = np.nonzero(lot_row >= 0)
        account = account_of[where[:2]]
        self.where = tuple(w[account >= 0] for w in where)
        self.account, self.security = account[account >= 0], self.where[2]
        self.row = lot_row[self.where]

    def of(self, values, dtype=float) -> np.ndarray:
        return np.asarray(values, dtype)[self.where]

    def per_account(self, values, count: int) -> np.ndarray:
        return np.bincount(self.account, weights=values, minlength=count)


def build(tables, problem, index, result, accounts: Accounts, shard_lots: Lots, trading: np.ndarray,
           as_of: dt.date) -> Lines:
    """Step 1: the shard's lines, account-major; in an account the buys, then the solver's sells,
    then the lots a cash repair may raise, cheapest tax first."""
    final = result.problem
    V = np.asarray(index.household_value, float)
    A, n = len(accounts), index.security_ids.size
    buy = np.asarray(result.buy, float)[accounts.h, accounts.s]            # (A, n)
    sell = shard_lots.of(result.sell)
    upper = shard_lots.of(final.sell_upper)
    lots = tables["lots"]
    securities = tables["securities"]
    real = np.flatnonzero(index.security_ids != None)  # noqa: E711
    sec_rows = -np.ones(n, np.int64)
    sec_rows[real] = index_in(index.security_ids[real], securities.column(Col.security_id))
    price_of = np.ones(n)
    price_of[real] = numbers(securities, Col.price, sec_rows[real], dtype=float)
    fractional_of = np.zeros(n, bool)
    fractional_of[real] = numbers(securities, Col.fractional, sec_rows[real], False, bool)

    # a lot the problem forces out (screens and their wash-window purchases; everything, where the
    # floor is out of reach) closes whole
    width = shard_lots.of(final.lot_width)
    forced = (shard_lots.of(final.sell_lower) >= width * (1.0 - DUST)) & (width > 0)
    sell = np.where(forced, width, sell)
    sold = (sell > 0) & trading[shard_lots.account]
    # lots a cash repair may raise: accounts that start below their floor only
    wash_groups = np.asarray(final.wash_group)
    household_buys = np.zeros((np.asarray(V).size, int(wash_groups.max()) + 1 if n else 0), bool)
    bought_any = (np.asarray(result.buy, float) > 0).any(axis=1)          # (B, n)
    g_h, g_i = np.nonzero(bought_any)
    household_buys[g_h, wash_groups[g_i]] = True
    extra = ((upper > 0) & ~sold & (sell <= 0)
             & (trading & (accounts.cash < accounts.floor - CASH_TOLERANCE))[shard_lots.account])
    chosen = np.flatnonzero(sold | extra)
    a_s, i_s, rows = shard_lots.account[chosen], shard_lots.security[chosen], shard_lots.row[chosen]
    sold, sell = sold[chosen], sell[chosen]
    marked_loss = shard_lots.of(final.lot_loss, bool)[chosen]
    cost = shard_lots.of(final.lot_cost)[chosen]
    quantity = numbers(lots, Col.quantity, rows, dtype=float)
    basis = numbers(lots, Col.cost_basis, rows, dtype=float)
    acquired = to_days(lots.column(Col.acquired).take(pa.array(rows, pa.int64())))
    price = price_of[i_s]
    loss = quantity * price < basis
    # a loss lot is raised only where the problem vetted it for wash sales and no household buy clashes
    clash = loss & (~marked_loss | household_buys[accounts.h[a_s], wash_groups[i_s]])
    keep = sold | ~clash
    a_s, i_s, rows, sold, sell, cost = a_s[keep], i_s[keep], rows[keep], sold[keep], sell[keep], cost[keep]
    quantity, basis, acquired, price, loss = quantity[keep], basis[keep], acquired[keep], price[keep], loss[keep]
    is_long = long_term(acquired, int(to_days(as_of)))
    rate = np.where(is_long, accounts.lt_rate[a_s], accounts.st_rate[a_s])

    a_b, i_b = np.nonzero((buy > 0) & trading[:, None])
    a_b, i_b = a_b[index.security_ids[i_b] != None], i_b[index.security_ids[i_b] != None]  # noqa: E711
    k_s, k_b = a_s.size, a_b.size
    account = np.r_[a_b, a_s]
    # within an account: buys, then the solver's sells and then the extra lots, cheapest tax first
    rank = np.r_[np.zeros(k_b), np.where(sold, 1.0, 2.0)]
    order = np.lexsort((np.r_[i_b, i_s], np.r_[np.zeros(k_b), cost], rank, account))
    lines = Lines(
        account=account, side=np.r_[np.full(k_b, BUY), np.full(k_s, SELL)].astype(np.int8),
        security=np.r_[i_b, i_s], lot_row=np.r_[-np.ones(k_b, np.int64), rows],
        price=np.r_[price_of[i_b], price], fractional=np.r_[fractional_of[i_b], fractional_of[i_s]],
        dollars=np.r_[buy[a_b, i_b] * accounts.V[a_b], sell * accounts.V[a_s]],
        lot_quantity=np.r_[np.zeros(k_b), quantity], basis=np.r_[np.zeros(k_b), basis],
        long=np.r_[np.zeros(k_b, bool), is_long], loss=np.r_[np.zeros(k_b, bool), loss],
        rate=np.r_[np.zeros(k_b), rate], spread=np.asarray(problem.spread, float)[np.r_[i_b, i_s]])
    for name, values in list(lines.__dict__.items()):
        setattr(lines, name, values[order])
    lines.offsets = np.searchsorted(lines.account, np.arange(A + 1)).astype(np.int64)
    lines.tax_per_share = np.where(lines.side == SELL, lines.rate * (
        lines.price - lines.basis / np.where(lines.lot_quantity > 0, lines.lot_quantity, 1.0)), 0.0)
    return lines


def round_shares(lines: Lines, accounts: Accounts, mandated: np.ndarray) -> np.ndarray:
    """Shares per line: rounded in the direction that keeps the limits, then the kernel."""
    wanted = lines.dollars / lines.price
    sell = lines.side == SELL
    closing = sell & (wanted >= lines.lot_quantity * (1.0 - DUST))
    whole = ~lines.fractional & ~closing
    turnover = (~np.isnan(accounts.turnover_limit) & ~mandated)[lines.account]
    budget = (~np.isnan(accounts.tax_budget) & accounts.taxable & ~mandated)[lines.account]
    gain = lines.tax_per_share > 0
    down = whole & (turnover | (budget & sell & gain))
    up = whole & budget & ~turnover & sell & lines.loss
    dollars = lines.dollars.copy()
    dollars[down] = np.floor(wanted[down] + DUST) * lines.price[down]
    dollars[up] = np.minimum(np.ceil(wanted[up] - DUST), lines.lot_quantity[up]) * lines.price[up]
    rounded = round_trades(lines.offsets, lines.side, lines.price, lines.fractional, dollars,
                           lines.lot_quantity, accounts.cash, accounts.floor, accounts.min_trade)
    return rounded.shares.copy()


def _cut(shares, i, cut, lines, min_trade) -> None:
    """Take ``cut`` shares (whole unless fractional) off line ``i``; drop it under ``min_trade``."""
    if not lines.fractional[i]:
        cut = np.ceil(cut - DUST)
    left = shares[i] - cut
    if left <= shares[i] * DUST or left * lines.price[i] < min_trade:
        left = 0.0
    shares[i] = left


def trim(shares: np.ndarray, lines: Lines, accounts: Accounts, mandated: np.ndarray) -> None:
    """Keep rules 9 and 12 exact (and the floor) for accounts that are not mandated, in place."""
    value = shares * lines.price
    signed = np.where(lines.side == SELL, value, -value)
    tax = np.bincount(lines.account, shares * lines.tax_per_share, len(accounts))
    traded = np.bincount(lines.account, value, len(accounts))
    tax_room = np.where(np.isnan(accounts.tax_budget) | ~accounts.taxable, np.inf,
                        np.maximum(accounts.tax_budget - accounts.ytd_tax, 0.0))
    turnover_room = np.where(np.isnan(accounts.turnover_limit), np.inf,
                             accounts.turnover_limit * np.maximum(accounts.value, 0.0))
    cash_after = accounts.cash + np.bincount(lines.account, signed, len(accounts))
    over = ((tax > tax_room + LIMIT_TOLERANCE) | (traded > turnover_room + LIMIT_TOLERANCE)
            | (cash_after < accounts.floor - CASH_TOLERANCE)) & ~mandated
    for a in np.flatnonzero(over):
        span = np.arange(lines.offsets[a], lines.offsets[a + 1])
        buys, sells = span[lines.side[span] == BUY], span[lines.side[span] == SELL]
        for _ in range(4 * span.size + 4):
            value = shares[span] * lines.price[span]
            tax = float((shares[sells] * lines.tax_per_share[sells]).sum())
            excess_turnover = value.sum() - turnover_room[a]
            cash = accounts.cash[a] + float((shares[sells] * lines.price[sells]).sum()
                                            - (shares[buys] * lines.price[buys]).sum())
            if tax > tax_room[a] + LIMIT_TOLERANCE:
                gains = sells[(shares[sells] > 0) & (lines.tax_per_share[sells] > 0)]
                i = gains[np.argmax(lines.tax_per_share[gains])]
                _cut(shares, i, (tax - tax_room[a]) / lines.tax_per_share[i], lines, accounts.min_trade[a])
            elif excess_turnover > LIMIT_TOLERANCE:
                for group in (buys, sells[lines.tax_per_share[sells] > 0], sells):
                    live = group[shares[group] > 0]
                    if live.size:
                        i = live[np.argmax(shares[live] * lines.price[live])]
                        _cut(shares, i, excess_turnover / lines.price[i], lines, accounts.min_trade[a])
                        break
            elif cash < accounts.floor[a] - CASH_TOLERANCE and (shares[buys] > 0).any():
                live = buys[shares[buys] > 0]
                i = live[np.argmax(shares[live] * lines.price[live])]
                _cut(shares, i, (accounts.floor[a] - cash) / lines.price[i], lines, accounts.min_trade[a])
            else:
                break


def invest(shares: np.ndarray, lines: Lines, accounts: Accounts, result: SolverResult) -> None:
    """Rule 5 after rounding: buy whole shares back where rounding left cash above the cap, in place.

    Only in accounts without a turnover limit, only lines the solver bought, never below the
    floor.  First each buy gets back what rounding took off it (the solver's dollars), the
    largest shortfall first; then, while cash is still above the cap, the largest buys take
    the rest, a line at a time, in whole shares (cash ends at most one share's price under the
    cap).  A line that rounding dropped comes back at ``min_trade`` or more, unless the
    household sells its wash group at a loss.  Rounding a tax-budgeted account's loss sells up
    can add up to a share's price per line, so the excess can be many shares of one line.
    """
    value = shares * lines.price
    signed = np.where(lines.side == SELL, value, -value)
    cash_after = accounts.cash + np.bincount(lines.account, signed, len(accounts))
    over = (cash_after > accounts.cap) & np.isnan(accounts.turnover_limit) & ~accounts.suspended \
        & (cash_after >= accounts.floor - CASH_TOLERANCE)
    if not over.any():
        return
    # buy lines that may take shares: held, or dropped but clear of the household's loss sales
    groups = np.asarray(result.problem.wash_group)
    width = int(groups.max()) + 1 if groups.size else 1
    code = accounts.h[lines.account] * width + groups[lines.security]       # (household, wash group)
    loss_sold = unique_sorted(code[(lines.side == SELL) & lines.loss & (shares > 0)])
    at = np.minimum(np.searchsorted(loss_sold, code), max(loss_sold.size - 1, 0))
    clash = (loss_sold[at] == code) if loss_sold.size else np.zeros(code.size, bool)
    eligible = (lines.side == BUY) & ((shares > 0) | ~clash) & over[lines.account]
    for a in np.flatnonzero(over):
        buys = lines.offsets[a] + np.flatnonzero(eligible[lines.offsets[a]:lines.offsets[a + 1]])
        if not buys.size:
            continue
        cap, floor, smallest = float(accounts.cap[a]), float(accounts.floor[a]), float(accounts.min_trade[a])
        cash = float(cash_after[a])
        shortfall = lines.dollars[buys] - shares[buys] * lines.price[buys]
        by_shortfall = buys[np.lexsort((buys, -shortfall))][np.sort(-shortfall) < 0]
        by_size = buys[np.lexsort((buys, -lines.dollars[buys]))]
        # plain floats from here: a line costs a microsecond, not ten of NumPy scalars
        fractional = lines.fractional
        whole_prices = lines.price[buys][~fractional[buys]]
        least = float(whole_prices.min()) if whole_prices.size else np.inf     # one share of the cheapest
        some_fractional = bool(fractional[buys].any())
        for topping_up, order in ((True, by_shortfall), (False, by_size)):
            for i, line_price, whole, wanted in zip(order.tolist(), lines.price[order].tolist(),
                                                    (~fractional[order]).tolist(), lines.dollars[order].tolist()):
                room_left = cash - floor
                if cash <= cap or (room_left < least and (not some_fractional or room_left <= CASH_TOLERANCE)):
                    break
                held = float(shares[i])
                want = (cash - cap) / line_price
                if topping_up:
                    want = min(want, (wanted - held * line_price) / line_price)
                if held <= 0:
                    want = max(want, smallest / line_price)
                room = (cash - floor) / line_price
                if whole:
                    want, room = math.ceil(want - DUST), math.floor(room + DUST)
                add = min(want, room)
                if add <= 0 or (held <= 0 and add * line_price < smallest - CASH_TOLERANCE):
                    continue
                shares[i] = held + add
                cash -= add * line_price
