"""A multi-year transition plan: a new account funded with legacy holdings, moved to its target within a yearly tax budget.

:func:`plan_transition` runs the engine on the account once a year, on the
book's ``as_of`` and each anniversary of it, with the yearly tax budget
(``tax_budget`` of the account, or the one given) and nothing realized yet
that year, and applies the proposal: sells relieve the lots they name,
buys open lots acquired that day, cash moves by the trades.  It is the
nightly job's own solve (:func:`engine.simulate.account_book.run_engine`: validation,
targets, one shard's assembly, solve and proposals) on the account alone
(household mates are left out: the plan is the account's).

Assumptions, stated because they shape the projection:

* prices are held at the book's prices for the whole plan (no forecast of
  returns is part of a book; gains and losses stay those of today, while the
  lots bought by the plan and the legacy lots age into long-term);
* the tax each year is paid from outside the account (its cash is not
  reduced by it), and no other trades, cash flows or wash-sale windows come
  between the yearly steps;
* tracking error is the engine's ex-ante figure (``tracking_error_after`` of
  the account row, the book's risk model).

The plan stops early once the account's tracking error after a year is at
most ``on_target`` (default 0.5%).  Pure: tables in, rows out; no storage, no ray.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Mapping

import pyarrow as pa
import pyarrow.compute as pc

from engine.contract import schema
from engine.contract.config import Config
from engine.contract.errors import CanopyError
from engine.contract.schema import Col, Side

__all__ = ["TransitionYear", "plan_transition", "plan_table", "ON_TARGET"]

#: Tracking error at or below which the account counts as on target.
ON_TARGET = 0.005


@dataclass(frozen=True)
class TransitionYear:
    """One year of the plan (USD; tracking errors annualized fractions)."""

    year: int
    date: dt.date
    tracking_error_before: float
    tracking_error_after: float
    tax: float
    realized_short: float
    realized_long: float
    harvested: float
    traded: float
    status: str


def _anniversary(date: dt.date, years: int) -> dt.date:
    try:
        return date.replace(year=date.year + years)
    except ValueError:                      # February 29
        return date.replace(year=date.year + years, day=28)


def _account_only(tables: Mapping[str, pa.Table], account_id: str) -> dict[str, pa.Table]:
    out = dict(tables)
    for name in ("accounts", "restrictions", "allocations", "lots", "transactions"):
        table = tables[name]
        out[name] = table.filter(pc.equal(table.column(Col.account_id), account_id))
    if out["accounts"].num_rows != 1:
        raise CanopyError(f"account {account_id!r} is not in the book")
    accounts = out["accounts"]
    index = accounts.schema.get_field_index(Col.household_id)
    out["accounts"] = accounts.set_column(index, accounts.schema.field(index), pa.nulls(1, pa.string()))
    return out


def _set(table: pa.Table, column: str, values) -> pa.Table:
    index = table.schema.get_field_index(column)
    field = table.schema.field(index)
    return table.set_column(index, field, pa.array(values, field.type))


def _apply(lots: pa.Table, trades: pa.Table, account_id: str, date: dt.date, year: int) -> pa.Table:
    """The lots after the proposal: sells relieve their lots pro rata, buys open new lots."""
    quantity = lots.column(Col.quantity).to_numpy().copy()
    basis = lots.column(Col.cost_basis).to_numpy().copy()
    position = {lot: i for i, lot in enumerate(lots.column(Col.lot_id).to_pylist())}
    new = {c: [] for c in schema.LOTS.names}
    for row in trades.to_pylist():
        if row[Col.side] == Side.sell:
            i = position[row[Col.lot_id]]
            share = min(row[Col.quantity] / quantity[i], 1.0)
            basis[i] -= basis[i] * share
            quantity[i] -= quantity[i] * share
        else:
            new[Col.account_id].append(account_id)
            new[Col.lot_id].append(f"T{year}-{row[Col.security_id]}")
            new[Col.security_id].append(row[Col.security_id])
            new[Col.quantity].append(row[Col.quantity])
            new[Col.cost_basis].append(row[Col.quantity] * row[Col.price])
            new[Col.acquired].append(date)
    kept = _set(_set(lots, Col.quantity, quantity), Col.cost_basis, basis)
    kept = kept.filter(pa.array(quantity > 1e-9))
    return pa.concat_tables([kept, schema.conform(pa.table(new, schema=schema.LOTS), schema.LOTS)])


def plan_transition(tables: Mapping[str, pa.Table], as_of: dt.date, account_id: str, years: int,
                    config: Config = Config(), *, tax_budget: float | None = None,
                    on_target: float = ON_TARGET) -> list[TransitionYear]:
    """The plan, year by year, until on target or ``years`` are done (see the module docstring).

    Parameters
    ----------
    tables
        A validated book's tables.
    as_of
        The book's date: the first year's step.
    account_id
        The account to transition.
    years
        Most years of the plan.
    config
        The engine's settings.
    tax_budget
        The yearly budget, USD of tax (default: the account's ``tax_budget``; none: no cap).
    """
    from engine.simulate.account_book import run_engine

    book = _account_only(tables, account_id)
    accounts = book["accounts"]
    budget = tax_budget if tax_budget is not None else accounts.column(Col.tax_budget)[0].as_py()
    accounts = _set(accounts, Col.tax_budget, [budget])
    for column in (Col.realized_st_ytd, Col.realized_lt_ytd, Col.withdrawal):
        accounts = _set(accounts, column, [0.0])
    book["accounts"] = accounts
    book["transactions"] = book["transactions"].slice(0, 0)
    plan = []
    for year in range(1, years + 1):
        date = _anniversary(as_of, year - 1)
        book["securities"] = _set(book["securities"], Col.price_date,
                                  [date] * book["securities"].num_rows)   # prices held
        trades, rows = run_engine(book, date, config, [account_id])
        row = rows.to_pylist()[0]
        traded = float(pc.sum(trades.column(Col.value)).as_py() or 0.0) if trades.num_rows else 0.0
        plan.append(TransitionYear(year, date, row[Col.tracking_error_before], row[Col.tracking_error_after],
                                   row[Col.est_tax], row[Col.realized_st], row[Col.realized_lt],
                                   row[Col.harvested_loss], traded, row[Col.status]))
        book["lots"] = _apply(book["lots"], trades, account_id, date, year)
        book["accounts"] = _set(book["accounts"], Col.cash, [row[Col.cash_after]])
        if row[Col.tracking_error_after] <= on_target:
            break
    return plan


def plan_table(plan: list[TransitionYear]) -> dict[str, list]:
    """The plan as columns (for JSON, CSV or a printed table)."""
    return {name: [getattr(y, name) if not isinstance(getattr(y, name), dt.date) else str(getattr(y, name))
                   for y in plan] for name in TransitionYear.__dataclass_fields__}

