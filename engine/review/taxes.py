"""Taxes saved or deferred: what Canopy's proposal spares a client, against a plain rebalance.

For each account of a run (with its book) :func:`tax_report` gives, in USD:

* **Saved** — losses harvested by the proposal (``harvested_loss``) and the tax
  they save at the account's rates (``tax_saved``), from the run.
* **Deferred** — against a *plain rebalance to target*: what a rebalancer
  without tax awareness would have sold today.  For account a with value
  ``v = cash + Σ quantity × price`` and ``keep = min_cash + reserve_cash +
  withdrawal`` (the cash the account must hold, as the nightly problem), it
  sells, of each security i held above its target ``t_i = w*_i (v − keep)``
  (``w*`` the account's target weights; a security not in the target has
  ``t_i = 0``), the excess ``h_i − t_i`` in dollars, lots first in first out
  (oldest ``acquired`` first, the usual default of a custodian), fractional
  shares allowed.  Each lot sold realizes ``q·price − cost_basis·q / quantity``,
  long-term by docs/contract.md §3 rule 7, taxed at ``st_rate`` or ``lt_rate`` (0 in
  tax-deferred and exempt accounts).  Its purchases realize nothing.
  ``plain_gain_tax`` is the tax of its lots sold at a gain (its incidental
  losses are not netted, as Canopy's harvested losses are counted as saved
  above, not here); ``gain_tax`` is the same for Canopy's proposal; **tax
  deferred** = ``plain_gain_tax − gain_tax``.  Negative where Canopy realizes
  more gain than the plain rebalance would (a screen or product change it
  carries out at once, or a tax trade-off the client's tax sensitivity allows).
* **Year to date** — net gains realized this year before today
  (``realized_st_ytd``, ``realized_lt_ytd`` of the book, the system of
  record's figures), today's proposal, and their sum, with the tax at the
  account's rates and the tax budget where one is set.

Pure: Arrow tables in, an Arrow table out; no storage.
"""

from __future__ import annotations

import datetime as dt
from typing import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.contract import schema
from engine.contract.arrow import index_in, numbers, strings
from engine.contract.rules import cash_floor
from engine.contract.schema import Col, Side, TaxStatus
from engine.kernels.dates import to_days
from engine.kernels.lots import long_term
from engine.rebalance.targets import Targets

__all__ = ["plain_rebalance", "tax_report"]


def plain_rebalance(tables: Mapping[str, pa.Table], targets: Targets, account_ids, as_of: dt.date
                    ) -> dict[str, np.ndarray]:
    """A plain rebalance to target of each of ``account_ids`` (see the module docstring).

    Returns
    -------
    dict of (len(account_ids),) float arrays, USD: ``value_sold``, ``realized``
    (net gain realized), ``gain_tax`` (tax of the lots sold at a gain).
    """
    ids = list(account_ids)
    n = len(ids)
    accounts, lots, securities = tables["accounts"], tables["lots"], tables["securities"]
    rows = index_in(ids, accounts.column(Col.account_id))
    taxable = strings(accounts, Col.tax_status, rows) == TaxStatus.taxable
    st_rate = np.where(taxable, numbers(accounts, Col.st_rate, rows, fill=0.0, dtype=float), 0.0)
    lt_rate = np.where(taxable, numbers(accounts, Col.lt_rate, rows, fill=0.0, dtype=float), 0.0)
    keep = cash_floor(accounts, rows)

    owner = index_in(lots.column(Col.account_id), ids)
    mine = np.flatnonzero(owner >= 0)
    owner = owner[mine]
    security = index_in(lots.column(Col.security_id).take(pa.array(mine)), securities.column(Col.security_id))
    price = np.where(security >= 0, numbers(securities, Col.price, np.maximum(security, 0), dtype=float), np.nan)
    quantity = numbers(lots, Col.quantity, mine, fill=0.0, dtype=float)
    basis = numbers(lots, Col.cost_basis, mine, fill=0.0, dtype=float)
    acquired = to_days(lots.column(Col.acquired).take(pa.array(mine)))
    worth = np.nan_to_num(quantity * price)
    value = numbers(accounts, Col.cash, rows, fill=0.0, dtype=float) + np.bincount(owner, worth, n)
    invest = np.maximum(value - keep, 0.0)

    # target dollars of each held position
    S = max(securities.num_rows, 1)
    target_rows = index_in(ids, targets.account_ids)
    column = index_in(targets.security_ids, securities.column(Col.security_id))
    weights = targets.weights[np.maximum(target_rows, 0)].tocoo()
    target_key = weights.row.astype(np.int64) * S + column[weights.col]
    target_value = weights.data * invest[weights.row] * (target_rows[weights.row] >= 0)
    position = owner.astype(np.int64) * S + security
    keys, first = np.unique(position, return_inverse=True)
    held = np.bincount(first, worth, keys.size)
    wanted = np.zeros(keys.size)
    found = np.searchsorted(keys, target_key)
    hit = (found < keys.size) & (keys[np.minimum(found, keys.size - 1)] == target_key)
    np.add.at(wanted, found[hit], target_value[hit])
    excess = np.maximum(held - wanted, 0.0)

    # FIFO within each position: oldest lots first (lot order breaks ties)
    order = np.lexsort((mine, acquired, first))
    group = first[order]
    cumulative = np.cumsum(worth[order])
    start = np.r_[0.0, cumulative][np.searchsorted(group, group)]       # cumulative before the group
    before = cumulative - worth[order] - start
    sold_value = np.clip(excess[group] - before, 0.0, worth[order])
    share = np.divide(sold_value, worth[order], out=np.zeros_like(sold_value), where=worth[order] > 0)
    gain = sold_value - basis[order] * share
    is_long = long_term(acquired[order], int(to_days(as_of)))
    account = owner[order]
    tax = gain * np.where(is_long, lt_rate[account], st_rate[account])
    return {"value_sold": np.bincount(account, sold_value, n), "realized": np.bincount(account, gain, n),
            Col.gain_tax: np.bincount(account, np.where(gain > 0, tax, 0.0), n)}


def tax_report(tables: Mapping[str, pa.Table], targets: Targets, run: Mapping[str, pa.Table],
               as_of: dt.date) -> pa.Table:
    """Per account of the run with a target: saved, deferred and year-to-date taxes (module docstring).

    Returns
    -------
    pa.Table of :data:`engine.contract.schema.TAX_REPORT`, in the run's account order.
    """
    accounts = run["accounts"]
    usable = set(np.asarray(targets.account_ids)[targets.usable].tolist())
    ids = [a for a in accounts.column(Col.account_id).to_pylist() if a in usable]
    plain = plain_rebalance(tables, targets, ids, as_of)
    trades = run["trades"]
    sells = trades.filter(pc.equal(trades.column(Col.side), Side.sell))
    owner = index_in(sells.column(Col.account_id), ids)
    tax = numbers(sells, Col.est_tax, fill=None, dtype=float)
    known = owner >= 0
    gain_tax = np.bincount(owner[known], np.maximum(tax[known], 0.0), len(ids))
    run_rows = index_in(ids, accounts.column(Col.account_id))
    book = tables["accounts"]
    rows = index_in(ids, book.column(Col.account_id))
    taxable = strings(book, Col.tax_status, rows) == TaxStatus.taxable
    st_rate = np.where(taxable, numbers(book, Col.st_rate, rows, fill=0.0, dtype=float), 0.0)
    lt_rate = np.where(taxable, numbers(book, Col.lt_rate, rows, fill=0.0, dtype=float), 0.0)
    st_before = numbers(book, Col.realized_st_ytd, rows, fill=0.0, dtype=float)
    lt_before = numbers(book, Col.realized_lt_ytd, rows, fill=0.0, dtype=float)
    st_after = st_before + numbers(accounts, Col.realized_st, run_rows, fill=0.0, dtype=float)
    lt_after = lt_before + numbers(accounts, Col.realized_lt, run_rows, fill=0.0, dtype=float)
    return schema.conform(pa.table({
        Col.account_id: pa.array(ids, pa.string()),
        Col.harvested_loss: numbers(accounts, Col.harvested_loss, run_rows, fill=0.0, dtype=float),
        Col.tax_saved: numbers(accounts, Col.tax_saved, run_rows, fill=0.0, dtype=float),
        Col.tax_budget: pa.array(book.column(Col.tax_budget).take(pa.array(rows)).to_pylist(), pa.float64()),
        Col.plain_sold: plain["value_sold"], Col.plain_realized: plain["realized"], Col.plain_gain_tax: plain[Col.gain_tax],
        Col.gain_tax: gain_tax, Col.tax_deferred: plain[Col.gain_tax] - gain_tax,
        Col.ytd_realized_st_before: st_before, Col.ytd_realized_lt_before: lt_before,
        Col.ytd_tax_before: st_rate * st_before + lt_rate * lt_before,
        Col.ytd_realized_st_after: st_after, Col.ytd_realized_lt_after: lt_after,
        Col.ytd_tax_after: st_rate * st_after + lt_rate * lt_after,
    }), schema.TAX_REPORT)
