"""What-ifs: one account's target after a proposed change of its customization.

A :class:`CustomizationChange` adds or lifts restrictions (screens, never-buy, never-sell),
sets custom asset-class weights or products, and sets fields of the account's ``accounts`` row
(cash minimum, tax budget, template, ...); with ``replace`` its restrictions and allocations are
the account's whole lists (the advisor portal's saves).  :func:`changed_rows` gives the account's
``accounts``, ``restrictions`` and ``allocations`` rows after it, and :func:`account_target` its target,
built by :func:`engine.rebalance.targets.build_targets`' own code on a one-account slice of
the book, so a what-if and the nightly build cannot disagree.

Pure: Arrow tables in, NumPy/SciPy arrays out; no storage, no ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

from engine.book.validate import Rejections
from engine.contract import schema
from engine.contract.config import PolicyConfig
from engine.contract.schema import Col, Reject, Rule
from engine.rebalance.targets import Targets, build_from_tables, target_tables

__all__ = ["Restriction", "Allocation", "CustomizationChange", "account_target", "changed_rows", "ACCOUNT_FIELDS"]

#: The ``accounts`` fields a change may set: the account's customization and tax preferences.
ACCOUNT_FIELDS = schema.ACCOUNT_PREFERENCES


class Restriction(NamedTuple):
    """One ``restrictions`` row of an account: a rule and a security or a tag."""
    rule: str
    security_id: str | None = None
    tag: str | None = None


class Allocation(NamedTuple):
    """One ``allocations`` row of an account; None leaves that part as it is."""
    asset_class: str
    weight: float | None = None
    model_id: str | None = None


@dataclass(frozen=True)
class CustomizationChange:
    """A proposed change of one account's customization.

    Attributes
    ----------
    add_restrictions
        Restrictions to add (a screen is ``Restriction("exclude", tag="tobacco")``).
    remove_restrictions
        Restrictions to lift; rows equal to one of these are dropped.
    allocations
        Per asset class, a new custom weight (fraction; 0 removes the class)
        and/or a new product (model_id).  A set field replaces that field of
        the account's rows for the class; a class without rows gets one.
    account
        ``(column, value)`` pairs setting fields of the account's ``accounts`` row
        (names of :data:`ACCOUNT_FIELDS`, values in the contract's units).
    replace
        When True, ``add_restrictions`` and ``allocations`` are the account's whole lists:
        its present rows are dropped first (``remove_restrictions`` is then moot).
    """

    add_restrictions: tuple[Restriction, ...] = ()
    remove_restrictions: tuple[Restriction, ...] = ()
    allocations: tuple[Allocation, ...] = ()
    account: tuple[tuple[str, Any], ...] = ()
    replace: bool = False

    def __post_init__(self):
        unknown = [name for name, _ in self.account if name not in ACCOUNT_FIELDS]
        if unknown:
            raise ValueError(f"a change may set only these accounts fields: {', '.join(ACCOUNT_FIELDS)}; "
                             f"got {', '.join(map(repr, unknown))}")

    @classmethod
    def whole(cls, account: Mapping[str, Any] | None = None, restrictions=(), allocations=()
              ) -> "CustomizationChange":
        """The account's customization as a whole: these account fields, and exactly these
        restrictions and allocations (the lists replace the account's)."""
        return cls(add_restrictions=tuple(Restriction(*r) for r in restrictions),
                   allocations=tuple(Allocation(*a) for a in allocations),
                   account=tuple((account or {}).items()), replace=True)

    @classmethod
    def screen(cls, *, security_id: str | None = None, tag: str | None = None) -> "CustomizationChange":
        """Add one ``exclude`` screen, by security or by tag."""
        return cls(add_restrictions=(Restriction(Rule.exclude, security_id, tag),))

    @classmethod
    def product(cls, asset_class: str, model_id: str) -> "CustomizationChange":
        """Choose another product for an asset class (e.g. ETF → direct index)."""
        return cls(allocations=(Allocation(asset_class, None, model_id),))

    @classmethod
    def allocation(cls, weights: Mapping[str, float]) -> "CustomizationChange":
        """Custom asset-class weights, ``{asset_class: weight}`` (rescaled to 1 afterwards)."""
        return cls(allocations=tuple(Allocation(c, float(w), None) for c, w in weights.items()))


def account_target(source: Any, account_id: str,
                   change: CustomizationChange = CustomizationChange(), policy: PolicyConfig | None = None) -> Targets:
    """The target of one account after a proposed change of its customization.

    Runs :func:`~engine.rebalance.targets.build_targets`' code on a one-account slice of
    the book (the same code path, so a what-if and the nightly build cannot disagree), with
    the account's restrictions and allocations changed by ``change``.  The custom
    allocation is checked against the template's bounds and alternatives, and
    the change's restrictions against the securities table; problems are rows
    of ``rejections`` and leave the row empty.

    Parameters
    ----------
    source
        A :class:`engine.book.storage.Book` or a mapping of table name to Arrow table.
    account_id
        The account; it must be in the accounts table.
    change
        The proposed change; the default (no change) gives today's target.
    policy
        ``substitutes`` (:mod:`engine.rebalance.substitutes`); the defaults where None.

    Returns
    -------
    Targets
        With one account row; ``security_ids`` and ``asset_classes`` as for
        the whole book, so rows compare directly.
    """
    tables = target_tables(source)
    accounts = tables["accounts"]
    mine = accounts.filter(pc.equal(accounts.column(Col.account_id), account_id))
    if mine.num_rows == 0:
        raise ValueError(f"account {account_id!r} is not in the accounts table")
    found = Rejections()
    sliced = {**tables, **changed_rows(tables, account_id, change, found)}
    sliced["accounts"] = sliced["accounts"].filter(pc.equal(sliced["accounts"].column(Col.account_id), account_id))
    rejected = set() if found.table().num_rows == 0 else {account_id}
    return build_from_tables(sliced, rejected=rejected, check_allocations=True, found=found, policy=policy)


def changed_rows(tables: Mapping[str, pa.Table], account_id: str, change: CustomizationChange,
                 found: Rejections | None = None) -> dict[str, pa.Table]:
    """The ``accounts`` table with the account's row changed, and the account's ``restrictions``
    and ``allocations`` rows after ``change`` (what a what-if solves with); problems with the
    change are added to ``found``."""
    allocations = tables["allocations"]
    if change.replace:
        allocations = allocations.filter(pc.not_equal(allocations.column(Col.account_id), account_id))
    return {"accounts": changed_account(tables["accounts"], account_id, change.account),
            "restrictions": _changed_restrictions(tables, account_id, change, found or Rejections()),
            "allocations": _changed_allocations(allocations, account_id, change.allocations)}


def changed_account(accounts: pa.Table, account_id: str, fields: tuple[tuple[str, Any], ...]) -> pa.Table:
    """``accounts`` with the account's row's ``fields`` set (in place: the table's order is kept).

    Raises
    ------
    ValueError
        A value that cannot be the column's type (the message names the column).
    """
    if not fields:
        return accounts
    mine = pc.equal(accounts.column(Col.account_id), account_id)
    for name, value in fields:
        index = accounts.schema.get_field_index(name)
        field = accounts.schema.field(index)
        try:
            scalar = pa.scalar(value, field.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
            raise ValueError(f"{name} must be {field.type}, got {value!r}") from None
        if not scalar.is_valid and not field.nullable:
            raise ValueError(f"{name} may not be empty")
        accounts = accounts.set_column(index, field, pc.if_else(mine, scalar, accounts.column(index)))
    return accounts


def _changed_restrictions(tables: Mapping[str, pa.Table], account_id: str, change: CustomizationChange,
                          found: Rejections) -> pa.Table:
    """The account's ``restrictions`` rows less the lifted ones, plus the added ones; an added
    row with an unknown rule, both or neither of security and tag, or an unknown security is
    added to ``found`` (and kept)."""
    restrictions = tables["restrictions"]
    mine = restrictions.filter(pc.equal(restrictions.column(Col.account_id), account_id))
    rows = [Restriction(r, s, t) for r, s, t in zip(*(mine.column(n).to_pylist()
                                                      for n in (Col.rule, Col.security_id, Col.tag)))]
    rows = [] if change.replace else rows
    lifted = set(change.remove_restrictions)
    rows = [row for row in rows if row not in lifted]
    known = set(tables["securities"].column(Col.security_id).to_pylist())
    for row in change.add_restrictions:
        key = f"{account_id}/{row.rule}/{row.security_id if row.security_id is not None else row.tag}"
        if row.rule not in Rule.all:
            found.add(account_id, "restrictions", key, Reject.bad_account,
                      f"restriction rule {row.rule!r} is not one of {', '.join(Rule.all)}")
        elif (row.security_id is None) == (row.tag is None):
            found.add(account_id, "restrictions", key, Reject.bad_account,
                      "a restriction sets exactly one of security_id and tag")
        elif row.security_id is not None and row.security_id not in known:
            found.add(account_id, "restrictions", key, Reject.unknown_restriction_security,
                      f"{row.rule} restriction names security {row.security_id!r}, which is not in "
                      f"the securities table")
        rows.append(row)
    return pa.table({Col.account_id: [account_id] * len(rows),
                     Col.rule: [r.rule for r in rows],
                     Col.security_id: [r.security_id for r in rows],
                     Col.tag: [r.tag for r in rows]}, schema=schema.RESTRICTIONS)


def _changed_allocations(allocations: pa.Table, account_id: str,
                         changes: tuple[Allocation, ...]) -> pa.Table:
    """The account's ``allocations`` rows with ``changes`` applied: a set weight (fraction) or
    product replaces that field of every row of its asset class; a class without rows gets one."""
    mine = allocations.filter(pc.equal(allocations.column(Col.account_id), account_id))
    rows = [list(r) for r in zip(*(mine.column(n).to_pylist()
                                   for n in (Col.asset_class, Col.weight, Col.model_id)))]
    for change in changes:
        same = [row for row in rows if row[0] == change.asset_class]
        if not same:
            rows.append([change.asset_class, change.weight, change.model_id])
        for row in same:
            row[1] = change.weight if change.weight is not None else row[1]
            row[2] = change.model_id if change.model_id is not None else row[2]
    return pa.table({Col.account_id: [account_id] * len(rows),
                     Col.asset_class: [r[0] for r in rows],
                     Col.weight: pa.array([r[1] for r in rows], pa.float64()),
                     Col.model_id: pa.array([r[2] for r in rows], pa.string())}, schema=schema.ALLOCATIONS)
