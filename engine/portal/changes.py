"""A change as the portal receives it (JSON in the book contract's names), read into a
:class:`~engine.rebalance.customization.CustomizationChange`, and checked by the rules of ``canopy validate``.

A change is ``{"account": {column: value}, "restrictions": [{"rule", "security_id" | "tag"}],
"allocations": [{"asset_class", "weight" | "model_id"}]}``; a list that is given replaces the
account's list whole, one that is left out stays as it is.  Problems raise :class:`Invalid` with
the field they concern (``account.max_cash``, ``restrictions[2].tag``, ...) and a message.
"""

from __future__ import annotations

from typing import Any, Mapping

import pyarrow as pa
import pyarrow.compute as pc

from engine.book.validate import validate
from engine.contract import schema
from engine.contract.config import PolicyConfig
from engine.contract.errors import BookError, CanopyError
from engine.contract.schema import Col, Reject, Rule
from engine.rebalance.customization import ACCOUNT_FIELDS, CustomizationChange, account_target, changed_rows

__all__ = ["Invalid", "read_change", "check_change", "CHANGE_KEYS"]

#: The keys of a change (and a save's ``version``).
CHANGE_KEYS = ("account", "restrictions", "allocations")


class Invalid(CanopyError):
    """A change that may not be saved: ``field`` names what is wrong (422)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


def _list(body: Mapping[str, Any], key: str) -> list[dict] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(row, dict) for row in value):
        raise Invalid(key, "must be a list of objects")
    return value


def _only(row: dict, where: str, table: str, columns: tuple[str, ...]) -> None:
    """:class:`Invalid` for a key of ``row`` that is not one of the ``columns`` of ``table``."""
    extra = set(row) - set(columns)
    if extra:
        raise Invalid(f"{where}.{sorted(extra)[0]}", f"is not a {table} column ({', '.join(columns)})")


def _restrictions(rows: list[dict]) -> list[tuple]:
    out = []
    for i, row in enumerate(rows):
        where = f"restrictions[{i}]"
        _only(row, where, "restrictions", (Col.rule, Col.security_id, Col.tag))
        if row.get(Col.rule) not in Rule.all:
            raise Invalid(f"{where}.{Col.rule}", f"must be one of {', '.join(Rule.all)}, got {row.get(Col.rule)!r}")
        if (row.get(Col.security_id) is None) == (row.get(Col.tag) is None):
            raise Invalid(f"{where}.{Col.security_id}", "a restriction sets exactly one of security_id and tag")
        for name in (Col.security_id, Col.tag):
            if row.get(name) is not None and not isinstance(row[name], str):
                raise Invalid(f"{where}.{name}", f"must be text, got {row[name]!r}")
        out.append((row[Col.rule], row.get(Col.security_id), row.get(Col.tag)))
    return out


def _allocations(rows: list[dict]) -> list[tuple]:
    out = []
    for i, row in enumerate(rows):
        where = f"allocations[{i}]"
        _only(row, where, "allocations", (Col.asset_class, Col.weight, Col.model_id))
        if not isinstance(row.get(Col.asset_class), str):
            raise Invalid(f"{where}.{Col.asset_class}", "is required: the asset class the row reweights")
        weight, model = row.get(Col.weight), row.get(Col.model_id)
        if weight is None and model is None:
            raise Invalid(f"{where}.{Col.weight}", "a row sets a weight, a model_id or both")
        if weight is not None and (isinstance(weight, bool) or not isinstance(weight, (int, float))):
            raise Invalid(f"{where}.{Col.weight}", f"must be a number (a fraction), got {weight!r}")
        if model is not None and not isinstance(model, str):
            raise Invalid(f"{where}.{Col.model_id}", f"must be text, got {model!r}")
        out.append((row[Col.asset_class], None if weight is None else float(weight), model))
    return out


def read_change(body: Any, current: Mapping[str, Any]) -> CustomizationChange:
    """The change ``body`` as a whole-list :class:`CustomizationChange` of the account whose
    customization is ``current`` (``{"account", "restrictions", "allocations"}``, the lists kept
    where ``body`` leaves them out).

    Raises
    ------
    Invalid
        A key, column or value of the wrong kind (the field named).
    """
    if not isinstance(body, dict):
        raise Invalid("change", "must be a JSON object with account, restrictions, allocations")
    extra = set(body) - set(CHANGE_KEYS) - {Col.version}
    if extra:
        raise Invalid(sorted(extra)[0], f"is not part of a change; expected {', '.join(CHANGE_KEYS)}")
    account = body.get("account") or {}
    if not isinstance(account, dict):
        raise Invalid("account", "must be an object of accounts columns")
    for name in account:
        if name not in ACCOUNT_FIELDS:
            why = ("is not an accounts column" if name not in schema.ACCOUNTS.names else
                   "is not a preference the portal sets (the account's identity, household, cash and realized "
                   "gains come from the book; ask for cash with a withdrawal request)")
            raise Invalid(f"account.{name}", why)
    restrictions = _list(body, "restrictions")
    allocations = _list(body, "allocations")
    if restrictions is None:
        restrictions = current["restrictions"]
    if allocations is None:
        allocations = current["allocations"]
    present = current.get("account") or {}
    account = {name: value for name, value in account.items() if name not in present or present[name] != value}
    try:
        return CustomizationChange.whole(account, _restrictions(restrictions), _allocations(allocations))
    except ValueError as exc:
        raise Invalid("account", str(exc)) from None


def _field_of(row: Mapping[str, Any]) -> str:
    """The field a rejection row concerns: ``account.<column>`` where its message names one."""
    table = row[Col.table]
    if row[Col.rule] == Reject.unknown_template:
        return f"account.{Col.template_id}"
    if table == "accounts":
        named = [name for name in ACCOUNT_FIELDS if name in row[Col.message]]
        return f"account.{min(named, key=row[Col.message].index)}" if named else "account"
    return table


def check_change(tables: Mapping[str, pa.Table], account_id: str, change: CustomizationChange,
                 as_of, policy: PolicyConfig, before: pa.Table | None) -> dict[str, pa.Table]:
    """The account's household tables after ``change``, checked as ``canopy validate`` checks a book.

    ``tables`` holds the shared tables and the household's rows; ``before`` is the rejections
    the household had without the change (a problem it already had is not the change's).

    Raises
    ------
    Invalid
        A value that cannot be its column's type, or a rejection the change brings (a cash cap
        below the floor, a weight outside the template's bounds, an unknown security, a product
        that is not an alternative, a screen that empties a product, ...), the field named.
    """
    try:
        changed = changed_rows(tables, account_id, change)
    except ValueError as exc:
        raise Invalid(f"account.{str(exc).split()[0]}", str(exc)) from None
    after = dict(tables)
    after["accounts"] = changed["accounts"]
    for name in ("restrictions", "allocations"):
        others = tables[name].filter(pc.not_equal(tables[name].column(Col.account_id), account_id))
        after[name] = pa.concat_tables([others, changed[name].cast(others.schema)])
    try:
        found = validate(after, as_of, policy)
    except BookError as exc:
        raise Invalid(f"{exc.table or 'account'}.{exc.column}" if exc.column else "account", str(exc)) from None
    known = set() if before is None else set(zip(before.column(Col.account_id).to_pylist(),
                                                  before.column(Col.message).to_pylist()))
    target = account_target(after, account_id)
    rows = pa.concat_tables([found, target.rejections.cast(found.schema)]).to_pylist()
    new = [r for r in rows if r[Col.account_id] == account_id and (r[Col.account_id], r[Col.message]) not in known]
    if new:
        raise Invalid(_field_of(new[0]), new[0][Col.message])
    return after
