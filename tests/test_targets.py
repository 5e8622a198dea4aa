"""Targets: templates, custom allocations, models and screens → each account's target.

Every book here is built by hand in memory with :func:`book`; the expected
weights are computed by hand from the formulas of :mod:`engine.rebalance.targets`.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from engine.contract import schema
from engine.contract.schema import Col, Reject, Rule
from engine.rebalance.customization import Allocation, CustomizationChange, Restriction, account_target
from engine.rebalance.targets import (REJECT_CONFLICTING_ALLOCATION, REJECT_SCREEN_EMPTIES_PRODUCT, build_targets,
                                      household_targets)

AS_OF = dt.date(2026, 11, 20)
TIGHT = dict(rtol=0, atol=1e-15)

# A direct index of 250 names: weight ∝ 1/(rank+1); the first three carry tags.
DI_NAMES = [f"DI{k:03d}" for k in range(250)]
DI_WEIGHTS = 1.0 / np.arange(1, 251)
DI_WEIGHTS /= DI_WEIGHTS.sum()
DI_TAGS = {"DI000": ["fossil_fuel"], "DI001": ["fossil_fuel", "tobacco"], "DI002": ["tobacco"]}

ETFS = {"ETF_US": "us_large_cap", "ETF_ESG": "us_large_cap", "ETF_INTL": "intl",
        "ETF_BOND": "bonds", "BOND_B": "bonds", "ETF_RE": "real_estate"}

MODELS = {
    "m_us": {"ETF_US": 1.0},
    "m_esg": {"ETF_ESG": 1.0},
    "m_di": dict(zip(DI_NAMES, DI_WEIGHTS)),
    "m_intl": {"ETF_INTL": 1.0},
    "m_bond": {"ETF_BOND": 1.0},
    "m_re": {"ETF_RE": 1.0},
}

# template: asset_class -> (weight, model, alternatives, min, max, band)
TEMPLATES = {
    "growth": {"us_large_cap": (0.5, "m_us", ["m_di", "m_esg"], 0.3, 0.7, 0.05),
               "intl": (0.2, "m_intl", None, 0.1, 0.3, 0.03),
               "bonds": (0.2, "m_bond", None, 0.1, 0.4, 0.04),
               "real_estate": (0.1, "m_re", None, 0.0, 0.15, 0.02)},
    "income": {"us_large_cap": (0.3, "m_us", ["m_di"], 0.2, 0.4, 0.05),
               "intl": (0.1, "m_intl", None, 0.0, 0.2, 0.03),
               "bonds": (0.6, "m_bond", None, 0.5, 0.7, 0.04)},
}


def book(accounts: dict[str, str], *, households: dict[str, str] | None = None,
         allocations: list[tuple] = (), restrictions: list[tuple] = (),
         models: dict | None = None, templates: dict | None = None) -> dict[str, pa.Table]:
    """A book's tables in memory.

    accounts: {account_id: template_id}; allocations: (account, asset_class,
    weight, model_id); restrictions: (account, rule, security_id, tag).
    """
    models, templates = models or MODELS, templates or TEMPLATES
    households = households or {}
    ids = list(ETFS) + DI_NAMES
    n = len(ids)
    securities = pa.table({
        Col.security_id: ids, Col.symbol: ids,
        Col.kind: ["etf"] * len(ETFS) + ["equity"] * len(DI_NAMES),
        Col.asset_class: list(ETFS.values()) + ["us_large_cap"] * len(DI_NAMES),
        Col.sector: [None] * n, Col.price: [100.0] * n, Col.price_date: [AS_OF] * n,
        Col.fractional: [False] * n, Col.wash_group: [None] * n,
        Col.tags: [DI_TAGS.get(s) for s in ids],
        Col.specific_variance: [0.01] * n, Col.spread_bps: [2.0] * n,
    }, schema=schema.SECURITIES)
    model_rows = [(m, s, w) for m, held in models.items() for s, w in held.items()]
    template_rows = [(t, c, *row) for t, classes in templates.items() for c, row in classes.items()]
    account_ids = list(accounts)
    return {
        "securities": securities,
        "factor_exposures": pa.table({Col.security_id: ids, Col.factor: ["market"] * n,
                                      Col.exposure: [1.0] * n}, schema=schema.FACTOR_EXPOSURES),
        "factor_covariance": pa.table({Col.factor_1: ["market"], Col.factor_2: ["market"],
                                       Col.covariance: [0.04]}, schema=schema.FACTOR_COVARIANCE),
        "models": pa.table(dict(zip((Col.model_id, Col.security_id, Col.weight), zip(*model_rows))),
                           schema=schema.MODELS),
        "templates": pa.table(dict(zip((Col.template_id, Col.asset_class, Col.weight, Col.model_id,
                                        Col.alternatives, Col.min_weight, Col.max_weight, Col.band),
                                       zip(*template_rows))), schema=schema.TEMPLATES),
        "accounts": pa.table({
            Col.account_id: account_ids, Col.household_id: [households.get(a) for a in account_ids],
            Col.template_id: list(accounts.values()), Col.tax_status: ["taxable"] * len(accounts),
            **{c: [0.0] * len(accounts) for c in (Col.st_rate, Col.lt_rate, Col.cash, Col.min_cash,
                                                  Col.reserve_cash, Col.withdrawal, Col.min_trade,
                                                  Col.realized_st_ytd, Col.realized_lt_ytd)},
            Col.max_cash: [None] * len(accounts), Col.tax_budget: [None] * len(accounts),
            Col.harvest: [False] * len(accounts), Col.tax_sensitivity: [1.0] * len(accounts),
            Col.turnover_limit: [None] * len(accounts), Col.suspended: [False] * len(accounts),
        }, schema=schema.ACCOUNTS),
        "restrictions": pa.table(dict(zip((Col.account_id, Col.rule, Col.security_id, Col.tag),
                                          zip(*restrictions) if restrictions else ([],) * 4)),
                                 schema=schema.RESTRICTIONS),
        "allocations": pa.table(dict(zip((Col.account_id, Col.asset_class, Col.weight, Col.model_id),
                                         zip(*allocations) if allocations else ([],) * 4)),
                                schema=schema.ALLOCATIONS),
        "lots": schema.empty(schema.LOTS),
        "transactions": schema.empty(schema.TRANSACTIONS),
    }


def assert_target(got: dict[str, float], expected: dict[str, float]) -> None:
    assert sorted(got) == sorted(expected)
    np.testing.assert_allclose([got[s] for s in sorted(got)], [expected[s] for s in sorted(got)], **TIGHT)


def rejections_of(targets, account_id: str) -> list[tuple[str, str]]:
    rows = targets.rejections.to_pylist()
    return [(r[Col.rule], r[Col.message]) for r in rows if r[Col.account_id] == account_id]


# --------------------------------------------------------------------------
# The template and its products.

def test_plain_account_follows_its_template():
    targets = build_targets(book({"A": "growth", "B": "income"}))
    assert_target(targets.target_of("A"), {"ETF_US": 0.5, "ETF_INTL": 0.2, "ETF_BOND": 0.2, "ETF_RE": 0.1})
    assert_target(targets.target_of("B"), {"ETF_US": 0.3, "ETF_INTL": 0.1, "ETF_BOND": 0.6})
    assert targets.rejections.num_rows == 0
    assert targets.usable.all()
    np.testing.assert_array_equal(targets.account_ids, ["A", "B"])
    np.testing.assert_array_equal(targets.security_ids[:len(ETFS)], list(ETFS))
    np.testing.assert_array_equal(targets.asset_classes, ["bonds", "intl", "real_estate", "us_large_cap"])
    np.testing.assert_allclose(targets.class_weights, [[0.2, 0.2, 0.1, 0.5], [0.6, 0.1, 0.0, 0.3]], **TIGHT)
    np.testing.assert_allclose(targets.bands, [[0.04, 0.03, 0.02, 0.05], [0.04, 0.03, 0.0, 0.05]], **TIGHT)
    np.testing.assert_array_equal(targets.class_models[1], ["m_bond", "m_intl", "", "m_us"])
    np.testing.assert_array_equal(targets.security_classes[:3], [3, 3, 1])
    np.testing.assert_allclose(np.asarray(targets.weights.sum(axis=1)).ravel(), 1.0, rtol=0, atol=1e-14)


def test_changed_model_moves_every_follower_and_no_other():
    accounts = {"A": "growth", "B": "income", "C": "growth", "D": "income"}
    allocations = [("C", "us_large_cap", None, "m_di"), ("D", "us_large_cap", None, "m_di")]
    before = build_targets(book(accounts, allocations=allocations))
    models = {**MODELS, "m_bond": {"ETF_BOND": 0.5, "BOND_B": 0.5}}
    after = build_targets(book(accounts, allocations=allocations, models=models))
    changed = np.asarray(abs(after.weights - before.weights).sum(axis=1)).ravel() > 0
    np.testing.assert_array_equal(changed, [True, True, True, True])  # everyone holds m_bond
    assert_target(after.target_of("B"), {"ETF_US": 0.3, "ETF_INTL": 0.1, "ETF_BOND": 0.3, "BOND_B": 0.3})

    models = {**MODELS, "m_di": {"DI000": 0.5, "DI001": 0.5}}
    after = build_targets(book(accounts, allocations=allocations, models=models))
    changed = np.asarray(abs(after.weights - before.weights).sum(axis=1)).ravel() > 0
    np.testing.assert_array_equal(changed, [False, False, True, True])
    assert_target(after.target_of("D"), {"DI000": 0.15, "DI001": 0.15, "ETF_INTL": 0.1, "ETF_BOND": 0.6})


def test_changed_template_moves_every_follower_and_no_other():
    accounts = {"A": "growth", "B": "income", "C": "growth", "D": "income"}
    allocations = [("D", "us_large_cap", None, "m_di")]
    before = build_targets(book(accounts, allocations=allocations))
    income = {**TEMPLATES["income"], "us_large_cap": (0.35, "m_us", ["m_di"], 0.2, 0.4, 0.05),
              "bonds": (0.55, "m_bond", None, 0.5, 0.7, 0.04)}
    after = build_targets(book(accounts, allocations=allocations,
                               templates={**TEMPLATES, "income": income}))
    changed = np.asarray(abs(after.weights - before.weights).sum(axis=1)).ravel() > 0
    np.testing.assert_array_equal(changed, [False, True, False, True])
    assert_target(after.target_of("B"), {"ETF_US": 0.35, "ETF_INTL": 0.1, "ETF_BOND": 0.55})
    expected_d = {s: 0.35 * w for s, w in zip(DI_NAMES, DI_WEIGHTS)} | {"ETF_INTL": 0.1, "ETF_BOND": 0.55}
    assert_target(after.target_of("D"), expected_d)  # keeps its direct index


# --------------------------------------------------------------------------
# Custom asset allocation and product choice.

def test_remove_real_estate_and_rescale():
    targets = build_targets(book({"A": "growth"}, allocations=[("A", "real_estate", 0.0, None)]))
    assert_target(targets.target_of("A"), {"ETF_US": 0.5 / 0.9, "ETF_INTL": 0.2 / 0.9, "ETF_BOND": 0.2 / 0.9})
    np.testing.assert_allclose(targets.class_weights[0], [0.2 / 0.9, 0.2 / 0.9, 0.0, 0.5 / 0.9], **TIGHT)
    np.testing.assert_array_equal(targets.class_models[0], ["m_bond", "m_intl", "", "m_us"])


def test_custom_weights_replace_the_template_then_rescale():
    allocations = [("A", "us_large_cap", 0.7, None), ("A", "bonds", 0.3, None)]
    targets = build_targets(book({"A": "growth"}, allocations=allocations))
    total = 0.7 + 0.2 + 0.3 + 0.1
    assert_target(targets.target_of("A"), {"ETF_US": 0.7 / total, "ETF_INTL": 0.2 / total,
                                           "ETF_BOND": 0.3 / total, "ETF_RE": 0.1 / total})


def test_etf_to_direct_index_swaps_one_security_for_hundreds_and_back():
    targets = build_targets(book({"A": "growth", "B": "growth"},
                                 allocations=[("B", "us_large_cap", None, "m_di")]))
    a, b = targets.target_of("A"), targets.target_of("B")
    assert len(a) == 4 and len(b) == 3 + 250
    assert "ETF_US" not in b
    assert_target(b, {s: 0.5 * w for s, w in zip(DI_NAMES, DI_WEIGHTS)}
                  | {"ETF_INTL": 0.2, "ETF_BOND": 0.2, "ETF_RE": 0.1})
    np.testing.assert_array_equal(targets.class_models[1], ["m_bond", "m_intl", "m_re", "m_di"])
    back = build_targets(book({"B": "growth"}, allocations=[("B", "us_large_cap", None, "m_us")]))
    assert_target(back.target_of("B"), a)


def test_bounds_and_alternatives_are_enforced_with_clear_rejections():
    allocations = [("HIGH", "us_large_cap", 0.9, None), ("LOW", "bonds", 0.05, None),
                   ("PRODUCT", "us_large_cap", None, "m_bond"), ("CLASS", "commodities", 0.1, None),
                   ("OK", "intl", 0.3, "m_intl")]
    targets = build_targets(book({a: "growth" for a in ("HIGH", "LOW", "PRODUCT", "CLASS", "OK")},
                                 allocations=allocations))
    np.testing.assert_array_equal(targets.usable, [False, False, False, False, True])
    assert np.diff(targets.weights.indptr).tolist()[:4] == [0, 0, 0, 0]
    np.testing.assert_array_equal(targets.class_weights[:4], 0.0)
    assert rejections_of(targets, "HIGH") == [(
        Reject.allocation_out_of_bounds,
        "custom weight 0.9 for us_large_cap is outside the template growth bounds [0.3, 0.7]; "
        "choose a weight within them")]
    assert rejections_of(targets, "LOW") == [(
        Reject.allocation_out_of_bounds,
        "custom weight 0.05 for bonds is outside the template growth bounds [0.1, 0.4]; "
        "choose a weight within them")]
    assert rejections_of(targets, "PRODUCT") == [(
        Reject.product_not_allowed,
        "product 'm_bond' is not allowed for us_large_cap in template growth; allowed: m_us, m_di, m_esg")]
    [(rule, message)] = rejections_of(targets, "CLASS")
    assert rule == Reject.unknown_asset_class and "template growth has no asset class 'commodities'" in message
    assert rejections_of(targets, "OK") == []
    assert targets.target_of("OK")["ETF_INTL"] == pytest.approx(0.3 / 1.1, rel=0, abs=1e-15)


def test_allocation_rows_that_disagree_are_rejected():
    allocations = [("A", "bonds", 0.3, None), ("A", "bonds", 0.35, None), ("B", "bonds", 0.3, None),
                   ("B", "bonds", None, "m_bond")]
    targets = build_targets(book({"A": "growth", "B": "growth"}, allocations=allocations))
    assert rejections_of(targets, "A") == [(
        REJECT_CONFLICTING_ALLOCATION,
        "account A has allocation rows for bonds that disagree (weight 0.3, model_id None; "
        "weight 0.35, model_id None); keep one weight and one product per asset class")]
    np.testing.assert_array_equal(targets.usable, [False, True])  # B's rows agree: one weight, one product
    assert targets.target_of("B")["ETF_BOND"] == pytest.approx(0.3 / 1.1, rel=0, abs=1e-15)


# --------------------------------------------------------------------------
# Screens.

def test_screen_on_a_direct_index_redistributes_within_it():
    allocations = [("A", "us_large_cap", None, "m_di"), ("B", "us_large_cap", None, "m_di")]
    restrictions = [("A", Rule.exclude, None, "fossil_fuel"), ("B", Rule.exclude, "DI002", None),
                    ("B", Rule.exclude, "ETF_RE_MISSING", None)]
    targets = build_targets(book({"A": "growth", "B": "growth"}, allocations=allocations,
                                 restrictions=restrictions))
    kept = 1.0 - DI_WEIGHTS[0] - DI_WEIGHTS[1]  # DI000, DI001 carry fossil_fuel
    expected = {s: 0.5 * w / kept for s, w in zip(DI_NAMES[2:], DI_WEIGHTS[2:])}
    assert_target(targets.target_of("A"), expected | {"ETF_INTL": 0.2, "ETF_BOND": 0.2, "ETF_RE": 0.1})
    kept = 1.0 - DI_WEIGHTS[2]
    expected = {s: 0.5 * w / kept for s, w in zip(DI_NAMES, DI_WEIGHTS) if s != "DI002"}
    assert_target(targets.target_of("B"), expected | {"ETF_INTL": 0.2, "ETF_BOND": 0.2, "ETF_RE": 0.1})
    np.testing.assert_allclose(targets.class_weights[0], [0.2, 0.2, 0.1, 0.5], **TIGHT)  # classes unmoved
    assert targets.rejections.num_rows == 0


def test_screen_that_empties_a_product_rejects_the_account():
    restrictions = [("A", Rule.exclude, "ETF_RE", None), ("B", Rule.exclude, "ETF_RE", None),
                    ("C", Rule.exclude, None, "tobacco"), ("C", Rule.exclude, None, "no_such_tag")]
    targets = build_targets(book({"A": "growth", "B": "growth", "C": "income"},
                                 allocations=[("B", "real_estate", 0.0, None)], restrictions=restrictions))
    np.testing.assert_array_equal(targets.usable, [False, True, True])
    assert rejections_of(targets, "A") == [(
        REJECT_SCREEN_EMPTIES_PRODUCT,
        "the exclude screens of account A remove all 1 securities of product m_re (asset class "
        "real_estate), so its weight has nowhere to go; choose another product, set the asset class "
        "weight to 0, or lift the screen")]
    assert targets.weights[0].nnz == 0 and not targets.class_weights[0].any() and not targets.bands[0].any()
    # B removed real estate: its screen has nothing to remove.  C holds no tobacco.
    assert_target(targets.target_of("B"), {"ETF_US": 0.5 / 0.9, "ETF_INTL": 0.2 / 0.9, "ETF_BOND": 0.2 / 0.9})
    assert_target(targets.target_of("C"), {"ETF_US": 0.3, "ETF_INTL": 0.1, "ETF_BOND": 0.6})


def test_never_buy_and_never_sell_leave_the_target_as_it_is():
    restrictions = [("B", Rule.never_buy, "ETF_US", None), ("B", Rule.never_sell, None, "fossil_fuel"),
                    ("C", Rule.never_buy, None, "tobacco")]
    targets = build_targets(book({"A": "growth", "B": "growth", "C": "growth"},
                                 allocations=[("C", "us_large_cap", None, "m_di")], restrictions=restrictions))
    assert_target(targets.target_of("B"), targets.target_of("A"))
    assert_target(targets.target_of("C"), {s: 0.5 * w for s, w in zip(DI_NAMES, DI_WEIGHTS)}
                  | {"ETF_INTL": 0.2, "ETF_BOND": 0.2, "ETF_RE": 0.1})


# --------------------------------------------------------------------------
# Households.

def test_household_target_is_the_value_weighted_blend():
    accounts = {"A": "growth", "B": "income", "C": "growth", "D": "growth", "E": "growth"}
    households = {"A": "H1", "B": "H1", "D": "H2", "E": "H2"}
    tables = book(accounts, households=households,
                  allocations=[("C", "us_large_cap", None, "m_esg"), ("E", "us_large_cap", 0.99, None)])
    targets = build_targets(tables)
    assert rejections_of(targets, "E")  # out of bounds: E takes no part in H2
    index, weights = household_targets(targets, [300.0, 100.0, 50.0, 0.0, 1e6],
                                       tables["accounts"].column(Col.household_id))
    np.testing.assert_array_equal(index, ["C", "H1", "H2"])
    blend = {"ETF_US": 0.75 * 0.5 + 0.25 * 0.3, "ETF_INTL": 0.75 * 0.2 + 0.25 * 0.1,
             "ETF_BOND": 0.75 * 0.2 + 0.25 * 0.6, "ETF_RE": 0.75 * 0.1}
    row = {targets.security_ids[i]: v for i, v in zip(weights[1].indices, weights[1].data)}
    assert_target(row, blend)
    assert_target({targets.security_ids[i]: v for i, v in zip(weights[0].indices, weights[0].data)},
                  {"ETF_ESG": 0.5, "ETF_INTL": 0.2, "ETF_BOND": 0.2, "ETF_RE": 0.1})
    # H2: D is worth 0 and E is rejected, so the blend is D's target alone.
    assert_target({targets.security_ids[i]: v for i, v in zip(weights[2].indices, weights[2].data)},
                  targets.target_of("D"))
    with pytest.raises(ValueError, match="expected 5 account values"):
        household_targets(targets, [1.0], [None] * 5)


# --------------------------------------------------------------------------
# What-ifs.

def test_what_if_equals_the_nightly_build_of_the_changed_book():
    accounts = {"A": "growth", "B": "growth"}
    tables = book(accounts, allocations=[("A", "real_estate", 0.0, None)],
                  restrictions=[("A", Rule.never_buy, "ETF_US", None)])
    change = CustomizationChange(add_restrictions=(Restriction(Rule.exclude, tag="tobacco"),),
                                 allocations=(Allocation("us_large_cap", 0.6, "m_di"),
                                              Allocation("bonds", 0.25)))
    what_if = account_target(tables, "A", change)
    changed = book(accounts, allocations=[("A", "real_estate", 0.0, None), ("A", "us_large_cap", 0.6, "m_di"),
                                          ("A", "bonds", 0.25, None)],
                   restrictions=[("A", Rule.never_buy, "ETF_US", None), ("A", Rule.exclude, None, "tobacco")])
    nightly = build_targets(changed)
    np.testing.assert_array_equal(what_if.account_ids, ["A"])
    np.testing.assert_array_equal(what_if.security_ids, nightly.security_ids)
    assert (what_if.weights != nightly.weights[0]).nnz == 0  # the same numbers, bit for bit
    np.testing.assert_array_equal(what_if.class_weights[0], nightly.class_weights[0])
    kept = 1.0 - DI_WEIGHTS[1] - DI_WEIGHTS[2]
    assert what_if.target_of("A")["DI003"] == pytest.approx(0.6 / 1.05 * DI_WEIGHTS[3] / kept, rel=0, abs=1e-15)
    assert "DI001" not in what_if.target_of("A") and "real_estate" not in what_if.class_models[0]


def test_what_if_without_change_is_todays_target():
    tables = book({"A": "growth", "B": "income"}, allocations=[("B", "intl", 0.2, None)])
    nightly = build_targets(tables)
    for aid in ("A", "B"):
        assert_target(account_target(tables, aid).target_of(aid), nightly.target_of(aid))


def test_what_if_product_change_and_lifted_screen():
    tables = book({"A": "growth"}, restrictions=[("A", Rule.exclude, "ETF_INTL", None)])
    assert rejections_of(build_targets(tables), "A")[0][0] == REJECT_SCREEN_EMPTIES_PRODUCT
    lifted = account_target(tables, "A", CustomizationChange(
        remove_restrictions=(Restriction(Rule.exclude, "ETF_INTL"),)))
    assert_target(lifted.target_of("A"), {"ETF_US": 0.5, "ETF_INTL": 0.2, "ETF_BOND": 0.2, "ETF_RE": 0.1})
    esg = account_target(book({"A": "growth"}), "A", CustomizationChange.product("us_large_cap", "m_esg"))
    assert_target(esg.target_of("A"), {"ETF_ESG": 0.5, "ETF_INTL": 0.2, "ETF_BOND": 0.2, "ETF_RE": 0.1})
    screened = account_target(book({"A": "growth"}, allocations=[("A", "us_large_cap", None, "m_di")]), "A",
                              CustomizationChange.screen(security_id="DI000"))
    assert "DI000" not in screened.target_of("A")
    assert sum(screened.target_of("A").values()) == pytest.approx(1.0, rel=0, abs=1e-14)


def test_what_if_rejects_a_change_it_may_not_make():
    tables = book({"A": "growth"})
    out = account_target(tables, "A", CustomizationChange.allocation({"real_estate": 0.2}))
    assert out.weights.nnz == 0 and not out.usable[0]
    assert rejections_of(out, "A") == [(
        Reject.allocation_out_of_bounds,
        "custom weight 0.2 for real_estate is outside the template growth bounds [0, 0.15]; "
        "choose a weight within them")]
    out = account_target(tables, "A", CustomizationChange.product("intl", "m_di"))
    assert rejections_of(out, "A") == [(
        Reject.product_not_allowed, "product 'm_di' is not allowed for intl in template growth; allowed: m_intl")]
    out = account_target(tables, "A", CustomizationChange.screen(security_id="NOPE"))
    assert rejections_of(out, "A") == [(
        Reject.unknown_restriction_security,
        "exclude restriction names security 'NOPE', which is not in the securities table")]
    assert out.weights.nnz == 0
    with pytest.raises(ValueError, match="account 'Z' is not in the accounts table"):
        account_target(tables, "Z")


# --------------------------------------------------------------------------
# A validated book.

def test_validated_book_rejected_accounts_get_empty_rows(tmp_path):
    from engine.book.storage import read_book, write_book

    tables = book({"A": "growth", "BAD": "growth", "SCREEN": "growth", "NOTEMPLATE": "nope"},
                  allocations=[("BAD", "us_large_cap", 0.95, None)],
                  restrictions=[("SCREEN", Rule.exclude, "ETF_BOND", None)])
    write_book(str(tmp_path / "book"), AS_OF, tables)
    validated = read_book(str(tmp_path / "book"))
    assert validated.rejected == {"BAD", "NOTEMPLATE"}
    targets = build_targets(validated)
    np.testing.assert_array_equal(targets.usable, [True, False, False, False])
    np.testing.assert_array_equal(np.diff(targets.weights.indptr)[1:], [0, 0, 0])
    # Only what validation did not report: the screen that empties m_bond.
    assert targets.rejections.column(Col.account_id).to_pylist() == ["SCREEN"]
    assert targets.rejections.column(Col.rule).to_pylist() == [REJECT_SCREEN_EMPTIES_PRODUCT]
    same = build_targets(tables, rejected=validated.rejected)
    assert (same.weights != targets.weights).nnz == 0


def test_targets_import_no_storage_or_ray():
    code = "import sys, engine.rebalance.targets; print(sorted(m for m in ('ray', 'fsspec', 's3fs') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------
# The vectorized build against a slow, obvious one, on a synthetic book.

def reference_target(tables: dict[str, pa.Table], account_id: str) -> dict[str, float]:
    """One account's target by loops, straight from the contract's words."""
    rows = lambda name: tables[name].to_pylist()  # noqa: E731
    account = next(r for r in rows("accounts") if r[Col.account_id] == account_id)
    template = {r[Col.asset_class]: r for r in rows("templates") if r[Col.template_id] == account[Col.template_id]}
    weight = {c: r[Col.weight] for c, r in template.items()}
    product = {c: r[Col.model_id] for c, r in template.items()}
    for r in rows("allocations"):
        if r[Col.account_id] == account_id:
            if r[Col.weight] is not None:
                weight[r[Col.asset_class]] = r[Col.weight]
            if r[Col.model_id] is not None:
                product[r[Col.asset_class]] = r[Col.model_id]
    tags = {r[Col.security_id]: set(r[Col.tags] or ()) for r in rows("securities")}
    screens = [r for r in rows("restrictions") if r[Col.account_id] == account_id and r[Col.rule] == Rule.exclude]
    excluded = {s for s, carried in tags.items()
                for r in screens if r[Col.security_id] == s or r[Col.tag] in carried}
    total = sum(weight.values())
    target: dict[str, float] = {}
    for asset_class, w in weight.items():
        if w == 0:
            continue
        held = {r[Col.security_id]: r[Col.weight] for r in rows("models") if r[Col.model_id] == product[asset_class]}
        kept = sum(v for s, v in held.items() if s not in excluded)
        for s, v in held.items():
            if s not in excluded:
                target[s] = target.get(s, 0.0) + w / total * v / kept
    return target


def test_build_matches_a_slow_reference_on_a_synthetic_book():
    from engine.book.synth import generate_tables

    tables = generate_tables(120, seed=3)
    targets = build_targets(tables)
    assert targets.usable.sum() >= 100
    for account_id in targets.account_ids[targets.usable]:
        got, expected = targets.target_of(account_id), reference_target(tables, account_id)
        assert sorted(got) == sorted(expected)
        np.testing.assert_allclose([got[s] for s in sorted(got)], [expected[s] for s in sorted(got)],
                                   rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(np.asarray(targets.weights.sum(axis=1)).ravel(),
                               targets.usable.astype(float), rtol=0, atol=1e-13)


def test_chosen_product_missing_from_models_is_rejected_on_unvalidated_tables():
    growth = {**TEMPLATES["growth"], "intl": (0.2, "m_intl", ["m_ghost"], 0.1, 0.3, 0.03)}
    tables = book({"A": "growth", "B": "growth"}, templates={"growth": growth},
                  allocations=[("A", "intl", None, "m_ghost")])
    targets = build_targets(tables)
    assert rejections_of(targets, "A") == [(
        "unknown_product", "asset class intl of account A has no product in the models table; "
                           "choose a product the template allows")]
    np.testing.assert_array_equal(targets.usable, [False, True])
