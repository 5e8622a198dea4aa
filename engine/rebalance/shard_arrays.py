"""A shard's book as arrays in the slots of its ``ProblemBatch``: problem assembly's first half.

:func:`engine.rebalance.problem.build_problem_batch` reads the book's Arrow tables for the
accounts of a shard (whole households) through this module:

* :func:`household_slots`: each account's household ``h`` (B of them) and slot ``a`` in it,
  ``m`` slots a household (:func:`engine.solver.shapes.pad_accounts`);
* :func:`shard_lots` and :func:`shard_targets`: the shard's rows of the ``lots`` table and of
  the targets;
* :func:`shard_universe`: the securities any account of the shard holds or targets and the
  substitutes it can use (:mod:`engine.rebalance.substitutes`), then padding securities up to ``n``;
* :func:`risk_model` and :func:`security_terms`: the universe's factor model, spreads, asset
  classes, wash groups and prices;
* :func:`account_terms` and :func:`account_values`: each account's tax rates, flags, cash and
  cash floor, its value and its household's value ``V``;
* :func:`positions` and :func:`lot_arrays`: the lots grouped by position into tax curves
  (:func:`engine.kernels.lots.tax_curves`), then laid out as the (B, m, n, L) lot variables
  in units of V.

Pure: no storage, no ray.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from engine.contract.arrow import index_in, numbers, strings, unique_sorted
from engine.contract.config import PolicyConfig
from engine.contract.rules import cash_floor
from engine.contract.schema import Col, TaxStatus
from engine.kernels.dates import to_days
from engine.kernels.lots import TaxCurves, tax_curves
from engine.rebalance import policy as tax_policy
from engine.rebalance.targets import Targets
from engine.solver.shapes import pad_accounts

__all__ = ["Households", "household_slots", "ShardLots", "shard_lots", "ShardTargets", "shard_targets",
           "Universe", "shard_universe", "risk_model", "SecurityTerms", "security_terms", "AccountTerms",
           "account_terms", "account_values", "Positions", "positions", "LotArrays", "lot_arrays"]


@dataclass(frozen=True)
class Households:
    """The shard's accounts in their household slots.

    Attributes
    ----------
    account_ids : (A,) object
        The shard's accounts, in the caller's order.
    accounts : pyarrow.Table
        Their rows of the ``accounts`` table, in that order.
    household_ids : (B,) str
        The households, sorted (an account without ``household_id`` is a household of its own).
    member : (A,) int64
        Each account's household: a row of ``household_ids``.
    slot : (A,) int64
        Each account's slot in its household (the household's accounts in ``account_ids`` order).
    size : int
        ``m``, slots a household: its most accounts, padded.
    """

    account_ids: np.ndarray
    accounts: pa.Table
    household_ids: np.ndarray
    member: np.ndarray
    slot: np.ndarray
    size: int

    @property
    def count(self) -> int:
        """``B``, the households."""
        return self.household_ids.size

    def account_slot(self) -> dict:
        """Account id → (household, slot)."""
        return {a: (self.member[i], self.slot[i]) for i, a in enumerate(self.account_ids)}

    def in_slots(self, values, fill, dtype=float) -> np.ndarray:
        """(B, m) array of ``values`` (one per account, or one for all) in the accounts' slots, ``fill`` elsewhere."""
        out = np.full((self.count, self.size), fill, dtype=dtype)
        out[self.member, self.slot] = values
        return out


def household_slots(accounts: pa.Table, account_ids: Sequence[str], accounts_per_household: int | None
                    ) -> Households:
    """Each of ``account_ids``' household and slot; ``m`` is ``accounts_per_household`` or the most, padded."""
    wanted = np.asarray(list(account_ids), dtype=object)
    rows = index_in(wanted, accounts.column(Col.account_id).combine_chunks())
    acc = accounts.take(pa.array(rows))
    household_raw = acc.column(Col.household_id).to_pylist()
    household = np.asarray([h if h is not None else a for h, a in zip(household_raw, wanted)], dtype=object)
    households, member = np.unique(household.astype(str), return_inverse=True)
    slot = np.zeros(wanted.size, np.int64)
    for h in range(households.size):
        members = np.flatnonzero(member == h)
        slot[members] = np.arange(members.size)
    m = accounts_per_household or pad_accounts(int(slot.max()) + 1 if wanted.size else 1)
    return Households(wanted, acc, households, member, slot, m)


@dataclass(frozen=True)
class ShardLots:
    """The shard's rows of the ``lots`` table.

    Attributes
    ----------
    account : (R,) int64
        Per row of the ``lots`` table: its account's position in the shard's ``account_ids``, -1 outside.
    rows : (N,) int64
        The rows of the shard's lots.
    security : (N,) int64
        Their security's row of the ``securities`` table.
    quantity : (R,) float64
        Per row of the ``lots`` table: shares.
    acquired : (R,) int64
        Per row of the ``lots`` table: days since 1970-01-01.
    """

    account: np.ndarray
    rows: np.ndarray
    security: np.ndarray
    quantity: np.ndarray
    acquired: np.ndarray


def shard_lots(lots: pa.Table, account_ids: np.ndarray, security_ids: np.ndarray) -> ShardLots:
    """The lots of ``account_ids`` (rows of ``lots``) and their securities (rows of ``security_ids``)."""
    lot_account = index_in(lots.column(Col.account_id), account_ids)
    lot_rows = np.flatnonzero(lot_account >= 0)
    lot_security = index_in(lots.column(Col.security_id), security_ids)[lot_rows]
    quantity = numbers(lots, Col.quantity).astype(float)
    return ShardLots(lot_account, lot_rows, lot_security, quantity, to_days(lots.column(Col.acquired)))


@dataclass(frozen=True)
class ShardTargets:
    """The targets of the shard's accounts.

    Attributes
    ----------
    rows : (A,) int64
        Each account's row of the targets.
    weights : scipy.sparse.csr_matrix, (A, len(targets.security_ids))
        Their target weights, fractions of the invested value.
    security : (len(targets.security_ids),) int64
        Row of the ``securities`` table of each column of ``weights``.
    """

    rows: np.ndarray
    weights: sp.csr_matrix
    security: np.ndarray


def shard_targets(targets: Targets, account_ids: np.ndarray, security_index: dict) -> ShardTargets:
    """The target weights of ``account_ids``; ``security_index`` maps a security id to its table row."""
    target_rows = index_in(account_ids, targets.account_ids)
    # targets.security_ids may order securities differently from the table
    target_sec = np.asarray([security_index[s] for s in targets.security_ids], dtype=np.int64)
    return ShardTargets(target_rows, targets.weights[target_rows], target_sec)


@dataclass(frozen=True)
class Universe:
    """The securities of a shard's problem: those it holds or targets, in table order, then padding.

    Attributes
    ----------
    security_ids : (S,) object
        Ids of the book's ``securities`` table.
    security_index : dict
        Security id → row of the ``securities`` table.
    used : (n_real,) int64
        The universe's rows of the ``securities`` table, ascending.
    local : (S,) int64
        Each security's column in the universe, -1 outside.
    ids : (n,) object
        The universe's security ids, ``None`` on padding.
    """

    security_ids: np.ndarray
    security_index: dict
    used: np.ndarray
    local: np.ndarray
    ids: np.ndarray

    @property
    def size(self) -> int:
        """``n``, the padded universe."""
        return self.ids.size

    @property
    def real(self) -> int:
        """Securities that are not padding."""
        return self.used.size


def shard_universe(security_ids: np.ndarray, security_index: dict, lot_security: np.ndarray,
                   targets: ShardTargets, pad: Callable[[int], int], substitutes: sp.csr_matrix | None = None
                   ) -> Universe:
    """The securities the shard's lots (``lot_security``, table rows), target weights and usable
    ``substitutes`` (columns as the target weights') name, padded by ``pad``."""
    targeted = targets.security[unique_sorted(targets.weights.indices)]
    extra = targets.security[unique_sorted(substitutes.indices)] if substitutes is not None else np.zeros(0, np.int64)
    used = unique_sorted(np.r_[lot_security, targeted, extra])
    n_real = used.size
    n = pad(n_real)
    local = -np.ones(security_ids.size, np.int64)
    local[used] = np.arange(n_real)
    ids = np.asarray(list(security_ids[used]) + [None] * (n - n_real), dtype=object)
    return Universe(security_ids, security_index, used, local, ids)


def risk_model(tables, universe: Universe) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The factor model on the universe: exposures ``X`` (n × k), covariance ``F`` (k × k), specific variance ``d``.

    ``d`` is (n,).  From ``factor_exposures``, ``factor_covariance`` (the factors it names, sorted) and
    ``securities.specific_variance``, annualized; a padding security has no exposure and
    specific variance 1.
    """
    exposures_t = tables["factor_exposures"]
    covariance_t = tables["factor_covariance"]
    n, used = universe.size, universe.used
    factors = np.unique(np.concatenate([strings(covariance_t, Col.factor_1), strings(covariance_t, Col.factor_2)]))
    factor_index = {f: i for i, f in enumerate(factors)}
    k = factors.size
    X = np.zeros((n, k))
    e_sec = index_in(exposures_t.column(Col.security_id), universe.security_ids)
    e_sec = np.where(e_sec >= 0, universe.local[e_sec], -1)
    e_fac = index_in(exposures_t.column(Col.factor), factors)
    keep = (e_sec >= 0) & (e_fac >= 0)
    X[e_sec[keep], e_fac[keep]] = numbers(exposures_t, Col.exposure)[keep]
    F = np.zeros((k, k))
    f1 = np.asarray([factor_index[f] for f in strings(covariance_t, Col.factor_1)])
    f2 = np.asarray([factor_index[f] for f in strings(covariance_t, Col.factor_2)])
    cov = numbers(covariance_t, Col.covariance)
    F[f1, f2] = cov
    F[f2, f1] = cov
    d = np.ones(n)
    d[:used.size] = numbers(tables["securities"], Col.specific_variance)[used]
    return X, F, d


@dataclass(frozen=True)
class SecurityTerms:
    """What the problem needs of each security besides the risk model.

    Attributes
    ----------
    spread : (n,) float64
        One-way trading cost, a fraction of the traded value (0 on padding).
    asset_classes : list of str
        The targets' asset classes.
    asset_class : (n,) int32
        Each security's asset class (0 on padding).
    group_code : (S,) int64
        Per row of the ``securities`` table: its wash group, as a code over the whole table
        (a security without ``wash_group`` is a group of its own).
    wash_group : (n,) int32
        The universe's wash groups, numbered from 0 (each padding security a group of its own).
    table_price : (S,) float64
        Per row of the ``securities`` table: price, USD (NaN where null).
    price : (n,) float64
        The universe's prices, USD (1 on padding).
    """

    spread: np.ndarray
    asset_classes: list
    asset_class: np.ndarray
    group_code: np.ndarray
    wash_group: np.ndarray
    table_price: np.ndarray
    price: np.ndarray


def security_terms(securities: pa.Table, targets: Targets, universe: Universe) -> SecurityTerms:
    """Spreads, asset classes, wash groups and prices of the universe's securities."""
    n, n_real, used, security_ids = universe.size, universe.real, universe.used, universe.security_ids
    spread = np.zeros(n)
    spread[:n_real] = numbers(securities, Col.spread_bps)[used] * 1e-4
    class_of_security = np.zeros(n, np.int32)
    target_position = {sid: i for i, sid in enumerate(targets.security_ids)}
    class_of_security[:n_real] = [targets.security_classes[target_position[security_ids[j]]] for j in used]
    groups_raw = securities.column(Col.wash_group).to_pylist()
    group_names = np.asarray([g if g is not None else f"\0{s}" for g, s in zip(groups_raw, security_ids)],
                             dtype=object)
    group_codes_all = np.unique(group_names.astype(str), return_inverse=True)[1]
    wash_group = np.arange(n, dtype=np.int64) + group_codes_all.max() + 1 if security_ids.size else np.arange(n)
    wash_group[:n_real] = group_codes_all[used]
    wash_group = np.unique(wash_group, return_inverse=True)[1].astype(np.int32)
    price_all = numbers(securities, Col.price).astype(float)
    price = np.ones(n)
    price[:n_real] = price_all[used]
    return SecurityTerms(spread, list(targets.asset_classes), class_of_security, group_codes_all, wash_group,
                         price_all, price)


@dataclass(frozen=True)
class AccountTerms:
    """Per account of the shard (in ``account_ids`` order): its tax terms, flags and cash.

    Attributes
    ----------
    tax_status : (A,) object
    taxable : (A,) bool
    st_rate, lt_rate : (A,) float64
        Short- and long-term tax rates, fractions; 0 outside taxable accounts.
    theta : (A,) float64
        ``tax_sensitivity``, a multiplier of the tax in the objective; 0 outside taxable accounts.
    harvest, suspended : (A,) bool
    cash : (A,) float64
        USD.
    keep_cash : (A,) float64
        The cash floor ``min_cash + reserve_cash + withdrawal``, USD (:func:`engine.contract.rules.cash_floor`).
    """

    tax_status: np.ndarray
    taxable: np.ndarray
    st_rate: np.ndarray
    lt_rate: np.ndarray
    theta: np.ndarray
    harvest: np.ndarray
    suspended: np.ndarray
    cash: np.ndarray
    keep_cash: np.ndarray


def account_terms(accounts: pa.Table) -> AccountTerms:
    """The tax terms, flags, cash and cash floor of each row of ``accounts``."""
    tax_status = strings(accounts, Col.tax_status)
    taxable = tax_status == TaxStatus.taxable
    return AccountTerms(
        tax_status, taxable,
        st_rate=np.where(taxable, numbers(accounts, Col.st_rate), 0.0),
        lt_rate=np.where(taxable, numbers(accounts, Col.lt_rate), 0.0),
        theta=np.where(taxable, numbers(accounts, Col.tax_sensitivity), 0.0),
        harvest=numbers(accounts, Col.harvest, fill=None).astype(bool),
        suspended=numbers(accounts, Col.suspended, fill=None).astype(bool),
        cash=numbers(accounts, Col.cash).astype(float),
        keep_cash=cash_floor(accounts))


@dataclass(frozen=True)
class Positions:
    """The shard's lots sorted by (account, security, row) and grouped by position, as tax curves.

    Attributes
    ----------
    account, security, rows : (N,) int64
        Each lot's account (position in ``account_ids``), security and row (of their tables).
    quantity : (N,) float64
        Shares.
    acquired : (N,) int64
        Days since 1970-01-01.
    offsets : (N_positions + 1,) int64
        The lots of position p are ``offsets[p]:offsets[p + 1]``.
    position_account, position_security : (N_positions,) int64
        Each position's account and security.
    curves : engine.kernels.lots.TaxCurves
        Each position's lots, from :func:`engine.kernels.lots.tax_curves`.
    """

    account: np.ndarray
    security: np.ndarray
    rows: np.ndarray
    quantity: np.ndarray
    acquired: np.ndarray
    offsets: np.ndarray
    position_account: np.ndarray
    position_security: np.ndarray
    curves: TaxCurves

    @property
    def counts(self) -> np.ndarray:
        """Lots of each position."""
        return np.diff(self.offsets)


def positions(lots: pa.Table, lot_rows: ShardLots, account: AccountTerms, table_price: np.ndarray,
              as_of: dt.date) -> Positions:
    """Group the shard's lots by (account, security) and make each group a tax curve at ``as_of``'s prices."""
    rows, lot_security = lot_rows.rows, lot_rows.security
    quantity = lot_rows.quantity[rows]
    cost_basis = numbers(lots, Col.cost_basis)[rows].astype(float)
    acquired = lot_rows.acquired[rows]
    acc_pos = lot_rows.account[rows]
    order = np.lexsort((rows, lot_security, acc_pos))
    acc_pos, sec_pos, rows_sorted = acc_pos[order], lot_security[order], rows[order]
    quantity, cost_basis, acquired = quantity[order], cost_basis[order], acquired[order]
    key = acc_pos * table_price.size + sec_pos          # one per (account, security of the table)
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if key.size else np.zeros(0, np.int64)
    offsets = np.r_[starts, key.size].astype(np.int64)
    pos_acc, pos_sec = acc_pos[starts], sec_pos[starts]
    curves = tax_curves(offsets, quantity, cost_basis, acquired, table_price[pos_sec],
                        account.st_rate[pos_acc], account.lt_rate[pos_acc], int(to_days(as_of)))
    return Positions(acc_pos, sec_pos, rows_sorted, quantity, acquired, offsets, pos_acc, pos_sec, curves)


def account_values(held: Positions, households: Households, cash: np.ndarray, table_price: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Each account's value ``cash + Σ quantity × price`` (A,) and its household's ``V`` (B,), USD.

    ``V`` of an empty household is 1: its problem is in units of 1 USD.
    """
    count = households.account_ids.size
    value_lots = np.bincount(held.account, weights=held.quantity * table_price[held.security], minlength=count) \
        if held.account.size else np.zeros(count)
    account_value = cash + value_lots
    V = np.bincount(households.member, weights=account_value, minlength=households.count)
    V = np.where(V > 0, V, 1.0)                       # an empty household: units of 1 USD
    return account_value, V


@dataclass(frozen=True)
class LotArrays:
    """The (B, m, n, L) lot variables, each position's lots in the solver's curve order.

    Attributes
    ----------
    width : float64
        The lot's value, units of V (0 on padding).
    tax : float64
        Tax per dollar sold at the account's rates (the curve's slope).
    cost : float64
        Its cost in the objective (:func:`engine.rebalance.policy.lot_costs`), per dollar.
    loss : bool
        Sold at a loss (in any account: the wash-sale rule is the household's).
    gain : float64
        Gain per dollar sold.
    waiting : bool
        A gain near long-term (:func:`engine.rebalance.policy.near_long_term`).
    row : int64
        Row of the ``lots`` table; -1 on padding.
    holdings : (B, m, n) float64
        Each position's value, units of V.
    """

    width: np.ndarray
    tax: np.ndarray
    cost: np.ndarray
    loss: np.ndarray
    gain: np.ndarray
    waiting: np.ndarray
    row: np.ndarray
    holdings: np.ndarray


def lot_arrays(held: Positions, households: Households, universe: Universe, account: AccountTerms, V: np.ndarray,
               lots_per_position: int, as_of: dt.date, policy: PolicyConfig) -> LotArrays:
    """Lay the positions' lots out as the (B, m, n, L) lot variables, valued by ``policy``."""
    member, slot, counts, offsets = households.member, households.slot, held.counts, held.offsets
    shape = (households.count, households.size, universe.size, lots_per_position)
    width = np.zeros(shape)
    lot_tax = np.zeros(shape)
    lot_cost = np.zeros(shape)
    lot_loss = np.zeros(shape, bool)
    lot_row = -np.ones(shape, np.int64)
    holdings = np.zeros(shape[:3])
    # every lot at once: its position, its value to the objective, then its rank within the
    # position when sorted by that value (the solver's curve order)
    pos_acc, curves = held.position_account, held.curves
    lot_position = np.repeat(np.arange(pos_acc.size), counts)
    lot_acc = pos_acc[lot_position]
    w, slope, gain = curves.width, curves.slope, curves.gain_per_dollar
    valued = tax_policy.lot_costs(slope, gain, w, curves.long_term, account.harvest[lot_acc], account.theta[lot_acc],
                                  account.lt_rate[lot_acc], as_of, policy)
    waiting = tax_policy.near_long_term(held.acquired[curves.order], gain, curves.long_term,
                                        int(to_days(as_of)), policy)
    resort = np.lexsort((np.arange(valued.size), valued, lot_position))
    position = lot_position[resort]
    rank = np.arange(resort.size) - offsets[position]
    a_of = pos_acc[position]
    slots = (member[a_of], slot[a_of], universe.local[held.position_security[position]], rank)
    width[slots] = w[resort] / V[member[a_of]]
    lot_tax[slots] = slope[resort]
    lot_cost[slots] = valued[resort]
    # a loss in any account counts for the wash-sale rule (docs/contract.md §3 rule 6: anywhere in
    # the household)
    lot_loss[slots] = gain[resort] < 0
    lot_row[slots] = held.rows[curves.order[resort]]
    lot_gain = np.zeros(shape)
    lot_gain[slots] = gain[resort]
    lot_waiting = np.zeros(shape, bool)
    lot_waiting[slots] = waiting[resort] & (slope[resort] > 0)
    np.add.at(holdings, slots[:3], w[resort] / V[member[a_of]])
    return LotArrays(width, lot_tax, lot_cost, lot_loss, lot_gain, lot_waiting, lot_row, holdings)
