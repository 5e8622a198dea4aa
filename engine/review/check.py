"""An independent check of a finished run against its book (docs/contract.md §3).

:func:`check_run` reads nothing but the book's tables and the run's tables,
and shares no code with the engine that made the proposals (not the kernels,
not the solver), so a bug there cannot hide itself here.  Each violation is
one row: the rule's number in docs/contract.md §3, the account, a key (lot, security
or wash group) and a message in words.

Rule 14 (outputs are finite) is checked on whole columns first; a trade with a non-finite
number is left out of the arithmetic rules.

Tolerances: money to a cent plus 1e-9 of the amount; shares to 1e-9.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.contract.rules import CASH_FLOOR_COLUMNS
from engine.contract.schema import Col, Rule, Side, Status, TaxStatus, Term

VIOLATIONS = pa.schema([pa.field(Col.rule, pa.int32(), nullable=False), pa.field(Col.account_id, pa.string()),
                        pa.field(Col.key, pa.string()), pa.field(Col.message, pa.string(), nullable=False)])
WASH_DAYS = 30
_NO_TRADES = (Status.suspended, Status.rejected, Status.failed)


def _cents(amount: float) -> float:
    return 0.01 + 1e-9 * abs(amount)


def first_long_day(acquired: dt.date) -> dt.date:
    """The first day a lot acquired on ``acquired`` is long-term: the day after its anniversary.

    The anniversary of 29 February is 28 February, so such a lot is long from 1 March.
    """
    try:
        anniversary = acquired.replace(year=acquired.year + 1)
    except ValueError:                                       # 29 February
        anniversary = acquired.replace(year=acquired.year + 1, day=28)
    return anniversary + dt.timedelta(days=1)


def _rows(table: pa.Table) -> list[dict]:
    return table.to_pylist()


class _Found:
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, rule: int, account_id: str | None, key: str | None, message: str) -> None:
        self.rows.append({Col.rule: rule, Col.account_id: account_id, Col.key: key, Col.message: message})

    def table(self) -> pa.Table:
        return pa.Table.from_pylist(self.rows, schema=VIOLATIONS)


#: Households checked at a time: the check holds a Python row per lot and trade of a part only.
PART_HOUSEHOLDS = 4096
#: The book's tables cut by account, and the run's.
_BOOK_BY_ACCOUNT = ("accounts", "lots", "restrictions", "transactions")
_RUN_BY_ACCOUNT = ("trades", "accounts")


def check_run(book: Mapping[str, pa.Table], as_of: dt.date, run: Mapping[str, pa.Table],
              rejected: frozenset[str] = frozenset(), part_households: int = PART_HOUSEHOLDS) -> pa.Table:
    """Every violation of docs/contract.md §3 in ``run`` (trades and accounts) for ``book``.

    Every rule is one of an account or of a household (the wash sales of
    rule 6), so the book is checked ``part_households`` households at a
    time: a whole book's lots and trades as Python rows do not fit in memory
    at 100,000 accounts (24 GB and more).

    Parameters
    ----------
    book
        The book's tables by name, as :func:`engine.book.storage.read_book` conforms them.
    as_of
        The book's business date.
    run
        The run's ``trades`` and ``accounts`` tables.
    rejected
        Accounts the book's validation rejected.
    part_households
        Households per part.

    Returns
    -------
    pa.Table
        One row per violation (:data:`VIOLATIONS`); empty when the run obeys every rule.
    """
    found = _Found()
    accounts = book["accounts"]
    ids = accounts.column(Col.account_id).to_pylist()
    households = pc.coalesce(accounts.column(Col.household_id), accounts.column(Col.account_id)).to_pylist()
    order = {h: i for i, h in enumerate(dict.fromkeys(households))}
    members: dict[int, list[str]] = defaultdict(list)
    for account_id, h in zip(ids, households):
        members[order[h] // max(part_households, 1)].append(account_id)
    strangers = sorted(set(run["trades"].column(Col.account_id).to_pylist()) - set(ids))
    for account_id in strangers:
        found.add(0, account_id, None, "trades for an account that is not in the book")
    missing = sorted(set(ids) - set(run["accounts"].column(Col.account_id).to_pylist()))
    for account_id in missing[:20]:
        found.add(0, account_id, None, "the book's account has no row in the run's accounts table")
    _check_finite(found, run)
    parts = [found.table()]
    for part in sorted(members):
        value_set = pa.array(members[part], pa.string())

        def mine(table: pa.Table) -> pa.Table:
            return table.filter(pc.is_in(table.column(Col.account_id), value_set=value_set))
        part_book = {**book, **{name: mine(book[name]) for name in _BOOK_BY_ACCOUNT}}
        part_run = {**run, **{name: mine(run[name]) for name in _RUN_BY_ACCOUNT}}
        parts.append(_check_part(part_book, as_of, part_run, rejected))
    return pa.concat_tables(parts)


def _check_finite(found: _Found, run: Mapping[str, pa.Table]) -> None:
    """Rule 14: every number in the run's trades and accounts is finite (NaN and ±inf are not; a null is no number).

    One violation per bad cell, keyed ``table.column``; whole columns at a time, so it runs before the parts.
    """
    for name in _RUN_BY_ACCOUNT:
        table = run[name]
        for field in table.schema:
            if not pa.types.is_floating(field.type):
                continue
            column = table.column(field.name)
            bad = np.asarray(pc.fill_null(pc.invert(pc.is_finite(column)), False))
            for row in np.flatnonzero(bad):
                account_id = table.column(Col.account_id)[int(row)].as_py()
                where = (f" of the trade in {table.column(Col.security_id)[int(row)].as_py()}"
                         if name == "trades" and Col.security_id in table.column_names else "")
                found.add(14, account_id, f"{name}.{field.name}",
                          f"{name}.{field.name}{where} is {column[int(row)].as_py()}; every number of a run "
                          f"must be finite")


def _check_part(book: Mapping[str, pa.Table], as_of: dt.date, run: Mapping[str, pa.Table],
                rejected: frozenset[str]) -> pa.Table:
    """:func:`check_run` on whole households: every trade's account and every run row is in ``book``."""
    found = _Found()
    securities = {r[Col.security_id]: r for r in _rows(book["securities"])}
    accounts = {r[Col.account_id]: r for r in _rows(book["accounts"])}
    lots = {(r[Col.account_id], r[Col.lot_id]): r for r in _rows(book["lots"])}
    trades = _rows(run["trades"])
    statuses = {r[Col.account_id]: r for r in _rows(run["accounts"])}
    household = {a: r[Col.household_id] or a for a, r in accounts.items()}
    group = {s: r[Col.wash_group] or s for s, r in securities.items()}

    restricted: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    tagged: dict[str, set[str]] = defaultdict(set)
    for s, r in securities.items():
        for tag in r[Col.tags] or ():
            tagged[tag].add(s)
    for r in _rows(book["restrictions"]):
        names = {r[Col.security_id]} if r[Col.security_id] is not None else tagged.get(r[Col.tag], set())
        restricted[r[Col.account_id]][r[Col.rule]] |= names

    sold = defaultdict(float)            # (account, lot) -> shares sold
    by_account: dict[str, list[dict]] = defaultdict(list)
    for t in trades:
        by_account[t[Col.account_id]].append(t)
    for account_id, rows in by_account.items():
        account = accounts.get(account_id)
        if account is None:
            found.add(0, account_id, None, "trades for an account that is not in the book")
            continue
        status = statuses.get(account_id, {}).get(Col.status)
        if account_id in rejected or account[Col.suspended] or status in _NO_TRADES:
            found.add(13, account_id, None, f"{len(rows)} trade(s) for an account that is "
                      f"{'rejected' if account_id in rejected else 'suspended' if account[Col.suspended] else status}")
        _check_trades(found, account, rows, securities, lots, restricted[account_id], as_of, sold)

    for (account_id, lot_id), shares in sold.items():
        lot = lots.get((account_id, lot_id))
        if lot is not None and shares > lot[Col.quantity] + 1e-9:
            found.add(1, account_id, lot_id, f"sells {shares:g} shares of a lot of {lot[Col.quantity]:g}")

    held, loss_held = defaultdict(float), defaultdict(float)
    for (account_id, _), lot in lots.items():
        held[(account_id, lot[Col.security_id])] += lot[Col.quantity]
        price = securities.get(lot[Col.security_id], {}).get(Col.price)
        if price is not None and lot[Col.quantity] * price < lot[Col.cost_basis]:
            loss_held[(account_id, lot[Col.security_id])] += lot[Col.quantity]
    window = _window_trades(book, as_of, household, group)
    waiting = _stuck_windows(window, accounts, statuses, rejected, restricted, held)
    excused = {key: shares for key, shares in loss_held.items()
               if (household[key[0]], group.get(key[1], key[1])) in waiting}
    largest_price = max(((s[Col.price] or 0.0) for s in securities.values()), default=0.0)
    for account_id, account in accounts.items():
        row = statuses.get(account_id)
        if row is None or account_id in rejected:
            continue
        _check_account(found, account, row, by_account.get(account_id, []), held, largest_price,
                       restricted[account_id], excused)
    _check_wash(found, as_of, trades, household, group, held, window)
    return found.table()


def _window_trades(book, as_of, household, group):
    """The household's trades of the 30 days before ``as_of``, per (household, wash group).

    Returns the pairs sold at a loss, the shares bought, and the shares bought per
    (account, security); rules 3 and 6 both read them.
    """
    window_start = as_of - dt.timedelta(days=WASH_DAYS)
    loss_sold, bought = set(), defaultdict(float)
    bought_where: dict[tuple, dict[tuple[str, str], float]] = defaultdict(lambda: defaultdict(float))
    for r in _rows(book["transactions"]):
        if not (window_start <= r[Col.trade_date] < as_of) or r[Col.account_id] not in household:
            continue
        key = (household[r[Col.account_id]], group.get(r[Col.security_id], r[Col.security_id]))
        if r[Col.side] == Side.sell and (r[Col.realized_gain] or 0.0) < 0:
            loss_sold.add(key)
        elif r[Col.side] == Side.buy:
            bought[key] += r[Col.quantity]
            bought_where[key][(r[Col.account_id], r[Col.security_id])] += r[Col.quantity]
    return loss_sold, bought, bought_where


def _stuck_windows(window, accounts, statuses, rejected, restricted, held) -> set:
    """(household, wash group) pairs bought in the window (:func:`_window_trades`) by an account that cannot sell today.

    That account is suspended, rejected or failed, or the security is ``never_sell`` there, and
    it still holds some of it (a rejected account always counts: the run says nothing of its
    lots).  Rule 6's exception (sell every share bought in the window too) cannot be taken in
    such a household, so a screen's loss sale of the group there would be a wash sale: rules 3
    and 6 meet, and the screened loss lots may wait in an ``infeasible`` account.
    """
    def cannot_sell(account_id: str, s: str) -> bool:
        status = statuses.get(account_id, {}).get(Col.status)
        gone = account_id in rejected or status == Status.rejected
        cannot = (gone or accounts[account_id][Col.suspended] or status in _NO_TRADES
                  or s in restricted[account_id].get(Rule.never_sell, ()))
        return cannot and (gone or held.get((account_id, s), 0.0) > 1e-9)
    _, _, bought_where = window
    return {key for key, buys in bought_where.items() if any(cannot_sell(a, s) for a, s in buys)}


def _check_trades(found, account, rows, securities, lots, restricted, as_of, sold) -> None:
    account_id = account[Col.account_id]
    taxable = account[Col.tax_status] == TaxStatus.taxable
    for t in rows:
        s, side, quantity = t[Col.security_id], t[Col.side], t[Col.quantity]
        security = securities.get(s)
        if security is None:
            found.add(0, account_id, s, f"trade in security {s!r}, which is not in the book")
            continue
        if not all(np.isfinite(x) for x in (quantity, t[Col.price], t[Col.value])):
            continue                                  # rule 14 reports it; no arithmetic rule can judge it
        if not quantity > 0:
            found.add(0, account_id, s, f"trade quantity {quantity} is not positive")
        if abs(t[Col.value] - quantity * t[Col.price]) > _cents(t[Col.value]):
            found.add(0, account_id, s, f"value {t[Col.value]} is not quantity x price")
        if security[Col.price] is not None and abs(t[Col.price] - security[Col.price]) > 1e-9 * security[Col.price]:
            found.add(0, account_id, s, f"price {t[Col.price]} is not the book's {security[Col.price]}")
        if not security[Col.fractional] and abs(quantity - round(quantity)) > 1e-9:
            found.add(11, account_id, s, f"{quantity:g} shares of a security that trades whole shares only")
        if side == Side.buy:
            for rule in (Rule.never_buy, Rule.exclude):
                if s in restricted.get(rule, ()):
                    found.add(2, account_id, s, f"buys {s}, which is {rule} for this account")
            if t[Col.value] < account[Col.min_trade] - _cents(t[Col.value]):
                found.add(10, account_id, s, f"buy of {t[Col.value]:.2f} is below min_trade {account[Col.min_trade]}")
            continue
        if side != Side.sell:
            found.add(0, account_id, s, f"side {side!r} is neither buy nor sell")
            continue
        if s in restricted.get(Rule.never_sell, ()):
            found.add(2, account_id, s, f"sells {s}, which is never_sell for this account")
        lot = lots.get((account_id, t[Col.lot_id]))
        if lot is None or lot[Col.security_id] != s:
            found.add(1, account_id, t[Col.lot_id], f"sell of {s} relieves lot {t[Col.lot_id]!r}, "
                      f"which the account does not hold in {s}")
            continue
        sold[(account_id, t[Col.lot_id])] += quantity
        closes = abs(quantity - lot[Col.quantity]) <= 1e-9
        if t[Col.value] < account[Col.min_trade] - _cents(t[Col.value]) and not closes:
            found.add(10, account_id, t[Col.lot_id], f"sell of {t[Col.value]:.2f} is below min_trade "
                      f"{account[Col.min_trade]} and does not close the lot")
        gain = quantity * t[Col.price] - lot[Col.cost_basis] * quantity / lot[Col.quantity]
        if t[Col.realized_gain] is None or abs(t[Col.realized_gain] - gain) > _cents(gain):
            found.add(8, account_id, t[Col.lot_id], f"realized_gain {t[Col.realized_gain]} should be {gain:.2f}")
        term = Term.long if as_of >= first_long_day(lot[Col.acquired]) else Term.short
        if t[Col.term] != term:
            found.add(7, account_id, t[Col.lot_id], f"term {t[Col.term]!r} should be {term!r} "
                      f"(acquired {lot[Col.acquired]}, sold {as_of})")
        rate = (account[Col.lt_rate] if term == Term.long else account[Col.st_rate]) if taxable else 0.0
        if abs(t[Col.est_tax] - gain * rate) > _cents(gain * rate):
            found.add(8, account_id, t[Col.lot_id], f"est_tax {t[Col.est_tax]} should be {gain * rate:.2f}")


def _check_account(found, account, row, trades, held, largest_price, restricted, excused) -> None:
    account_id = account[Col.account_id]
    status = row[Col.status]
    buys = sum(t[Col.value] for t in trades if t[Col.side] == Side.buy)
    sells = sum(t[Col.value] for t in trades if t[Col.side] == Side.sell)
    cash_after = account[Col.cash] + sells - buys
    if abs(row[Col.cash_after] - cash_after) > _cents(cash_after) and status not in _NO_TRADES:
        found.add(0, account_id, None, f"cash_after {row[Col.cash_after]:.2f} is not cash + sells - buys "
                  f"= {cash_after:.2f}")
    if status in (Status.suspended, Status.rejected):
        return
    if cash_after < -_cents(cash_after) and status != Status.infeasible:
        found.add(4, account_id, None, f"cash after trading is {cash_after:.2f}, below zero")
    floor = sum(account[column] for column in CASH_FLOOR_COLUMNS)
    if cash_after < floor - _cents(floor) and status not in (Status.infeasible, Status.failed):
        found.add(4, account_id, None, f"cash after trading {cash_after:.2f} is below the floor {floor:.2f} "
                  f"and the account is {status}, not infeasible")
    if status == Status.infeasible and not row[Col.detail]:
        found.add(4, account_id, None, "an infeasible account must say why and by how much")
    # rule 3: exclude holdings sold in full unless never_sell; loss lots whose sale would be a wash
    # sale the exception of rule 6 cannot cure (see _stuck_windows) may wait, the account infeasible
    for s in restricted.get(Rule.exclude, ()):
        if s in restricted.get(Rule.never_sell, ()) or status == Status.failed:
            continue
        quantity = held.get((account_id, s), 0.0)
        sold_now = sum(t[Col.quantity] for t in trades if t[Col.side] == Side.sell and t[Col.security_id] == s)
        may_wait = excused.get((account_id, s), 0.0)
        if quantity > 1e-9 and sold_now < quantity - may_wait - 1e-9:
            found.add(3, account_id, s, f"holds {quantity:g} shares of excluded {s}; sells only {sold_now:g}"
                      + (f" ({may_wait:g} at a loss may wait for a wash-sale window)" if may_wait else ""))
        elif quantity > 1e-9 and sold_now < quantity - 1e-9 and status != Status.infeasible:
            found.add(3, account_id, s, f"keeps {quantity - sold_now:g} shares of excluded {s} for a wash-sale "
                      f"window, and the account is {status}, not infeasible")
    value = row[Col.value]
    mandated = row[Col.mandated]
    limit = account[Col.turnover_limit]
    if limit is not None and not mandated and value > 0 and (buys + sells) > limit * value + _cents(value):
        found.add(12, account_id, None, f"turnover {(buys + sells) / value:.4f} exceeds the limit {limit}")
    budget = account[Col.tax_budget]
    if budget is not None and not mandated and account[Col.tax_status] == TaxStatus.taxable:
        ytd = account[Col.realized_st_ytd] * account[Col.st_rate] + account[Col.realized_lt_ytd] * account[Col.lt_rate]
        tax = sum(t[Col.est_tax] for t in trades if t[Col.side] == Side.sell)
        if tax > 0 and ytd + tax > budget + _cents(budget):
            found.add(9, account_id, None, f"tax of the year {ytd + tax:.2f} (proposal {tax:.2f}) exceeds "
                      f"the budget {budget:.2f}")
    cap = account[Col.max_cash]
    if cap is not None and limit is None and status in (Status.proposed, Status.no_trade):
        cap += account[Col.withdrawal] + account[Col.reserve_cash]
        # whole shares and min_trade may leave up to a share's price or a min_trade uninvested
        slack = max(account[Col.min_trade], largest_price)
        if cash_after > cap + slack:
            found.add(5, account_id, None, f"cash after trading {cash_after:.2f} is above the cap {cap:.2f}")


def _check_wash(found, as_of, trades, household, group, held, window) -> None:
    """Rule 6.  The exception "unless every share bought then is sold today too" holds only where
    each account that bought the group in the window sells today, of each security it bought, the
    shares it bought (or all it still holds of it, where it holds fewer), and the household sells
    at least as many shares of the group as it bought.  ``window``: :func:`_window_trades`."""
    loss_sold, bought, bought_where = window
    buys_today, loss_sales_today, sold_shares = set(), set(), defaultdict(float)
    sold_where = defaultdict(float)
    for t in trades:
        if t[Col.account_id] not in household or t[Col.security_id] not in group:
            continue
        key = (household[t[Col.account_id]], group[t[Col.security_id]])
        if t[Col.side] == Side.buy:
            buys_today.add(key)
            if key in loss_sold:
                found.add(6, t[Col.account_id], key[1], f"buys wash group {key[1]}, which household "
                          f"{key[0]} sold at a loss in the {WASH_DAYS} days before {as_of}")
        else:
            if t[Col.side] == Side.sell:
                sold_shares[key] += t[Col.quantity]
                sold_where[(t[Col.account_id], t[Col.security_id])] += t[Col.quantity]
            if (t[Col.realized_gain] or 0.0) < 0:
                loss_sales_today.add(key)
    for key in sorted(loss_sales_today):
        if key in buys_today:
            found.add(6, None, key[1], f"household {key[0]} sells wash group {key[1]} at a loss and buys it today")
        if bought.get(key, 0.0) > 0 and sold_shares[key] < bought[key] - 1e-9:
            found.add(6, None, key[1], f"household {key[0]} sells wash group {key[1]} at a loss after buying "
                      f"{bought[key]:g} shares in the last {WASH_DAYS} days, and sells only {sold_shares[key]:g}")
            continue
        for (account_id, security_id), shares in sorted(bought_where.get(key, {}).items()):
            owed = min(shares, held.get((account_id, security_id), 0.0))
            if sold_where[(account_id, security_id)] < owed - 1e-9:
                found.add(6, account_id, key[1], f"household {key[0]} sells wash group {key[1]} at a loss, but "
                          f"{account_id} bought {shares:g} shares of {security_id} in the last {WASH_DAYS} days "
                          f"and sells only {sold_where[(account_id, security_id)]:g} of them")


def violations_by_rule(violations: pa.Table) -> dict[int, int]:
    """Counts of violations per rule number."""
    counts = np.bincount(violations.column(Col.rule).to_numpy(), minlength=15) if violations.num_rows else []
    return {rule: int(n) for rule, n in enumerate(counts) if n}
