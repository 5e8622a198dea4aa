"""Arrow → ``ProblemBatch``: the numbers of a shard of households, padded to a shape bucket.

For a shard (whole households), :func:`build_problem_batch` gathers from the
book's tables, the targets and the kernels everything the solver needs, in
units of each household's value ``V = Σ_a (cash_a + Σ_lots quantity × price)``
(USD → fraction of V):

* the universe ``n``: the securities any account of the shard holds or
  targets, and the substitutes its accounts can use
  (:mod:`engine.rebalance.substitutes`: target weight 0, bought only by their
  account), padded to :func:`engine.solver.shapes.pad_securities` (padding
  securities may not be bought, have no exposure and unit specific variance);
* the risk model restricted to it: ``X`` (n × k) from ``factor_exposures``,
  ``F`` (k × k) from ``factor_covariance``, ``d`` = ``specific_variance``;
* per account the lots as tax curves (:func:`engine.kernels.lots.tax_curves`),
  padded to ``L`` lots per position (a power of four); ``lot_tax`` is the tax
  per dollar at the account's rates, ``lot_cost = θ_a × lot_tax`` with
  ``θ_a = tax_sensitivity`` (0 in tax-deferred and exempt accounts), a loss
  valued at :func:`engine.rebalance.policy.loss_value` where the account harvests
  (at 0 where it does not), and 0 for a loss below the harvest thresholds
  (``harvest_min_fraction`` of the lot's value or ``harvest_min_dollars``);
* the household target ``w* = Σ_a (value_a − keep_a) w_a / V`` with ``w_a`` the
  account's target weights and ``keep_a = min_cash + reserve_cash + withdrawal``
  (the cash the account must keep is not invested);
* cash floors ``keep_a``, caps ``max_cash + withdrawal + reserve_cash``, the
  tax still allowed this year ``tax_budget − st_rate·realized_st_ytd −
  lt_rate·realized_lt_ytd``, turnover limits ``turnover_limit × value_a``;
* asset-class targets and bands (value-weighted over the household's accounts);
* fixed variables: ``never_buy`` and ``exclude`` → no buy; ``never_sell`` → no
  sale; ``exclude`` → every lot sold (unless ``never_sell``); wash blocks
  (:func:`engine.kernels.wash.wash_sale_blocks`): a blocked purchase → no buy
  of the group anywhere in the household, a blocked loss sale → the group's
  loss lots may not be sold, except where a screen forces a loss sale of the
  group in an account that trades: then, if every account that bought in the
  window can sell, the rule's exception is used and every share the household
  bought in the window is sold too; if one cannot, the screen waits and the
  screened account keeps its loss lots of the group
  (:func:`engine.rebalance.screen_window.screen_in_window`, whose ``HeldBack`` records
  ``BatchIndex.held_back`` keeps); either way the group is not bought anywhere
  in the household today; suspended accounts → every variable fixed at 0 and
  no cash rows.

Households are padded to ``m`` accounts, a power of two (1, 2, 4, ...), so a
night compiles a handful of shapes (every ladder: :mod:`engine.solver.shapes`).
The gathering from Arrow into the batch's slots is
:mod:`engine.rebalance.shard_arrays`; here the bounds, the account rows and the
batch.  Pure: no storage, no ray.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import pyarrow as pa

from engine.contract.arrow import index_in, numbers, strings
from engine.contract.config import PolicyConfig
from engine.contract.schema import Col, Rule, TaxStatus
from engine.kernels import wash as wash_kernel
from engine.kernels.dates import to_days
from engine.rebalance import policy as tax_policy
from engine.rebalance import screen_window, substitutes
from engine.rebalance.shard_arrays import (AccountTerms, Households, LotArrays, SecurityTerms, ShardLots, ShardTargets,
                                           Universe, account_terms, account_values, household_slots, lot_arrays,
                                           positions, risk_model, security_terms, shard_lots, shard_targets,
                                           shard_universe)
from engine.rebalance.targets import Targets, restriction_matrix
from engine.solver.shapes import pad_position_lots, pad_securities
from engine.solver.types import DEFAULT_PENALTIES, ProblemBatch

__all__ = ["ProblemBatch", "BatchIndex", "build_problem_batch"]


@dataclass(frozen=True)
class BatchIndex:
    """Where each slot of a ``ProblemBatch`` comes from.

    Attributes
    ----------
    household_ids : (B,) str
    account_ids : (B, m) object
        ``None`` in padding slots.
    security_ids : (n,) object
        ``None`` for padding securities.
    household_value : (B,) float64
        V, USD: multiply a solution by it to get dollars.
    lot_row : (B, m, n, L) int64
        Row of the ``lots`` table each lot variable stands for; -1 on padding.
    held_back : tuple of engine.rebalance.screen_window.HeldBack
        Screened loss lots kept today for the wash-sale rule: their accounts are ``infeasible``.
    window_sales : tuple of (household, account, column)
        Positions whose wash-window purchases are forced out so that their group's older losses
        may be harvested (:func:`engine.rebalance.screen_window.harvest_in_window`): a harvest,
        not a mandate.
    """

    household_ids: np.ndarray
    account_ids: np.ndarray
    security_ids: np.ndarray
    household_value: np.ndarray
    lot_row: np.ndarray
    held_back: tuple = ()
    window_sales: tuple = ()


@dataclass(frozen=True)
class _Bounds:
    """The bounds of the trade variables, units of V; the steps of assembly tighten them in place.

    Attributes
    ----------
    buy_upper : (B, m, n) float64
        Most of each security an account may buy (inf: no limit).
    sell_upper, sell_lower : (B, m, n, L) float64
        Most and least of each lot an account may, or must, sell.
    """

    buy_upper: np.ndarray
    sell_upper: np.ndarray
    sell_lower: np.ndarray


def build_problem_batch(tables: Mapping[str, pa.Table], targets: Targets, account_ids: Sequence[str],
                        as_of: dt.date, policy: PolicyConfig = PolicyConfig(), *,
                        accounts_per_household: int | None = None,
                        lots_per_position: int | None = None,
                        pad_universe: Callable[[int], int] | None = None) -> tuple[ProblemBatch, BatchIndex]:
    """Assemble the problem of the households of ``account_ids``.

    Parameters
    ----------
    tables
        The book's tables (validated; rejected accounts left out of ``account_ids``).
    targets
        From :func:`engine.rebalance.targets.build_targets` on the same book.
    account_ids
        The shard's accounts: whole households.
    as_of
        The proposals' date.
    policy
        ``risk_aversion``, ``harvest_deferral`` and the harvest thresholds.
    accounts_per_household, lots_per_position
        Force the padding ``m`` and ``L`` (default: :func:`engine.solver.shapes.pad_accounts`
        and :func:`~engine.solver.shapes.pad_position_lots` of the most there are).
    pad_universe
        The padded universe size for a count of securities (default
        :func:`engine.solver.shapes.pad_securities`); the nightly job passes at
        least its shard's planned ``n``, so that the shards of a shape share it.

    Returns
    -------
    ProblemBatch, BatchIndex
    """
    securities = tables["securities"]
    shard = household_slots(tables["accounts"], account_ids, accounts_per_household)
    security_ids = strings(securities, Col.security_id)
    security_index = {s: i for i, s in enumerate(security_ids)}
    lot_rows = shard_lots(tables["lots"], shard.account_ids, security_ids)
    account_targets = shard_targets(targets, shard.account_ids, security_index)
    subs = substitutes.usable(tables, targets, shard.account_ids, shard.member)
    universe = shard_universe(security_ids, security_index, lot_rows.security, account_targets,
                              pad_universe or pad_securities, subs)
    X, F, d = risk_model(tables, universe)
    security = security_terms(securities, targets, universe)
    account = account_terms(shard.accounts)
    held = positions(tables["lots"], lot_rows, account, security.table_price, as_of)
    L = lots_per_position or pad_position_lots(int(held.counts.max()) if held.counts.size else 1)
    account_value, V = account_values(held, shard, account.cash, security.table_price)
    lots = lot_arrays(held, shard, universe, account, V, L, as_of, policy)

    never_buy, never_sell, exclude = _restriction_flags(tables, shard, universe)
    bounds = _screen_bounds(lots, never_buy, never_sell, exclude, shard, account)
    w_star, targeted = _household_target(account_targets, shard, universe, account_value, account.keep_cash, V)
    _only_held_or_targeted(bounds, targeted, lots.holdings, shard, universe.local[account_targets.security], subs)
    trading = shard.in_slots(~account.suspended, False, bool)
    limited = shard.in_slots(~np.isnan(numbers(shard.accounts, Col.tax_budget))
                             | ~np.isnan(numbers(shard.accounts, Col.turnover_limit)), True, bool)
    held_back, window_sales = _wash_sale_blocks(tables, shard, universe, security, lot_rows, lots, bounds, trading,
                                                never_sell, limited, as_of, policy)
    _asset_location(bounds.buy_upper, lots.cost, shard.member, shard.slot, account.tax_status, account.theta,
                    account_value, account.keep_cash, security.asset_class, security.asset_classes, w_star, policy)
    _force_harvest(bounds.sell_lower, bounds.sell_upper, lots.width, lots.loss, lots.gain, shard.member, shard.slot,
                   account.taxable & account.harvest, V, policy)
    floor, cap, budget, turnover = _account_limits(shard.accounts, account, account_value, as_of, policy)
    _suspend(bounds, shard, account.suspended)
    class_target, band = _class_targets(w_star, security, targets, account_targets, shard, account_value, V)

    scale = V[shard.member]
    problem = ProblemBatch(
        exposures=X, factor_covariance=F, specific_variance=d, spread=security.spread,
        asset_class=security.asset_class, wash_group=security.wash_group, penalties=np.asarray(DEFAULT_PENALTIES),
        risk_aversion=np.full(shard.count, policy.risk_aversion), target=w_star, holdings=lots.holdings,
        buy_upper=bounds.buy_upper, lot_width=lots.width, lot_cost=lots.cost, lot_tax=lots.tax, lot_loss=lots.loss,
        sell_lower=np.minimum(bounds.sell_lower, bounds.sell_upper), sell_upper=bounds.sell_upper,
        cash=shard.in_slots(account.cash / scale, 0.0), cash_floor=shard.in_slots(floor / scale, -np.inf),
        cash_cap=shard.in_slots(cap / scale, np.inf), tax_budget=shard.in_slots(budget / scale, np.inf),
        turnover_limit=shard.in_slots(turnover / scale, np.inf),
        account_value=shard.in_slots(account_value / scale, 0.0),
        class_target=class_target, class_band=band)
    account_grid = shard.in_slots(shard.account_ids, None, object)
    index = BatchIndex(shard.household_ids.astype(object), account_grid, universe.ids, V, lots.row, tuple(held_back),
                       tuple(window_sales))
    return problem, index


def _restriction_flags(tables: Mapping[str, pa.Table], shard: Households, universe: Universe
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where a ``never_buy``, ``never_sell`` or ``exclude`` restriction covers a position: (B, m, n) bool each.

    What a restriction covers is :func:`engine.rebalance.targets.restriction_matrix`'s rule (the
    security it names, or every security with its tag); restrictions of other accounts and
    securities outside the universe are left out.
    """
    flags = tuple(np.zeros((shard.count, shard.size, universe.size), bool) for _ in range(3))
    restrictions = tables.get("restrictions")
    if restrictions is None or not restrictions.num_rows:
        return flags
    real = universe.ids[:universe.real]
    for rule, covered in zip((Rule.never_buy, Rule.never_sell, Rule.exclude), flags):
        account, column = restriction_matrix(restrictions, tables["securities"], shard.account_ids, real,
                                             rule).nonzero()
        covered[shard.member[account], shard.slot[account], column] = True
    return flags


def _screen_bounds(lots: LotArrays, never_buy: np.ndarray, never_sell: np.ndarray, exclude: np.ndarray,
                   shard: Households, account: AccountTerms) -> _Bounds:
    """The bounds the restrictions and the waiting gains set, units of V.

    ``never_buy`` and ``exclude`` → no buy; ``never_sell`` → no sale; ``exclude`` → every lot
    sold (unless ``never_sell``); a gain near long-term is not sold, unless a screen forces it
    or the account is short of its cash floor.
    """
    width = lots.width
    buy_upper = np.full(lots.holdings.shape, np.inf)
    sell_upper = width.copy()
    sell_lower = np.zeros(width.shape)
    buy_upper[never_buy | exclude] = 0.0
    sell_upper[never_sell] = 0.0
    forced = exclude & ~never_sell
    sell_lower[forced] = width[forced]
    # near long-term gains wait, unless a screen forces them or the account needs cash
    short_of_cash = shard.in_slots(account.cash < account.keep_cash, False, bool)
    sell_upper[lots.waiting & ~forced[..., None] & ~short_of_cash[:, :, None, None]] = 0.0
    return _Bounds(buy_upper, sell_upper, sell_lower)


def _household_target(account_targets: ShardTargets, shard: Households, universe: Universe, account_value: np.ndarray,
                      keep_cash: np.ndarray, V: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The household target ``w* = Σ_a (value_a − keep_a)⁺ w_a / V`` (B, n), fractions of V, and where it is set.

    The cash an account must keep (``keep_a``, USD) is not invested.
    """
    member, local = shard.member, universe.local
    targeted = np.zeros((shard.count, universe.size), bool)
    tw = account_targets.weights.tocoo()
    w_star = np.zeros((shard.count, universe.size))
    invest = np.maximum(account_value - keep_cash, 0.0)
    cols = local[account_targets.security[tw.col]]
    ok = cols >= 0
    np.add.at(w_star, (member[tw.row[ok]], cols[ok]), tw.data[ok] * invest[tw.row[ok]])
    w_star /= V[:, None]
    targeted[member[tw.row[ok]], cols[ok]] = True
    return w_star, targeted


def _only_held_or_targeted(bounds: _Bounds, targeted: np.ndarray, holdings: np.ndarray, shard: Households,
                           column: np.ndarray, subs) -> None:
    """Only securities the household holds or targets, and an account's usable substitutes
    (``subs``, (A, ·) sparse; ``column`` maps its columns into the universe), may be bought,
    and none in padding slots, in place."""
    buy_upper = bounds.buy_upper
    held = holdings.sum(axis=1) > 0
    allowed = np.broadcast_to((targeted | held)[:, None, :], buy_upper.shape).copy()
    if subs.nnz:
        own = subs.tocoo()
        allowed[shard.member[own.row], shard.slot[own.row], column[own.col]] = True
    buy_upper[~allowed] = 0.0
    present = shard.in_slots(True, False, bool)
    buy_upper[~present] = 0.0                         # padding accounts trade nothing


def _window_blocks(transactions: pa.Table | None, shard: Households, universe: Universe,
                   group_code: np.ndarray, as_of: dt.date) -> tuple[wash_kernel.WashBlocks, np.ndarray] | None:
    """The wash-sale blocks of the shard's households' recent trades, and the accounts their rows name.

    A loss in any account of the household counts (rule 6).  A household-mate that is not
    solved trades under a solved account's id (:func:`engine.rebalance.shards.household_transactions`);
    it is named after the shard's accounts.  None where the shard has no trades.
    """
    if transactions is None or not transactions.num_rows:
        return None
    account_slot = shard.account_slot()
    wanted = shard.account_ids
    t_acc = strings(transactions, Col.account_id)
    in_t = np.isin(t_acc, list(account_slot))
    if not in_t.any():
        return None
    t = transactions.filter(pa.array(in_t))
    t_acc = t_acc[in_t]
    t_sec = np.asarray([universe.security_index.get(s, -1) for s in strings(t, Col.security_id)])
    t_ok = t_sec >= 0
    t_member = np.asarray([account_slot[a][0] for a in t_acc])
    t_row = index_in(t_acc, wanted).copy()
    traded_by = (strings(t, Col.traded_by) if Col.traded_by in t.column_names
                 else np.full(t.num_rows, None, dtype=object))
    outside = traded_by != None  # noqa: E711
    outsiders = np.unique(traded_by[outside].astype(str))
    t_row[outside] = wanted.size + np.searchsorted(outsiders, traded_by[outside].astype(str))
    blocks = wash_kernel.wash_sale_blocks(
        t_member[t_ok], group_code[t_sec[t_ok]], t_row[t_ok], t_sec[t_ok],
        to_days(t.column(Col.trade_date))[t_ok],
        wash_kernel.side_codes(strings(t, Col.side))[t_ok],
        numbers(t, Col.quantity)[t_ok], numbers(t, Col.realized_gain)[t_ok],
        int(to_days(as_of)))          # a loss in any account of the household counts (rule 6)
    return blocks, np.concatenate([wanted, outsiders.astype(object)])


def _wash_sale_blocks(tables: Mapping[str, pa.Table], shard: Households, universe: Universe, security: SecurityTerms,
                      lot_rows: ShardLots, lots: LotArrays, bounds: _Bounds, trading: np.ndarray,
                      never_sell: np.ndarray, limited: np.ndarray, as_of: dt.date,
                      policy: PolicyConfig) -> tuple[list[screen_window.HeldBack], list[tuple[int, int, int]]]:
    """Apply the wash-sale rule's blocks to ``bounds``, in place; the screens that wait and the window sales.

    A blocked purchase → no buy of the group anywhere in the household; a blocked loss sale →
    the group's loss lots may not be sold, except where a screen forces a loss sale of the
    group in an account that trades (:func:`engine.rebalance.screen_window.screen_in_window`:
    rule 6's exception, or the screen waits) or where the group's losses are worth selling the
    window's purchases (:func:`engine.rebalance.screen_window.harvest_in_window`, by
    ``policy.window_harvest_ratio``); either way the group is then not bought anywhere in the
    household today.
    """
    found = _window_blocks(tables.get("transactions"), shard, universe, security.group_code, as_of)
    if found is None:
        return [], []
    blocks, trader_ids = found
    wash_group, group_codes_all = security.wash_group, security.group_code
    account_grid = shard.in_slots(shard.account_ids, None, object)
    purchases = screen_window.Purchases(
        blocks, trader_ids, shard.member, shard.slot, universe.local, universe.security_ids, universe.ids,
        account_grid, lots.row, lot_rows.quantity, lot_rows.acquired, trading, never_sell, security.price)
    local_group = -np.ones(group_codes_all.max() + 1, np.int64)
    local_group[group_codes_all[universe.used]] = wash_group[:universe.real]
    # one block per (household, wash group), its sides blocked on every account of the
    # household: all blocks at once (a 10,000-account night has some 90,000)
    group = local_group[blocks.wash_group]
    pairs = np.flatnonzero(group >= 0)
    h_p, g_p = np.asarray(blocks.household)[pairs], group[pairs]
    no_buy = np.asarray(blocks.buy_blocked, bool)[pairs]
    no_loss = np.asarray(blocks.loss_sale_blocked, bool)[pairs]
    buy_blocked = np.zeros((shard.count, int(wash_group.max()) + 1), bool)
    buy_blocked[h_p[no_buy], g_p[no_buy]] = True
    loss_blocked = np.zeros_like(buy_blocked)
    loss_blocked[h_p[no_loss], g_p[no_loss]] = True
    blocked_lots = loss_blocked[:, wash_group][:, None, :, None]                # (B, 1, n, 1)
    # loss lots a screen forces out of an account that trades: rule 6's exception, or the screen waits
    screened = lots.loss & (bounds.sell_lower > 0) & trading[:, :, None, None] & blocked_lots
    screened_groups = np.zeros_like(buy_blocked)
    s_h, _, s_i, _ = np.nonzero(screened)
    screened_groups[s_h, wash_group[s_i]] = True
    # groups with a loss worth harvesting that the window blocks: candidates for the exception
    harvestable = np.zeros_like(buy_blocked)
    if policy.window_harvest_ratio > 0:
        w_h, w_a, w_i, w_l = np.nonzero(lots.loss & blocked_lots & (bounds.sell_upper > bounds.sell_lower))
        worth = lots.cost[w_h, w_a, w_i, w_l] + security.spread[w_i]
        harvestable[w_h[worth < 0], wash_group[w_i[worth < 0]]] = True
    held_back: list[screen_window.HeldBack] = []
    window_sales: list[tuple[int, int, int]] = []
    for pair, h, g in zip(pairs[no_loss], h_p[no_loss], g_p[no_loss]):
        if screened_groups[h, g]:
            in_group = np.flatnonzero(wash_group == g)
            held_back += screen_window.screen_in_window(purchases, pair, h, in_group,
                                                        screened[h][:, in_group], lots.width, bounds.sell_lower)
            buy_blocked[h, g] = True
        elif harvestable[h, g]:
            sales = screen_window.harvest_in_window(
                purchases, pair, h, np.flatnonzero(wash_group == g), lots.width, lots.cost, lots.loss,
                bounds.sell_upper, bounds.sell_lower, security.spread, limited, policy.window_harvest_ratio)
            if sales:
                window_sales += sales
                loss_blocked[h, g] = False
                buy_blocked[h, g] = True
    blocked_lots = loss_blocked[:, wash_group][:, None, :, None]
    bounds.buy_upper[np.broadcast_to(buy_blocked[:, None, wash_group], bounds.buy_upper.shape)] = 0.0
    bounds.sell_upper[lots.loss & (bounds.sell_lower <= 0) & blocked_lots] = 0.0
    return held_back, window_sales


def _asset_location(buy_upper, lot_cost, member, slot, tax_status, theta, account_value, keep_cash,
                    class_of_security, classes, w_star, policy: PolicyConfig) -> None:
    """Tax-inefficient classes go to tax-advantaged accounts (:mod:`engine.rebalance.policy`), in place.

    In a household with a tax-deferred or exempt account whose investable
    value covers the household's target of those classes, the taxable
    accounts may not buy them, and selling them there earns the credit.
    """
    inefficient = np.isin(np.asarray(classes, dtype=object)[class_of_security],
                          list(policy.tax_inefficient_classes)) if len(classes) else np.zeros(0, bool)
    if not inefficient.any():
        return
    B = w_star.shape[0]
    advantaged = tax_status != TaxStatus.taxable
    room = np.bincount(member, weights=np.where(advantaged, np.maximum(account_value - keep_cash, 0.0), 0.0),
                       minlength=B)
    V = np.bincount(member, weights=account_value, minlength=B)
    need = w_star[:, inefficient].sum(axis=1) * np.where(V > 0, V, 1.0)
    located = (room > 0) & (room >= need)
    for a in np.flatnonzero((tax_status == TaxStatus.taxable) & located[member]):
        h, s = member[a], slot[a]
        buy_upper[h, s, inefficient] = 0.0
        lot_cost[h, s, inefficient] -= policy.asset_location_credit * theta[a]


def _force_harvest(sell_lower, sell_upper, width, lot_loss, lot_gain, member, slot, eligible, V,
                   policy: PolicyConfig) -> None:
    """``forced_harvest_dollars`` of losses sold in each eligible account (:mod:`engine.rebalance.policy`), in place."""
    if policy.forced_harvest_dollars <= 0 or not eligible.any():
        return
    for a in np.flatnonzero(eligible):
        h, s = member[a], slot[a]
        usd = width[h, s] * V[h]
        loss = -lot_gain[h, s] * usd
        open_ = lot_loss[h, s] & (sell_upper[h, s] > 0) & (sell_lower[h, s] < width[h, s]) & (loss > 0)
        forced = tax_policy.forced_harvest(np.zeros(usd.size, np.int64), lot_gain[h, s].ravel(),
                                           usd.ravel(), open_.ravel(), policy)
        amount = forced.reshape(usd.shape) / V[h]
        sell_lower[h, s] = np.maximum(sell_lower[h, s], np.minimum(amount, sell_upper[h, s]))


def _account_limits(rows: pa.Table, account: AccountTerms, account_value: np.ndarray, as_of: dt.date,
                    policy: PolicyConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each account's cash floor, cash cap, tax budget left and turnover limit, USD (A,) each.

    Floor ``min_cash + reserve_cash + withdrawal``; cap ``max_cash + withdrawal +
    reserve_cash``; the tax still allowed this year ``tax_budget − st_rate·realized_st_ytd −
    lt_rate·realized_lt_ytd`` (prorated by :func:`engine.rebalance.policy.prorated_budget`);
    turnover ``turnover_limit × value``.  No limit is ±inf; a suspended account has no cash rows.
    """
    taxable, suspended = account.taxable, account.suspended
    max_cash = numbers(rows, Col.max_cash).astype(float)
    cap = np.where(np.isnan(max_cash), np.inf,
                   max_cash + numbers(rows, Col.withdrawal) + numbers(rows, Col.reserve_cash))
    budget = tax_policy.prorated_budget(numbers(rows, Col.tax_budget), as_of, policy)
    ytd = account.st_rate * numbers(rows, Col.realized_st_ytd) + account.lt_rate * numbers(rows, Col.realized_lt_ytd)
    budget = np.where(np.isnan(budget) | ~taxable, np.inf, budget - ytd)
    turnover = numbers(rows, Col.turnover_limit).astype(float)
    turnover = np.where(np.isnan(turnover), np.inf, turnover * np.maximum(account_value, 0.0))
    floor = np.where(suspended, -np.inf, account.keep_cash)
    cap = np.where(suspended, np.inf, cap)
    return floor, cap, budget, turnover


def _suspend(bounds: _Bounds, shard: Households, suspended: np.ndarray) -> None:
    """Every variable of a suspended account fixed at 0, in place."""
    for a in np.flatnonzero(suspended):
        h, s = shard.member[a], shard.slot[a]
        bounds.buy_upper[h, s] = 0.0
        bounds.sell_upper[h, s] = 0.0
        bounds.sell_lower[h, s] = 0.0


def _class_targets(w_star: np.ndarray, security: SecurityTerms, targets: Targets, account_targets: ShardTargets,
                   shard: Households, account_value: np.ndarray, V: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each household's asset-class targets and bands (B, C), fractions of V.

    The target of a class is ``w*`` summed over its securities; the band is the accounts' bands
    weighted by their values (inf where none is set).
    """
    C = len(security.asset_classes)
    class_target = np.zeros((shard.count, C))
    for c in range(C):
        class_target[:, c] = w_star[:, security.asset_class == c].sum(axis=1)
    bands = targets.bands[account_targets.rows]
    band = np.zeros((shard.count, C))
    np.add.at(band, shard.member, bands * np.maximum(account_value, 0.0)[:, None])
    band /= V[:, None]
    band = np.where(band > 0, band, np.inf)
    return class_target, band
