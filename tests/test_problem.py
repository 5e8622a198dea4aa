"""Arrow → ProblemBatch: units, lots, restrictions, and an end-to-end solve on a synthetic book."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from engine.book import synth
from engine.contract.config import PolicyConfig
from engine.contract.schema import Col
from engine.rebalance.problem import build_problem_batch
from engine.rebalance.targets import build_targets
from engine.solver import evaluate, solve


@pytest.fixture(scope="module")
def book():
    tables = synth.generate_tables(12, seed=3, bad_fraction=0.0)
    targets = build_targets(tables)
    ids = [a for a, usable in zip(targets.account_ids, targets.usable) if usable]
    return tables, targets, ids


def test_units_lots_and_targets(book):
    tables, targets, ids = book
    problem, index = build_problem_batch(tables, targets, ids, synth.AS_OF, PolicyConfig())
    B, m, n, L = problem.lot_width.shape
    assert B == len(index.household_ids) and m in (1, 2, 4) and L & (L - 1) == 0
    # every household's holdings and cash add up to its value V
    np.testing.assert_allclose(problem.holdings.sum(axis=(1, 2)) + problem.cash.sum(axis=1), 1.0, rtol=1e-9)
    # each lot variable is one row of the lots table, quantity × price / V
    lots = tables["lots"]
    price = dict(zip(tables["securities"].column(Col.security_id).to_pylist(),
                     tables["securities"].column(Col.price).to_pylist()))
    h, a, i, l = np.argwhere(index.lot_row >= 0)[0]
    row = lots.slice(int(index.lot_row[h, a, i, l]), 1).to_pylist()[0]
    assert row[Col.account_id] == index.account_ids[h, a]
    assert row[Col.security_id] == index.security_ids[i]
    np.testing.assert_allclose(problem.lot_width[h, a, i, l] * index.household_value[h],
                               row[Col.quantity] * price[row[Col.security_id]], rtol=1e-12)
    # lots sorted by objective cost within a position; tax-deferred accounts carry no tax
    assert (np.diff(problem.lot_cost, axis=3)[problem.lot_width[..., 1:] > 0] >= -1e-15).all()
    accounts = {r[Col.account_id]: r for r in tables["accounts"].to_pylist()}
    for h, a in np.argwhere(index.account_ids != None):  # noqa: E711
        if accounts[index.account_ids[h, a]][Col.tax_status] != "taxable":
            assert not problem.lot_tax[h, a].any() and not problem.lot_cost[h, a].any()
    # the target invests what the accounts need not keep as cash
    assert (problem.target.sum(axis=1) <= 1.0 + 1e-12).all()
    assert (problem.buy_upper[index.account_ids == None] == 0).all()  # noqa: E711


def test_restrictions_fix_variables(book):
    tables, targets, ids = book
    lots = tables["lots"]
    account = lots.column(Col.account_id)[0].as_py()
    held = sorted({r[Col.security_id] for r in lots.to_pylist() if r[Col.account_id] == account})
    extra = pa.Table.from_pylist(
        [{Col.account_id: account, Col.rule: "exclude", Col.security_id: held[0], Col.tag: None},
         {Col.account_id: account, Col.rule: "never_sell", Col.security_id: held[1], Col.tag: None},
         {Col.account_id: account, Col.rule: "never_buy", Col.security_id: held[2], Col.tag: None}],
        schema=tables["restrictions"].schema)
    changed = dict(tables, restrictions=pa.concat_tables([tables["restrictions"], extra]))
    problem, index = build_problem_batch(changed, targets, ids, synth.AS_OF, PolicyConfig())
    h, a = map(int, np.argwhere(index.account_ids == account)[0])
    col = {s: j for j, s in enumerate(index.security_ids)}
    excluded, kept, blocked = col[held[0]], col[held[1]], col[held[2]]
    np.testing.assert_array_equal(problem.sell_lower[h, a, excluded], problem.lot_width[h, a, excluded])
    assert problem.buy_upper[h, a, excluded] == 0 and problem.buy_upper[h, a, blocked] == 0
    assert not problem.sell_upper[h, a, kept].any()
    result = solve(problem)
    np.testing.assert_allclose(result.sell[h, a, excluded], problem.lot_width[h, a, excluded], atol=1e-12)
    assert not result.sell[h, a, kept].any() and result.buy[h, a, blocked] == 0


def test_end_to_end_solve(book):
    tables, targets, ids = book
    problem, index = build_problem_batch(tables, targets, ids, synth.AS_OF, PolicyConfig())
    result = solve(problem)
    assert np.isin(result.status, [0, 1, 2]).all()
    assert (evaluate.violations(result.problem, result.buy, result.sell) <= 1e-6).all()
    two_sided, _, _ = evaluate.wash_two_sided(result.problem, result.buy, result.sell, tolerance=0.0)
    assert not two_sided.any()
