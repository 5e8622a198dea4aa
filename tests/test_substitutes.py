"""Substitutes (docs/substitutes.md): what an account buys when it cannot buy its target.

One small hand-made book, solved once with substitutes on and once off, one account per case:
a ``never_buy`` and an ``exclude`` on the target ETF, a loss harvest of it, a recent loss sale
of it, a never-bought direct-index name, substitutes sold back into the target, a substitute
named by the book's ``substitutes`` table, and an account that needs none.  Then the
contract's version 1 and 2 books.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pytest

from engine.book.storage import read_book, write_book
from engine.contract import schema
from engine.contract.config import PolicyConfig, RunConfig, SolverConfig
from engine.contract.errors import BookError
from engine.contract.schema import Col, Reason, Rule, Side
from engine.rebalance.problem import build_problem_batch
from engine.rebalance.proposals import propose
from engine.rebalance.shards import plan_shards
from engine.rebalance.targets import build_targets
from engine.review.check import check_run, violations_by_rule
from engine.solver import solve

AS_OF = dt.date(2026, 11, 20)
SOLVER = SolverConfig(eps_abs=1e-6, eps_rel=1e-6, max_iterations=3000)
ON, OFF = PolicyConfig(), PolicyConfig(substitutes=False)
FACTORS = ("market", "size", "value", "momentum", "rates")
#: security: (asset class, wash group, exposures, specific variance, model)
SECURITIES = {
    "SPY": ("us_large_cap", "sp500", {"market": 1.0}, 0.0001),
    "IVV": ("us_large_cap", "sp500", {"market": 1.0}, 0.0001),          # the same index: one wash group
    "VTI": ("us_large_cap", None, {"market": 1.0, "size": 0.15}, 0.0004),   # total market: none
    "BND": ("bonds", None, {"rates": 1.0}, 0.0001),
    "AGG": ("bonds", None, {"rates": 1.0}, 0.0002),                     # named only by the substitutes table
    "S1": ("us_large_cap", None, {"market": 1.0, "value": 1.0, "momentum": 0.2}, 0.04),
    "S2": ("us_large_cap", None, {"market": 1.0, "value": 0.9, "momentum": 0.3}, 0.04),   # closest to S1
    "S3": ("us_large_cap", None, {"market": 1.0, "value": 0.3, "momentum": 0.9}, 0.04),
    "S4": ("us_large_cap", None, {"market": 1.0, "value": -0.8, "momentum": 0.1}, 0.04),
    "S5": ("us_large_cap", None, {"market": 1.0, "value": -1.0, "momentum": -0.6}, 0.04),
}
PRICE = 100.0


def _securities():
    rows = [{Col.security_id: s, Col.symbol: s, Col.kind: "equity" if s.startswith("S") else "etf",
             Col.asset_class: c, Col.sector: None, Col.price: PRICE, Col.price_date: AS_OF, Col.fractional: True,
             Col.wash_group: g, Col.tags: None, Col.specific_variance: d, Col.spread_bps: 2.0}
            for s, (c, g, _, d) in SECURITIES.items()]
    exposures = [{Col.security_id: s, Col.factor: f, Col.exposure: v}
                 for s, (_, _, e, _) in SECURITIES.items() for f, v in e.items()]
    vol = {"market": 0.16, "size": 0.06, "value": 0.08, "momentum": 0.08, "rates": 0.05}
    covariance = [{Col.factor_1: f, Col.factor_2: f, Col.covariance: vol[f] ** 2} for f in FACTORS]
    return rows, exposures, covariance


def _account(account_id, template, tax_status="tax_deferred", cash=0.0, harvest=False):
    return {Col.account_id: account_id, Col.household_id: None, Col.template_id: template,
            Col.tax_status: tax_status, Col.st_rate: 0.37 if tax_status == "taxable" else 0.0,
            Col.lt_rate: 0.2 if tax_status == "taxable" else 0.0, Col.cash: cash, Col.min_cash: 0.0,
            Col.max_cash: 500.0, Col.reserve_cash: 0.0, Col.withdrawal: 0.0, Col.min_trade: 0.0,
            Col.tax_budget: None, Col.realized_st_ytd: 0.0, Col.realized_lt_ytd: 0.0, Col.harvest: harvest,
            Col.tax_sensitivity: 1.0, Col.turnover_limit: None, Col.suspended: False}


def _lot(account_id, n, security, value, basis, days_held=400):
    return {Col.account_id: account_id, Col.lot_id: f"{account_id}-{n}", Col.security_id: security,
            Col.quantity: value / PRICE, Col.cost_basis: basis, Col.acquired: AS_OF - dt.timedelta(days=days_held)}


def _book():
    securities, exposures, covariance = _securities()
    models = [{Col.model_id: f"M-{s}", Col.security_id: s, Col.weight: 1.0} for s in ("SPY", "IVV", "VTI", "BND")]
    models += [{Col.model_id: "DI", Col.security_id: s, Col.weight: 0.2} for s in ("S1", "S2", "S3", "S4", "S5")]
    band = 0.03
    templates = [
        {Col.template_id: "ETF", Col.asset_class: "us_large_cap", Col.weight: 0.6, Col.model_id: "M-SPY",
         Col.alternatives: ["M-IVV", "M-VTI"], Col.min_weight: 0.0, Col.max_weight: 1.0, Col.band: band},
        {Col.template_id: "ETF", Col.asset_class: "bonds", Col.weight: 0.4, Col.model_id: "M-BND",
         Col.alternatives: None, Col.min_weight: 0.0, Col.max_weight: 1.0, Col.band: band},
        {Col.template_id: "DI", Col.asset_class: "us_large_cap", Col.weight: 1.0, Col.model_id: "DI",
         Col.alternatives: None, Col.min_weight: 0.0, Col.max_weight: 1.0, Col.band: band}]
    accounts = [_account("NEVER", "ETF", cash=100_000.0), _account("EXCL", "ETF", cash=40_000.0),
                _account("HARV", "ETF", "taxable", harvest=True), _account("WASH", "ETF", "taxable", 60_000.0, True),
                _account("DIRECT", "DI", cash=100_000.0), _account("BACK", "ETF"),
                _account("BACKTAX", "ETF", "taxable"), _account("BOOKSUB", "ETF", cash=100_000.0),
                _account("PLAIN", "ETF", cash=100_000.0)]
    lots = [_lot("EXCL", 0, "SPY", 60_000.0, 50_000.0),
            _lot("HARV", 0, "SPY", 60_000.0, 90_000.0), _lot("HARV", 1, "BND", 40_000.0, 36_000.0),
            _lot("WASH", 0, "BND", 40_000.0, 36_000.0),
            _lot("BACK", 0, "VTI", 60_000.0, 50_000.0), _lot("BACK", 1, "BND", 40_000.0, 36_000.0),
            _lot("BACKTAX", 0, "VTI", 60_000.0, 10_000.0, days_held=100),
            _lot("BACKTAX", 1, "BND", 40_000.0, 36_000.0)]
    restrictions = [{Col.account_id: "NEVER", Col.rule: Rule.never_buy, Col.security_id: "SPY", Col.tag: None},
                    {Col.account_id: "EXCL", Col.rule: Rule.exclude, Col.security_id: "SPY", Col.tag: None},
                    {Col.account_id: "DIRECT", Col.rule: Rule.never_buy, Col.security_id: "S1", Col.tag: None},
                    {Col.account_id: "BOOKSUB", Col.rule: Rule.never_buy, Col.security_id: "BND", Col.tag: None}]
    # WASH sold SPY at a loss ten days ago: SPY and IVV may not be bought for 30 days
    transactions = [{Col.account_id: "WASH", Col.security_id: "SPY", Col.trade_date: AS_OF - dt.timedelta(days=10),
                     Col.side: Side.sell, Col.quantity: 600.0, Col.price: PRICE, Col.realized_gain: -5_000.0}]
    raw = {"securities": securities, "factor_exposures": exposures, "factor_covariance": covariance,
           "models": models, "templates": templates, "accounts": accounts, "restrictions": restrictions,
           "allocations": [], "lots": lots, "transactions": transactions,
           "substitutes": [{Col.security_id: "BND", Col.substitute_id: "AGG"}]}
    return {name: pa.Table.from_pylist(rows, schema=schema.BOOK_TABLES[name]) for name, rows in raw.items()}


def _run(tables, policy):
    targets = build_targets(tables, policy=policy)
    ids = [a for a, usable in zip(targets.account_ids, targets.usable) if usable]
    problem, index = build_problem_batch(tables, targets, ids, AS_OF, policy)
    result = solve(problem, SOLVER)
    trades, accounts = propose(tables, targets, problem, index, result, AS_OF, policy)
    return dict(targets=targets, ids=ids, index=index, trades=trades.to_pylist(), accounts=accounts,
                rows={r[Col.account_id]: r for r in accounts.to_pylist()})


@pytest.fixture(scope="module")
def book():
    return _book()


@pytest.fixture(scope="module")
def runs(book):
    return {"on": _run(book, ON), "off": _run(book, OFF)}


def _bought(run, account_id):
    out = {}
    for t in run["trades"]:
        if t[Col.account_id] == account_id and t[Col.side] == Side.buy:
            out[t[Col.security_id]] = out.get(t[Col.security_id], 0.0) + t[Col.value]
    return out


def _sold(run, account_id):
    return {t[Col.security_id] for t in run["trades"] if t[Col.account_id] == account_id and t[Col.side] == Side.sell}


def test_runs_with_substitutes_pass_the_check(book, runs):
    run = runs["on"]
    found = check_run(book, AS_OF, {"trades": pa.Table.from_pylist(run["trades"], schema=schema.TRADES),
                                    "accounts": run["accounts"]})
    assert found.num_rows == 0, (violations_by_rule(found), found.to_pylist()[:5])


def test_never_buy_on_the_target_etf_buys_an_allowed_alternative(runs):
    on, off = runs["on"], runs["off"]
    bought = _bought(on, "NEVER")
    assert "SPY" not in bought
    assert bought.get("IVV", 0.0) + bought.get("VTI", 0.0) > 50_000.0       # the class's 60% comes back
    assert on["rows"]["NEVER"][Col.drift_after] <= 0.03 + 1e-6              # within the band
    # today's behaviour with substitutes off: large cap stays out of reach
    assert not {"IVV", "VTI"} & set(_bought(off, "NEVER"))
    assert off["rows"]["NEVER"][Col.drift_after] > 0.5


def test_exclude_on_the_whole_target_product_is_kept_and_filled_by_alternatives(runs):
    on, off = runs["on"], runs["off"]
    assert "EXCL" in on["ids"] and "EXCL" not in off["ids"]                # off: rejected as before
    assert on["targets"].target_of("EXCL")["SPY"] == pytest.approx(0.6)
    assert "SPY" in _sold(on, "EXCL") and "SPY" not in _bought(on, "EXCL")
    bought = _bought(on, "EXCL")
    assert bought.get("IVV", 0.0) + bought.get("VTI", 0.0) > 50_000.0
    assert on["rows"]["EXCL"][Col.drift_after] <= 0.03 + 1e-6


def test_a_loss_harvest_buys_a_substitute_outside_its_wash_group_the_same_day(runs):
    on, off = runs["on"], runs["off"]
    assert "SPY" in _sold(on, "HARV")
    bought = _bought(on, "HARV")
    assert "SPY" not in bought and "IVV" not in bought                     # its wash group: a wash sale
    assert bought.get("VTI", 0.0) > 50_000.0
    reasons = {t[Col.reason] for t in on["trades"] if t[Col.account_id] == "HARV" and t[Col.side] == Side.buy
               and t[Col.security_id] == "VTI"}
    assert reasons == {Reason.replacement}
    # without a substitute the class band caps the harvest (1,500 USD); with one the whole loss is taken
    assert on["rows"]["HARV"][Col.harvested_loss] == pytest.approx(30_000.0, rel=1e-3)
    assert off["rows"]["HARV"][Col.harvested_loss] < 5_000.0
    assert on["rows"]["HARV"][Col.drift_after] <= 0.03 + 1e-6


def test_inside_a_wash_window_the_substitute_holds_the_class(runs):
    bought = _bought(runs["on"], "WASH")
    assert "SPY" not in bought and "IVV" not in bought
    assert bought.get("VTI", 0.0) > 50_000.0
    assert not _bought(runs["off"], "WASH").get("VTI")


def test_a_never_bought_direct_index_name_is_replaced_by_its_closest_names(runs):
    on = runs["on"]
    bought = _bought(on, "DIRECT")
    assert "S1" not in bought
    over = {s: bought.get(s, 0.0) / 100_000.0 - 0.2 for s in ("S2", "S3", "S4", "S5")}
    X = np.array([[SECURITIES[s][2].get(f, 0.0) for f in FACTORS] for s in ("S1", "S2", "S3", "S4", "S5")])
    distance = {s: float(np.linalg.norm(X[i + 1] - X[0])) for i, s in enumerate(("S2", "S3", "S4", "S5"))}
    by_distance = sorted(over, key=distance.get)
    assert by_distance[0] == "S2" and over["S2"] == max(over.values()) and over["S2"] > 0.05
    # the closer, the larger the overweight
    assert [over[s] for s in by_distance] == sorted(over.values(), reverse=True)


def test_a_substitute_is_sold_back_into_the_target_when_the_tax_allows(runs):
    on = runs["on"]
    # the risk model moves most of it: the last dollars of a close substitute remove less risk than they cost
    assert "VTI" in _sold(on, "BACK") and _bought(on, "BACK").get("SPY", 0.0) > 30_000.0
    # a large short-term gain in a taxable account: the tax outweighs the tracking error
    assert "VTI" not in _sold(on, "BACKTAX") and not _bought(on, "BACKTAX").get("SPY")


def test_the_book_substitutes_table_names_a_substitute(runs):
    bought = _bought(runs["on"], "BOOKSUB")
    assert bought.get("AGG", 0.0) > 30_000.0 and "BND" not in bought
    assert not _bought(runs["off"], "BOOKSUB").get("AGG")


def test_an_account_that_needs_no_substitute_trades_as_before(runs):
    on, off = runs["on"], runs["off"]
    assert _bought(on, "PLAIN") == pytest.approx(_bought(off, "PLAIN"), rel=1e-6)
    assert set(_bought(on, "PLAIN")) == {"SPY", "BND"}


def test_the_universe_grows_only_by_substitutes_an_account_can_use(book):
    targets = build_targets(book, policy=ON)
    plain = plan_shards(book, targets, ["PLAIN"], RunConfig())
    problem, index = build_problem_batch(book, targets, ["PLAIN"], AS_OF, ON)
    assert set(index.security_ids) - {None} == {"SPY", "BND"}
    problem, index = build_problem_batch(book, targets, ["NEVER"], AS_OF, ON)
    assert set(index.security_ids) - {None} == {"SPY", "BND", "IVV", "VTI"}
    assert plain[0].shape == (1, 1, 64)


def test_candidates_leave_out_restricted_stale_and_large_products(book):
    stale = book["securities"].to_pylist()
    for row in stale:
        if row[Col.security_id] == "IVV":
            row[Col.price_date] = AS_OF - dt.timedelta(days=30)
    tables = {**book, "securities": pa.Table.from_pylist(stale, schema=schema.SECURITIES)}

    def candidates(targets, account_id):
        row = list(targets.account_ids).index(account_id)
        return set(targets.security_ids[targets.substitutes[row].indices])
    targets = build_targets(tables, policy=ON, as_of=AS_OF)
    # the template's alternatives, and the book's table's BND -> AGG (usable only where bonds need it)
    assert candidates(targets, "NEVER") == {"VTI", "AGG"}            # IVV's price is stale
    assert candidates(build_targets(tables, policy=ON), "NEVER") == {"IVV", "VTI", "AGG"}
    assert candidates(targets, "BOOKSUB") == {"VTI", "AGG"}
    assert candidates(targets, "EXCL") == {"IVV", "VTI", "AGG"} - {"IVV"}   # stale; SPY itself is excluded
    # products of more than substitute_max_securities securities are no substitutes; the book's table is
    assert candidates(build_targets(book, policy=PolicyConfig(substitute_max_securities=0)), "NEVER") == {"AGG"}
    assert build_targets(book, policy=OFF).substitutes.nnz == 0
    # a class held through a direct index takes none from its template: its other names stand in
    rows = book["templates"].to_pylist()
    for row in rows:
        if row[Col.template_id] == "DI":
            row[Col.alternatives] = ["M-SPY"]
    listed = {**book, "templates": pa.Table.from_pylist(rows, schema=schema.TEMPLATES)}
    assert candidates(build_targets(listed, policy=ON), "DIRECT") == {"SPY"}          # 5 names: not an index
    assert candidates(build_targets(listed, policy=PolicyConfig(substitute_max_securities=4)), "DIRECT") == set()


# --------------------------------------------------------------------------
# The contract: version 1 books read as before, version 2 books may name substitutes.

def _set_version(root, version):
    meta = json.loads((root / "book.json").read_text())
    (root / "book.json").write_text(json.dumps({**meta, "schema_version": version}))


def test_a_version_2_book_reads_its_substitutes(tmp_path, book):
    write_book(str(tmp_path / "b"), AS_OF, book)
    assert json.loads((tmp_path / "b" / "book.json").read_text())["schema_version"] == 2
    loaded = read_book(str(tmp_path / "b"))
    assert loaded.substitutes.to_pylist() == [{Col.security_id: "BND", Col.substitute_id: "AGG"}]


def test_a_version_1_book_reads_as_before_without_substitutes(tmp_path, book):
    root = tmp_path / "b"
    write_book(str(root), AS_OF, {n: t for n, t in book.items() if n != "substitutes"})
    import shutil
    shutil.rmtree(root / "substitutes")
    _set_version(root, 1)
    loaded = read_book(str(root))
    assert loaded.substitutes.num_rows == 0 and loaded.accounts.num_rows == book["accounts"].num_rows
    (root / "substitutes").mkdir()
    with pytest.raises(BookError, match="belongs to contract version 2.*set schema_version to 2"):
        read_book(str(root))
    _set_version(root, 3)
    with pytest.raises(BookError, match="schema_version 3 is not supported; expected 1 or 2"):
        read_book(str(root))


@pytest.mark.parametrize("row, message", [
    ({Col.security_id: "BND", Col.substitute_id: "NOPE"}, "substitute_id 'NOPE' is not in the securities table"),
    ({Col.security_id: "NOPE", Col.substitute_id: "AGG"}, "security_id 'NOPE' is not in the securities table"),
    ({Col.security_id: "BND", Col.substitute_id: "BND"}, "named as its own substitute"),
    ({Col.security_id: "BND", Col.substitute_id: " "}, "not empty"),
])
def test_bad_substitutes_rows_stop_the_book(tmp_path, book, row, message):
    bad = {**book, "substitutes": pa.Table.from_pylist([row], schema=schema.SUBSTITUTES)}
    write_book(str(tmp_path / "b"), AS_OF, bad)
    with pytest.raises(BookError, match=message) as caught:
        read_book(str(tmp_path / "b"))
    assert caught.value.table == "substitutes"


def test_a_book_without_usable_substitutes_assembles_the_same_problem_exactly():
    """A generated book whose templates list no alternatives: substitutes on or off, one problem."""
    from engine.book import synth
    from engine.solver.types import ProblemBatch

    tables = synth.generate_tables(12, seed=3, bad_fraction=0.0)
    templates = tables["templates"]
    index = templates.schema.get_field_index(Col.alternatives)
    tables["templates"] = templates.set_column(index, templates.schema.field(index),
                                               pa.nulls(templates.num_rows, templates.schema.field(index).type))
    built = {}
    for name, policy in (("on", ON), ("off", OFF)):
        targets = build_targets(tables, policy=policy)
        ids = [a for a, usable in zip(targets.account_ids, targets.usable) if usable]
        built[name] = build_problem_batch(tables, targets, ids, synth.AS_OF, policy)
    (on, on_index), (off, off_index) = built["on"], built["off"]
    assert list(on_index.security_ids) == list(off_index.security_ids)
    for field in ProblemBatch._fields:
        np.testing.assert_array_equal(np.asarray(getattr(on, field)), np.asarray(getattr(off, field)), err_msg=field)
