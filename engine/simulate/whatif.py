"""What-ifs: the effect of a proposed change on one account, tonight's way, in well under a second.

An advisor asks "what if this client adds a tobacco screen / moves US large
caps to the direct index / takes a different allocation / withdraws
$50,000?".  :class:`WhatIfSession` answers with the nightly job's own code
path, so the answer is the proposal the night would make:

1. the account's target after the change: :func:`engine.rebalance.customization.account_target`
   (the same :func:`~engine.rebalance.targets.build_targets` code on a one-account slice);
   a change the template does not allow (a weight outside its bounds, a
   product not among its alternatives, a screen that empties a product) is
   a rejection, reported in words, never silently fixed;
2. the account's ``restrictions`` and ``allocations`` rows after the change
   (:func:`engine.rebalance.customization.changed_rows`), and for a withdrawal its
   ``withdrawal`` raised by the amount (on top of any already pending);
3. the household (every account sharing ``household_id``: the problem is
   joint), planned and solved as one shard by :func:`engine.rebalance.pipeline.solve_households`
   — problem assembly, the batched JAX solve, lot relief, rounding and
   :func:`engine.rebalance.proposals.propose`, exactly as in the nightly job.

The session holds what the night holds in memory: the book's tables, every
account's target, and each account table sorted by account so a household's
rows are a slice.  JAX compiles the solver once per padded shape (10–20 s);
:meth:`WhatIfSession.warm_up` solves an account's household as it stands,
which compiles its shape and keeps the final iterate.  A what-if whose
problem has the same universe (a screen, a reallocation within held
securities, a withdrawal) then starts from that iterate; one that brings in
new securities (a product change) has a new universe and starts cold, and
compiles when its padded shape is new.

Solver settings: ``eps 1e-5`` (:data:`WHATIF_SOLVER`, as ``canopy.toml``);
the proposal is rounded to shares and re-trimmed exactly after the solve.

Numbers of the result (USD unless said): ``sold`` and ``bought`` (value of
the account's sells and buys), ``sold_fraction = sold / value``, realized
short- and long-term gains, ``est_tax`` (negative where losses outweigh),
harvested losses and the tax they save, tracking error to the changed
target before and after trading (annualized fraction), turnover, and the
first trades (largest first) in words (:func:`engine.review.explain.explain`).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Collection, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from engine.contract import schema
from engine.contract.config import Config, SolverConfig
from engine.contract.errors import CanopyError
from engine.contract.schema import Col, Side, Status
from engine.rebalance.customization import CustomizationChange, account_target, changed_rows
from engine.rebalance.pipeline import WarmStart, solve_households
from engine.rebalance.shards import ACCOUNT_TABLES, SHARED_TABLES
from engine.rebalance.targets import Targets, build_targets
from engine.review.explain import explain

__all__ = ["WhatIfSession", "WhatIf", "WhatIfError", "WHATIF_SOLVER"]

#: The what-ifs' solver settings: canopy.toml's tolerance.
WHATIF_SOLVER = SolverConfig(eps_abs=1e-5, eps_rel=1e-5)


class WhatIfError(CanopyError):
    """A what-if that cannot be asked (an unknown account, a negative withdrawal)."""


@dataclass(frozen=True)
class WhatIf:
    """The proposal for one account after a change, and what it costs.

    Attributes
    ----------
    account_id, household_id, change
        The account, its household and the change, in words.
    status, detail
        The account's status in the proposal (``proposed``, ``no_trade``,
        ``infeasible``, ``rejected``, ...) and why, in words.
    rejections
        What makes the change (or the account) unusable, in words; empty when usable.
    numbers
        ``value``, ``sold``, ``bought``, ``sold_fraction``, ``realized_st``,
        ``realized_lt``, ``est_tax``, ``harvested_loss``, ``tax_saved``,
        ``tracking_error_before``, ``tracking_error_after``, ``turnover``,
        ``trade_count`` (see the module docstring for units).
    trades
        The account's proposed trades (``trades`` schema), largest first.
    first_trades
        The first ``first`` of them in words.
    seconds
        Wall time of the what-if: targets, assembly, solve, proposals.
    warm_started
        Whether the solve started from the warm-up's iterate.
    household
        The ``accounts`` rows of every account of the household (the change
        may move its other accounts too).
    """

    account_id: str
    household_id: str
    change: str
    status: str
    detail: str | None
    rejections: tuple[str, ...]
    numbers: dict[str, float]
    trades: pa.Table
    first_trades: tuple[str, ...]
    seconds: float
    warm_started: bool
    household: pa.Table | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: everything but the tables."""
        return {"account_id": self.account_id, "household_id": self.household_id, "change": self.change,
                Col.status: self.status, Col.detail: self.detail, "rejections": list(self.rejections),
                **self.numbers, "first_trades": list(self.first_trades), "seconds": self.seconds,
                "warm_started": self.warm_started, "timings": self.timings}


def describe(change: CustomizationChange, withdrawal: float = 0.0) -> str:
    """A change in words."""
    parts = [f"{name} {value}" for name, value in change.account]
    if change.replace:
        parts.append("restrictions and allocations replaced")
    parts += [f"add {r.rule} {r.security_id or 'tag ' + str(r.tag)}" for r in change.add_restrictions]
    parts += [f"lift {r.rule} {r.security_id or 'tag ' + str(r.tag)}" for r in change.remove_restrictions]
    for a in change.allocations:
        if a.weight is not None:
            parts.append(f"{a.asset_class} weight {a.weight:g}")
        if a.model_id is not None:
            parts.append(f"{a.asset_class} product {a.model_id}")
    if withdrawal:
        parts.append(f"withdraw ${withdrawal:,.2f}")
    return ", ".join(parts) or "no change"


def _replace_row(targets: Targets, position: int, new: Targets) -> Targets:
    """``targets`` with row ``position`` replaced by the one row of ``new`` (same securities, classes)."""
    rows = [new.weights if i == position else targets.weights[i] for i in range(len(targets.account_ids))]
    arrays = {}
    for name in ("class_weights", "bands", "class_models", "usable"):
        values = getattr(targets, name).copy()
        values[position] = getattr(new, name)[0]
        arrays[name] = values
    return dataclasses.replace(targets, weights=sp.vstack(rows).tocsr(), **arrays)


class WhatIfSession:
    """A warm session for what-ifs on one book.

    Parameters
    ----------
    book
        A :class:`engine.book.storage.Book` (from :func:`engine.book.storage.read_book`) or its URI.
    config
        Policy and solver settings; default: the policy defaults and :data:`WHATIF_SOLVER`.
    storage_options
        fsspec options of the book's URI.
    households_of
        With a URI: read only the households of these accounts (``read_book(households_of=)``),
        for questions about them alone; ``canopy whatif`` reads its account's household this
        way instead of the whole book.
    """

    def __init__(self, book: Any, config: Config | None = None,
                 storage_options: Mapping[str, Any] | None = None, *,
                 households_of: Collection[str] | None = None):
        if isinstance(book, str):
            from engine.book.storage import read_book
            book = read_book(book, (config or Config()).policy, storage_options, households_of=households_of)
        self.book = book
        self.config = config or Config(solver=WHATIF_SOLVER)
        self.as_of = book.as_of
        self.tables = book.tables
        self.targets = build_targets(book, policy=self.config.policy)
        self.row_of = {a: i for i, a in enumerate(self.targets.account_ids)}
        rejected = set(book.rejected) | set(self.targets.rejections.column(Col.account_id).drop_null().to_pylist())
        self.rejected = rejected
        self.rejection_messages: dict[str, list[str]] = {}
        for table in (book.rejections, self.targets.rejections):
            for a, m in zip(table.column(Col.account_id).to_pylist(), table.column(Col.message).to_pylist()):
                if a is not None:
                    self.rejection_messages.setdefault(a, []).append(m)
        accounts = self.tables["accounts"]
        ids = accounts.column(Col.account_id).to_pylist()
        households = pc.coalesce(accounts.column(Col.household_id), accounts.column(Col.account_id)).to_pylist()
        self.household_of = dict(zip(ids, households))
        self.members: dict[str, list[str]] = {}
        for a, h in zip(ids, households):
            self.members.setdefault(h, []).append(a)
        # each account table sorted by account once: a household's rows are then a few slices
        self._sorted: dict[str, tuple[pa.Table, dict[str, tuple[int, int]]]] = {}
        for name in ACCOUNT_TABLES:
            table = self.tables[name]
            table = table.sort_by(Col.account_id) if table.num_rows else table
            keys = np.asarray(table.column(Col.account_id).to_pylist(), dtype=object)
            starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if keys.size else np.zeros(0, int)
            stops = np.r_[starts[1:], keys.size]
            self._sorted[name] = (table, {keys[s]: (int(s), int(e)) for s, e in zip(starts, stops)})
        self.shared = {name: self.tables[name] for name in SHARED_TABLES}
        self._warm: dict[str, WarmStart] = {}
        self.baseline: dict[str, WhatIf] = {}

    def keep_warm(self, previous: "WhatIfSession", skip=()) -> None:
        """Take ``previous``'s warm iterates of accounts whose household is not in ``skip`` (a
        session of the same book after a change of those households only)."""
        self._warm.update({a: w for a, w in previous._warm.items()
                           if previous.household_of.get(a) not in set(skip) and a in self.household_of})

    def rows(self, name: str, account_ids: list[str]) -> pa.Table:
        """The rows of account table ``name`` of ``account_ids``."""
        return self._rows(name, account_ids)

    def _rows(self, name: str, account_ids: list[str]) -> pa.Table:
        table, spans = self._sorted[name]
        parts = [table.slice(s, e - s) for s, e in (spans[a] for a in account_ids if a in spans)]
        return pa.concat_tables(parts) if parts else table.slice(0, 0)

    def warm_up(self, account_id: str) -> WhatIf:
        """Solve the account's household as it stands: compiles its shape and keeps its iterate."""
        result = self.whatif(account_id, CustomizationChange(), keep=True)
        self.baseline[account_id] = result
        return result

    def whatif(self, account_id: str, change: CustomizationChange = CustomizationChange(), *,
               withdrawal: float = 0.0, first: int = 10, keep: bool = False) -> WhatIf:
        """The proposal for ``account_id`` after ``change`` and a ``withdrawal`` (USD) on top of the book's.

        Raises
        ------
        WhatIfError
            The account is not in the book, or the withdrawal is negative.
        """
        started = time.perf_counter()
        if account_id not in self.household_of:
            raise WhatIfError(f"account {account_id!r} is not in the book")
        if not np.isfinite(withdrawal) or withdrawal < 0:
            raise WhatIfError(f"a withdrawal is a positive amount of USD, got {withdrawal!r}")
        words = describe(change, withdrawal)
        household = self.household_of[account_id]
        if account_id in self.rejected:
            return self._unusable(account_id, household, words, self.rejection_messages.get(account_id, []), started)
        clock = time.perf_counter()
        tables = {name: self._rows(name, self.members[household]) for name in ACCOUNT_TABLES}
        # the household's rows are all account_target reads of the account: the same result, without
        # conforming the whole book's tables on every question
        target = account_target({**self.shared, **tables}, account_id, change, self.config.policy)
        if not target.usable[0]:
            return self._unusable(account_id, household, words, target.rejections.column(Col.message).to_pylist(),
                                  started)
        members = [a for a in self.members[household] if a not in self.rejected]
        changed = changed_rows({**self.shared, **tables}, account_id, change)
        tables["accounts"] = changed["accounts"]
        for name in ("restrictions", "allocations"):
            others = tables[name].filter(pc.not_equal(tables[name].column(Col.account_id), account_id))
            tables[name] = pa.concat_tables([others, changed[name].cast(others.schema)])
        if withdrawal:
            accounts = tables["accounts"]
            mine = pc.equal(accounts.column(Col.account_id), account_id)
            raised = pc.if_else(mine, pc.add(accounts.column(Col.withdrawal), float(withdrawal)),
                                accounts.column(Col.withdrawal))
            tables["accounts"] = accounts.set_column(accounts.schema.get_field_index(Col.withdrawal),
                                                     accounts.schema.field(Col.withdrawal), raised)
        targets = self.targets.take([self.row_of[a] for a in members])
        targets = _replace_row(targets, members.index(account_id), target)
        timings = {"targets": time.perf_counter() - clock}
        previous = self._warm.get(account_id)
        (output,) = solve_households({**self.shared, **tables}, targets, members, self.as_of, self.config,
                                     warm=previous, keep_warm=True)
        if keep:
            self._warm[account_id] = output.warm
        timings.update(output.timings)
        return self._result(account_id, household, words, output.accounts, output.trades, first, started,
                            output.warm_started, timings)

    def _unusable(self, account_id, household, words, messages, started) -> WhatIf:
        return WhatIf(account_id, household, words, Status.rejected,
                      "the account cannot be solved with this change: " + "; ".join(messages),
                      tuple(messages), {}, schema.empty(schema.TRADES), (), time.perf_counter() - started, False)

    def _result(self, account_id, household, words, accounts, trades, first, started, warm_started,
                timings) -> WhatIf:
        row = accounts.filter(pc.equal(accounts.column(Col.account_id), account_id)).to_pylist()[0]
        mine = trades.filter(pc.equal(trades.column(Col.account_id), account_id))
        if mine.num_rows:
            mine = mine.sort_by([(Col.value, "descending")])
        side = mine.column(Col.side).to_pylist()
        values = mine.column(Col.value).to_pylist()
        sold = float(sum(v for s, v in zip(side, values) if s == Side.sell))
        bought = float(sum(v for s, v in zip(side, values) if s == Side.buy))
        value = row[Col.value]
        numbers = {Col.value: value, Col.sold: sold, Col.bought: bought,
                   "sold_fraction": sold / value if value > 0 else 0.0,
                   **{name: row[name] for name in (Col.realized_st, Col.realized_lt, Col.est_tax, Col.harvested_loss,
                                                   Col.tax_saved, Col.tracking_error_before,
                                                   Col.tracking_error_after, Col.turnover, Col.trade_count)}}
        words_of_trades = tuple(explain(t) for t in mine.slice(0, first).to_pylist())
        return WhatIf(account_id, household, words, row[Col.status], row[Col.detail], (), numbers, mine,
                      words_of_trades, time.perf_counter() - started, warm_started, accounts, timings)
