"""The independent run checker finds each kind of rule violation, and nothing in a clean run."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from engine.contract import schema
from engine.contract.schema import Col
from engine.review.check import check_run, first_long_day, violations_by_rule

AS_OF = dt.date(2026, 11, 20)


def table(schema_, rows):
    full = [{f.name: row.get(f.name) for f in schema_} for row in rows]
    return pa.Table.from_pylist(full, schema=schema_)


def account(**changes):
    row = {Col.account_id: "A1", Col.household_id: "H1", Col.template_id: "T", Col.tax_status: "taxable",
           Col.st_rate: 0.4, Col.lt_rate: 0.2, Col.cash: 1000.0, Col.min_cash: 100.0, Col.max_cash: None,
           Col.reserve_cash: 0.0, Col.withdrawal: 0.0, Col.min_trade: 50.0, Col.tax_budget: None,
           Col.realized_st_ytd: 0.0, Col.realized_lt_ytd: 0.0, Col.harvest: True, Col.tax_sensitivity: 1.0,
           Col.turnover_limit: None, Col.suspended: False}
    return {**row, **changes}


def book(accounts=None, restrictions=(), transactions=(), fractional=False, extra_lots=()):
    securities = [{Col.security_id: s, Col.kind: "etf", Col.asset_class: "x", Col.price: 100.0,
                   Col.price_date: AS_OF, Col.fractional: fractional, Col.wash_group: g,
                   Col.tags: tags, Col.specific_variance: 0.01, Col.spread_bps: 1.0}
                  for s, g, tags in (("S1", "G", None), ("S2", "G", None), ("S3", None, ["tobacco"]))]
    lots = [{Col.account_id: "A1", Col.lot_id: "L1", Col.security_id: "S1", Col.quantity: 10.0,
             Col.cost_basis: 1200.0, Col.acquired: dt.date(2025, 11, 20)},
            {Col.account_id: "A1", Col.lot_id: "L2", Col.security_id: "S3", Col.quantity: 5.0,
             Col.cost_basis: 400.0, Col.acquired: dt.date(2024, 2, 29)}, *extra_lots]
    return {"securities": table(schema.SECURITIES, securities),
            "accounts": table(schema.ACCOUNTS, accounts or [account()]),
            "lots": table(schema.LOTS, lots),
            "restrictions": table(schema.RESTRICTIONS, list(restrictions)),
            "transactions": table(schema.TRANSACTIONS, list(transactions))}


def sell(lot="L1", security="S1", quantity=10.0, term="short", rate=0.4, basis_per_share=120.0):
    gain = quantity * (100.0 - basis_per_share)
    return {Col.as_of: AS_OF, Col.account_id: "A1", Col.household_id: "H1", Col.security_id: security,
            Col.side: "sell", Col.lot_id: lot, Col.quantity: quantity, Col.price: 100.0,
            Col.value: quantity * 100.0, Col.realized_gain: gain, Col.term: term, Col.est_tax: gain * rate,
            Col.reason: "rebalance"}


def buy(security="S2", quantity=5.0):
    return {Col.as_of: AS_OF, Col.account_id: "A1", Col.household_id: "H1", Col.security_id: security,
            Col.side: "buy", Col.quantity: quantity, Col.price: 100.0, Col.value: quantity * 100.0,
            Col.est_tax: 0.0, Col.reason: "rebalance"}


def run(trades, status="proposed", others=(), **row):
    cash = 1000.0 + sum(t[Col.value] * (1 if t[Col.side] == "sell" else -1) for t in trades)
    numbers = {f.name: 0.0 for f in schema.RUN_ACCOUNTS if f.type == pa.float64()}
    account_row = {**numbers, Col.as_of: AS_OF, Col.account_id: "A1", Col.household_id: "H1", Col.status: status,
                   Col.mandated: False, Col.value: 2500.0, Col.cash_before: 1000.0, Col.cash_after: cash,
                   Col.trade_count: len(trades), Col.iterations: 0, **row}
    other_rows = [{**account_row, Col.account_id: other, Col.status: "no_trade", Col.cash_after: 1000.0,
                   Col.trade_count: 0} for other in others]
    return {"trades": table(schema.TRADES, trades),
            "accounts": table(schema.RUN_ACCOUNTS, [account_row, *other_rows])}


def rules(book_, run_, rejected=frozenset()):
    return violations_by_rule(check_run(book_, AS_OF, run_, rejected))


def test_a_clean_run_has_no_violations():
    # sells the whole loss lot (short term: acquired exactly one year ago is not yet long)
    assert rules(book(), run([sell()])) == {}
    assert rules(book(), run([])) == {}


def test_term_edges():
    assert first_long_day(dt.date(2025, 3, 14)) == dt.date(2026, 3, 15)
    assert first_long_day(dt.date(2024, 2, 29)) == dt.date(2025, 3, 1)
    assert rules(book(), run([sell(term="long")])) == {7: 1}


def test_oversell_and_unknown_lot():
    assert rules(book(), run([sell(quantity=11.0)])) == {1: 1}
    assert rules(book(), run([sell(lot="L9")])) == {1: 1}


def test_restrictions():
    never_sell = [{Col.account_id: "A1", Col.rule: "never_sell", Col.security_id: "S1"}]
    assert rules(book(restrictions=never_sell), run([sell()])) == {2: 1}
    never_buy = [{Col.account_id: "A1", Col.rule: "never_buy", Col.security_id: "S2"}]
    assert rules(book(restrictions=never_buy), run([buy()])) == {2: 1}


def test_excluded_by_tag_must_be_sold_in_full():
    screen = [{Col.account_id: "A1", Col.rule: "exclude", Col.tag: "tobacco"}]
    assert rules(book(restrictions=screen), run([])) == {3: 1}
    full = sell(lot="L2", security="S3", quantity=5.0, term="long", rate=0.2, basis_per_share=80.0)
    assert rules(book(restrictions=screen), run([full])) == {}
    both = screen + [{Col.account_id: "A1", Col.rule: "never_sell", Col.security_id: "S3"}]
    assert rules(book(restrictions=both), run([])) == {}


def test_cash_below_zero_and_below_floor():
    assert rules(book(), run([buy(quantity=10.5)])) == {4: 2, 11: 1}      # -50 cash; half a share
    assert rules(book(), run([buy(quantity=9.0)])) == {}                  # 100 left: exactly min_cash
    assert rules(book(), run([buy(quantity=10.0)])) == {4: 1}             # 0 left: below min_cash
    assert rules(book(), run([buy(quantity=9.5)], status="infeasible", detail="short 50")) == {11: 1}


def test_cash_cap():
    capped = book([account(max_cash=100.0)])
    assert rules(capped, run([sell()])) == {5: 1}
    assert rules(capped, run([sell()], status="infeasible", detail="x")) == {}


def test_tax_and_gain_arithmetic():
    wrong = sell()
    wrong[Col.est_tax] = 0.0
    assert rules(book(), run([wrong])) == {8: 1}


def test_tax_budget_turnover_and_mandates():
    budget = book([account(tax_budget=10.0)])
    gain = sell(lot="L2", security="S3", quantity=5.0, term="long", rate=0.2, basis_per_share=80.0)
    assert rules(budget, run([gain])) == {9: 1}                          # 100 gain x 0.2 = 20 > 10
    assert rules(budget, run([gain], mandated=True)) == {}
    limited = book([account(turnover_limit=0.1)])
    assert rules(limited, run([sell()])) == {12: 1}
    assert rules(limited, run([sell()], mandated=True)) == {}


def test_min_trade_except_closing_a_lot():
    assert rules(book(), run([sell(quantity=0.4)], ), ) == {10: 1, 11: 1}
    assert rules(book([account(min_trade=2000.0)]), run([sell()])) == {}   # closes the lot


def test_wash_sales():
    recent_loss = [{Col.account_id: "A2", Col.security_id: "S1", Col.trade_date: AS_OF - dt.timedelta(days=30),
                    Col.side: "sell", Col.quantity: 1.0, Col.price: 90.0, Col.realized_gain: -10.0}]
    household = [account(), account(account_id="A2", tax_status="tax_exempt", st_rate=0.0, lt_rate=0.0)]
    assert rules(book(household, transactions=recent_loss), run([buy()], others=["A2"])) == {6: 1}
    day_31 = [{**recent_loss[0], Col.trade_date: AS_OF - dt.timedelta(days=31)}]
    assert rules(book(household, transactions=day_31), run([buy()], others=["A2"])) == {}
    recent_buy = [{**recent_loss[0], Col.side: "buy", Col.realized_gain: None, Col.quantity: 3.0}]
    assert rules(book(household, transactions=recent_buy), run([sell(quantity=2.0)], others=["A2"])) == {6: 1}
    assert rules(book(household, transactions=recent_buy), run([sell()], others=["A2"])) == {}     # 10 >= 3 bought
    assert rules(book(household), run([sell(), buy()], others=["A2"])) == {6: 1}   # same day


def test_wash_exception_needs_the_shares_bought_sold():
    """A1 sells its old lot at a loss after A2 bought 3 shares: the 10 shares A1 sells are not
    the 3 A2 bought, which A2 still holds, so the exception does not apply until A2 sells them."""
    recent_buy = [{Col.account_id: "A2", Col.security_id: "S1", Col.trade_date: AS_OF - dt.timedelta(days=5),
                   Col.side: "buy", Col.quantity: 3.0, Col.price: 100.0, Col.realized_gain: None}]
    kept = [{Col.account_id: "A2", Col.lot_id: "L9", Col.security_id: "S1", Col.quantity: 3.0,
             Col.cost_basis: 300.0, Col.acquired: AS_OF - dt.timedelta(days=5)}]
    household = [account(), account(account_id="A2", tax_status="tax_exempt", st_rate=0.0, lt_rate=0.0)]
    tables = book(household, transactions=recent_buy, extra_lots=kept)
    assert rules(tables, run([sell()], others=["A2"])) == {6: 1}
    theirs = {**sell(lot="L9", quantity=3.0, rate=0.0, basis_per_share=100.0), Col.account_id: "A2"}
    both = run([sell(), theirs])
    both["accounts"] = table(schema.RUN_ACCOUNTS, [{**r, Col.cash_after: r[Col.cash_after] if r[Col.account_id] == "A1"
                                                    else 1300.0} for r in run([sell()], others=["A2"])["accounts"]
                                                   .to_pylist()])
    assert rules(tables, both) == {}


def test_a_screen_that_waits_for_a_wash_window():
    """A1's excluded S1 lot is at a loss and its household-mate A2, suspended, bought 3 shares of S1
    five days ago and cannot sell them: selling the lot would break rule 6, keeping it in a proposed
    account breaks rule 3, and keeping it in an infeasible account that says why breaks neither."""
    screen = [{Col.account_id: "A1", Col.rule: "exclude", Col.security_id: "S1"}]
    recent_buy = [{Col.account_id: "A2", Col.security_id: "S1", Col.trade_date: AS_OF - dt.timedelta(days=5),
                   Col.side: "buy", Col.quantity: 3.0, Col.price: 100.0, Col.realized_gain: None}]
    kept = [{Col.account_id: "A2", Col.lot_id: "L9", Col.security_id: "S1", Col.quantity: 3.0,
             Col.cost_basis: 300.0, Col.acquired: AS_OF - dt.timedelta(days=5)}]
    household = [account(), account(account_id="A2", tax_status="tax_exempt", st_rate=0.0, lt_rate=0.0,
                                    suspended=True)]
    tables = book(household, restrictions=screen, transactions=recent_buy, extra_lots=kept)
    waits = "exclude waits for a wash-sale window: 10 shares of S1 ... may be sold from 2026-11-26"
    assert rules(tables, run([], status="infeasible", detail=waits, others=["A2"])) == {}
    assert rules(tables, run([], others=["A2"])) == {3: 1}
    assert rules(tables, run([sell()], others=["A2"])) == {6: 1}


def test_only_loss_lots_that_a_window_purchase_nobody_can_sell_blocks_may_wait():
    """Being infeasible does not excuse a screened holding by itself: where the household-mate that
    bought in the window trades today (rule 6's exception can be taken), or for a lot at a gain,
    keeping it breaks rule 3; the loss lot alone may wait while the mate is suspended."""
    screen = [{Col.account_id: "A1", Col.rule: "exclude", Col.security_id: "S1"}]
    recent_buy = [{Col.account_id: "A2", Col.security_id: "S1", Col.trade_date: AS_OF - dt.timedelta(days=5),
                   Col.side: "buy", Col.quantity: 3.0, Col.price: 100.0, Col.realized_gain: None}]
    mates_lot = {Col.account_id: "A2", Col.lot_id: "L9", Col.security_id: "S1", Col.quantity: 3.0,
                 Col.cost_basis: 300.0, Col.acquired: AS_OF - dt.timedelta(days=5)}
    gain_lot = {Col.account_id: "A1", Col.lot_id: "L3", Col.security_id: "S1", Col.quantity: 5.0,
                Col.cost_basis: 100.0, Col.acquired: AS_OF - dt.timedelta(days=100)}
    waits = dict(status="infeasible", detail="exclude waits for a wash-sale window", others=["A2"])

    def household(suspended):
        return [account(), account(account_id="A2", tax_status="tax_exempt", st_rate=0.0, lt_rate=0.0,
                                   suspended=suspended)]
    trading = book(household(False), restrictions=screen, transactions=recent_buy, extra_lots=[mates_lot])
    assert rules(trading, run([], **waits)) == {3: 1}
    stuck = book(household(True), restrictions=screen, transactions=recent_buy, extra_lots=[mates_lot, gain_lot])
    sell_gain = sell(lot="L3", quantity=5.0, basis_per_share=20.0)
    assert rules(stuck, run([sell_gain], **waits)) == {}
    assert rules(stuck, run([], **waits)) == {3: 1}


def test_a_book_checked_a_household_at_a_time_finds_what_the_whole_does():
    """Parts of one household find the household's wash sale (rule 6) and the other account's own faults."""
    recent_loss = [{Col.account_id: "A2", Col.security_id: "S1", Col.trade_date: AS_OF - dt.timedelta(days=3),
                    Col.side: "sell", Col.quantity: 1.0, Col.price: 90.0, Col.realized_gain: -10.0}]
    accounts = [account(), account(account_id="A2", tax_status="tax_exempt", st_rate=0.0, lt_rate=0.0),
                account(account_id="A3", household_id="H3")]
    tables = book(accounts, transactions=recent_loss)
    unknown_lot = {**sell(lot="L7"), Col.account_id: "A3", Col.household_id: "H3"}
    stranger = {**buy(), Col.account_id: "A9", Col.household_id: "H9"}
    trades = run([buy(), unknown_lot, stranger], others=["A2", "A3"])

    def found(**kw):
        return sorted(map(str, check_run(tables, AS_OF, trades, **kw).to_pylist()))
    whole = found()
    assert found(part_households=1) == whole
    assert {6, 1} <= set(violations_by_rule(check_run(tables, AS_OF, trades, part_households=1)))
    assert any("A9" in row and "not in the book" in row for row in whole)


def test_suspended_and_rejected_get_no_trades():
    assert rules(book([account(suspended=True)]), run([sell()], status="suspended")) == {13: 1}
    assert rules(book(), run([sell()], status="rejected"), rejected=frozenset({"A1"})) == {13: 1}


@pytest.mark.parametrize("missing", ["A1"])
def test_every_account_has_a_row(missing):
    result = check_run(book(), AS_OF, {"trades": table(schema.TRADES, []),
                                       "accounts": table(schema.RUN_ACCOUNTS, [])})
    assert result.column(Col.account_id).to_pylist() == [missing]


def test_canopy_check_command(tmp_path):
    from typer.testing import CliRunner

    from engine.book.runs import RunWriter
    from engine.book.storage import write_book
    from engine.cli import app

    tables = book()
    full = {name: tables.get(name, schema.empty(schema_)) for name, schema_ in schema.BOOK_TABLES.items()}
    full["factor_exposures"] = table(schema.FACTOR_EXPOSURES, [
        {Col.security_id: "S1", Col.factor: "market", Col.exposure: 1.0}])
    full["factor_covariance"] = table(schema.FACTOR_COVARIANCE, [
        {Col.factor_1: "market", Col.factor_2: "market", Col.covariance: 0.0256}])
    full["models"] = table(schema.MODELS, [{Col.model_id: "M", Col.security_id: "S1", Col.weight: 1.0}])
    full["templates"] = table(schema.TEMPLATES, [
        {Col.template_id: "T", Col.asset_class: "x", Col.weight: 1.0, Col.model_id: "M",
         Col.min_weight: 0.0, Col.max_weight: 1.0, Col.band: 0.05}])
    write_book(str(tmp_path / "book"), AS_OF, full)
    writer = RunWriter(str(tmp_path / "runs"), AS_OF)
    for name, part in run([sell(quantity=11.0)]).items():
        writer.write(name, part)
    writer.commit({})
    result = CliRunner().invoke(app, ["check", "--book", str(tmp_path / "book"), "--run", str(tmp_path / "runs")])
    assert result.exit_code == 1, result.output
    assert "rule 1: account A1 L1: sells 11 shares of a lot of 10" in result.output


# --- rule 14 and rule 13 on a real committed run, damaged ------------------------------------

def _with_cell(table: pa.Table, column: str, row: int, value) -> pa.Table:
    values = table.column(column).to_pylist()
    values[row] = value
    index = table.column_names.index(column)
    return table.set_column(index, table.schema.field(column), pa.array(values, table.schema.field(column).type))


@pytest.fixture(scope="module")
def committed(small_run):
    """The small committed run of conftest, its book and its violations before any damage."""
    from engine.book.runs import read_run
    from engine.book.storage import read_book

    book_uri, out, as_of = small_run
    source = read_book(book_uri)
    run_tables, _ = read_run(out, as_of)
    run_ = {name: run_tables[name] for name in ("trades", "accounts")}
    before = violations_by_rule(check_run(source.tables, as_of, run_, source.rejected))
    return source, as_of, run_, before


def _found(committed, **damaged) -> tuple[dict, pa.Table]:
    source, as_of, run_, before = committed
    violations = check_run(source.tables, as_of, {**run_, **damaged}, source.rejected)
    counts = violations_by_rule(violations)
    return {rule: counts.get(rule, 0) - before.get(rule, 0) for rule in counts
            if counts.get(rule, 0) != before.get(rule, 0)}, violations


def test_the_committed_run_is_finite(committed):
    assert 14 not in committed[3] and 13 not in committed[3]


@pytest.mark.parametrize("column, value", [(Col.price, float("nan")), (Col.quantity, float("inf")),
                                           (Col.est_tax, float("-inf")), (Col.value, float("nan"))])
def test_a_non_finite_trade_number_fails_the_check(committed, column, value):
    trades = committed[2]["trades"]
    assert trades.num_rows, "the small run should propose trades"
    added, violations = _found(committed, trades=_with_cell(trades, column, 0, value))
    assert added.get(14) == 1
    messages = [m for r, m in zip(violations.column(Col.rule).to_pylist(), violations.column(Col.message).to_pylist())
                if r == 14]
    assert f"trades.{column}" in messages[0] and "must be finite" in messages[0]


@pytest.mark.parametrize("column, value", [(Col.residual, float("nan")), (Col.cash_after, float("inf")),
                                           (Col.tracking_error_after, float("nan")), (Col.value, float("-inf"))])
def test_a_non_finite_account_number_fails_the_check(committed, column, value):
    accounts = committed[2]["accounts"]
    added, violations = _found(committed, accounts=_with_cell(accounts, column, 1, value))
    assert added.get(14) == 1
    row = violations.filter(pc.equal(violations.column(Col.rule), 14)).to_pylist()[0]
    assert row[Col.key] == f"accounts.{column}"
    assert row[Col.account_id] == accounts.column(Col.account_id)[1].as_py()


def test_a_null_is_not_a_non_finite_number(committed):
    trades = committed[2]["trades"]
    buys = [i for i, side in enumerate(trades.column(Col.side).to_pylist()) if side == "buy"]
    assert buys, "the small run should buy something"
    added, _ = _found(committed, trades=_with_cell(trades, Col.realized_gain, buys[0], None))
    assert 14 not in added


@pytest.mark.parametrize("status", ["rejected", "suspended", "failed"])
def test_a_trade_for_an_account_that_may_not_trade_fails_the_check(committed, status):
    source, as_of, run_, _ = committed
    trades, accounts = run_["trades"], run_["accounts"]
    traded = trades.column(Col.account_id)[0].as_py()
    row = accounts.column(Col.account_id).to_pylist().index(traded)
    added, violations = _found(committed, accounts=_with_cell(accounts, Col.status, row, status))
    assert added.get(13) == 1
    assert any(status in m for m in violations.column(Col.message).to_pylist())
