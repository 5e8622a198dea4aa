"""Arrow → ``ProblemBatch``: the numbers of a shard of households, padded to a shape bucket.

For a shard (whole households), :func:`build_problem_batch` gathers from the
book's tables, the targets and the kernels everything the solver needs, in
units of each household's value ``V = Σ_a (cash_a + Σ_lots quantity × price)``
(USD → fraction of V):

* the universe ``n``: the securities any account of the shard holds or
  targets, padded to :func:`engine.solver.shapes.pad_securities` (padding
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
Pure: no storage, no ray.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import pyarrow as pa

from engine.contract.arrow import index_in, unique_sorted
from engine.contract.config import PolicyConfig
from engine.contract.schema import Col, TaxStatus
from engine.kernels import wash as wash_kernel
from engine.kernels.dates import to_days
from engine.kernels.lots import tax_curves
from engine.rebalance import policy as tax_policy
from engine.rebalance import screen_window
from engine.rebalance.targets import Targets
from engine.solver.shapes import pad_accounts, pad_position_lots, pad_securities
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
    """

    household_ids: np.ndarray
    account_ids: np.ndarray
    security_ids: np.ndarray
    household_value: np.ndarray
    lot_row: np.ndarray
    held_back: tuple = ()


def _column(table: pa.Table, name: str, fill=None) -> np.ndarray:
    column = table.column(name)
    if fill is not None:
        column = column.fill_null(fill)
    return np.asarray(column.to_numpy(zero_copy_only=False))


def _strings(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(table.column(name).to_pylist(), dtype=object)


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
    accounts = tables["accounts"]
    securities = tables["securities"]
    wanted = np.asarray(list(account_ids), dtype=object)
    rows = index_in(wanted, accounts.column(Col.account_id).combine_chunks())
    acc = accounts.take(pa.array(rows))
    household_raw = acc.column(Col.household_id).to_pylist()
    household = np.asarray([h if h is not None else a for h, a in zip(household_raw, wanted)], dtype=object)
    households, member = np.unique(household.astype(str), return_inverse=True)
    B = households.size

    # securities and the shard's universe
    sec_ids = _strings(securities, Col.security_id)
    sec_index = {s: i for i, s in enumerate(sec_ids)}
    price_all = _column(securities, Col.price, fill=np.nan).astype(float)
    lots = tables["lots"]
    lot_position = index_in(lots.column(Col.account_id), wanted)     # the lot's account in `wanted`
    lot_rows = np.flatnonzero(lot_position >= 0)
    lot_security = index_in(lots.column(Col.security_id), sec_ids)[lot_rows]
    target_rows = index_in(wanted, targets.account_ids)
    target_weights = targets.weights[target_rows]
    # targets.security_ids may order securities differently from the table
    target_sec = np.asarray([sec_index[s] for s in targets.security_ids], dtype=np.int64)
    used = unique_sorted(np.r_[lot_security, target_sec[unique_sorted(target_weights.indices)]])
    n_real = used.size
    n = (pad_universe or pad_securities)(n_real)
    local = -np.ones(sec_ids.size, np.int64)
    local[used] = np.arange(n_real)
    universe = np.asarray(list(sec_ids[used]) + [None] * (n - n_real), dtype=object)

    # risk model
    exposures_t = tables["factor_exposures"]
    covariance_t = tables["factor_covariance"]
    factors = np.unique(np.concatenate([_strings(covariance_t, Col.factor_1), _strings(covariance_t, Col.factor_2)]))
    factor_index = {f: i for i, f in enumerate(factors)}
    k = factors.size
    X = np.zeros((n, k))
    e_sec = index_in(exposures_t.column(Col.security_id), sec_ids)
    e_sec = np.where(e_sec >= 0, local[e_sec], -1)
    e_fac = index_in(exposures_t.column(Col.factor), factors)
    keep = (e_sec >= 0) & (e_fac >= 0)
    X[e_sec[keep], e_fac[keep]] = _column(exposures_t, Col.exposure)[keep]
    F = np.zeros((k, k))
    f1 = np.asarray([factor_index[f] for f in _strings(covariance_t, Col.factor_1)])
    f2 = np.asarray([factor_index[f] for f in _strings(covariance_t, Col.factor_2)])
    cov = _column(covariance_t, Col.covariance)
    F[f1, f2] = cov
    F[f2, f1] = cov
    d = np.ones(n)
    d[:n_real] = _column(securities, Col.specific_variance)[used]
    spread = np.zeros(n)
    spread[:n_real] = _column(securities, Col.spread_bps)[used] * 1e-4
    classes = list(targets.asset_classes)
    class_of_security = np.zeros(n, np.int32)
    target_position = {sid: i for i, sid in enumerate(targets.security_ids)}
    class_of_security[:n_real] = [targets.security_classes[target_position[sec_ids[j]]] for j in used]
    groups_raw = securities.column(Col.wash_group).to_pylist()
    group_names = np.asarray([g if g is not None else f"\0{s}" for g, s in zip(groups_raw, sec_ids)], dtype=object)
    group_codes_all = np.unique(group_names.astype(str), return_inverse=True)[1]
    wash_group = np.arange(n, dtype=np.int64) + group_codes_all.max() + 1 if sec_ids.size else np.arange(n)
    wash_group[:n_real] = group_codes_all[used]
    wash_group = np.unique(wash_group, return_inverse=True)[1].astype(np.int32)
    price = np.ones(n)
    price[:n_real] = price_all[used]

    # accounts: slots, rates, values
    slot = np.zeros(wanted.size, np.int64)
    for h in range(B):
        members = np.flatnonzero(member == h)
        slot[members] = np.arange(members.size)
    m = accounts_per_household or pad_accounts(int(slot.max()) + 1 if wanted.size else 1)
    account_slot = {a: (member[i], slot[i]) for i, a in enumerate(wanted)}
    tax_status = _strings(acc, Col.tax_status)
    taxable = tax_status == TaxStatus.taxable
    st_rate = np.where(taxable, _column(acc, Col.st_rate), 0.0)
    lt_rate = np.where(taxable, _column(acc, Col.lt_rate), 0.0)
    theta = np.where(taxable, _column(acc, Col.tax_sensitivity), 0.0)
    harvest = _column(acc, Col.harvest).astype(bool)
    suspended = _column(acc, Col.suspended).astype(bool)
    cash = _column(acc, Col.cash).astype(float)

    # positions and tax curves
    lot_quantity = _column(lots, Col.quantity).astype(float)          # per row of the lots table
    quantity = lot_quantity[lot_rows]
    cost_basis = _column(lots, Col.cost_basis)[lot_rows].astype(float)
    lot_acquired = to_days(lots.column(Col.acquired))                 # per row of the lots table
    acquired = lot_acquired[lot_rows]
    acc_pos = lot_position[lot_rows]
    order = np.lexsort((lot_rows, lot_security, acc_pos))
    acc_pos, sec_pos, rows_sorted = acc_pos[order], lot_security[order], lot_rows[order]
    quantity, cost_basis, acquired = quantity[order], cost_basis[order], acquired[order]
    key = acc_pos * sec_ids.size + sec_pos
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if key.size else np.zeros(0, np.int64)
    offsets = np.r_[starts, key.size].astype(np.int64)
    pos_acc, pos_sec = acc_pos[starts], sec_pos[starts]
    curves = tax_curves(offsets, quantity, cost_basis, acquired, price_all[pos_sec],
                        st_rate[pos_acc], lt_rate[pos_acc], int(to_days(as_of)))
    counts = np.diff(offsets)
    L = lots_per_position or pad_position_lots(int(counts.max()) if counts.size else 1)
    value_lots = np.bincount(acc_pos, weights=quantity * price_all[sec_pos], minlength=wanted.size) \
        if key.size else np.zeros(wanted.size)
    account_value = cash + value_lots
    V = np.bincount(member, weights=account_value, minlength=B)
    V = np.where(V > 0, V, 1.0)                       # an empty household: units of 1 USD

    shape = (B, m, n, L)
    width = np.zeros(shape)
    lot_tax = np.zeros(shape)
    lot_cost = np.zeros(shape)
    lot_loss = np.zeros(shape, bool)
    lot_row = -np.ones(shape, np.int64)
    holdings = np.zeros((B, m, n))
    # every lot at once: its position, its value to the objective, then its rank within the
    # position when sorted by that value (the solver's curve order)
    lot_position = np.repeat(np.arange(pos_acc.size), counts)
    lot_acc = pos_acc[lot_position]
    w, slope, gain = curves.width, curves.slope, curves.gain_per_dollar
    valued = tax_policy.lot_costs(slope, gain, w, curves.long_term, harvest[lot_acc], theta[lot_acc],
                                  lt_rate[lot_acc], as_of, policy)
    waiting = tax_policy.near_long_term(acquired[curves.order], gain, curves.long_term,
                                        int(to_days(as_of)), policy)
    resort = np.lexsort((np.arange(valued.size), valued, lot_position))
    position = lot_position[resort]
    rank = np.arange(resort.size) - offsets[position]
    a_of = pos_acc[position]
    slots = (member[a_of], slot[a_of], local[pos_sec[position]], rank)
    width[slots] = w[resort] / V[member[a_of]]
    lot_tax[slots] = slope[resort]
    lot_cost[slots] = valued[resort]
    # a loss in any account counts for the wash-sale rule (CONTRACT §3 rule 6: anywhere in the household)
    lot_loss[slots] = gain[resort] < 0
    lot_row[slots] = rows_sorted[curves.order[resort]]
    lot_gain = np.zeros(shape)
    lot_gain[slots] = gain[resort]
    lot_waiting = np.zeros(shape, bool)
    lot_waiting[slots] = waiting[resort] & (slope[resort] > 0)
    np.add.at(holdings, slots[:3], w[resort] / V[member[a_of]])

    # restrictions
    buy_upper = np.full((B, m, n), np.inf)
    sell_upper = width.copy()
    sell_lower = np.zeros(shape)
    never_buy = np.zeros((B, m, n), bool)
    never_sell = np.zeros((B, m, n), bool)
    exclude = np.zeros((B, m, n), bool)
    tags = securities.column(Col.tags).to_pylist()
    tagged: dict[str, list[int]] = {}
    for j in used:
        for tag in tags[j] or ():
            tagged.setdefault(tag, []).append(int(j))
    restrictions = tables.get("restrictions")
    if restrictions is not None and restrictions.num_rows:
        r_acc = _strings(restrictions, Col.account_id)
        r_rule = _strings(restrictions, Col.rule)
        r_sec = _strings(restrictions, Col.security_id)
        r_tag = _strings(restrictions, Col.tag)
        for a_id, rule, s_id, tag in zip(r_acc, r_rule, r_sec, r_tag):
            if a_id not in account_slot:
                continue
            h, s = account_slot[a_id]
            if s_id is not None:
                hit = [sec_index[s_id]] if s_id in sec_index else []
            else:
                hit = tagged.get(tag, [])
            cols = [local[j] for j in hit if local[j] >= 0]
            target = {"never_buy": never_buy, "never_sell": never_sell, "exclude": exclude}.get(rule)
            if target is not None and cols:
                target[h, s, cols] = True
    buy_upper[never_buy | exclude] = 0.0
    sell_upper[never_sell] = 0.0
    forced = exclude & ~never_sell
    sell_lower[forced] = width[forced]
    # near long-term gains wait, unless a screen forces them or the account needs cash
    keep_cash = (_column(acc, Col.min_cash) + _column(acc, Col.reserve_cash) + _column(acc, Col.withdrawal))
    short_of_cash = np.zeros((B, m), bool)
    short_of_cash[member, slot] = cash < keep_cash
    sell_upper[lot_waiting & ~forced[..., None] & ~short_of_cash[:, :, None, None]] = 0.0
    # only held or targeted securities may be bought; padding never
    targeted = np.zeros((B, n), bool)
    tw = target_weights.tocoo()
    w_star = np.zeros((B, n))
    invest = np.maximum(account_value - keep_cash, 0.0)
    cols = local[target_sec[tw.col]]
    ok = cols >= 0
    np.add.at(w_star, (member[tw.row[ok]], cols[ok]), tw.data[ok] * invest[tw.row[ok]])
    w_star /= V[:, None]
    targeted[member[tw.row[ok]], cols[ok]] = True
    held = holdings.sum(axis=1) > 0
    buy_upper[np.broadcast_to(~(targeted | held)[:, None, :], buy_upper.shape)] = 0.0
    present = np.zeros((B, m), bool)
    present[member, slot] = True
    buy_upper[~present] = 0.0                         # padding accounts trade nothing
    trading = np.zeros((B, m), bool)
    trading[member, slot] = ~suspended
    account_grid = np.full((B, m), None, dtype=object)
    account_grid[member, slot] = wanted

    # wash-sale blocks
    held_back: list[screen_window.HeldBack] = []
    transactions = tables.get("transactions")
    if transactions is not None and transactions.num_rows:
        t_acc = _strings(transactions, Col.account_id)
        in_t = np.isin(t_acc, list(account_slot))
        if in_t.any():
            t = transactions.filter(pa.array(in_t))
            t_acc = t_acc[in_t]
            t_sec = np.asarray([sec_index.get(s, -1) for s in _strings(t, Col.security_id)])
            t_ok = t_sec >= 0
            t_member = np.asarray([account_slot[a][0] for a in t_acc])
            t_row = index_in(t_acc, wanted).copy()
            # a household-mate that is not solved trades under a solved account's id (engine.rebalance.shards)
            traded_by = (_strings(t, Col.traded_by) if Col.traded_by in t.column_names
                         else np.full(t.num_rows, None, dtype=object))
            outside = traded_by != None  # noqa: E711
            outsiders = np.unique(traded_by[outside].astype(str))
            t_row[outside] = wanted.size + np.searchsorted(outsiders, traded_by[outside].astype(str))
            blocks = wash_kernel.wash_sale_blocks(
                t_member[t_ok], group_codes_all[t_sec[t_ok]], t_row[t_ok], t_sec[t_ok],
                to_days(t.column(Col.trade_date))[t_ok],
                wash_kernel.side_codes(_strings(t, Col.side))[t_ok],
                _column(t, Col.quantity)[t_ok], _column(t, Col.realized_gain, fill=np.nan)[t_ok],
                int(to_days(as_of)))          # a loss in any account of the household counts (rule 6)
            purchases = screen_window.Purchases(
                blocks, np.concatenate([wanted, outsiders.astype(object)]), member, slot, local, sec_ids, universe,
                account_grid, lot_row, lot_quantity, lot_acquired, trading, never_sell, price)
            local_group = -np.ones(group_codes_all.max() + 1, np.int64)
            local_group[group_codes_all[used]] = wash_group[:n_real]
            # one block per (household, wash group), its sides blocked on every account of the
            # household: all blocks at once (a 10,000-account night has some 90,000)
            group = local_group[blocks.wash_group]
            pairs = np.flatnonzero(group >= 0)
            h_p, g_p = np.asarray(blocks.household)[pairs], group[pairs]
            no_buy = np.asarray(blocks.buy_blocked, bool)[pairs]
            no_loss = np.asarray(blocks.loss_sale_blocked, bool)[pairs]
            buy_blocked = np.zeros((B, int(wash_group.max()) + 1), bool)
            buy_blocked[h_p[no_buy], g_p[no_buy]] = True
            loss_blocked = np.zeros_like(buy_blocked)
            loss_blocked[h_p[no_loss], g_p[no_loss]] = True
            blocked_lots = loss_blocked[:, wash_group][:, None, :, None]                # (B, 1, n, 1)
            # loss lots a screen forces out of an account that trades: rule 6's exception, or the screen waits
            screened = lot_loss & (sell_lower > 0) & trading[:, :, None, None] & blocked_lots
            screened_groups = np.zeros_like(buy_blocked)
            s_h, _, s_i, _ = np.nonzero(screened)
            screened_groups[s_h, wash_group[s_i]] = True
            for pair, h, g in zip(pairs[no_loss], h_p[no_loss], g_p[no_loss]):
                if screened_groups[h, g]:
                    in_group = np.flatnonzero(wash_group == g)
                    held_back += screen_window.screen_in_window(purchases, pair, h, in_group,
                                                                screened[h][:, in_group], width, sell_lower)
                    buy_blocked[h, g] = True
            buy_upper[np.broadcast_to(buy_blocked[:, None, wash_group], buy_upper.shape)] = 0.0
            sell_upper[lot_loss & (sell_lower <= 0) & blocked_lots] = 0.0

    _asset_location(buy_upper, lot_cost, member, slot, tax_status, theta, account_value, keep_cash,
                    class_of_security, classes, w_star, policy)
    _force_harvest(sell_lower, sell_upper, width, lot_loss, lot_gain, member, slot, taxable & harvest,
                   V, policy)

    # account rows
    def per_slot(values, fill):
        out = np.full((B, m), fill, dtype=float)
        out[member, slot] = values
        return out

    max_cash = _column(acc, Col.max_cash, fill=np.nan).astype(float)
    cap = np.where(np.isnan(max_cash), np.inf,
                   max_cash + _column(acc, Col.withdrawal) + _column(acc, Col.reserve_cash))
    budget = tax_policy.prorated_budget(_column(acc, Col.tax_budget, fill=np.nan), as_of, policy)
    ytd = st_rate * _column(acc, Col.realized_st_ytd) + lt_rate * _column(acc, Col.realized_lt_ytd)
    budget = np.where(np.isnan(budget) | ~taxable, np.inf, budget - ytd)
    turnover = _column(acc, Col.turnover_limit, fill=np.nan).astype(float)
    turnover = np.where(np.isnan(turnover), np.inf, turnover * np.maximum(account_value, 0.0))
    floor = np.where(suspended, -np.inf, keep_cash)
    cap = np.where(suspended, np.inf, cap)
    for a in np.flatnonzero(suspended):
        h, s = member[a], slot[a]
        buy_upper[h, s] = 0.0
        sell_upper[h, s] = 0.0
        sell_lower[h, s] = 0.0
    scale = V[member]
    # asset classes
    C = len(classes)
    class_target = np.zeros((B, C))
    for c in range(C):
        class_target[:, c] = w_star[:, class_of_security == c].sum(axis=1)
    bands = targets.bands[target_rows]
    band = np.zeros((B, C))
    np.add.at(band, member, bands * np.maximum(account_value, 0.0)[:, None])
    band /= V[:, None]
    band = np.where(band > 0, band, np.inf)

    problem = ProblemBatch(
        exposures=X, factor_covariance=F, specific_variance=d, spread=spread,
        asset_class=class_of_security, wash_group=wash_group, penalties=np.asarray(DEFAULT_PENALTIES),
        risk_aversion=np.full(B, policy.risk_aversion), target=w_star, holdings=holdings,
        buy_upper=buy_upper, lot_width=width, lot_cost=lot_cost, lot_tax=lot_tax, lot_loss=lot_loss,
        sell_lower=np.minimum(sell_lower, sell_upper), sell_upper=sell_upper,
        cash=per_slot(cash / scale, 0.0), cash_floor=per_slot(floor / scale, -np.inf),
        cash_cap=per_slot(cap / scale, np.inf), tax_budget=per_slot(budget / scale, np.inf),
        turnover_limit=per_slot(turnover / scale, np.inf),
        account_value=per_slot(account_value / scale, 0.0),
        class_target=class_target, class_band=band)
    index = BatchIndex(households.astype(object), account_grid, universe, V, lot_row, tuple(held_back))
    return problem, index


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
