"""What-ifs: one account's proposal after a change, on the nightly job's code path."""

from __future__ import annotations

import json

import pyarrow.compute as pc
import pytest
from typer.testing import CliRunner

from engine.book.runs import read_run
from engine.book.storage import read_book
from engine.cli import app
from engine.contract.schema import Col, Reason, Side, Status
from engine.rebalance.customization import CustomizationChange
from engine.simulate.whatif import WhatIfError, WhatIfSession

TAG = "fossil_fuel"


@pytest.fixture(scope="module")
def session(small_run):
    return WhatIfSession(read_book(small_run[0]))


def _tagged(session) -> set[str]:
    return {r[Col.security_id] for r in session.tables["securities"].to_pylist() if TAG in (r[Col.tags] or [])}


@pytest.fixture(scope="module")
def screened_account(session):
    """A usable account alone in its household holding the most lots of TAG securities."""
    tagged = _tagged(session)
    counts = {}
    for a, s in zip(session.tables["lots"].column(Col.account_id).to_pylist(),
                    session.tables["lots"].column(Col.security_id).to_pylist()):
        if s in tagged and a not in session.rejected and len(session.members[session.household_of[a]]) == 1:
            counts[a] = counts.get(a, 0) + 1
    assert counts, "the book has no account holding a screened security"
    return max(sorted(counts), key=counts.get)


def test_warm_up_is_tonights_proposal(session, small_run, screened_account):
    _, out, as_of = small_run
    baseline = session.warm_up(screened_account)
    run, _ = read_run(out, as_of)
    row = next(r for r in run["accounts"].to_pylist() if r[Col.account_id] == screened_account)
    # the same code path; the run solved the household in a batch of another shape: equal to the tolerance
    assert baseline.status == row[Col.status]
    assert baseline.numbers[Col.value] == pytest.approx(row[Col.value])
    assert baseline.numbers[Col.tracking_error_before] == pytest.approx(row[Col.tracking_error_before], rel=1e-6)
    assert baseline.numbers[Col.turnover] == pytest.approx(row[Col.turnover], abs=0.01)
    assert not baseline.warm_started


def test_a_screen_sells_what_it_excludes(session, screened_account):
    session.warm_up(screened_account)
    answer = session.whatif(screened_account, CustomizationChange.screen(tag=TAG))
    # the screen takes unheld tagged names out of the target, so out of the universe: a cold start
    assert answer.status == Status.proposed
    held = {}
    for r in session.tables["lots"].to_pylist():
        if r[Col.account_id] == screened_account and r[Col.security_id] in _tagged(session):
            held[r[Col.lot_id]] = r[Col.quantity]
    sold = {t[Col.lot_id]: t[Col.quantity] for t in answer.trades.to_pylist()
            if t[Col.side] == Side.sell and t[Col.reason] == Reason.exclude}
    assert held and sold == pytest.approx(held)              # every screened lot, whole
    assert not any(t[Col.security_id] in _tagged(session) for t in answer.trades.to_pylist()
                   if t[Col.side] == Side.buy)
    numbers = answer.numbers
    assert numbers[Col.sold] >= sum(t[Col.value] for t in answer.trades.to_pylist() if t[Col.lot_id] in held)
    assert numbers["sold_fraction"] == pytest.approx(numbers[Col.sold] / numbers[Col.value])
    assert numbers[Col.tracking_error_after] < numbers[Col.tracking_error_before]
    gains = sum(t[Col.realized_gain] for t in answer.trades.to_pylist() if t[Col.side] == Side.sell)
    assert numbers[Col.realized_st] + numbers[Col.realized_lt] == pytest.approx(gains)
    values = answer.trades.column(Col.value).to_pylist()
    assert values == sorted(values, reverse=True)
    assert answer.first_trades and len(answer.first_trades) <= 10
    assert any("screens excludes it" in sentence for sentence in answer.first_trades)
    assert "fossil_fuel" in answer.change


def test_a_withdrawal_raises_the_cash(session, screened_account):
    session.warm_up(screened_account)
    book = next(r for r in session.tables["accounts"].to_pylist() if r[Col.account_id] == screened_account)
    amount = round(0.1 * session.baseline[screened_account].numbers[Col.value], 2)
    answer = session.whatif(screened_account, withdrawal=amount)
    assert answer.warm_started                           # same universe: it starts from tonight's iterate
    cash_after = answer.household.filter(pc.equal(answer.household.column(Col.account_id),
                                                  screened_account)).column(Col.cash_after)[0].as_py()
    floor = book[Col.min_cash] + book[Col.reserve_cash] + book[Col.withdrawal] + amount
    assert cash_after >= floor - 0.01
    assert answer.numbers[Col.sold] >= amount - max(book[Col.cash] - book[Col.min_cash] - book[Col.reserve_cash], 0)
    assert {t[Col.reason] for t in answer.trades.to_pylist() if t[Col.side] == Side.sell} == {Reason.withdrawal}
    # the book itself is untouched: tonight's proposal is still the warm-up's
    again = session.whatif(screened_account)
    assert again.numbers[Col.sold] < answer.numbers[Col.sold]


def test_a_product_change_moves_to_the_new_product(session):
    targets = session.targets
    classes = list(targets.asset_classes)
    large = classes.index("us_large_cap")
    holders = [a for i, a in enumerate(targets.account_ids) if targets.class_models[i, large] == "M-ETF00A"
               and a not in session.rejected and len(session.members[session.household_of[a]]) == 1]
    assert holders
    account = holders[0]
    session.warm_up(account)
    answer = session.whatif(account, CustomizationChange.product("us_large_cap", "M-MF00"))
    assert not answer.warm_started                       # a new universe: the warm iterate does not fit
    new = {r[Col.security_id] for r in session.tables["models"].to_pylist() if r[Col.model_id] == "M-MF00"}
    old = {r[Col.security_id] for r in session.tables["models"].to_pylist() if r[Col.model_id] == "M-ETF00A"}
    buys = {t[Col.security_id]: t[Col.reason] for t in answer.trades.to_pylist() if t[Col.side] == Side.buy}
    assert new & set(buys) and all(buys[s] == Reason.model_change for s in new & set(buys))
    sells = {t[Col.security_id] for t in answer.trades.to_pylist() if t[Col.side] == Side.sell}
    held_old = {r[Col.security_id] for r in session.tables["lots"].to_pylist()
                if r[Col.account_id] == account} & old
    assert held_old <= sells or answer.numbers[Col.est_tax] >= 0


def test_a_change_the_template_does_not_allow_is_a_rejection_in_words(session, screened_account):
    answer = session.whatif(screened_account, CustomizationChange.allocation({"us_aggregate_bonds": 0.99}))
    assert answer.status == Status.rejected and answer.trades.num_rows == 0
    assert answer.rejections and "us_aggregate_bonds" in answer.detail
    answer = session.whatif(screened_account, CustomizationChange.product("us_large_cap", "NO-SUCH-MODEL"))
    assert answer.status == Status.rejected and answer.rejections


def test_a_household_read_answers_as_the_whole_book(small_run, screened_account):
    whole = WhatIfSession(read_book(small_run[0]))
    scoped = WhatIfSession(small_run[0], households_of=[screened_account])
    assert scoped.tables["accounts"].num_rows < whole.tables["accounts"].num_rows
    for session in (whole, scoped):
        session.warm_up(screened_account)
    change = CustomizationChange.screen(tag=TAG)
    answers = [session.whatif(screened_account, change) for session in (whole, scoped)]
    assert answers[0].trades.num_rows and answers[0].trades.equals(answers[1].trades)
    assert answers[0].numbers == answers[1].numbers and answers[0].status == answers[1].status
    with pytest.raises(WhatIfError, match="not in the book"):
        WhatIfSession(small_run[0], households_of=["NOBODY"]).whatif("NOBODY")


def test_bad_questions(session):
    with pytest.raises(WhatIfError, match="not in the book"):
        session.whatif("NOBODY")
    account = next(a for a in session.targets.account_ids if a not in session.rejected)
    with pytest.raises(WhatIfError, match="positive amount"):
        session.whatif(account, withdrawal=-5.0)
    rejected = sorted(session.rejected)[0]
    answer = session.whatif(rejected)
    assert answer.status == Status.rejected and answer.rejections


def test_cli_whatif(small_run, screened_account, tmp_path):
    book, _, _ = small_run
    path = tmp_path / "answer.json"
    result = CliRunner().invoke(app, ["whatif", "--book", book, "--account", screened_account, "--screen-tag", TAG,
                                      "--json", str(path)])
    assert result.exit_code == 0, result.output
    assert "tracking error after" in result.output and "first trades" in result.output
    answer = json.loads(path.read_text())
    assert answer["with_change"][Col.sold] > answer["as_is"][Col.sold]
    result = CliRunner().invoke(app, ["whatif", "--book", book, "--account", screened_account, "--weight", "x"])
    assert result.exit_code == 2 and "ASSET_CLASS=VALUE" in result.output
