"""Solver results → the run's ``trades`` and ``accounts`` tables (CONTRACT §2).

:func:`propose` turns a shard's :class:`~engine.solver.types.SolverResult`
(dollars per lot sold and per security bought, in units of household value V)
into share quantities that obey CONTRACT §3, one ``trades`` row per lot sold
and per security bought, and one ``accounts`` row per account of the batch.
:func:`status_rows` writes the ``accounts`` rows of accounts that never reached
the solver (rejected, failed in the job).

Trades, per account (not suspended, not in a household whose solve failed):

1. Lines: a sell line per lot the solver sells (``result.sell > 0``), a buy
   line per security it buys.  Accounts that start below their cash floor
   also get a 0-dollar line for every other lot they may sell (a loss lot
   only where the problem marks it for the wash-sale rule and the household
   buys nothing of its wash group), so that rounding can raise sells to the
   floor (:func:`engine.kernels.rounding.round_trades`).  A lot the problem
   forces out (a screen; the shares a household bought in the wash window,
   sold with a screened loss lot under rule 6's exception; everything, where
   the floor is out of reach) is sold whole, and an account with such a lot
   is mandated, as a screened account is: step 3 does not trim it.
2. Rounding to shares (rules 10, 11), with the direction chosen so that the
   limits stay met for accounts that are not mandated: an account with a
   turnover limit rounds every line down (floor); an account with a tax
   budget rounds gain-lot sells down and, without a turnover limit, loss-lot
   sells up.  A sell that closes its lot is never rounded.  The kernel then
   drops lines under ``min_trade`` and repairs cash to the floor
   ``min_cash + reserve_cash + withdrawal`` (rule 4).
3. Limits after rounding (rules 5, 9, 12; the solver meets them to ~1e-7 of V):
   while the proposal's tax exceeds what the budget leaves, the gain sell
   with the most tax per share gives up whole shares; while turnover exceeds
   the limit, buys give up whole shares, largest first, then gain sells, then
   loss sells; cash below the floor takes whole shares off the largest buy.
   A line left under ``min_trade`` is dropped.  Where rounding left cash above the cap
   (``max_cash + withdrawal + reserve_cash``) in an account without a turnover limit,
   the buys the solver asked for get whole shares back, the largest shortfall first,
   then the largest buys take the rest, never below the floor.
4. Per sell: ``realized_gain = q·price − cost_basis·q / lot quantity``,
   ``term`` by rule 7 (:func:`engine.kernels.lots.long_term`), ``est_tax`` at
   the term's rate, 0 unless taxable (rule 8).

Reasons (``trades.reason``), the first that applies:

* sells: ``exclude`` (the security is screened out of the account, or the
  problem forces the sale for a screen: the shares a household bought in the
  last 30 days, sold with a household-mate's screened loss lots, rule 6),
  ``withdrawal`` (the account has a withdrawal), ``overdraft`` (cash < 0),
  ``cash_floor`` (cash < min_cash + reserve_cash), ``harvest`` (a loss lot, in
  a taxable account with harvesting on), ``model_change`` (the account holds
  the security but its target does not), ``rebalance``;
* buys: ``replacement`` (the household harvests today, selling at a loss in
  a taxable account with harvesting on, a different security of the same
  asset class: the buy keeps the exposure of the harvested position; a
  purchase of the loss sale's own wash group would be a wash sale, rule 6,
  so a replacement is a close substitute from another group), ``cash_invest`` (cash above
  ``max_cash + withdrawal + reserve_cash``, the cap of rule 5),
  ``model_change`` (targeted, not held), ``rebalance``.

Account metrics (units in :data:`engine.schema.RUN_ACCOUNTS`), with ``v`` the
account's value ``cash + Σ quantity·price``:

* ``w`` = value held in each security / v, before and after trading;
  ``w* = target weights × (v − keep) / v`` with ``keep = min_cash +
  reserve_cash + withdrawal`` (as the problem's target);
  ``tracking_error = sqrt((w − w*)ᵀ (X F Xᵀ + diag d) (w − w*))`` through the
  factor structure (never an n × n matrix);
* ``drift`` = ``max_c |Σ_{i∈c} w_i − W_c (v − keep) / v|``, ``W`` the
  account's asset-class targets;
* ``harvested_loss`` = losses realized in a taxable account (positive);
  ``tax_saved`` = Σ loss × rate of its term; ``trade_cost`` = Σ spread × value;
* ``score = (λ (TE_before² − TE_after²) v + loss value − tax on gains −
  trade_cost) / v`` with λ = ``risk_aversion`` and the loss value
  ``tax_saved − (1 − harvest_deferral) × lt_rate × harvested_loss``
  (:func:`engine.policy.loss_value`): the value of
  the risk removed and the losses harvested, net of the tax and trading cost
  paid, per unit of account value (0 when v ≤ 0).

Statuses: ``suspended`` (no trades), ``failed`` (the household's solve gave
non-finite numbers; no trades), ``infeasible`` (cash after trading is below the
floor: the detail says by how much; or a screen waits for a wash-sale window,
its loss lots kept today: the detail says what, why and until when, see
:mod:`engine.screen_window`; both where both), ``proposed`` (trades), ``no_trade``
(nothing left after rounding).  A household stopped at the iteration limit
still proposes; its ``residual`` tells.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine import schema, screen_window
from engine.config import PolicyConfig
from engine.kernels.dates import to_days
from engine.kernels.lots import long_term
from engine.kernels.rounding import CASH_TOLERANCE, round_trades
from engine.kernels.wash import BUY, SELL
from engine.policy import loss_value, prorated_budget
from engine.problem import BatchIndex
from engine.schema import Col, Reason, Rule, Side, Status, TaxStatus, Term, index_in, unique_sorted
from engine.solver.types import NON_FINITE, ProblemBatch, SolverResult
from engine.targets import Targets, exclusion_matrix

__all__ = ["propose", "status_rows"]

#: USD within which a limit (tax budget, turnover) counts as met after trimming.
LIMIT_TOLERANCE = 1e-6
#: Shares within which a sell counts as its whole lot (as the rounding kernel).
_DUST = 1e-9


def _numbers(table: pa.Table, name: str, rows: np.ndarray, fill=np.nan) -> np.ndarray:
    column = table.column(name).take(pa.array(rows, pa.int64()))
    if fill is not None:
        column = column.fill_null(fill)
    return np.asarray(column.to_numpy(zero_copy_only=False))


def _rule_matrix(restrictions: pa.Table | None, rule: str, securities: pa.Table,
                 account_ids: np.ndarray, security_ids: np.ndarray) -> np.ndarray:
    """Dense (accounts × securities) bool: a ``rule`` restriction covers the pair (by id or tag)."""
    if restrictions is None or not restrictions.num_rows:
        return np.zeros((account_ids.size, security_ids.size), bool)
    picked = restrictions.filter(pc.equal(restrictions.column(Col.rule), rule))
    # exclusion_matrix reads exclude rows: relabel the rule's rows as such
    relabeled = picked.set_column(picked.schema.get_field_index(Col.rule), Col.rule,
                                  pa.array([Rule.exclude] * picked.num_rows, pa.string()))
    return exclusion_matrix(relabeled, securities, account_ids, security_ids).toarray() > 0


class _Accounts:
    """The batch's accounts (slots of ``index.account_ids`` that hold one), in slot order."""

    def __init__(self, tables: Mapping[str, pa.Table], problem: ProblemBatch, index: BatchIndex):
        self.h, self.s = (a.astype(np.int64) for a in np.nonzero(index.account_ids != None))  # noqa: E711
        self.ids = np.asarray(index.account_ids[self.h, self.s], dtype=object)
        self.household = np.asarray(index.household_ids, dtype=object)[self.h]
        book = tables["accounts"]
        rows = index_in(self.ids, book.column(Col.account_id))
        self.cash = _numbers(book, Col.cash, rows).astype(float)
        self.min_cash = _numbers(book, Col.min_cash, rows).astype(float)
        self.reserve = _numbers(book, Col.reserve_cash, rows).astype(float)
        self.withdrawal = _numbers(book, Col.withdrawal, rows).astype(float)
        self.max_cash = _numbers(book, Col.max_cash, rows).astype(float)
        self.min_trade = _numbers(book, Col.min_trade, rows).astype(float)
        self.tax_budget = _numbers(book, Col.tax_budget, rows).astype(float)
        self.turnover_limit = _numbers(book, Col.turnover_limit, rows).astype(float)
        self.taxable = _numbers(book, Col.tax_status, rows, None).astype(object) == TaxStatus.taxable
        self.st_rate = np.where(self.taxable, _numbers(book, Col.st_rate, rows), 0.0)
        self.lt_rate = np.where(self.taxable, _numbers(book, Col.lt_rate, rows), 0.0)
        self.ytd_tax = (self.st_rate * _numbers(book, Col.realized_st_ytd, rows)
                        + self.lt_rate * _numbers(book, Col.realized_lt_ytd, rows))
        self.harvest = _numbers(book, Col.harvest, rows, False).astype(bool)
        self.suspended = _numbers(book, Col.suspended, rows, False).astype(bool)
        V = np.asarray(index.household_value, float)
        self.V = V[self.h]
        self.value = np.asarray(problem.account_value, float)[self.h, self.s] * self.V
        self.held = np.asarray(problem.holdings, float)[self.h, self.s] * self.V[:, None]   # (A, n) USD
        self.floor = self.min_cash + self.reserve + self.withdrawal
        self.cap = self.max_cash + self.withdrawal + self.reserve                            # NaN = none

    def __len__(self) -> int:
        return self.ids.size


def _targets(targets: Targets, accounts: _Accounts, security_ids: np.ndarray, n_classes: int):
    """Target weights (A, n) and asset-class targets (A, C) of each account, scaled to (v − keep)/v."""
    rows = index_in(accounts.ids, pa.array(np.asarray(targets.account_ids).astype(str).tolist(), pa.string()))
    local = {s: j for j, s in enumerate(security_ids) if s is not None}
    column = np.asarray([local.get(s, -1) for s in targets.security_ids], dtype=np.int64)
    coo = targets.weights[rows].tocoo()
    ok = column[coo.col] >= 0
    weights = np.zeros((len(accounts), security_ids.size))
    np.add.at(weights, (coo.row[ok], column[coo.col[ok]]), coo.data[ok])
    value = accounts.value
    invest = np.where(value > 0, np.maximum(value - accounts.floor, 0.0) / np.where(value > 0, value, 1.0), 0.0)
    classes = np.asarray(targets.class_weights, float)[rows][:, :n_classes]
    return weights, weights * invest[:, None], classes * invest[:, None]


def _tracking_error(problem: ProblemBatch, weights: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``sqrt(δᵀ (X F Xᵀ + diag d) δ)``, δ = weights − target, per row, through the factors."""
    delta = weights - target
    exposure = delta @ np.asarray(problem.exposures, float)
    variance = (np.einsum("ak,kl,al->a", exposure, np.asarray(problem.factor_covariance, float), exposure)
                + (delta * delta) @ np.asarray(problem.specific_variance, float))
    return np.sqrt(np.maximum(variance, 0.0))


def _drift(problem: ProblemBatch, weights: np.ndarray, class_target: np.ndarray) -> np.ndarray:
    n_classes = class_target.shape[1]
    onehot = (np.asarray(problem.asset_class)[:, None] == np.arange(n_classes)[None, :]).astype(float)
    gap = np.abs(weights @ onehot - class_target)
    return gap.max(axis=1) if n_classes else np.zeros(weights.shape[0])


class _Lines:
    """Trade lines of a shard (one per lot sold and per security bought), account-major."""

    def __init__(self, **columns: np.ndarray):
        self.__dict__.update(columns)


class _Lots:
    """The shard's lots, one entry each, account-major (account, security, lot).

    The dense (B, m, n, L) lot arrays are mostly padding (a direct index:
    93%); :meth:`of` reads one at the lots only.
    """

    def __init__(self, index: BatchIndex, accounts: _Accounts):
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


def _lines(tables, problem, index, result, accounts: _Accounts, shard_lots: _Lots, trading: np.ndarray,
           as_of: dt.date) -> _Lines:
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
    price_of[real] = _numbers(securities, Col.price, sec_rows[real]).astype(float)
    fractional_of = np.zeros(n, bool)
    fractional_of[real] = _numbers(securities, Col.fractional, sec_rows[real], False).astype(bool)

    # a lot the problem forces out (screens and their wash-window purchases; everything, where the
    # floor is out of reach) closes whole
    width = shard_lots.of(final.lot_width)
    forced = (shard_lots.of(final.sell_lower) >= width * (1.0 - _DUST)) & (width > 0)
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
    quantity = _numbers(lots, Col.quantity, rows).astype(float)
    basis = _numbers(lots, Col.cost_basis, rows).astype(float)
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
    lines = _Lines(
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


def _mandated(accounts: _Accounts, exclude: np.ndarray, never_sell: np.ndarray) -> np.ndarray:
    screen = (exclude & ~never_sell & (accounts.held > 0)).any(axis=1)
    return ((accounts.withdrawal > 0) | (accounts.cash < 0)
            | (accounts.cash < accounts.floor - CASH_TOLERANCE) | screen)


def _round(lines: _Lines, accounts: _Accounts, mandated: np.ndarray) -> np.ndarray:
    """Shares per line: rounded in the direction that keeps the limits, then the kernel."""
    wanted = lines.dollars / lines.price
    sell = lines.side == SELL
    closing = sell & (wanted >= lines.lot_quantity * (1.0 - _DUST))
    whole = ~lines.fractional & ~closing
    turnover = (~np.isnan(accounts.turnover_limit) & ~mandated)[lines.account]
    budget = (~np.isnan(accounts.tax_budget) & accounts.taxable & ~mandated)[lines.account]
    gain = lines.tax_per_share > 0
    down = whole & (turnover | (budget & sell & gain))
    up = whole & budget & ~turnover & sell & lines.loss
    dollars = lines.dollars.copy()
    dollars[down] = np.floor(wanted[down] + _DUST) * lines.price[down]
    dollars[up] = np.minimum(np.ceil(wanted[up] - _DUST), lines.lot_quantity[up]) * lines.price[up]
    rounded = round_trades(lines.offsets, lines.side, lines.price, lines.fractional, dollars,
                           lines.lot_quantity, accounts.cash, accounts.floor, accounts.min_trade)
    return rounded.shares.copy()


def _cut(shares, i, cut, lines, min_trade) -> None:
    """Take ``cut`` shares (whole unless fractional) off line ``i``; drop it under ``min_trade``."""
    if not lines.fractional[i]:
        cut = np.ceil(cut - _DUST)
    left = shares[i] - cut
    if left <= shares[i] * _DUST or left * lines.price[i] < min_trade:
        left = 0.0
    shares[i] = left


def _trim(shares: np.ndarray, lines: _Lines, accounts: _Accounts, mandated: np.ndarray) -> None:
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


def _invest(shares: np.ndarray, lines: _Lines, accounts: _Accounts, result: SolverResult) -> None:
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
                    want, room = math.ceil(want - _DUST), math.floor(room + _DUST)
                add = min(want, room)
                if add <= 0 or (held <= 0 and add * line_price < smallest - CASH_TOLERANCE):
                    continue
                shares[i] = held + add
                cash -= add * line_price


def _reasons(lines: _Lines, shares: np.ndarray, accounts: _Accounts, exclude: np.ndarray,
             targeted: np.ndarray, asset_class: np.ndarray) -> np.ndarray:
    """The reason of each line: the first rule of the module docstring that applies."""
    a, i = lines.account, lines.security
    sell = lines.side == SELL
    held = accounts.held[a, i] > 0
    # households that harvest a loss today, per asset class and security
    loss_sale = sell & (shares > 0) & lines.loss & accounts.taxable[a] & accounts.harvest[a]
    # a buy replaces when its household's (asset class) harvests a security other than its own:
    # codes (household, class) * n + security, distinct over the loss sales, counted per key
    n = int(i.max()) + 1 if i.size else 1
    key = accounts.h[a] * (int(asset_class.max()) + 1 if asset_class.size else 1) + asset_class[i]
    harvested = unique_sorted(key[loss_sale] * n + i[loss_sale])
    in_key = np.searchsorted(harvested, key * n + n) - np.searchsorted(harvested, key * n)
    own = np.searchsorted(harvested, key * n + i)
    own = (own < harvested.size) & (harvested[np.minimum(own, max(harvested.size - 1, 0))] == key * n + i) \
        if harvested.size else np.zeros(i.size, bool)
    replacement = (in_key - own > 0) & ~sell
    cash = accounts.cash[a]
    choices = [
        (sell & exclude[a, i], Reason.exclude),
        (sell & (accounts.withdrawal[a] > 0), Reason.withdrawal),
        (sell & (cash < 0), Reason.overdraft),
        (sell & (cash < accounts.min_cash[a] + accounts.reserve[a]), Reason.cash_floor),
        (sell & lines.loss & accounts.taxable[a] & accounts.harvest[a], Reason.harvest),
        (replacement, Reason.replacement),
        (~sell & (cash > accounts.cap[a]), Reason.cash_invest),          # NaN cap: never
        (sell & held & ~targeted[a, i], Reason.model_change),
        (~sell & ~held & targeted[a, i], Reason.model_change),
    ]
    return np.select([c for c, _ in choices], [r for _, r in choices], Reason.rebalance).astype(object)


def _infeasible_detail(floor: float, cash_after: float, all_sold: bool) -> str:
    how = ("with everything that may be sold sold" if all_sold
           else "after rounding the solver's sells to shares")
    return (f"cash floor {floor:,.2f} USD (min_cash + reserve_cash + withdrawal) is out of reach: "
            f"{floor - cash_after:,.2f} USD missing {how}")


def propose(tables: Mapping[str, pa.Table], targets: Targets, problem: ProblemBatch, index: BatchIndex,
            result: SolverResult, as_of: dt.date,
            policy: PolicyConfig = PolicyConfig()) -> tuple[pa.Table, pa.Table]:
    """The ``trades`` and ``accounts`` rows of every account of a solved batch.

    Parameters
    ----------
    tables
        The book's tables (those :func:`engine.problem.build_problem_batch` read).
    targets
        From :func:`engine.targets.build_targets` on the same book.
    problem, index
        From :func:`engine.problem.build_problem_batch`.
    result
        ``engine.solver.solve(problem)``; amounts in units of household value V.
    as_of
        The proposals' date.
    policy
        ``risk_aversion`` and ``harvest_deferral`` of the score.

    Returns
    -------
    trades, accounts : pa.Table
        Conformed to ``schema.RUN_TABLES["trades"]`` and ``["accounts"]``; trades
        ordered by account, side, security and lot, accounts by account.
    """
    accounts = _Accounts(tables, problem, index)
    accounts.tax_budget = prorated_budget(accounts.tax_budget, as_of, policy)
    A = len(accounts)
    security_ids = np.asarray(index.security_ids, dtype=object)
    real = np.flatnonzero(security_ids != None)  # noqa: E711
    restrictions = tables.get("restrictions")
    exclude = np.zeros((A, security_ids.size), bool)
    never_sell = np.zeros_like(exclude)
    account_keys = accounts.ids.astype(str)
    for matrix, rule in ((exclude, Rule.exclude), (never_sell, Rule.never_sell)):
        matrix[:, real] = _rule_matrix(restrictions, rule, tables["securities"], account_keys,
                                       security_ids[real].astype(str))
    # lots the problem forces out: screens, and the purchases rule 6's exception sells with them
    shard_lots = _Lots(index, accounts)
    width = shard_lots.of(problem.lot_width)
    forced_lots = (shard_lots.of(problem.sell_lower) >= width * (1.0 - _DUST)) & (width > 0)
    forced = np.zeros((A, security_ids.size), bool)
    forced[shard_lots.account[forced_lots], shard_lots.security[forced_lots]] = True
    # a screen that waits for a wash-sale window mandates no sale of what waits
    waits, waiting = screen_window.by_account(index.held_back, accounts.h, accounts.s, security_ids.size)
    mandated = _mandated(accounts, exclude & ~waits, never_sell) | forced.any(axis=1)
    failed = np.asarray(result.status)[accounts.h] == NON_FINITE
    trading = ~accounts.suspended & ~failed

    lines = _lines(tables, problem, index, result, accounts, shard_lots, trading, as_of)
    shares = _round(lines, accounts, mandated)
    _trim(shares, lines, accounts, mandated)
    _invest(shares, lines, accounts, result)

    keep = shares > 0
    value = shares * lines.price
    sell = lines.side == SELL
    gain = np.where(sell, value - lines.basis * shares / np.where(lines.lot_quantity > 0, lines.lot_quantity, 1.0),
                    np.nan)
    est_tax = np.where(sell, gain * lines.rate, 0.0)
    raw_weights, target, class_target = _targets(targets, accounts, security_ids,
                                                 np.shape(problem.class_target)[1])
    reasons = _reasons(lines, shares, accounts, exclude | forced, raw_weights > 0, np.asarray(problem.asset_class))

    # trades table
    k = np.flatnonzero(keep)
    lots = tables["lots"]
    lot_ids = pa.nulls(k.size, pa.string())
    sold_rows = lines.lot_row[k] >= 0
    if sold_rows.any():
        taken = lots.column(Col.lot_id).take(pa.array(lines.lot_row[k][sold_rows])).combine_chunks()
        lot_ids = pc.replace_with_mask(lot_ids, pa.array(sold_rows), taken)
    term = pa.array(np.where(lines.long[k], Term.long, Term.short), pa.string())
    account_of = pa.array(lines.account[k])          # per-account and per-security strings, taken by Arrow
    trades = pa.table({
        Col.as_of: pa.array(np.full(k.size, np.datetime64(as_of, "D")), pa.date32()),
        Col.account_id: pa.array(accounts.ids.tolist(), pa.string()).take(account_of),
        Col.household_id: pa.array(accounts.household.tolist(), pa.string()).take(account_of),
        Col.security_id: pa.array(security_ids.tolist(), pa.string()).take(pa.array(lines.security[k])),
        Col.side: pa.array(np.where(sell[k], Side.sell, Side.buy), pa.string()),
        Col.lot_id: lot_ids,
        Col.quantity: shares[k], Col.price: lines.price[k], Col.value: value[k],
        Col.realized_gain: pa.array(gain[k], pa.float64(), mask=~sell[k]),
        Col.term: pc.if_else(pa.array(sell[k]), term, pa.scalar(None, pa.string())),
        Col.est_tax: est_tax[k], Col.reason: pa.array(reasons[k].tolist(), pa.string())})
    # Arrow sorts the strings in C++ (a NumPy lexsort of str arrays was a tenth of a shard's proposals)
    trades = trades.sort_by([(Col.account_id, "ascending"), (Col.side, "ascending"),
                             (Col.security_id, "ascending"), (Col.lot_id, "ascending")])

    # accounts table
    def per_account(values, where=keep):
        return np.bincount(lines.account[where], values[where], A)

    bought = np.zeros((A, security_ids.size))
    np.add.at(bought, (lines.account, lines.security), np.where(sell, -value, value))
    signed = np.where(sell, value, -value)
    cash_after = accounts.cash + per_account(signed)
    positive = accounts.value > 0
    denominator = np.where(positive, accounts.value, 1.0)[:, None]
    before = np.where(positive[:, None], accounts.held / denominator, 0.0)
    after = np.where(positive[:, None], (accounts.held + bought) / denominator, 0.0)
    te_before = _tracking_error(problem, before, target)
    te_after = _tracking_error(problem, after, target)
    drift_before, drift_after = _drift(problem, before, class_target), _drift(problem, after, class_target)
    taxable_sell = keep & sell & accounts.taxable[lines.account]
    loss_sell = taxable_sell & (gain < 0)
    realized_st = per_account(np.nan_to_num(gain), keep & sell & ~lines.long)
    realized_lt = per_account(np.nan_to_num(gain), keep & sell & lines.long)
    proposal_tax = per_account(est_tax)
    harvested = np.maximum(-per_account(np.nan_to_num(gain), loss_sell), 0.0)
    tax_saved = np.maximum(-per_account(est_tax, loss_sell), 0.0)
    gain_tax = per_account(np.maximum(est_tax, 0.0))
    trade_cost = per_account(lines.spread * value)
    risk = policy.risk_aversion * (te_before ** 2 - te_after ** 2) * accounts.value
    harvest_value = loss_value(tax_saved, harvested, accounts.lt_rate, policy)
    score = np.where(positive, (risk + harvest_value - gain_tax - trade_cost)
                     / denominator[:, 0], 0.0)
    trade_count = per_account(np.ones(lines.account.size)).astype(np.int32)

    # statuses
    sellable = shard_lots.per_account(shard_lots.of(result.problem.sell_upper) > 0, A)
    closed = keep & sell & (shares >= lines.lot_quantity * (1.0 - _DUST))
    closed_lots = np.bincount(lines.account[closed], minlength=A)
    fully_sold = closed_lots >= sellable
    status = np.where(trade_count > 0, Status.proposed, Status.no_trade).astype(object)
    detail = np.full(A, None, dtype=object)
    short = trading & (cash_after < accounts.floor - CASH_TOLERANCE)
    for a in np.flatnonzero(short):
        status[a] = Status.infeasible
        detail[a] = _infeasible_detail(accounts.floor[a], cash_after[a], bool(fully_sold[a]))
    for a in np.flatnonzero(trading & (waiting != None)):  # noqa: E711
        status[a] = Status.infeasible
        detail[a] = "; ".join(filter(None, (detail[a], waiting[a])))
    status[failed] = Status.failed
    detail[failed] = ("the solver returned non-finite numbers for this household "
                      "(status non_finite): no trades proposed")
    status[accounts.suspended] = Status.suspended
    detail[accounts.suspended] = "trading suspended by a person: no trades proposed"

    rows = pa.table({
        Col.as_of: pa.array([as_of] * A, pa.date32()),
        Col.account_id: pa.array(accounts.ids.tolist(), pa.string()),
        Col.household_id: pa.array(accounts.household.tolist(), pa.string()),
        Col.status: pa.array(status.tolist(), pa.string()),
        Col.detail: pa.array(detail.tolist(), pa.string()),
        Col.mandated: mandated, Col.value: accounts.value, Col.cash_before: accounts.cash,
        Col.cash_after: cash_after,
        Col.tracking_error_before: te_before, Col.tracking_error_after: te_after,
        Col.drift_before: drift_before, Col.drift_after: drift_after,
        Col.turnover: np.where(positive, per_account(value) / denominator[:, 0], 0.0),
        Col.realized_st: realized_st, Col.realized_lt: realized_lt, Col.est_tax: proposal_tax,
        Col.harvested_loss: harvested, Col.tax_saved: tax_saved, Col.trade_cost: trade_cost,
        Col.score: score, Col.trade_count: trade_count,
        Col.iterations: np.asarray(result.iterations)[accounts.h].astype(np.int32),
        Col.residual: np.asarray(result.primal_residual, float)[accounts.h]})
    rows = rows.take(pa.array(np.argsort(accounts.ids.astype(str), kind="stable")))
    return (schema.conform(trades, schema.RUN_TABLES["trades"]),
            schema.conform(rows, schema.RUN_TABLES["accounts"]))


def status_rows(accounts_table: pa.Table, account_ids: Sequence[str], status: str | Sequence[str],
                details: str | Sequence[str | None] | None, as_of: dt.date, *,
                lots: pa.Table | None = None, securities: pa.Table | None = None) -> pa.Table:
    """``accounts`` rows, without trades, for accounts that never reached the solver.

    Parameters
    ----------
    accounts_table
        The book's ``accounts`` table.
    account_ids
        The accounts (each must be in ``accounts_table``).
    status
        One status for all (e.g. ``Status.rejected``, ``Status.failed``) or one per account.
    details
        The detail, in words: one for all or one per account.
    as_of
        The run's date.
    lots, securities
        The book's tables; when both are given, ``value`` is ``cash + Σ quantity × price``
        over the lots with a price, otherwise the cash alone.

    Returns
    -------
    pa.Table
        Conformed to ``schema.RUN_TABLES["accounts"]``, ordered as ``account_ids``:
        cash after = cash before, tracking error, drift and every amount 0, ``mandated``
        from the accounts table (withdrawal, overdraft, cash below the floor).
    """
    ids = list(account_ids)
    count = len(ids)
    rows = index_in(ids, accounts_table.column(Col.account_id))
    if (rows < 0).any():
        missing = [a for a, r in zip(ids, rows) if r < 0]
        raise ValueError(f"accounts not in the accounts table: {missing[:5]}")
    cash = _numbers(accounts_table, Col.cash, rows).astype(float)
    withdrawal = _numbers(accounts_table, Col.withdrawal, rows).astype(float)
    floor = (_numbers(accounts_table, Col.min_cash, rows) + _numbers(accounts_table, Col.reserve_cash, rows)
             + withdrawal)
    household = _numbers(accounts_table, Col.household_id, rows, None).astype(object)
    household = np.where(household == None, np.asarray(ids, dtype=object), household)  # noqa: E711
    value = cash.copy()
    if lots is not None and securities is not None and lots.num_rows:
        lot_account = index_in(lots.column(Col.account_id), ids)
        mine = np.flatnonzero(lot_account >= 0)
        if mine.size:
            sec = index_in(lots.column(Col.security_id).take(pa.array(mine)), securities.column(Col.security_id))
            price = np.where(sec >= 0, _numbers(securities, Col.price, np.maximum(sec, 0)), np.nan)
            worth = _numbers(lots, Col.quantity, mine).astype(float) * np.nan_to_num(price)
            value += np.bincount(lot_account[mine], worth, count)
    statuses = [status] * count if isinstance(status, str) else list(status)
    detail_list = [details] * count if details is None or isinstance(details, str) else list(details)
    zeros = np.zeros(count)
    table = pa.table({
        Col.as_of: pa.array([as_of] * count, pa.date32()),
        Col.account_id: pa.array(ids, pa.string()),
        Col.household_id: pa.array(household.tolist(), pa.string()),
        Col.status: pa.array(statuses, pa.string()), Col.detail: pa.array(detail_list, pa.string()),
        Col.mandated: (withdrawal > 0) | (cash < 0) | (cash < floor - CASH_TOLERANCE),
        Col.value: value, Col.cash_before: cash, Col.cash_after: cash,
        Col.tracking_error_before: zeros, Col.tracking_error_after: zeros,
        Col.drift_before: zeros, Col.drift_after: zeros, Col.turnover: zeros,
        Col.realized_st: zeros, Col.realized_lt: zeros, Col.est_tax: zeros,
        Col.harvested_loss: zeros, Col.tax_saved: zeros, Col.trade_cost: zeros, Col.score: zeros,
        Col.trade_count: np.zeros(count, np.int32), Col.iterations: np.zeros(count, np.int32),
        Col.residual: zeros})
    return schema.conform(table, schema.RUN_TABLES["accounts"])
