"""The portal's work, shared by its pages and its JSON API: one warm what-if session over the book
with its saved customizations, saves, new accounts, withdrawal requests and the latest run.

:class:`Portal` reads the book once without its saves (``read_book(saved=False)``) and lays the
saves over it with :func:`engine.book.customizations.apply_saved`, the function ``read_book``
itself uses, so what the portal shows is what the next ``canopy run --book`` solves.  After each
save it lays them again, revalidates the book (:func:`engine.book.storage.book_from_tables`) and
starts a new :class:`~engine.simulate.whatif.WhatIfSession` that keeps the warm iterates of the
households the save did not touch.  One lock serializes the solver and the saves.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.book.customizations import CustomizationStore, apply_saved, customization_of
from engine.book.runs import committed_dates, read_decisions, read_run
from engine.book.storage import Book, book_from_tables, read_book
from engine.contract import schema
from engine.contract.arrow import index_in, numbers
from engine.contract.config import Config
from engine.contract.schema import Action, Col, TaxStatus
from engine.portal.changes import Invalid, check_change, read_change
from engine.rebalance.customization import CustomizationChange
from engine.review.explain import explain
from engine.review.taxes import tax_report
from engine.simulate.transition import plan_table, plan_transition
from engine.simulate.whatif import WHATIF_SOLVER, WhatIf, WhatIfSession

__all__ = ["Portal", "Invalid", "Forbidden", "NotFound", "NEW_ACCOUNT_DEFAULTS", "lots_from_csv"]

#: What a new account's row holds where the form leaves a field out (USD, fractions).
NEW_ACCOUNT_DEFAULTS = {Col.household_id: None, Col.st_rate: 0.0, Col.lt_rate: 0.0, Col.cash: 0.0,
                        Col.min_cash: 0.0, Col.max_cash: None, Col.reserve_cash: 0.0, Col.withdrawal: 0.0,
                        Col.min_trade: 50.0, Col.tax_budget: None, Col.realized_st_ytd: 0.0,
                        Col.realized_lt_ytd: 0.0, Col.harvest: True, Col.tax_sensitivity: 1.0,
                        Col.turnover_limit: None, Col.suspended: False}
#: How many previews a book state keeps to answer again.
ANSWERS = 512
#: A taxable account's rates when none are given: top federal ordinary and long-term rates with the 3.8% NIIT.
TAXABLE_RATES = {Col.st_rate: 0.408, Col.lt_rate: 0.238}


@dataclass(frozen=True)
class _State:
    """What previews read, swapped whole after a save: the book with its saves, its what-if
    session, tonight's proposal per account asked about (the baselines), and the latest previews
    (:data:`ANSWERS` of them: an advisor toggling a field back, or a second client, asks again)."""
    book: Book
    session: WhatIfSession
    baselines: dict[str, WhatIf]
    answers: "OrderedDict[tuple, dict]" = field(default_factory=OrderedDict)


class NotFound(Invalid):
    """An account that is not in the book (404)."""


class Forbidden(Invalid):
    """A user asking for what is not theirs (403)."""


def lots_from_csv(text: str) -> list[dict[str, Any]]:
    """Lots from CSV text with a header: ``security_id`` or ``symbol``, ``quantity`` (shares),
    ``cost_basis`` (USD, the lot's total) and optionally ``acquired`` (YYYY-MM-DD) and ``lot_id``.

    Raises
    ------
    Invalid
        A missing column or a value that is not a number or a date, naming the line.
    """
    rows = list(csv.DictReader(io.StringIO(text.strip())))
    out = []
    for line, row in enumerate(rows, start=2):
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
        if not (row.get(Col.security_id) or row.get(Col.symbol)):
            raise Invalid(f"lots line {line}", "needs a security_id or a symbol column")
        try:
            lot = {Col.quantity: float(row[Col.quantity]), Col.cost_basis: float(row[Col.cost_basis])}
            if row.get(Col.acquired):
                lot[Col.acquired] = dt.date.fromisoformat(row[Col.acquired]).isoformat()
        except KeyError as exc:
            raise Invalid(f"lots line {line}", f"has no {exc.args[0]} column") from None
        except ValueError as exc:
            raise Invalid(f"lots line {line}", f"a quantity and cost_basis must be numbers and acquired a "
                                               f"date like 2024-03-01 ({exc})") from None
        for name in (Col.security_id, Col.symbol, Col.lot_id):
            if row.get(name):
                lot[name] = row[name]
        out.append(lot)
    return out


class Portal:
    """The book, its saves, a warm what-if session and the latest run, for the portal's users.

    Parameters
    ----------
    book
        The book's URI (a local folder or ``s3://``: saves are a Delta table inside it).
    runs
        The runs folder (``canopy run --out``), for the accounts' status and the decisions; optional.
    config
        Policy and solver settings (default: the what-if settings).
    storage_options
        fsspec options of the book and runs.
    """

    def __init__(self, book: str, runs: str | None = None, config: Config | None = None,
                 storage_options: Mapping[str, Any] | None = None):
        self.uri, self.runs, self.storage_options = str(book), runs, storage_options
        self.config = config or Config(solver=WHATIF_SOLVER)
        self.store = CustomizationStore(self.uri, storage_options)
        self.base = read_book(self.uri, self.config.policy, storage_options, saved=False)
        self.lock = threading.RLock()         # saves, one at a time
        # what-ifs run side by side, one per core: JAX releases the GIL while it solves
        self._solving = threading.BoundedSemaphore(max(1, min(4, os.cpu_count() or 1)))
        self._answers = threading.Lock()     # the states' answers
        self._state: _State | None = None
        self._run_cache: tuple[dt.date | None, dict | None] = (None, None)
        self._rebuild(set())

    # ------------------------------------------------------------------ state

    def _rebuild(self, touched: set[str]) -> None:
        """Lay the saves over the book, revalidate it and start a new session; warm iterates and
        baselines of households not in ``touched`` are kept."""
        saved = self.store.rows()
        self.saved = saved
        self.versions = dict(zip(saved.column(Col.account_id).to_pylist(), saved.column(Col.version).to_pylist()))
        tables = apply_saved(self.base.tables, saved) if saved.num_rows else self.base.tables
        book = book_from_tables(self.uri, self.base.as_of, tables, self.config.policy, self.base.fingerprints)
        previous = self._state
        session = WhatIfSession(book, self.config)
        baselines = {}
        if previous is not None:
            session.keep_warm(previous.session, skip=touched)
            baselines = {a: w for a, w in previous.baselines.items() if w.household_id not in touched}
        self._state = _State(book, session, baselines)        # one assignment: readers see old or new
        accounts = book.accounts
        lots = book.lots
        where = index_in(lots.column(Col.security_id), book.securities.column(Col.security_id))
        price = np.where(where >= 0, numbers(book.securities, Col.price, np.maximum(where, 0), fill=0.0), 0.0)
        owner = index_in(lots.column(Col.account_id), accounts.column(Col.account_id))
        held = np.bincount(owner[owner >= 0], (numbers(lots, Col.quantity) * np.nan_to_num(price))[owner >= 0],
                           accounts.num_rows)
        self.values = dict(zip(accounts.column(Col.account_id).to_pylist(),
                               held + numbers(accounts, Col.cash, fill=0.0)))

    @property
    def book(self) -> Book:
        """The book with its saves, validated (the state previews and pages read now)."""
        return self._state.book

    @property
    def session(self) -> WhatIfSession:
        return self._state.session

    @property
    def as_of(self) -> dt.date:
        return self.book.as_of

    def household_of(self, account_id: str) -> str:
        """The account's household (itself when it has none); :class:`NotFound` when not in the book."""
        household = self.session.household_of.get(account_id)
        if household is None:
            raise NotFound("account", f"account {account_id!r} is not in the book")
        return household

    def version(self, account_id: str) -> int:
        """The account's newest saved version; 0 when never saved."""
        return int(self.versions.get(account_id, 0))

    def customization(self, account_id: str) -> dict[str, Any]:
        """``{"account", "restrictions", "allocations", Col.version}`` of the account as the next run sees it."""
        self.household_of(account_id)
        out = customization_of(self.book.tables, account_id)
        return {**out, Col.version: self.version(account_id)}

    def history(self, account_id: str) -> list[dict[str, Any]]:
        """The account's saves (the audit log), newest first, each with the fields that changed."""
        mine = self.saved.filter(pc.equal(self.saved.column(Col.account_id), account_id))
        out = []
        for row in reversed(self.store.decode(mine)):
            out.append({**row, "changes": _differences(row[Col.before], row[Col.after])})
        return out

    @staticmethod
    def household_tables(session: WhatIfSession, household: str) -> dict[str, pa.Table]:
        """The shared tables and the household's rows (what a check of a change needs)."""
        members = session.members.get(household, [])
        return {**session.shared, **{n: session.rows(n, members) for n in schema.BOOK_TABLES
                                     if n not in session.shared}}

    # ------------------------------------------------------------------ questions

    def baseline(self, account_id: str) -> WhatIf:
        """Tonight's proposal for the account as it stands (warms its household's solver shape)."""
        state = self._state
        found = state.baselines.get(account_id)
        if found is None:
            with self._solving:
                found = state.baselines[account_id] = state.session.warm_up(account_id)
        return found

    def preview(self, account_id: str, body: Any, *, withdrawal: float = 0.0, fresh: bool = False
                ) -> dict[str, Any]:
        """The effect of a change (JSON, :mod:`engine.portal.changes`) without saving it.

        The same question on the same book state is answered from the state's latest answers
        unless ``fresh`` (HTTP ``Cache-Control: no-cache``).
        """
        state = self._state                   # one book state for the check and the solve
        key = (account_id, json.dumps(body, sort_keys=True, default=str), float(withdrawal))
        with self._answers:
            if not fresh and key in state.answers:
                state.answers.move_to_end(key)
                return state.answers[key]
        change, _ = self._checked(state, account_id, body)
        self.baseline(account_id)             # warms the household's shape and iterate first
        with self._solving:
            answer = state.session.whatif(account_id, change, withdrawal=withdrawal)
        result = impact(answer, state.book.securities)
        with self._answers:
            state.answers[key] = result
            while len(state.answers) > ANSWERS:
                state.answers.popitem(last=False)
        return result

    def _checked(self, state: "_State", account_id: str, body: Any) -> tuple[CustomizationChange, dict]:
        household = self.household_of(account_id)
        change = read_change(body, customization_of(state.book.tables, account_id))
        tables = self.household_tables(state.session, household)
        rejections = state.book.rejections
        before = rejections.filter(pc.is_in(rejections.column(Col.account_id),
                                            value_set=pa.array(state.session.members[household])))
        return change, check_change(tables, account_id, change, self.as_of, self.config.policy, before)

    # ------------------------------------------------------------------ saves

    def save(self, account_id: str, body: Any, user: str) -> int:
        """Save a change (JSON with ``version``): one commit to the customizations table; the new version.

        Raises
        ------
        Invalid
            The change breaks a rule (422); :class:`engine.book.customizations.StaleVersion`: it was
            made against an older version (409).  Nothing is saved in either case.
        """
        if not isinstance(body, dict) or type(body.get(Col.version)) is not int:
            raise Invalid(Col.version, "a save carries the account's version as read (an integer; 0 if never saved)")
        with self.lock:
            _, after = self._checked(self._state, account_id, body)
            version = self.store.save(account_id, Action.change, customization_of(self.book.tables, account_id),
                                      customization_of(after, account_id), user, expected_version=body[Col.version])
            self._rebuild({self.household_of(account_id)})
        return version

    def request_withdrawal(self, account_id: str, amount: Any, user: str, note: str | None = None) -> int:
        """Record a request to raise ``amount`` USD of cash: the next run raises it (docs/portal.md)."""
        self.household_of(account_id)
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not np.isfinite(amount) or amount <= 0:
            raise Invalid(Col.withdrawal, f"a withdrawal is a positive amount of USD, got {amount!r}")
        with self.lock:
            version = self.store.save(account_id, Action.withdrawal, None, {Col.withdrawal: float(amount)}, user,
                                      note=note or None)
            self._rebuild({self.household_of(account_id)})
        return version

    def settle_withdrawal(self, account_id: str, version: int, user: str) -> int:
        """Close withdrawal request ``version`` of the account (the rebalancing group, once paid out)."""
        if version not in {w[Col.version] for w in self.pending_withdrawals() if w[Col.account_id] == account_id}:
            raise Invalid(Col.version, f"account {account_id} has no pending withdrawal request {version}")
        with self.lock:
            saved = self.store.save(account_id, Action.settle, None, {Col.version: int(version)}, user)
            self._rebuild({self.household_of(account_id)})
        return saved

    def pending_withdrawals(self) -> list[dict[str, Any]]:
        """Withdrawal requests not settled yet, oldest first."""
        rows = self.saved.filter(pc.is_in(self.saved.column(Col.action),
                                          value_set=pa.array([Action.withdrawal, Action.settle])))
        pending: dict[tuple[str, int], dict] = {}
        for row in self.store.decode(rows):
            if row[Col.action] == Action.withdrawal:
                pending[(row[Col.account_id], row[Col.version])] = {**row, Col.withdrawal: row[Col.after][Col.withdrawal]}
            else:
                pending.pop((row[Col.account_id], row[Col.after][Col.version]), None)
        return sorted(pending.values(), key=lambda r: r[Col.saved_at])

    # ------------------------------------------------------------------ new accounts

    def create(self, body: Any, user: str, years: int = 5) -> dict[str, Any]:
        """Create an account (row, lists and lots), save it, and give its first trades and transition plan."""
        account, lots = _new_account(body, self.book.securities)
        account_id = account[Col.account_id]
        if account_id in self.session.household_of:
            raise Invalid(f"account.{Col.account_id}", f"account {account_id} is already in the book")
        if not 1 <= int(years) <= 30:
            raise Invalid("years", f"a transition plan is 1 to 30 years, got {years}")
        body = {k: v for k, v in body.items() if k in ("restrictions", "allocations")}
        with self.lock:
            household = account[Col.household_id] or account_id
            tables = self.household_tables(self.session, household)
            tables["accounts"] = pa.concat_tables([tables["accounts"], pa.Table.from_pylist([account], schema.ACCOUNTS)])
            tables["lots"] = pa.concat_tables([tables["lots"], pa.Table.from_pylist(lots, schema.LOTS)])
            change = read_change(body, {"restrictions": [], "allocations": []})
            after = check_change(tables, account_id, change, self.as_of, self.config.policy, None)
            saved = {**customization_of(after, account_id), "account": account,
                     "lots": [{k: v for k, v in lot.items() if k != Col.account_id} for lot in lots]}
            version = self.store.save(account_id, Action.create, None, saved, user)
            self._rebuild({household})
            first = impact(self.baseline(account_id), self.book.securities)
            started = time.perf_counter()
            plan = plan_transition(self.session.tables, self.as_of, account_id, int(years), self.config)
        return {Col.account_id: account_id, Col.version: version, "first_trades": first, "plan": plan_table(plan),
                "plan_seconds": time.perf_counter() - started,
                "yearly_tax_budget": account[Col.tax_budget]}

    # ------------------------------------------------------------------ runs and reports

    def latest_run(self) -> dict[str, Any] | None:
        """The latest committed run under ``runs``: ``as_of``, its tables and its decisions (None if none)."""
        if not self.runs:
            return None
        dates = committed_dates(self.runs, self.storage_options)
        if not dates:
            return None
        if self._run_cache[0] != dates[-1]:
            tables, manifest = read_run(self.runs, dates[-1], self.storage_options)
            decided = read_decisions(self.runs, dates[-1], self.storage_options)
            self._run_cache = (dates[-1], {Col.as_of: dates[-1], "tables": tables, "manifest": manifest,
                                           "decisions": decided[0] if decided else None})
        return self._run_cache[1]

    def taxes(self, account_id: str) -> dict[str, Any]:
        """The account's taxes saved or deferred (:func:`engine.review.taxes.tax_report`), from the
        latest run when it has the account, else from tonight's proposal as it stands."""
        run = self.latest_run()
        source = None
        if run is not None:
            mine = {n: t.filter(pc.equal(t.column(Col.account_id), account_id))
                    for n, t in run["tables"].items() if n in ("accounts", "trades")}
            if mine["accounts"].num_rows:
                source = (mine, f"the run of {run[Col.as_of]}")
        if source is None:
            answer = self.baseline(account_id)
            if answer.household is None:
                return {"source": "tonight's proposal", "rows": [], "why": answer.detail}
            accounts = answer.household.filter(pc.equal(answer.household.column(Col.account_id), account_id))
            source = ({"accounts": accounts, "trades": answer.trades}, "tonight's proposal as the account stands")
        targets = self.session.targets
        if account_id not in self.session.row_of:
            return {"source": source[1], "rows": []}
        report = tax_report(self.session.tables, targets.take([self.session.row_of[account_id]]), source[0], self.as_of)
        return {"source": source[1], "rows": report.to_pylist()}


def _differences(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> list[str]:
    """What a save changed, in words: ``field: old -> new`` and list changes."""
    if before is None:
        return [f"{k}: {v}" for k, v in after.items() if k != "account"] or ["created"]
    out = []
    for name, value in (after.get("account") or {}).items():
        old = (before.get("account") or {}).get(name)
        if old != value:
            out.append(f"{name}: {old} -> {value}")
    for key in ("restrictions", "allocations"):
        old, new = before.get(key) or [], after.get(key) or []
        gone = [r for r in old if r not in new]
        added = [r for r in new if r not in old]
        for row in gone:
            out.append(f"{key} - " + ", ".join(f"{k}={v}" for k, v in row.items() if v is not None))
        for row in added:
            out.append(f"{key} + " + ", ".join(f"{k}={v}" for k, v in row.items() if v is not None))
    return out


def _new_account(body: Any, securities: pa.Table) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A new account's row (defaults filled) and its lots (symbols resolved) from a create request."""
    if not isinstance(body, dict) or not isinstance(body.get("account"), dict):
        raise Invalid("account", "a new account needs an account object with account_id, template_id, tax_status")
    given = body["account"]
    for name in (Col.account_id, Col.template_id, Col.tax_status):
        if not isinstance(given.get(name), str) or not given[name].strip():
            raise Invalid(f"account.{name}", "is required")
    unknown = set(given) - set(schema.ACCOUNTS.names)
    if unknown:
        raise Invalid(f"account.{sorted(unknown)[0]}", "is not an accounts column")
    account = {**NEW_ACCOUNT_DEFAULTS, **(TAXABLE_RATES if given[Col.tax_status] == TaxStatus.taxable else {}),
               **given}
    account[Col.account_id] = account[Col.account_id].strip()
    try:
        pa.Table.from_pylist([account], schema.ACCOUNTS)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
        raise Invalid("account", f"a value is not of its column's type ({exc})") from None
    rows = body.get("lots") or []
    if isinstance(rows, str):
        rows = lots_from_csv(rows)
    by_symbol = dict(zip(securities.column(Col.symbol).to_pylist(), securities.column(Col.security_id).to_pylist()))
    lots = []
    for i, row in enumerate(rows):
        security = row.get(Col.security_id) or by_symbol.get(row.get(Col.symbol))
        if security is None:
            raise Invalid(f"lots[{i}].{Col.symbol}", f"no security has symbol {row.get(Col.symbol)!r}")
        try:
            acquired = dt.date.fromisoformat(str(row.get(Col.acquired) or dt.date.today().isoformat()))
            lots.append({Col.account_id: account[Col.account_id], Col.lot_id: str(row.get(Col.lot_id) or f"L{i + 1}"),
                         Col.security_id: security, Col.quantity: float(row[Col.quantity]),
                         Col.cost_basis: float(row[Col.cost_basis]), Col.acquired: acquired.isoformat()})
        except (KeyError, TypeError, ValueError) as exc:
            raise Invalid(f"lots[{i}]", f"needs quantity, cost_basis (numbers) and acquired (a date): {exc}") from None
    for lot in lots:
        lot[Col.acquired] = dt.date.fromisoformat(lot[Col.acquired])
    return account, lots


def impact(answer: WhatIf, securities: pa.Table) -> dict[str, Any]:
    """A what-if as the impact panel and the API show it (USD, fractions)."""
    n = answer.numbers
    symbols = dict(zip(securities.column(Col.security_id).to_pylist(), securities.column(Col.symbol).to_pylist()))
    trades = []
    for row in answer.trades.to_pylist():
        trades.append({name: row[name] for name in (Col.account_id, Col.security_id, Col.side, Col.lot_id,
                                                    Col.quantity, Col.price, Col.value, Col.realized_gain,
                                                    Col.term, Col.est_tax, Col.reason)}
                      | {Col.symbol: symbols.get(row[Col.security_id]), "words": explain(row)})
    return {Col.account_id: answer.account_id, Col.household_id: answer.household_id, "change": answer.change,
            Col.status: answer.status, Col.detail: answer.detail, "rejections": list(answer.rejections),
            Col.value: n.get(Col.value), Col.sold: n.get(Col.sold), Col.bought: n.get(Col.bought),
            "sold_fraction": n.get("sold_fraction"),
            Col.realized_gain: {"short": n.get(Col.realized_st), "long": n.get(Col.realized_lt)},
            "tax": n.get(Col.est_tax), Col.harvested_loss: n.get(Col.harvested_loss), Col.tax_saved: n.get(Col.tax_saved),
            Col.tracking_error_before: n.get(Col.tracking_error_before),
            Col.tracking_error_after: n.get(Col.tracking_error_after), Col.trade_count: n.get(Col.trade_count),
            "trades": trades, "seconds": answer.seconds}
