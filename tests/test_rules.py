"""The book's field rules (engine.contract.rules.FIELD_RULES): each one, broken on one row of a valid
generated book, gives its documented outcome; a valid generated book breaks none."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from test_book import _held_by_one, with_value

from engine.book import synth
from engine.book.validate import validate
from engine.contract.config import PolicyConfig
from engine.contract.errors import BookError
from engine.contract.rules import FIELD_RULES, Breaks, covariance_problem, row_key
from engine.contract.schema import BOOK_TABLES, Col, Reject

AS_OF = synth.AS_OF


def breaking_values(rule) -> list:
    """Values that break ``rule``: NaN, ±inf, just outside each bound, a far-off magnitude; a late date; ''."""
    if rule.kind == "date":
        return [AS_OF + dt.timedelta(days=1), AS_OF + dt.timedelta(days=3650)]
    if rule.kind == "text":
        return ["", "  "]
    below = rule.lower if rule.lower_open else rule.lower - abs(rule.lower) * 1e-6 - 1e-9
    above = rule.upper if rule.upper_open else rule.upper + abs(rule.upper) * 1e-6 + 1e-9
    return [math.nan, math.inf, -math.inf, below, above, 1e300]


CASES = [pytest.param(rule, value, id=f"{rule.table}.{rule.column}={value}")
         for rule in FIELD_RULES for value in breaking_values(rule)]


@pytest.fixture
def tables(clean_tables):
    return dict(clean_tables)


def rejections_of(tables) -> list[dict]:
    return validate(tables, AS_OF, PolicyConfig()).to_pylist()


def _damaged_row(tables, rule) -> tuple[int, set[str]]:
    """The row of ``rule.table`` to damage and the accounts an ``account`` rule must reject for it."""
    if rule.table == "securities":
        _, aid, row = _held_by_one(tables)
        return row, {aid}
    if rule.table == "accounts":
        return 3, {tables["accounts"].column(Col.account_id)[3].as_py()}
    if rule.table in ("lots", "transactions"):
        table = tables[rule.table]
        return 2, {table.column(Col.account_id)[2].as_py()}
    if rule.table == "substitutes" and tables[rule.table].num_rows < 2:     # the generated book names none
        first, second, third = tables["securities"].column(Col.security_id).to_pylist()[:3]
        tables[rule.table] = pa.table({Col.security_id: [first, second], Col.substitute_id: [second, third]},
                                      schema=BOOK_TABLES[rule.table])
    return 1, set()


@pytest.mark.parametrize("rule, value", CASES)
def test_a_broken_field_rule_gives_its_outcome(tables, rule, value):
    row, expected = _damaged_row(tables, rule)
    tables[rule.table] = with_value(tables[rule.table], rule.column, row, value)
    if rule.breaks == Breaks.book:
        with pytest.raises(BookError) as info:
            rejections_of(tables)
        error = info.value
        assert (error.table, error.column) == (rule.table, rule.column)
        assert error.key == row_key(tables[rule.table], rule.table, row)
        assert rule.bounds() in str(error) and "correct" in str(error)
        return
    rows = rejections_of(tables)
    assert {r[Col.account_id] for r in rows} == expected, rows
    assert {r[Col.rule] for r in rows} == {rule.reject}
    if rule.reject != Reject.missing_price:            # the price's message stays "no usable price"
        assert all(rule.column in r[Col.message] for r in rows)


@pytest.mark.parametrize("rule", [r for r in FIELD_RULES if r.nullable and r.kind != "text"],
                         ids=lambda r: f"{r.table}.{r.column}")
def test_a_null_breaks_no_field_rule(tables, rule):
    """Where the schema allows a null it means 'none' (no cap, no group): no rule rejects it."""
    if rule.column == Col.price:
        return                                         # a null price is a missing price (tests/test_book.py)
    assert not rule.broken(with_value(tables[rule.table], rule.column, 0, None), AS_OF).any()


@pytest.mark.parametrize("accounts, seed", [(40, 11), (300, 3), (1000, 8)])
def test_a_valid_generated_book_breaks_no_rule(accounts, seed):
    tables = synth.generate_tables(accounts, seed=seed, bad_fraction=0.0)
    for rule in FIELD_RULES:
        assert not rule.broken(tables[rule.table], AS_OF).any(), (rule.table, rule.column)
    assert covariance_problem(tables["factor_covariance"]) is None
    assert validate(tables, AS_OF, PolicyConfig()).num_rows == 0


def test_every_numeric_and_date_column_of_the_book_has_a_rule():
    ruled = {(r.table, r.column) for r in FIELD_RULES}
    # allocations.weight: its bounds are the template's (allocation_out_of_bounds), tighter than any field rule
    exempt = {("allocations", Col.weight)}
    for name, table_schema in BOOK_TABLES.items():
        for field in table_schema:
            if pa.types.is_floating(field.type) or pa.types.is_date(field.type):
                assert (name, field.name) in ruled | exempt, (name, field.name)


def test_a_bad_spread_rejects_the_accounts_that_target_the_security_and_no_others(tables):
    """A security in a model: every account targeting it is rejected, the same accounts as for a missing price."""
    securities = tables["securities"]
    sid = tables["models"].column(Col.security_id)[0].as_py()
    row = securities.column(Col.security_id).to_pylist().index(sid)
    missing = {r[Col.account_id] for r in rejections_of(
        {**tables, "securities": with_value(securities, Col.price, row, None)})}
    bad = rejections_of({**tables, "securities": with_value(securities, Col.spread_bps, row, -5.0)})
    assert missing and {r[Col.account_id] for r in bad} == missing
    assert {r[Col.rule] for r in bad} == {Reject.bad_security}
    assert all(f"security {sid}, whose spread_bps is -5.0" in r[Col.message] for r in bad)


def test_a_transaction_of_an_unknown_account_is_ignored(tables):
    transactions = tables["transactions"]
    tables["transactions"] = with_value(with_value(transactions, Col.account_id, 2, "NOBODY"), Col.quantity, 2, -1.0)
    assert rejections_of(tables) == []


# --- the covariance as a matrix ---------------------------------------------------------------

def _covariance_error(tables, covariance) -> BookError:
    with pytest.raises(BookError) as info:
        rejections_of({**tables, "factor_covariance": covariance})
    assert (info.value.table, info.value.column) == ("factor_covariance", Col.covariance)
    return info.value


def _rows(covariance, diagonal: bool) -> np.ndarray:
    same = pc.equal(covariance.column(Col.factor_1), covariance.column(Col.factor_2))
    return np.flatnonzero(np.asarray(same) == diagonal)


def test_an_asymmetric_covariance_stops_the_book(tables):
    covariance = tables["factor_covariance"]
    row = int(_rows(covariance, diagonal=False)[0])
    first, second, value = (covariance.column(c)[row].as_py() for c in (Col.factor_1, Col.factor_2, Col.covariance))
    mirrored = pa.table({Col.factor_1: [second], Col.factor_2: [first], Col.covariance: [value + 0.01]},
                        schema=covariance.schema)
    error = _covariance_error(tables, pa.concat_tables([covariance, mirrored]))
    assert "symmetric" in str(error)
    # the same pair twice with the same value is fine
    same = pa.table({Col.factor_1: [second], Col.factor_2: [first], Col.covariance: [value]}, schema=covariance.schema)
    assert covariance_problem(pa.concat_tables([covariance, same])) is None


def test_a_negative_variance_stops_the_book(tables):
    covariance = tables["factor_covariance"]
    row = int(_rows(covariance, diagonal=True)[0])
    error = _covariance_error(tables, with_value(covariance, Col.covariance, row, -0.01))
    assert "variance" in str(error) and ">= 0" in str(error)


def test_an_indefinite_covariance_stops_the_book(tables):
    covariance = tables["factor_covariance"]
    row = int(_rows(covariance, diagonal=False)[0])
    error = _covariance_error(tables, with_value(covariance, Col.covariance, row, 1.0))
    assert "positive semi-definite" in str(error) and "1e-8" in str(error)


def test_a_covariance_within_the_tolerance_passes(tables):
    """Rounding far below the stated tolerance (a mirrored row off by 1e-12 of a variance) is not an error."""
    covariance = tables["factor_covariance"]
    row = int(_rows(covariance, diagonal=False)[0])
    first, second, value = (covariance.column(c)[row].as_py() for c in (Col.factor_1, Col.factor_2, Col.covariance))
    mirrored = pa.table({Col.factor_1: [second], Col.factor_2: [first], Col.covariance: [value + 1e-14]},
                        schema=covariance.schema)
    assert covariance_problem(pa.concat_tables([covariance, mirrored])) is None


# --- a whole run on a damaged book ----------------------------------------------------------

def test_a_run_of_a_damaged_book_rejects_the_damaged_accounts_and_passes_the_check(tmp_path):
    """Bad numbers that used to reach the solver (a NaN spread on one targeted security, an absurd
    cash, a NaN tax budget, a negative turnover limit, a future recent trade) reject exactly the
    accounts they touch; the others are solved, and the committed run is finite and passes the check."""
    from conftest import solve_locally

    from engine.book.runs import read_run
    from engine.book.storage import read_book, write_book
    from engine.review.check import check_run, violations_by_rule

    tables = synth.generate_tables(32, seed=21, bad_fraction=0.0)
    securities, accounts = tables["securities"], tables["accounts"]
    sid = tables["models"].column(Col.security_id)[0].as_py()
    row = securities.column(Col.security_id).to_pylist().index(sid)
    targeting = {r[Col.account_id] for r in rejections_of(
        {**tables, "securities": with_value(securities, Col.price, row, None)})}
    tables["securities"] = with_value(securities, Col.spread_bps, row, math.nan)
    ids = accounts.column(Col.account_id).to_pylist()
    others = [i for i, a in enumerate(ids) if a not in targeting]
    assert len(others) >= 4, "the book should have accounts that do not target the security"
    for (column, value), i in zip(((Col.cash, 1e300), (Col.tax_budget, math.nan), (Col.turnover_limit, -0.1)),
                                  others):
        tables["accounts"] = with_value(tables["accounts"], column, i, value)
    transactions = tables["transactions"]
    known = [i for i, a in enumerate(transactions.column(Col.account_id).to_pylist()) if a == ids[others[3]]]
    damaged = {ids[i] for i in others[:3]} | targeting
    if known:
        tables["transactions"] = with_value(transactions, Col.trade_date, known[0], AS_OF + dt.timedelta(days=5))
        damaged.add(ids[others[3]])
    write_book(str(tmp_path / "book"), AS_OF, tables)
    book = read_book(str(tmp_path / "book"))
    assert book.rejected == frozenset(damaged)
    solve_locally(str(tmp_path / "book"), str(tmp_path / "runs"))
    run, _ = read_run(str(tmp_path / "runs"), AS_OF)
    statuses = dict(zip(run["accounts"].column(Col.account_id).to_pylist(),
                        run["accounts"].column(Col.status).to_pylist()))
    assert {a for a, s in statuses.items() if s == "rejected"} == damaged
    assert not set(run["trades"].column(Col.account_id).to_pylist()) & damaged
    assert run["trades"].num_rows > 0
    violations = check_run(book.tables, AS_OF, {n: run[n] for n in ("trades", "accounts")}, book.rejected)
    assert violations_by_rule(violations) == {}, violations.to_pylist()[:5]


def test_the_contract_lists_exactly_the_field_rules():
    """docs/contract.md's "Field rules" is render_field_rules()'s Markdown, so the page cannot drift."""
    from pathlib import Path

    from engine.contract.rules import render_field_rules

    text = (Path(__file__).resolve().parents[1] / "docs" / "contract.md").read_text()
    rendered = render_field_rules()
    assert rendered in text
    section = text.split("### Field rules\n", 1)[1].split("\n## ", 1)[0]
    table = [line for line in section.splitlines() if line.startswith("|")]
    assert table == [line for line in rendered.splitlines() if line.startswith("|")]
