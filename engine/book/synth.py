"""Realistic, deterministic synthetic books of any size (docs/contract.md §1).

The universe is built once from the seed:

* ten asset classes, each with two or three ETFs (two that track the same
  index share a ``wash_group``; the third tracks another index, a close
  substitute in a group of its own) and a mutual fund for most;
* a ~500-name US large-cap direct index and a 150-name international one,
  cap-weighted, with screen tags (``fossil_fuel``, ``tobacco``, ...);
* a factor risk model of 23 factors (market, 11 GICS sectors, 5 styles, two
  regions, rates, credit, inflation, real estate) with annual volatilities
  from 3% to 16%; a fund's exposures are those of the index it tracks, so an
  ETF and the direct index of the same asset class carry the same risk;
* a daily price path of eight years simulated from that model, so lots
  carry gains and losses, short- and long-term;
* 15 target templates from conservative (20% equity) to aggressive (100%).

Accounts come in households of one to four (taxable, IRA, Roth), about 40%
with a direct-index core of hundreds of lots, the rest ETF and fund
portfolios, with screens, never-buy/never-sell lists, custom allocations and
product choices, withdrawals, cash above the cap, small overdrafts, tax
budgets, recent trades for the wash-sale windows, suspended accounts, and a
small share of planted bad rows of every account-level kind that
:mod:`engine.book.validate` rejects.

:func:`generate` writes accounts in chunks of whole households, so a book of
100,000 accounts never sits in memory at once; the same ``(accounts, seed)``
always gives the same book.

The universe is built by :mod:`engine.book.synth_universe`, the accounts by
:mod:`engine.book.synth_accounts`; this module puts them together.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Iterator, Mapping

import numpy as np
import pyarrow as pa

from engine.book.synth_accounts import RETIRED_TEMPLATE, chunk_tables, household_sizes
from engine.book.synth_universe import (AS_OF, FACTORS, HISTORY_YEARS, LEGACY_MISSING_PRICE, LEGACY_STALE_PRICE,
                                        SCREENS, SECTORS, STYLES, Universe, build_universe)
from engine.contract import schema

__all__ = ["AS_OF", "CHUNK_ACCOUNTS", "HISTORY_YEARS", "LEGACY_MISSING_PRICE", "LEGACY_STALE_PRICE",
           "RETIRED_TEMPLATE", "SECTORS", "STYLES", "FACTORS", "SCREENS", "Universe", "build_universe",
           "household_sizes", "iter_tables", "generate_tables", "generate"]

CHUNK_ACCOUNTS = 2000


def iter_tables(accounts: int, seed: int = 0, as_of: dt.date = AS_OF, *,
                bad_fraction: float = 0.002, chunk_accounts: int = CHUNK_ACCOUNTS
                ) -> Iterator[dict[str, pa.Table]]:
    """The book as a stream: first the universe's tables, then chunks of households."""
    if accounts < 1:
        raise ValueError(f"a book needs at least one account, got {accounts}")
    u = build_universe(seed, as_of)
    yield dict(u.tables)
    sizes = household_sizes(accounts, seed)
    bounds = np.searchsorted(np.cumsum(sizes), np.arange(chunk_accounts, accounts, chunk_accounts),
                             side="left") + 1
    first_account = 0
    for index, part in enumerate(np.split(np.arange(len(sizes)), bounds)):
        if len(part) == 0:
            continue
        yield chunk_tables(u, sizes[part], first_account, int(part[0]), seed, index, bad_fraction)
        first_account += int(sizes[part].sum())


def generate_tables(accounts: int, seed: int = 0, as_of: dt.date = AS_OF, *,
                    bad_fraction: float = 0.002) -> dict[str, pa.Table]:
    """A whole book in memory (small books: tests, examples)."""
    parts: dict[str, list[pa.Table]] = {name: [] for name in schema.BOOK_TABLES}
    for tables in iter_tables(accounts, seed, as_of, bad_fraction=bad_fraction):
        for name, table in tables.items():
            parts[name].append(table)
    return {name: pa.concat_tables(p) if p else schema.empty(schema.BOOK_TABLES[name])
            for name, p in parts.items()}


def generate(uri: str, accounts: int, seed: int = 0, as_of: dt.date = AS_OF, *,
             bad_fraction: float = 0.002, chunk_accounts: int = CHUNK_ACCOUNTS,
             storage_options: Mapping[str, Any] | None = None, overwrite: bool = False) -> dict[str, int]:
    """Write a book of ``accounts`` accounts to ``uri``; returns rows per table."""
    from engine.book.storage import BookWriter

    with BookWriter(uri, as_of, storage_options=storage_options, overwrite=overwrite) as writer:
        for tables in iter_tables(accounts, seed, as_of, bad_fraction=bad_fraction,
                                  chunk_accounts=chunk_accounts):
            for name, table in tables.items():
                writer.write(name, table)
    return dict(writer.rows)

