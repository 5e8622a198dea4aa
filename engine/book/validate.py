"""Validation of a book's tables (docs/contract.md §1).

Two kinds of problems:

* whole-book problems (a duplicate key, an empty risk model, a model whose
  weights do not sum to 1, a template naming an unknown model, ...) raise one
  :class:`~engine.contract.errors.BookError` naming table, column and key;
* account-level problems (an unknown security in a lot, a missing or stale
  price of a held or targeted security, a bad lot, an unknown template, a
  broken custom allocation, a restriction naming an unknown security) become
  rows of the ``rejections`` table; the account is rejected alone.

Pure: Arrow tables in, an Arrow table out; no storage.
"""

from __future__ import annotations

import datetime as dt
from typing import Mapping, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.contract import schema
from engine.contract.arrow import numbers
from engine.contract.config import PolicyConfig
from engine.contract.errors import BookError
from engine.contract.rules import Breaks, covariance_problem, field_rules, row_key
from engine.contract.schema import Col, Reject

Tables = Mapping[str, pa.Table]


class Rejections:
    """Collects rejection rows; :meth:`table` returns them as ``schema.REJECTIONS``."""

    def __init__(self) -> None:
        self.rows: dict[str, list] = {f.name: [] for f in schema.REJECTIONS}

    def add(self, account_id: str | None, table: str, key: str | None, rule: str, message: str) -> None:
        for name, value in ((Col.account_id, account_id), (Col.table, table), (Col.key, key),
                            (Col.rule, rule), (Col.message, message)):
            self.rows[name].append(value)

    def table(self) -> pa.Table:
        return sort_rejections(pa.table(self.rows, schema=schema.REJECTIONS))


def sort_rejections(rejections: pa.Table) -> pa.Table:
    """Rejections in their one order: by account, table, rule, key."""
    if not rejections.num_rows:
        return rejections
    order = pc.sort_indices(rejections, sort_keys=[(Col.account_id, "ascending"), (Col.table, "ascending"),
                                                   (Col.rule, "ascending"), (Col.key, "ascending")])
    return rejections.take(order)


# --------------------------------------------------------------------------
# Whole-book checks.

def _key_codes(table: pa.Table, key: tuple[str, ...]) -> np.ndarray | None:
    """One int64 per row that is equal exactly where the rows' ``key`` values are, or None when
    the columns' distinct values are too many to combine (then hash the rows instead)."""
    codes = np.zeros(table.num_rows, np.int64)
    span = 1
    for name in key:
        column = table.column(name)
        distinct = pc.unique(column)
        span *= len(distinct) + 1
        if span >= 2**62:
            return None
        position = pc.index_in(column, value_set=distinct).fill_null(-1)
        codes = codes * (len(distinct) + 1) + (np.asarray(position.to_numpy(), np.int64) + 1)
    return codes


def check_keys(tables: Tables) -> None:
    """Raise :class:`BookError` on a duplicate key in any keyed table.

    By sorting an integer code per row: a hash aggregation of the 33 million (account_id,
    lot_id) pairs of a 100,000-account book held ~3.4 GB at once, most of validation's peak.
    The codes follow the rows' first appearances, so a book's rows in order give codes
    nearly in order, which a stable sort exploits: 0.6 s for those 33 million, against 2.3 s
    by quicksort.
    """
    for name, key in schema.BOOK_KEYS.items():
        table = tables[name]
        if table.num_rows == 0:
            continue
        codes = _key_codes(table, key)
        if codes is None:
            counts = table.group_by(list(key)).aggregate([([], "count_all")])
            dup = counts.filter(pc.greater(counts.column("count_all"), 1))
            if not dup.num_rows:
                continue
            first = {k: dup.column(k)[0].as_py() for k in key}
            times, keys = dup.column("count_all")[0].as_py(), dup.num_rows
        else:
            ordered = np.sort(codes, kind="stable")
            repeated = ordered[1:][ordered[1:] == ordered[:-1]]
            if not repeated.size:
                continue
            duplicated = repeated[np.r_[True, repeated[1:] != repeated[:-1]]]
            rows = np.flatnonzero(np.isin(codes, duplicated))
            row = int(rows[0])                     # the first duplicated key, in table order
            first = {k: table.column(k)[row].as_py() for k in key}
            times, keys = int((codes[rows] == codes[row]).sum()), int(duplicated.size)
        raise BookError(
            f"duplicate key {'/'.join(key)}: {first} occurs {times} "
            f"times ({keys} duplicated key(s) in all); each must be unique",
            table=name, column="/".join(key), key="/".join(str(v) for v in first.values()))


def check_risk_model(tables: Tables) -> None:
    """The risk model must be present, refer to known factors, and its covariance be a covariance matrix.

    Its numbers' bounds are field rules (:func:`check_field_rules`), checked before.
    """
    exposures, covariance = tables["factor_exposures"], tables["factor_covariance"]
    if exposures.num_rows == 0 or covariance.num_rows == 0:
        empty = "factor_exposures" if exposures.num_rows == 0 else "factor_covariance"
        raise BookError("the risk model is empty; a book needs factor exposures and a factor "
                        "covariance", table=empty)
    factors = set(pc.unique(covariance.column(Col.factor_1)).to_pylist()) | set(
        pc.unique(covariance.column(Col.factor_2)).to_pylist())
    exposed = set(pc.unique(exposures.column(Col.factor)).to_pylist())
    missing = sorted(exposed - factors)
    if missing:
        raise BookError(f"factor(s) {', '.join(missing[:5])} have exposures but no covariance; "
                        f"give factor_covariance a row for each factor pair",
                        table="factor_covariance", column=Col.factor_1, key=missing[0])
    problem = covariance_problem(covariance)
    if problem is not None:
        text, row = problem
        raise BookError(f"{text}; correct the risk model", table="factor_covariance", column=Col.covariance,
                        key=row_key(covariance, "factor_covariance", row))


def check_field_rules(tables: Tables, as_of: dt.date) -> None:
    """Raise :class:`BookError` on the first value breaking a ``book`` field rule (engine.contract.rules)."""
    for name in schema.BOOK_TABLES:
        table = tables[name]
        for rule in field_rules(name, Breaks.book):
            bad = rule.broken(table, as_of)
            if bad.any():
                row = int(np.argmax(bad))
                key = row_key(table, name, row)
                raise BookError(f"{rule.column} is {table.column(rule.column)[row].as_py()!r} at row {key}; it must be "
                                f"{rule.bounds(as_of)} ({rule.why}); {int(bad.sum())} row(s) break this: correct "
                                f"them and run again", table=name, column=rule.column, key=key)


def check_list_elements(tables: Tables) -> None:
    """Raise :class:`BookError` on a null inside a list column (``securities.tags``,
    ``templates.alternatives``): a list may be null or empty, its elements may not."""
    for name in schema.BOOK_TABLES:
        table = tables[name]
        for field in table.schema:
            if not pa.types.is_list(field.type):
                continue
            column = table.column(field.name)
            elements = pc.list_flatten(column)
            if not elements.null_count:
                continue
            parents = np.asarray(pc.list_parent_indices(column).to_numpy(zero_copy_only=False))
            bad_rows = np.unique(parents[np.asarray(elements.is_null())])
            key = row_key(table, name, int(bad_rows[0]))
            raise BookError(f"{field.name} holds a null element at row {key} ({bad_rows.size} row(s) do); a list "
                            f"may be null or empty, but each element must be a string: remove the nulls",
                            table=name, column=field.name, key=key)


def check_enums(tables: Tables) -> None:
    """Columns of the whole book that take one of a fixed set of values."""
    for name, column, allowed in (("securities", Col.kind, schema.Kind.all),
                                  ("transactions", Col.side, schema.Side.all)):
        values = tables[name].column(column)
        bad = pc.invert(pc.is_in(values, value_set=pa.array(allowed)))
        if pc.any(bad).as_py():
            first = pc.filter(values, bad)[0].as_py()
            raise BookError(f"value {first!r} is not one of {', '.join(allowed)}",
                            table=name, column=column, key=first)


def check_models(tables: Tables, policy: PolicyConfig) -> None:
    """Model weights summing to 1; securities known (each weight's bounds: a field rule)."""
    models = tables["models"]
    if models.num_rows == 0:
        raise BookError("no models; templates need at least one product", table="models")
    _check_weights_sum_to_one(models, "models", Col.model_id, "model", policy,
                              f" (within {policy.model_weight_tolerance:g})")
    known = tables["securities"].column(Col.security_id)
    unknown = pc.invert(pc.is_in(models.column(Col.security_id), value_set=known))
    if pc.any(unknown).as_py():
        row = models.filter(unknown).slice(0, 1)
        raise BookError(f"model holds security {row.column(Col.security_id)[0].as_py()!r} that is "
                        f"not in the securities table", table="models", column=Col.security_id,
                        key=row.column(Col.model_id)[0].as_py())


def _check_weights_sum_to_one(table: pa.Table, name: str, key: str, what: str, policy: PolicyConfig,
                              within: str) -> None:
    """The ``weight`` of each ``key`` group of ``table`` sums to 1 (within the policy's tolerance)."""
    sums = table.group_by(key).aggregate([(Col.weight, "sum")])
    total = numbers(sums, f"{Col.weight}_sum", fill=None)
    off = np.abs(total - 1.0) > policy.model_weight_tolerance
    if off.any():
        row = int(np.argmax(off))
        raise BookError(f"{what} weights sum to {total[row]:.10g}; expected 1{within}",
                        table=name, column=Col.weight, key=sums.column(key)[row].as_py())


def check_templates(tables: Tables, policy: PolicyConfig) -> None:
    """Template weights sum to 1, bounds are ordered, every product is a known model (bounds: field rules)."""
    templates = tables["templates"]
    if templates.num_rows == 0:
        raise BookError("no templates", table="templates")
    model_ids = pc.unique(tables["models"].column(Col.model_id))
    unknown = pc.invert(pc.is_in(templates.column(Col.model_id), value_set=model_ids))
    if pc.any(unknown).as_py():
        row = templates.filter(unknown).slice(0, 1)
        raise BookError(f"asset class {row.column(Col.asset_class)[0].as_py()!r} names model "
                        f"{row.column(Col.model_id)[0].as_py()!r}, which is not in the models table",
                        table="templates", column=Col.model_id, key=row.column(Col.template_id)[0].as_py())
    alternatives = pc.list_flatten(templates.column(Col.alternatives))
    parents = pc.list_parent_indices(templates.column(Col.alternatives))
    unknown = pc.invert(pc.is_in(alternatives, value_set=model_ids))
    if pc.any(unknown).as_py():
        idx = int(np.argmax(unknown.to_numpy(zero_copy_only=False)))
        parent = int(parents[idx].as_py())
        raise BookError(f"alternative product {alternatives[idx].as_py()!r} of asset class "
                        f"{templates.column(Col.asset_class)[parent].as_py()!r} is not in the models table",
                        table="templates", column=Col.alternatives,
                        key=templates.column(Col.template_id)[parent].as_py())
    _check_weights_sum_to_one(templates, "templates", Col.template_id, "template", policy, "")
    lo, w, hi, band = (numbers(templates, c, fill=None)
                       for c in (Col.min_weight, Col.weight, Col.max_weight, Col.band))
    bad = ~((lo <= w) & (w <= hi))                      # each in [0, 1]: field rules
    if bad.any():
        row = int(np.argmax(bad))
        raise BookError(f"asset class {templates.column(Col.asset_class)[row].as_py()!r}: need "
                        f"0 <= min_weight <= weight <= max_weight <= 1 and band >= 0, got "
                        f"{lo[row]}, {w[row]}, {hi[row]}, band {band[row]}",
                        table="templates", column=Col.weight, key=templates.column(Col.template_id)[row].as_py())


def check_substitutes(tables: Tables) -> None:
    """Each row of the optional ``substitutes`` table (contract version 2) names two different known securities."""
    substitutes = tables["substitutes"]
    if substitutes.num_rows == 0:
        return
    known = tables["securities"].column(Col.security_id)
    for column in (Col.security_id, Col.substitute_id):
        unknown = pc.invert(pc.is_in(substitutes.column(column), value_set=known))
        if pc.any(unknown).as_py():
            row = int(np.argmax(np.asarray(unknown)))
            raise BookError(f"{column} {substitutes.column(column)[row].as_py()!r} is not in the securities table "
                            f"({int(np.asarray(unknown).sum())} row(s) name unknown securities); add the security "
                            f"or remove the row", table="substitutes", column=column,
                            key=row_key(substitutes, "substitutes", row))
    same = np.asarray(pc.equal(substitutes.column(Col.security_id), substitutes.column(Col.substitute_id)))
    if same.any():
        row = int(np.argmax(same))
        raise BookError(f"security {substitutes.column(Col.security_id)[row].as_py()!r} is named as its own "
                        f"substitute; a substitute is another security: remove the row", table="substitutes",
                        column=Col.substitute_id, key=row_key(substitutes, "substitutes", row))


# --------------------------------------------------------------------------
# Account-level checks.

def unusable_securities(securities: pa.Table, as_of: dt.date, policy: PolicyConfig) -> list[str]:
    """Ids of the securities an account may not hold or target: a missing or stale price, or a
    broken ``account`` field rule (what rejects the accounts that hold or target them)."""
    return sorted(_security_problems(securities, as_of, policy))


class _Problem(NamedTuple):
    """The first problem of one security, as an account that holds or targets it is told."""

    rule: str        # the rejections rule (Reject)
    text: str        # "security S, which has no usable price"
    remedy: str      # what to do: "supply a current price"


def _security_problems(securities: pa.Table, as_of: dt.date, policy: PolicyConfig) -> dict[str, _Problem]:
    """Per security id with a problem, its first: a missing price (null, or breaking the price's field
    rule, or no price_date), a stale one (before as_of - stale_price_days), then the securities'
    ``account`` field rules in order (engine.contract.rules)."""
    ids = securities.column(Col.security_id).to_pylist()
    price_date = securities.column(Col.price_date)
    rules = field_rules("securities", Breaks.account)
    price_rule = next(r for r in rules if r.column == Col.price)
    missing = (price_rule.broken(securities, as_of) | np.asarray(securities.column(Col.price).is_null())
               | np.asarray(price_date.is_null()))
    oldest = as_of - dt.timedelta(days=policy.stale_price_days)
    stale_mask = pc.fill_null(pc.less(price_date, pa.scalar(oldest, pa.date32())), False)
    stale = np.asarray(stale_mask) & ~missing
    problems: dict[str, _Problem] = {}
    for i in np.flatnonzero(missing):
        problems[ids[i]] = _Problem(Reject.missing_price, f"security {ids[i]}, which has no usable price",
                                    "supply a current price")
    for i in np.flatnonzero(stale):
        problems[ids[i]] = _Problem(Reject.stale_price, f"security {ids[i]}, whose last price is from "
                                    f"{price_date[int(i)].as_py()}", "supply a current price")
    for rule in rules:
        if rule is price_rule:
            continue
        for i in np.flatnonzero(rule.broken(securities, as_of)):
            problems.setdefault(ids[i], _Problem(rule.reject, f"security {ids[i]}, whose {rule.column} is "
                                                 f"{securities.column(rule.column)[int(i)].as_py()} (it must be "
                                                 f"{rule.bounds(as_of)}: {rule.why})", f"correct its {rule.column}"))
    return problems


def allocation_rejections(templates: pa.Table, allocations: pa.Table, accounts: pa.Table,
                          models: pa.Table | None = None) -> pa.Table:
    """Rejections for custom allocations an account may not have.

    A custom weight outside the template's ``[min_weight, max_weight]``, an
    asset class the account's template does not have, a product that is
    neither the default nor one of the ``alternatives``, or custom weights
    that remove every asset class.  Accounts naming an unknown template are
    rejected too (their allocation cannot be checked).
    """
    found = Rejections()
    template_of = dict(zip(accounts.column(Col.account_id).to_pylist(),
                           accounts.column(Col.template_id).to_pylist()))
    known_templates = set(templates.column(Col.template_id).to_pylist())
    for account_id, template_id in template_of.items():
        if template_id not in known_templates:
            found.add(account_id, "accounts", account_id, Reject.unknown_template,
                      f"account {account_id} follows template {template_id!r}, which is not in the "
                      f"templates table; assign an existing template")
    if allocations.num_rows == 0:
        return found.table()
    rows = {(t, c): (w, m, alts or [], lo, hi) for t, c, w, m, alts, lo, hi in zip(
        *(templates.column(n).to_pylist() for n in (Col.template_id, Col.asset_class, Col.weight,
                                                    Col.model_id, Col.alternatives,
                                                    Col.min_weight, Col.max_weight)))}
    custom: dict[str, dict[str, float]] = {}
    for account_id, asset_class, weight, model_id in zip(
            *(allocations.column(n).to_pylist() for n in (Col.account_id, Col.asset_class,
                                                          Col.weight, Col.model_id))):
        key = f"{account_id}/{asset_class}"
        template_id = template_of.get(account_id)
        if template_id is None:
            found.add(account_id, "allocations", key, Reject.bad_account,
                      f"custom allocation for account {account_id}, which is not in the accounts table")
            continue
        if template_id not in known_templates:
            continue
        row = rows.get((template_id, asset_class))
        if row is None:
            found.add(account_id, "allocations", key, Reject.unknown_asset_class,
                      f"template {template_id} has no asset class {asset_class!r}; "
                      f"custom allocations may only reweight the template's asset classes")
            continue
        default_weight, default_model, alternatives, lo, hi = row
        if weight is not None:
            if not np.isfinite(weight) or not (lo <= weight <= hi or weight == 0 and lo == 0):
                found.add(account_id, "allocations", key, Reject.allocation_out_of_bounds,
                          f"custom weight {weight:.4g} for {asset_class} is outside the template "
                          f"{template_id} bounds [{lo:.4g}, {hi:.4g}]; choose a weight within them")
            custom.setdefault(account_id, {})[asset_class] = weight
        if model_id is not None and model_id != default_model and model_id not in alternatives:
            allowed = ", ".join([default_model, *alternatives])
            found.add(account_id, "allocations", key, Reject.product_not_allowed,
                      f"product {model_id!r} is not allowed for {asset_class} in template "
                      f"{template_id}; allowed: {allowed}")
    defaults: dict[str, dict[str, float]] = {}
    for (t, c), (w, *_rest) in rows.items():
        defaults.setdefault(t, {})[c] = w
    for account_id, weights in custom.items():
        merged = {**defaults.get(template_of[account_id], {}), **weights}
        if sum(w for w in merged.values() if w is not None and np.isfinite(w)) <= 0:
            found.add(account_id, "allocations", account_id, Reject.allocation_sum,
                      f"custom allocation of account {account_id} removes every asset class; "
                      f"keep at least one with a positive weight")
    return found.table()


def account_rejections(tables: Tables, as_of: dt.date, policy: PolicyConfig) -> pa.Table:
    """Every account-level problem of the book, as ``schema.REJECTIONS`` rows."""
    found = Rejections()
    securities, accounts, lots = tables["securities"], tables["accounts"], tables["lots"]
    problems = _security_problems(securities, as_of, policy)
    _account_row_rejections(accounts, as_of, found)
    known_account = np.asarray(pc.is_in(lots.column(Col.account_id), value_set=accounts.column(Col.account_id)))
    _lot_rejections(lots, securities, known_account, as_of, found)
    _held_security_rejections(lots, known_account, problems, found)
    _targeted_security_rejections(tables, problems, found)
    index = {s: i for i, s in enumerate(securities.column(Col.security_id).to_pylist())}
    _restriction_rejections(tables["restrictions"], index, found)
    _transaction_rejections(tables["transactions"], securities, accounts, as_of, found)
    allocation = allocation_rejections(tables["templates"], tables["allocations"], accounts, tables["models"])
    return pa.concat_tables([found.table(), allocation]).combine_chunks() if allocation.num_rows else found.table()


def _account_row_rejections(accounts: pa.Table, as_of: dt.date, found: Rejections) -> None:
    """Reject accounts whose ``tax_status`` is unknown, whose row breaks an accounts field rule
    (rates, cash amounts, budgets, limits: engine.contract.rules), or whose cash cap is below its
    floor (``max_cash < min_cash``: the cap ``max_cash + reserve_cash + withdrawal`` of rule 5 would
    be below the floor ``min_cash + reserve_cash + withdrawal`` of rule 4, USD)."""
    status = accounts.column(Col.tax_status)
    unknown = np.asarray(pc.fill_null(pc.invert(pc.is_in(status, value_set=pa.array(schema.TaxStatus.all))), True))
    for row in np.flatnonzero(unknown):
        aid = accounts.column(Col.account_id)[int(row)].as_py()
        found.add(aid, "accounts", aid, Reject.bad_account,
                  f"tax_status must be one of {', '.join(schema.TaxStatus.all)}, got {status[int(row)].as_py()!r}")
    for rule in field_rules("accounts", Breaks.account):
        for row in np.flatnonzero(rule.broken(accounts, as_of)):
            aid = accounts.column(Col.account_id)[int(row)].as_py()
            found.add(aid, "accounts", aid, rule.reject,
                      f"{rule.column} must be {rule.bounds(as_of)} ({rule.why}), got "
                      f"{accounts.column(rule.column)[int(row)].as_py()!r}")
    max_cash = numbers(accounts, Col.max_cash, fill=np.nan, dtype=float)
    min_cash = numbers(accounts, Col.min_cash, fill=0.0, dtype=float)
    for row in np.flatnonzero(max_cash < min_cash):                  # NaN (no cap, or broken): False
        aid = accounts.column(Col.account_id)[int(row)].as_py()
        found.add(aid, "accounts", aid, Reject.bad_account,
                  f"max_cash {max_cash[row]:.2f} is below min_cash {min_cash[row]:.2f}: the cash cap would be "
                  f"below the cash floor; raise max_cash, lower min_cash, or leave max_cash null (no cap)")


def _lot_rejections(lots: pa.Table, securities: pa.Table, known_account: np.ndarray, as_of: dt.date,
                    found: Rejections) -> None:
    """Reject lots of unknown accounts, and accounts holding a bad lot.

    A bad lot holds an unknown security or breaks a lots field rule (engine.contract.rules:
    quantity in shares, cost basis in USD, acquired on or before ``as_of``).  Masks over the whole table, a Python
    loop only over the bad rows.  ``known_account``: per lot, whether its account is in the
    accounts table.
    """
    lot_account, lot_security = lots.column(Col.account_id), lots.column(Col.security_id)
    known_security = np.asarray(pc.is_in(lot_security, value_set=securities.column(Col.security_id)))
    checks = [(~known_security, Reject.unknown_security,
               "lot {lot} holds security {security!r}, which is not in the securities table; "
               "add the security or correct the lot", None)]
    for rule in field_rules("lots", Breaks.account):
        checks.append((rule.broken(lots, as_of), rule.reject,
                       f"lot {{lot}} has {rule.column} {{value}}; a lot's {rule.column} must be "
                       f"{rule.bounds(as_of)} ({rule.why})", rule.column))
    for row in np.flatnonzero(~known_account):
        aid, lid = lot_account[int(row)].as_py(), lots.column(Col.lot_id)[int(row)].as_py()
        found.add(aid, "lots", f"{aid}/{lid}", Reject.bad_account,
                  f"lot {lid} belongs to account {aid}, which is not in the accounts table")
    for mask, rule, text, column in checks:
        for row in np.flatnonzero(mask & known_account):
            row = int(row)
            aid, lid = lot_account[row].as_py(), lots.column(Col.lot_id)[row].as_py()
            value = lots.column(column)[row].as_py() if column else None
            found.add(aid, "lots", f"{aid}/{lid}", rule, text.format(
                lot=lid, security=lot_security[row].as_py(), value=value))


def _held_security_rejections(lots: pa.Table, known_account: np.ndarray, problems: dict[str, _Problem],
                              found: Rejections) -> None:
    """Reject each known account holding a security with a problem (:func:`_security_problems`),
    once per (security, account)."""
    if not problems:
        return
    hit = pc.and_(pc.is_in(lots.column(Col.security_id), value_set=pa.array(sorted(problems), pa.string())),
                  pa.array(known_account))
    pairs = lots.filter(hit).select([Col.security_id, Col.account_id]).group_by(
        [Col.security_id, Col.account_id]).aggregate([])
    for sid, aid in sorted(zip(pairs.column(Col.security_id).to_pylist(),
                               pairs.column(Col.account_id).to_pylist())):
        rule, text, remedy = problems[sid]
        found.add(aid, "securities", sid, rule, f"account {aid} holds {text}; "
                  f"{remedy} or the account cannot be traded")


def _targeted_security_rejections(tables: Tables, problems: dict[str, _Problem], found: Rejections) -> None:
    """Reject accounts whose target holds a security with a problem (:func:`_security_problems`).

    Checked per model (its first such security), then per account's products: the
    template's model of each asset class, or the custom product ``allocations`` chose; an
    asset class whose custom weight is 0 is skipped.
    """
    models = tables["models"]
    bad_models: dict[str, str] = {}
    for mid, sid in zip(models.column(Col.model_id).to_pylist(), models.column(Col.security_id).to_pylist()):
        if sid in problems and mid not in bad_models:
            bad_models[mid] = sid
    if not bad_models:
        return
    accounts, templates, allocations = tables["accounts"], tables["templates"], tables["allocations"]
    chosen: dict[tuple[str, str], str] = {}  # (account, asset class) -> custom product
    removed: set[tuple[str, str]] = set()
    for aid, cls, w, mid in zip(*(allocations.column(n).to_pylist() for n in (
            Col.account_id, Col.asset_class, Col.weight, Col.model_id))):
        if mid is not None:
            chosen[(aid, cls)] = mid
        if w == 0:
            removed.add((aid, cls))
    by_template: dict[str, list[tuple[str, str]]] = {}
    for t, cls, mid in zip(*(templates.column(n).to_pylist() for n in (
            Col.template_id, Col.asset_class, Col.model_id))):
        by_template.setdefault(t, []).append((cls, mid))
    for aid, tid in zip(accounts.column(Col.account_id).to_pylist(),
                        accounts.column(Col.template_id).to_pylist()):
        for cls, default in by_template.get(tid, []):
            if (aid, cls) in removed:
                continue
            mid = chosen.get((aid, cls), default)
            if mid in bad_models:
                sid = bad_models[mid]
                rule, text, remedy = problems[sid]
                found.add(aid, "securities", sid, rule, f"account {aid} targets product {mid}, "
                          f"which holds {text}; {remedy} or choose another product")


def _restriction_rejections(restrictions: pa.Table, index: dict, found: Rejections) -> None:
    """Reject accounts with a restriction of an unknown rule, with both or neither of
    ``security_id`` and ``tag``, or naming a security not in ``index`` (the securities')."""
    for aid, rule, sid, tag in zip(*(restrictions.column(n).to_pylist() for n in (
            Col.account_id, Col.rule, Col.security_id, Col.tag))):
        key = f"{aid}/{rule}/{sid if sid is not None else tag}"
        if rule not in schema.Rule.all:
            found.add(aid, "restrictions", key, Reject.bad_account,
                      f"restriction rule {rule!r} is not one of {', '.join(schema.Rule.all)}")
        if (sid is None) == (tag is None):
            found.add(aid, "restrictions", key, Reject.bad_account,
                      "a restriction sets exactly one of security_id and tag")
        elif sid is not None and sid not in index:
            found.add(aid, "restrictions", key, Reject.unknown_restriction_security,
                      f"{rule} restriction names security {sid!r}, which is not in the securities "
                      f"table; correct or remove the restriction")


def _transaction_rejections(transactions: pa.Table, securities: pa.Table, accounts: pa.Table, as_of: dt.date,
                            found: Rejections) -> None:
    """Reject known accounts with a recent trade of an unknown security (the wash-sale windows
    need known securities), once per (account, security), or a recent trade breaking a
    transactions field rule (engine.contract.rules), once per trade and rule."""
    known = pc.is_in(transactions.column(Col.account_id), value_set=accounts.column(Col.account_id))
    unknown = pc.and_(pc.invert(pc.is_in(transactions.column(Col.security_id),
                                         value_set=securities.column(Col.security_id))), known)
    pairs = transactions.filter(unknown).group_by([Col.account_id, Col.security_id]).aggregate([])
    for aid, sid in sorted(zip(pairs.column(Col.account_id).to_pylist(),
                               pairs.column(Col.security_id).to_pylist())):
        found.add(aid, "transactions", f"{aid}/{sid}", Reject.unknown_security,
                  f"a recent trade of account {aid} names security {sid!r}, which is not in the "
                  f"securities table; the wash-sale rule cannot be checked")
    known = np.asarray(known)
    for rule in field_rules("transactions", Breaks.account):
        for row in np.flatnonzero(rule.broken(transactions, as_of) & known):
            row = int(row)
            aid = transactions.column(Col.account_id)[row].as_py()
            found.add(aid, "transactions", row_key(transactions, "transactions", row), rule.reject,
                      f"a recent {transactions.column(Col.side)[row].as_py()} of "
                      f"{transactions.column(Col.security_id)[row].as_py()} by account {aid} has {rule.column} "
                      f"{transactions.column(rule.column)[row].as_py()}; it must be {rule.bounds(as_of)} "
                      f"({rule.why}); correct the trade")


def validate(tables: Tables, as_of: dt.date, policy: PolicyConfig) -> pa.Table:
    """Validate a book's conformed tables.

    Returns
    -------
    pa.Table
        The ``rejections`` table (docs/contract.md §2), sorted by account.

    Raises
    ------
    BookError
        For a whole-book problem.
    """
    # a table a later contract version added may be missing from a mapping: it has no rows
    tables = {**{name: schema.empty(schema.BOOK_TABLES[name]) for name in schema.TABLE_SINCE}, **tables}
    check_keys(tables)
    check_list_elements(tables)
    check_enums(tables)
    check_field_rules(tables, as_of)
    check_risk_model(tables)
    check_models(tables, policy)
    check_templates(tables, policy)
    check_substitutes(tables)
    return sort_rejections(account_rejections(tables, as_of, policy))
