"""What the portal's pages show, computed from the service: account lists with their latest run
status, holdings against target by asset class, the customization form's choices, and a posted
form read back into a change (the API's JSON shape)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pyarrow.compute as pc

from engine.contract.arrow import index_in, numbers, strings
from engine.contract.schema import Col, Rule
from engine.portal.changes import Invalid
from engine.portal.service import Portal
from engine.portal.users import User

__all__ = ["account_rows", "decision_rows", "class_weights", "form_choices", "change_from_form", "PREFERENCE_INPUTS"]

#: The account fields the form shows as number inputs, with their labels; blank means none where
#: the field may be null (no cap, no budget).
PREFERENCE_INPUTS = {Col.min_cash: "cash minimum, USD", Col.max_cash: "cash maximum, USD (blank: no cap)",
                     Col.reserve_cash: "cash reserve, USD", Col.tax_budget: "tax budget this year, USD (blank: none)"}
NULLABLE = {Col.max_cash, Col.tax_budget}


def _run_status(portal: Portal) -> tuple[dict[str, dict], dict[str, str], dict[str, list[str]]]:
    run = portal.latest_run()
    if run is None:
        return {}, {}, {}
    rows = {r[Col.account_id]: r for r in run["tables"]["accounts"].select(
        [Col.account_id, Col.status, Col.detail, Col.trade_count, Col.tracking_error_before,
         Col.tracking_error_after]).to_pylist()}
    decisions = {}
    if run["decisions"] is not None:
        decisions = dict(zip(run["decisions"].column(Col.account_id).to_pylist(),
                             run["decisions"].column(Col.decision).to_pylist()))
    why: dict[str, list[str]] = {}
    rejections = run["tables"]["rejections"]
    for a, m in zip(rejections.column(Col.account_id).to_pylist(), rejections.column(Col.message).to_pylist()):
        if a is not None:
            why.setdefault(a, []).append(m)
    return rows, decisions, why


def account_rows(portal: Portal, user: User, query: str = "", limit: int = 500) -> list[dict[str, Any]]:
    """The accounts ``user`` may see whose account, household or template contains ``query``
    (any case), by household, with their value (USD) and their status in the latest run."""
    book = portal.book
    accounts = book.accounts
    ids = accounts.column(Col.account_id).to_pylist()
    households = [portal.session.household_of[a] for a in ids]
    templates = accounts.column(Col.template_id).to_pylist()
    statuses = strings(accounts, Col.tax_status)
    runs, decisions, why = _run_status(portal)
    for a, m in zip(book.rejections.column(Col.account_id).to_pylist(), book.rejections.column(Col.message).to_pylist()):
        if a in book.rejected:
            why.setdefault(a, []).append(m)
    query = query.strip().lower()
    out = []
    for i in np.argsort(np.asarray(households, dtype=object), kind="stable"):
        a, h = ids[i], households[i]
        if not user.may_see(h) or (query and not any(query in str(v).lower() for v in (a, h, templates[i]))):
            continue
        run = runs.get(a, {})
        out.append({Col.account_id: a, Col.household_id: h, Col.template_id: templates[i],
                    Col.tax_status: statuses[i], Col.value: portal.values.get(a, 0.0),
                    Col.status: run.get(Col.status), Col.trade_count: run.get(Col.trade_count),
                    Col.decision: decisions.get(a), Col.tracking_error_after: run.get(Col.tracking_error_after),
                    "why": why.get(a, []),
                    Col.version: portal.version(a)})
        if len(out) >= limit:
            break
    return out


def decision_rows(portal: Portal) -> list[dict[str, Any]]:
    """The latest run's accounts with their decision (when approved) and status, by decision."""
    run = portal.latest_run()
    if run is None:
        return []
    rows, decisions, why = _run_status(portal)
    out = [{**row, Col.decision: decisions.get(a), "why": why.get(a, [])} for a, row in rows.items()]
    order = {"review": 0, "suspend": 1, "approve": 2, None: 3}
    return sorted(out, key=lambda r: (order.get(r[Col.decision], 3), r[Col.account_id]))


def class_weights(portal: Portal, account_id: str) -> list[dict[str, Any]]:
    """Per asset class, the account's holding and its target (fractions of the account's value)."""
    book, session = portal.book, portal.session
    lots = session.rows("lots", [account_id])
    where = index_in(lots.column(Col.security_id), book.securities.column(Col.security_id))
    known = where >= 0
    price = numbers(book.securities, Col.price, where[known], fill=0.0)
    classes = strings(book.securities, Col.asset_class, where[known])
    value = portal.values.get(account_id, 0.0) or 1.0
    held: dict[str, float] = {}
    for c, v in zip(classes, numbers(lots, Col.quantity)[known] * np.nan_to_num(price)):
        held[c] = held.get(c, 0.0) + v / value
    targets = session.targets
    row = session.row_of.get(account_id)
    target = {} if row is None else {c: float(w) for c, w in zip(targets.asset_classes, targets.class_weights[row])
                                     if w > 0}
    cash = float(session.rows("accounts", [account_id]).column(Col.cash)[0].as_py()) / value
    out = [{Col.asset_class: c, "held": held.get(c, 0.0), "target": target.get(c, 0.0)}
           for c in sorted(set(held) | set(target))]
    return out + [{Col.asset_class: "cash", "held": cash, "target": None}]


def _product_labels(portal: Portal) -> dict[str, str]:
    """Each model in words: one fund by its symbol and kind, or a direct index of n securities."""
    models, securities = portal.book.models, portal.book.securities
    symbol = dict(zip(securities.column(Col.security_id).to_pylist(), securities.column(Col.symbol).to_pylist()))
    kind = dict(zip(securities.column(Col.security_id).to_pylist(), securities.column(Col.kind).to_pylist()))
    members: dict[str, list[str]] = {}
    for m, s in zip(models.column(Col.model_id).to_pylist(), models.column(Col.security_id).to_pylist()):
        members.setdefault(m, []).append(s)
    return {m: (f"{m}: {symbol.get(s[0]) or s[0]} ({kind.get(s[0])})" if len(s) == 1
                else f"{m}: direct index of {len(s)} securities") for m, s in members.items()}


def form_choices(portal: Portal, account_id: str | None, template_id: str | None = None) -> dict[str, Any]:
    """What the customization form offers and holds: templates, the template's asset classes with
    their products (default and alternatives), tags, and the account's present choices."""
    book = portal.book
    current = portal.customization(account_id) if account_id else {"account": {}, "restrictions": [],
                                                                      "allocations": []}
    template_id = template_id or current["account"].get(Col.template_id)
    labels = _product_labels(portal)
    chosen = {r[Col.asset_class]: r for r in current["allocations"]}
    classes = []
    for row in book.templates.filter(pc.equal(book.templates.column(Col.template_id), template_id)).to_pylist():
        c = row[Col.asset_class]
        products = [row[Col.model_id], *(row[Col.alternatives] or [])]
        mine = chosen.get(c, {})
        classes.append({Col.asset_class: c, "default": row[Col.model_id], "weight_default": row[Col.weight],
                        Col.min_weight: row[Col.min_weight], Col.max_weight: row[Col.max_weight],
                        "products": [(m, labels.get(m, m)) for m in products],
                        "product": mine.get(Col.model_id) or row[Col.model_id], Col.weight: mine.get(Col.weight)})
    tags = sorted({t for ts in book.securities.column(Col.tags).to_pylist() for t in (ts or [])})
    symbol = dict(zip(book.securities.column(Col.security_id).to_pylist(), book.securities.column(Col.symbol).to_pylist()))
    by_rule = {rule: [symbol.get(r[Col.security_id]) or r[Col.security_id] for r in current["restrictions"]
                      if r[Col.rule] == rule and r[Col.security_id]] for rule in Rule.all}
    return {"templates": sorted(set(book.templates.column(Col.template_id).to_pylist())), "template_id": template_id,
            "classes": classes, "tags": tags, "account": current["account"],
            "screens": {r[Col.tag] for r in current["restrictions"] if r[Col.rule] == Rule.exclude and r[Col.tag]},
            "symbols": {rule: ", ".join(v) for rule, v in by_rule.items()}, Col.version: current.get(Col.version, 0),
            "inputs": PREFERENCE_INPUTS}


def _number(form: Mapping[str, Any], name: str) -> float | None:
    text = str(form.get(name) or "").strip().replace(",", "").replace("$", "")
    if not text:
        if name in NULLABLE:
            return None
        raise Invalid(f"account.{name}", "is required (a number)")
    try:
        return float(text)
    except ValueError:
        raise Invalid(f"account.{name}", f"must be a number, got {text!r}") from None


def change_from_form(portal: Portal, account_id: str, form: Mapping[str, Any], tags: list[str]) -> dict[str, Any]:
    """The posted customization form as a change (``{"account", "restrictions", "allocations"}``).

    ``tags`` are the checked screens.  Restrictions the form does not show (never-buy or
    never-sell by tag) are kept as they are.
    """
    template_id = form.get(Col.template_id)
    account = {Col.template_id: template_id, Col.harvest: form.get(Col.harvest) in ("on", "true", "1")}
    account.update({name: _number(form, name) for name in PREFERENCE_INPUTS})
    securities = portal.book.securities
    by_symbol = {str(s).upper(): i for s, i in zip(securities.column(Col.symbol).to_pylist(),
                                                   securities.column(Col.security_id).to_pylist()) if s}
    known = set(securities.column(Col.security_id).to_pylist())
    restrictions = [{Col.rule: Rule.exclude, Col.tag: t} for t in tags]
    for rule in Rule.all:
        for text in str(form.get(f"symbols:{rule}") or "").replace(";", ",").split(","):
            text = text.strip()
            if text:
                security = by_symbol.get(text.upper()) or (text if text in known else None)
                if security is None:
                    raise Invalid("restrictions", f"no security has symbol {text!r} ({rule.replace('_', '-')})")
                restrictions.append({Col.rule: rule, Col.security_id: security})
    current = portal.customization(account_id)["restrictions"] if account_id else []
    restrictions += [r for r in current if r[Col.tag] and r[Col.rule] != Rule.exclude]
    allocations = []
    for c in form_choices(portal, None, template_id)["classes"]:
        name = c[Col.asset_class]
        product = form.get(f"product:{name}") or c["default"]
        weight = 0.0 if form.get(f"remove:{name}") else _weight(form.get(f"weight:{name}"), name)
        if product != c["default"] or weight is not None:
            allocations.append({Col.asset_class: name, Col.weight: weight,
                                Col.model_id: product if product != c["default"] else None})
    return {"account": account, "restrictions": restrictions, "allocations": allocations}


def _weight(text: Any, asset_class: str) -> float | None:
    text = str(text or "").strip().rstrip("%")
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise Invalid("allocations", f"the weight of {asset_class} must be a number (percent), got {text!r}") from None
    return value / 100.0
