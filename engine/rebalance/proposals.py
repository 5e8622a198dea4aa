"""Solver results → the run's ``trades`` and ``accounts`` tables (docs/contract.md §2).

:func:`propose` turns a shard's :class:`~engine.solver.types.SolverResult`
(dollars per lot sold and per security bought, in units of household value V)
into share quantities that obey docs/contract.md §3, one ``trades`` row per lot sold
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

Account metrics (units in :data:`engine.contract.schema.RUN_ACCOUNTS`), with ``v`` the
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
  (:func:`engine.rebalance.policy.loss_value`): the value of
  the risk removed and the losses harvested, net of the tax and trading cost
  paid, per unit of account value (0 when v ≤ 0).

Statuses: ``suspended`` (no trades), ``failed`` (the household's solve gave
non-finite numbers; no trades), ``infeasible`` (cash after trading is below the
floor: the detail says by how much; or a screen waits for a wash-sale window,
its loss lots kept today: the detail says what, why and until when, see
:mod:`engine.rebalance.screen_window`; both where both), ``proposed`` (trades), ``no_trade``
(nothing left after rounding).  A household stopped at the iteration limit
still proposes; its ``residual`` tells.
"""

from __future__ import annotations

import datetime as dt
from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.contract import schema
from engine.contract.arrow import index_in, numbers, strings, unique_sorted
from engine.contract.config import PolicyConfig
from engine.contract.rules import cash_floor
from engine.contract.schema import Col, Reason, Rule, Side, Status, Term
from engine.kernels.rounding import CASH_TOLERANCE
from engine.kernels.wash import SELL
from engine.rebalance import screen_window
from engine.rebalance.lines import DUST, Accounts, Lines, Lots
from engine.rebalance.lines import build as build_lines
from engine.rebalance.lines import invest, round_shares, trim
from engine.rebalance.policy import loss_value, prorated_budget
from engine.rebalance.problem import BatchIndex
from engine.rebalance.targets import Targets, restriction_matrix
from engine.solver.types import NON_FINITE, ProblemBatch, SolverResult

__all__ = ["propose", "status_rows"]


def _rule_matrix(restrictions: pa.Table | None, rule: str, securities: pa.Table,
                 account_ids: np.ndarray, security_ids: np.ndarray) -> np.ndarray:
    """Dense (accounts × securities) bool: a ``rule`` restriction covers the pair (by id or tag)."""
    if restrictions is None or not restrictions.num_rows:
        return np.zeros((account_ids.size, security_ids.size), bool)
    return restriction_matrix(restrictions, securities, account_ids, security_ids, rule).toarray() > 0


def _targets(targets: Targets, accounts: Accounts, security_ids: np.ndarray, n_classes: int):
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
    """``max_c |Σ_{i∈c} w_i − class_target_c|`` per row (weights of account value); 0 without classes."""
    n_classes = class_target.shape[1]
    onehot = (np.asarray(problem.asset_class)[:, None] == np.arange(n_classes)[None, :]).astype(float)
    gap = np.abs(weights @ onehot - class_target)
    return gap.max(axis=1) if n_classes else np.zeros(weights.shape[0])


def _mandated(accounts: Accounts, exclude: np.ndarray, never_sell: np.ndarray) -> np.ndarray:
    """Per account: a withdrawal, an overdraft, cash below the floor or a held screened security
    (``exclude`` and not ``never_sell``) mandates its trades, which the limits then do not trim."""
    screen = (exclude & ~never_sell & (accounts.held > 0)).any(axis=1)
    return ((accounts.withdrawal > 0) | (accounts.cash < 0)
            | (accounts.cash < accounts.floor - CASH_TOLERANCE) | screen)


def _reasons(lines: Lines, shares: np.ndarray, accounts: Accounts, exclude: np.ndarray, window: np.ndarray,
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
        (sell & ((lines.loss & accounts.taxable[a] & accounts.harvest[a]) | window[a, i]), Reason.harvest),
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


def _restrictions(tables: Mapping[str, pa.Table], accounts: Accounts,
                  security_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense (accounts × securities) bool ``exclude`` and ``never_sell``: a restriction of that rule covers
    the pair (by id or tag); never the padding securities (id None)."""
    real = np.flatnonzero(security_ids != None)  # noqa: E711
    restrictions = tables.get("restrictions")
    exclude = np.zeros((len(accounts), security_ids.size), bool)
    never_sell = np.zeros_like(exclude)
    account_keys = accounts.ids.astype(str)
    for matrix, rule in ((exclude, Rule.exclude), (never_sell, Rule.never_sell)):
        matrix[:, real] = _rule_matrix(restrictions, rule, tables["securities"], account_keys,
                                       security_ids[real].astype(str))
    return exclude, never_sell


def _forced(problem: ProblemBatch, shard_lots: Lots, count: int, n_securities: int) -> np.ndarray:
    """Dense (accounts × securities) bool: the problem forces a lot of the pair out whole.

    Screens, and the purchases rule 6's exception sells with them (everything, where the
    floor is out of reach): the lots whose ``sell_lower`` is their whole width.
    """
    width = shard_lots.of(problem.lot_width)
    forced_lots = (shard_lots.of(problem.sell_lower) >= width * (1.0 - DUST)) & (width > 0)
    forced = np.zeros((count, n_securities), bool)
    forced[shard_lots.account[forced_lots], shard_lots.security[forced_lots]] = True
    return forced


def _window_sales(index, accounts: Accounts, n_securities: int) -> np.ndarray:
    """Dense (accounts × securities) bool: the positions of ``index.window_sales``."""
    window = np.zeros((len(accounts), n_securities), bool)
    row_of = {(int(h), int(s)): r for r, (h, s) in enumerate(zip(accounts.h, accounts.s))}
    for h, account, column in index.window_sales:
        r = row_of.get((h, account))
        if r is not None:
            window[r, column] = True
    return window


def _realized(lines: Lines, shares: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``value``, ``realized_gain`` and ``est_tax`` of each line, USD (step 4 of the module docstring).

    ``realized_gain = q·price − cost_basis·q / lot quantity`` on sells (NaN on buys),
    ``est_tax`` = the gain at the rate of its term (0 on buys, and where not taxable).
    """
    value = shares * lines.price
    sell = lines.side == SELL
    gain = np.where(sell, value - lines.basis * shares / np.where(lines.lot_quantity > 0, lines.lot_quantity, 1.0),
                    np.nan)
    est_tax = np.where(sell, gain * lines.rate, 0.0)
    return value, gain, est_tax


def _trades_table(lots: pa.Table, lines: Lines, shares: np.ndarray, value: np.ndarray, gain: np.ndarray,
                  est_tax: np.ndarray, reasons: np.ndarray, accounts: Accounts, security_ids: np.ndarray,
                  as_of: dt.date) -> pa.Table:
    """The ``trades`` rows: one per line with shares, ordered by account, side, security and lot.

    ``value``, ``gain`` and ``est_tax`` (USD) as :func:`_realized`; ``reasons`` as :func:`_reasons`.
    """
    sell = lines.side == SELL
    k = np.flatnonzero(shares > 0)
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
    return trades.sort_by([(Col.account_id, "ascending"), (Col.side, "ascending"),
                           (Col.security_id, "ascending"), (Col.lot_id, "ascending")])


def _account_metrics(problem: ProblemBatch, lines: Lines, shares: np.ndarray, value: np.ndarray,
                     gain: np.ndarray, est_tax: np.ndarray, accounts: Accounts, target: np.ndarray,
                     class_target: np.ndarray, policy: PolicyConfig) -> dict[str, np.ndarray]:
    """The ``accounts`` columns from ``cash_after`` to ``trade_count``, per account (module docstring).

    ``value``, ``gain``, ``est_tax``: USD per line (:func:`_realized`); ``target`` and
    ``class_target``: the scaled target weights of :func:`_targets`.  Amounts in USD,
    weights, drift, turnover and score per unit of account value.
    """
    A = len(accounts)
    keep = shares > 0
    sell = lines.side == SELL

    def per_account(values, where=keep):
        return np.bincount(lines.account[where], values[where], A)

    bought = np.zeros(accounts.held.shape)
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
    return {
        Col.cash_after: cash_after,
        Col.tracking_error_before: te_before, Col.tracking_error_after: te_after,
        Col.drift_before: drift_before, Col.drift_after: drift_after,
        Col.turnover: np.where(positive, per_account(value) / denominator[:, 0], 0.0),
        Col.realized_st: realized_st, Col.realized_lt: realized_lt, Col.est_tax: proposal_tax,
        Col.harvested_loss: harvested, Col.tax_saved: tax_saved, Col.trade_cost: trade_cost,
        Col.score: score, Col.trade_count: per_account(np.ones(lines.account.size)).astype(np.int32)}


def _fully_sold(lines: Lines, shares: np.ndarray, shard_lots: Lots, final: ProblemBatch, count: int) -> np.ndarray:
    """Per account: the proposal closes at least as many lots as ``final`` (the solved problem) lets it sell."""
    sellable = shard_lots.per_account(shard_lots.of(final.sell_upper) > 0, count)
    closed = (shares > 0) & (lines.side == SELL) & (shares >= lines.lot_quantity * (1.0 - DUST))
    closed_lots = np.bincount(lines.account[closed], minlength=count)
    return closed_lots >= sellable


def _statuses(accounts: Accounts, trading: np.ndarray, failed: np.ndarray, waiting: np.ndarray,
              cash_after: np.ndarray, trade_count: np.ndarray,
              fully_sold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``status`` and ``detail`` (object arrays) of each account, by the module docstring's statuses.

    ``waiting``: per account, the words of a screen that waits for a wash-sale window, or None
    (:func:`engine.rebalance.screen_window.by_account`); ``cash_after`` in USD.
    """
    status = np.where(trade_count > 0, Status.proposed, Status.no_trade).astype(object)
    detail = np.full(len(accounts), None, dtype=object)
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
    return status, detail


def _accounts_table(accounts: Accounts, status: np.ndarray, detail: np.ndarray, mandated: np.ndarray,
                    metrics: Mapping[str, np.ndarray], result: SolverResult, as_of: dt.date) -> pa.Table:
    """The ``accounts`` rows, ordered by account: ``metrics`` as :func:`_account_metrics` and the
    solver's iterations and primal residual of each account's household."""
    A = len(accounts)
    rows = pa.table({
        Col.as_of: pa.array([as_of] * A, pa.date32()),
        Col.account_id: pa.array(accounts.ids.tolist(), pa.string()),
        Col.household_id: pa.array(accounts.household.tolist(), pa.string()),
        Col.status: pa.array(status.tolist(), pa.string()),
        Col.detail: pa.array(detail.tolist(), pa.string()),
        Col.mandated: mandated, Col.value: accounts.value, Col.cash_before: accounts.cash,
        **metrics,
        Col.iterations: np.asarray(result.iterations)[accounts.h].astype(np.int32),
        Col.residual: np.asarray(result.primal_residual, float)[accounts.h]})
    return rows.take(pa.array(np.argsort(accounts.ids.astype(str), kind="stable")))


def propose(tables: Mapping[str, pa.Table], targets: Targets, problem: ProblemBatch, index: BatchIndex,
            result: SolverResult, as_of: dt.date,
            policy: PolicyConfig = PolicyConfig()) -> tuple[pa.Table, pa.Table]:
    """The ``trades`` and ``accounts`` rows of every account of a solved batch.

    Parameters
    ----------
    tables
        The book's tables (those :func:`engine.rebalance.problem.build_problem_batch` read).
    targets
        From :func:`engine.rebalance.targets.build_targets` on the same book.
    problem, index
        From :func:`engine.rebalance.problem.build_problem_batch`.
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
    accounts = Accounts(tables, problem, index)
    accounts.tax_budget = prorated_budget(accounts.tax_budget, as_of, policy)
    security_ids = np.asarray(index.security_ids, dtype=object)
    exclude, never_sell = _restrictions(tables, accounts, security_ids)
    shard_lots = Lots(index, accounts)
    forced = _forced(problem, shard_lots, len(accounts), security_ids.size)
    # window purchases sold so that older losses may be harvested: a harvest, not a mandate
    window = _window_sales(index, accounts, security_ids.size)
    forced &= ~window
    # a screen that waits for a wash-sale window mandates no sale of what waits
    waits, waiting = screen_window.by_account(index.held_back, accounts.h, accounts.s, security_ids.size)
    mandated = _mandated(accounts, exclude & ~waits, never_sell) | forced.any(axis=1)
    failed = np.asarray(result.status)[accounts.h] == NON_FINITE
    trading = ~accounts.suspended & ~failed

    # steps 1-3: lines, rounded to shares, within the limits
    lines = build_lines(tables, problem, index, result, accounts, shard_lots, trading, as_of)
    shares = round_shares(lines, accounts, mandated)
    trim(shares, lines, accounts, mandated)
    invest(shares, lines, accounts, result)

    value, gain, est_tax = _realized(lines, shares)
    raw_weights, target, class_target = _targets(targets, accounts, security_ids,
                                                 np.shape(problem.class_target)[1])
    reasons = _reasons(lines, shares, accounts, exclude | forced, window, raw_weights > 0,
                       np.asarray(problem.asset_class))
    trades = _trades_table(tables["lots"], lines, shares, value, gain, est_tax, reasons, accounts, security_ids,
                           as_of)
    metrics = _account_metrics(problem, lines, shares, value, gain, est_tax, accounts, target, class_target, policy)
    status, detail = _statuses(accounts, trading, failed, waiting, metrics[Col.cash_after],
                               metrics[Col.trade_count],
                               _fully_sold(lines, shares, shard_lots, result.problem, len(accounts)))
    rows = _accounts_table(accounts, status, detail, mandated, metrics, result, as_of)
    return (schema.conform(trades, schema.RUN_TABLES["trades"]),
            schema.conform(rows, schema.RUN_TABLES["accounts"]))


def _account_values(ids: list, cash: np.ndarray, lots: pa.Table | None, securities: pa.Table | None) -> np.ndarray:
    """``cash + Σ quantity × price`` of each of ``ids`` over its lots with a price, USD; the cash alone
    where ``lots`` or ``securities`` is None.

    A number the book gives as NaN or infinite (a rejected account's cash, a lot's quantity or
    price) counts 0: the run's numbers are finite (docs/contract.md §3 rule 14), and the
    account's detail says what was wrong.
    """
    value = _finite(cash)
    if lots is not None and securities is not None and lots.num_rows:
        lot_account = index_in(lots.column(Col.account_id), ids)
        mine = np.flatnonzero(lot_account >= 0)
        if mine.size:
            sec = index_in(lots.column(Col.security_id).take(pa.array(mine)), securities.column(Col.security_id))
            price = np.where(sec >= 0, numbers(securities, Col.price, np.maximum(sec, 0)), np.nan)
            with np.errstate(over="ignore", invalid="ignore"):     # 1e300 × a price: counted 0 below
                worth = numbers(lots, Col.quantity, mine, dtype=float) * _finite(price)
            value += np.bincount(lot_account[mine], _finite(worth), len(ids))
    return value


def _finite(values: np.ndarray) -> np.ndarray:
    """``values`` with NaN and ±inf as 0 (a copy)."""
    return np.where(np.isfinite(values), values, 0.0)


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
        from the accounts table (withdrawal, overdraft, cash below the floor).  A NaN or
        infinite cash or lot value of the book counts 0, so every number is finite.
    """
    ids = list(account_ids)
    count = len(ids)
    rows = index_in(ids, accounts_table.column(Col.account_id))
    if (rows < 0).any():
        missing = [a for a, r in zip(ids, rows) if r < 0]
        raise ValueError(f"accounts not in the accounts table: {missing[:5]}")
    cash = _finite(numbers(accounts_table, Col.cash, rows, dtype=float))
    withdrawal = numbers(accounts_table, Col.withdrawal, rows, dtype=float)
    floor = cash_floor(accounts_table, rows)
    household = strings(accounts_table, Col.household_id, rows)
    household = np.where(household == None, np.asarray(ids, dtype=object), household)  # noqa: E711
    value = _account_values(ids, cash, lots, securities)
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
