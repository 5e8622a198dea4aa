"""The tax policy of PolicyConfig: each setting's effect on the problem's arrays, and on a solved proposal."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from engine.book import synth
from engine.contract.config import PolicyConfig, SolverConfig
from engine.contract.schema import Col, Side
from engine.kernels.dates import first_long_day, to_days
from engine.rebalance import policy as tax_policy
from engine.rebalance.problem import build_problem_batch
from engine.rebalance.proposals import propose
from engine.rebalance.targets import build_targets
from engine.solver import solve

BASE = PolicyConfig(harvest_year_end_scale=1.0, long_term_wait_days=0, tax_inefficient_classes=())


@pytest.fixture(scope="module")
def book():
    tables = synth.generate_tables(24, seed=5, bad_fraction=0.0)
    targets = build_targets(tables)
    ids = [a for a, usable in zip(targets.account_ids, targets.usable) if usable]
    return tables, targets, ids


def _build(book, policy, as_of=synth.AS_OF):
    tables, targets, ids = book
    return build_problem_batch(tables, targets, ids, as_of, policy)


def _harvesting_loss_lots(problem, index, tables):
    accounts = {r[Col.account_id]: r for r in tables["accounts"].to_pylist()}
    grid = np.vectorize(lambda a: a is not None and accounts[a][Col.harvest]
                        and accounts[a][Col.tax_status] == "taxable")(index.account_ids)
    return problem.lot_loss & grid[:, :, None, None] & (problem.lot_width > 0)


def test_thresholds_tighten_through_the_year():
    policy = PolicyConfig(harvest_year_end_scale=0.5)
    assert tax_policy.threshold_scale(dt.date(2026, 1, 1), policy) == pytest.approx(1 - 0.5 / 365)
    assert tax_policy.threshold_scale(dt.date(2026, 7, 2), policy) == pytest.approx(0.75, abs=0.002)
    assert tax_policy.threshold_scale(dt.date(2026, 12, 31), policy) == pytest.approx(0.5)
    assert tax_policy.threshold_scale(dt.date(2026, 12, 31), PolicyConfig(harvest_year_end_scale=1.0)) == 1.0


def test_a_lower_year_end_scale_values_more_small_losses(book):
    tables = book[0]
    flat, index = _build(book, BASE)
    tight, _ = _build(book, dataclasses.replace(BASE, harvest_year_end_scale=0.2))
    loss = _harvesting_loss_lots(flat, index, tables)
    valued_flat = (flat.lot_cost < 0) & loss
    valued_tight = (tight.lot_cost < 0) & loss
    assert valued_tight.sum() > valued_flat.sum()              # more losses are valued ...
    # ... and none less: each position's lots are sorted by cost, so the sorted
    # costs can only move down where zeros (small losses) became values
    assert (tight.lot_cost <= flat.lot_cost + 1e-15).all()


def test_short_term_gains_close_to_long_term_wait(book):
    tables, targets, ids = book
    free, index = _build(book, BASE)
    waiting, _ = _build(book, dataclasses.replace(BASE, long_term_wait_days=60))
    changed = (free.sell_upper > 0) & (waiting.sell_upper == 0)
    assert changed.any()
    lots = tables["lots"]
    acquired = to_days(lots.column(Col.acquired))
    as_of = int(to_days(synth.AS_OF))
    for h, a, i, l in np.argwhere(changed):
        row = int(index.lot_row[h, a, i, l])
        days_left = int(first_long_day(acquired[row:row + 1])[0]) - as_of
        assert 0 < days_left <= 60
        assert free.lot_tax[h, a, i, l] > 0                 # a short-term gain
    # nothing else moved
    assert ((free.sell_upper == waiting.sell_upper) | changed).all()


def test_long_term_gain_weight_discounts_long_term_gains_only(book):
    tables = book[0]
    long_term = to_days(tables["lots"].column(Col.acquired)) < int(to_days(synth.AS_OF)) - 366

    def gain_costs(policy):
        # sums of cost × width over the gain lots of each term: the same whatever order the lots take
        problem, index = _build(book, policy)
        gains = (problem.lot_cost > 0) & (index.lot_row >= 0)
        rows = index.lot_row[gains]
        weighted = problem.lot_cost[gains] * problem.lot_width[gains]
        return weighted[long_term[rows]].sum(), weighted[~long_term[rows]].sum()

    full_long, full_short = gain_costs(BASE)
    half_long, half_short = gain_costs(dataclasses.replace(BASE, long_term_gain_weight=0.5))
    assert full_long > 0 and full_short > 0
    assert half_long == pytest.approx(0.5 * full_long, rel=1e-9)
    assert half_short == pytest.approx(full_short, rel=1e-9)


def test_loss_value_is_the_rate_now_less_the_long_term_tax_the_lower_basis_costs_later():
    policy = PolicyConfig(harvest_deferral=0.5)
    # USD 1,000 of loss: short-term saves 350 now and costs half of 150 later; long-term 150 and 75
    assert tax_policy.loss_value(np.array([350.0, 150.0]), np.array([1000.0, 1000.0]), np.array([0.15, 0.15]),
                                 policy) == pytest.approx([275.0, 75.0])
    assert tax_policy.loss_value(350.0, 1000.0, 0.15, PolicyConfig(harvest_deferral=1.0)) == pytest.approx(350.0)


def test_a_short_term_loss_is_valued_above_its_share_of_the_tax_a_long_term_one_at_it(book):
    tables = book[0]
    deferral = 0.5
    problem, index = _build(book, dataclasses.replace(BASE, harvest_deferral=deferral, harvest_min_fraction=0.0,
                                                      harvest_min_dollars=0.0))
    accounts = {r[Col.account_id]: r for r in tables["accounts"].to_pylist()}
    long_term = to_days(tables["lots"].column(Col.acquired)) < int(to_days(synth.AS_OF)) - 366
    valued = _harvesting_loss_lots(problem, index, tables) & (problem.lot_cost < 0)
    seen = set()
    for h, a, i, l in np.argwhere(valued):
        account = accounts[index.account_ids[h, a]]
        is_long = bool(long_term[index.lot_row[h, a, i, l]])
        rate = account[Col.lt_rate] if is_long else account[Col.st_rate]
        expected = 1.0 - (1.0 - deferral) * account[Col.lt_rate] / rate    # of the tax the loss saves now
        share = problem.lot_cost[h, a, i, l] / (account[Col.tax_sensitivity] * problem.lot_tax[h, a, i, l])
        assert share == pytest.approx(expected, rel=1e-9)
        seen.add(is_long)
    assert seen == {True, False}


def test_forced_harvest_sells_up_to_the_amount_of_losses(book):
    tables = book[0]
    amount = 2_000.0
    plain, index = _build(book, BASE)
    forced, _ = _build(book, dataclasses.replace(BASE, forced_harvest_dollars=amount))
    newly = (forced.sell_lower > plain.sell_lower)
    assert newly.any() and not (newly & ~forced.lot_loss).any()
    V = index.household_value[:, None, None, None]
    loss_per_dollar = -forced.lot_tax / np.where(forced.lot_tax != 0, 1, 1)  # sign only
    assert (loss_per_dollar[newly] >= 0).all()
    lots = tables["lots"]
    basis = lots.column(Col.cost_basis).to_numpy()
    quantity = lots.column(Col.quantity).to_numpy()
    for h, a in {(int(h), int(a)) for h, a, _, _ in np.argwhere(newly)}:
        cells = np.argwhere(newly[h, a])
        loss = 0.0
        for i, l in cells:
            row = int(index.lot_row[h, a, i, l])
            usd = forced.sell_lower[h, a, i, l] * V[h, 0, 0, 0]
            width = forced.lot_width[h, a, i, l] * V[h, 0, 0, 0]
            loss += (basis[row] - width) * usd / width
        assert loss == pytest.approx(amount, rel=1e-6) or loss < amount   # less only when lots run out


def test_forced_harvest_in_a_solved_proposal_replaces_from_outside_the_wash_group(book):
    tables, targets, ids = book
    policy = dataclasses.replace(BASE, forced_harvest_dollars=5_000.0)
    problem, index = _build(book, policy)
    result = solve(problem, SolverConfig(eps_abs=1e-5, eps_rel=1e-5))
    trades, _ = propose(tables, targets, problem, index, result, synth.AS_OF, policy)
    securities = tables["securities"]
    group = {s: g if g is not None else s for s, g in zip(securities.column(Col.security_id).to_pylist(),
                                                          securities.column(Col.wash_group).to_pylist())}
    households = {}
    for row in trades.to_pylist():
        households.setdefault(row[Col.household_id], []).append(row)
    harvested_any = False
    for rows in households.values():
        loss_groups = {group[r[Col.security_id]] for r in rows if r[Col.side] == Side.sell and r[Col.realized_gain] < 0}
        bought = {group[r[Col.security_id]] for r in rows if r[Col.side] == Side.buy}
        assert not loss_groups & bought
        harvested_any |= bool(loss_groups)
    assert harvested_any


def test_asset_location_keeps_tax_inefficient_buys_out_of_taxable_accounts(book):
    tables = book[0]
    classes = ("us_aggregate_bonds", "high_yield_bonds", "inflation_bonds", "real_estate")
    plain, index = _build(book, BASE)
    located, _ = _build(book, dataclasses.replace(BASE, tax_inefficient_classes=classes))
    securities = tables["securities"]
    asset_class = dict(zip(securities.column(Col.security_id).to_pylist(),
                           securities.column(Col.asset_class).to_pylist()))
    inefficient = np.asarray([s is not None and asset_class[s] in classes for s in index.security_ids])
    blocked = (plain.buy_upper > 0) & (located.buy_upper == 0)
    assert blocked.any()
    assert inefficient[np.argwhere(blocked)[:, 2]].all()
    accounts = {r[Col.account_id]: r for r in tables["accounts"].to_pylist()}
    for h, a in {(int(h), int(a)) for h, a, _ in np.argwhere(blocked)}:
        assert accounts[index.account_ids[h, a]][Col.tax_status] == "taxable"
        others = [accounts[x][Col.tax_status] for x in index.account_ids[h] if x is not None]
        assert "tax_deferred" in others or "tax_exempt" in others
    credited = located.lot_cost < plain.lot_cost
    assert credited.any() and inefficient[np.argwhere(credited)[:, 2]].all()


def test_prorated_tax_budget(book):
    tables, targets, ids = book
    april = dt.date(2026, 4, 1)
    full, index = _build(book, BASE, april)
    prorated, _ = _build(book, dataclasses.replace(BASE, prorate_tax_budget=True), april)
    budgeted = np.isfinite(full.tax_budget)
    assert budgeted.any()
    fraction = tax_policy.year_fraction(april)
    V = index.household_value[:, None]
    # budget left = budget × fraction − tax realized so far
    ytd = full.tax_budget[budgeted] - prorated.tax_budget[budgeted]
    accounts = {r[Col.account_id]: r for r in tables["accounts"].to_pylist()}
    budgets = np.asarray([accounts[a][Col.tax_budget] for a in index.account_ids[budgeted]])
    np.testing.assert_allclose(ytd * np.broadcast_to(V, full.tax_budget.shape)[budgeted],
                               budgets * (1 - fraction), rtol=1e-9)


def test_every_policy_setting_is_documented():
    from engine.contract.config import _field_docs

    docs = _field_docs(PolicyConfig)
    for field in dataclasses.fields(PolicyConfig):
        assert docs.get(field.name), field.name


def test_tax_inefficient_classes_come_from_toml_as_a_list_and_go_to_the_manifest_as_one():
    import json

    from engine.contract.config import Config, config_from_dict
    from engine.contract.errors import ConfigError

    config = config_from_dict({"policy": {"tax_inefficient_classes": ["real_estate"]}})
    assert config.policy.tax_inefficient_classes == ("real_estate",)
    hash(config)                                       # still a static argument
    assert json.loads(json.dumps(config.to_dict())) == config.to_dict()
    assert config_from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="list of strings"):
        config_from_dict({"policy": {"tax_inefficient_classes": "real_estate"}})
    assert Config().to_dict()["policy"]["tax_inefficient_classes"][0] == "us_aggregate_bonds"
