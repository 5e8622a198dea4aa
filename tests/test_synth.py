"""Synthetic books: deterministic, realistic, and written without holding the book in memory."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pytest

from engine.book import synth
from engine.book.storage import read_book
from engine.contract.schema import Col, Kind, TaxStatus


@pytest.fixture(scope="module")
def book():
    return synth.generate_tables(1500, seed=3)


def test_same_seed_same_book(book):
    again = synth.generate_tables(1500, seed=3)
    for name, table in book.items():
        assert table.equals(again[name]), name


def test_other_seed_other_book(book):
    other = synth.generate_tables(1500, seed=4)
    assert not other["lots"].equals(book["lots"])


def test_chunked_write_equals_in_memory(tmp_path, book):
    rows = synth.generate(str(tmp_path / "b"), 1500, seed=3, chunk_accounts=synth.CHUNK_ACCOUNTS)
    read = read_book(str(tmp_path / "b"))
    assert rows["lots"] == book["lots"].num_rows
    for name in ("accounts", "lots", "transactions", "restrictions", "allocations"):
        assert read.table(name).equals(book[name]), name


def test_small_chunks_keep_households_whole(tmp_path):
    synth.generate(str(tmp_path / "b"), 300, seed=9, chunk_accounts=50)
    accounts = read_book(str(tmp_path / "b")).accounts
    assert accounts.num_rows == 300
    assert len(set(accounts.column(Col.account_id).to_pylist())) == 300
    parts = sorted((tmp_path / "b" / "accounts").iterdir())
    assert len(parts) >= 6
    seen: dict[str, int] = {}
    for number, part in enumerate(parts):
        import pyarrow.parquet as pq
        for household in pq.read_table(part).column(Col.household_id).to_pylist():
            if household is not None:
                assert seen.setdefault(household, number) == number, household


def test_universe_shape(book):
    securities = book["securities"]
    classes = set(securities.column(Col.asset_class).to_pylist())
    assert len(classes) == 10
    assert 20 <= len(set(book["factor_covariance"].column(Col.factor_1).to_pylist())) <= 40
    kinds = pc.value_counts(securities.column(Col.kind)).to_pylist()
    kinds = {k["values"]: k["counts"] for k in kinds}
    assert kinds[Kind.equity] >= 500 and kinds[Kind.adr] == 150 and kinds[Kind.mutual_fund] >= 5
    groups = [g for g in securities.column(Col.wash_group).to_pylist() if g]
    assert len(groups) == 20 and len(set(groups)) == 10                # two ETFs per tracked index
    templates = book["templates"]
    assert 10 <= len(set(templates.column(Col.template_id).to_pylist())) <= 20
    sums = templates.group_by(Col.template_id).aggregate([(Col.weight, "sum")])
    np.testing.assert_allclose(sums.column("weight_sum").to_numpy(), 1.0, atol=1e-9)
    models = book["models"].group_by(Col.model_id).aggregate([(Col.weight, "sum"), ([], "count_all")])
    np.testing.assert_allclose(models.column("weight_sum").to_numpy(), 1.0, atol=1e-9)
    sizes = dict(zip(models.column(Col.model_id).to_pylist(), models.column("count_all").to_pylist()))
    assert sizes["DI-US-LARGE"] >= 450 and sizes["DI-INTL"] == 150


def test_risk_model_volatilities_are_realistic(book):
    universe = synth.build_universe(3)
    X = np.zeros((len(universe.security_ids), len(synth.FACTORS)))
    index = {s: i for i, s in enumerate(universe.security_ids)}
    fidx = {f: i for i, f in enumerate(synth.FACTORS)}
    e = book["factor_exposures"]
    X[[index[s] for s in e.column(Col.security_id).to_pylist()],
      [fidx[f] for f in e.column(Col.factor).to_pylist()]] = e.column(Col.exposure).to_numpy()
    F = np.zeros((len(fidx), len(fidx)))
    c = book["factor_covariance"]
    i = [fidx[f] for f in c.column(Col.factor_1).to_pylist()]
    j = [fidx[f] for f in c.column(Col.factor_2).to_pylist()]
    F[i, j] = F[j, i] = c.column(Col.covariance).to_numpy()
    assert np.linalg.eigvalsh(F).min() > 0
    vol = np.sqrt(np.einsum("ij,jk,ik->i", X, F, X)
                  + book["securities"].column(Col.specific_variance).to_numpy())
    kind = np.array(book["securities"].column(Col.kind).to_pylist())
    assert 0.2 < np.median(vol[kind == Kind.equity]) < 0.45
    etf_vol = vol[kind == Kind.etf]
    assert etf_vol.min() > 0.02 and etf_vol.max() < 0.3


def test_households_and_tax_statuses(book):
    accounts = book["accounts"]
    households = accounts.column(Col.household_id)
    sizes = households.drop_null().value_counts().field("counts").to_numpy()
    assert sizes.max() <= 4 and (sizes >= 2).any()
    status = set(accounts.column(Col.tax_status).to_pylist())
    assert status == set(TaxStatus.all)
    taxable = np.asarray(pc.equal(accounts.column(Col.tax_status), TaxStatus.taxable))
    st = accounts.column(Col.st_rate).to_numpy()
    assert (st[~taxable] == 0).all() and (st[taxable] > 0.2).all()


def test_direct_index_share_and_lot_counts(book):
    allocations = book["allocations"]
    direct = set(allocations.filter(pc.equal(allocations.column(Col.model_id), "DI-US-LARGE"))
                 .column(Col.account_id).to_pylist())
    share = len(direct) / book["accounts"].num_rows
    assert 0.3 < share < 0.5
    lots = book["lots"]
    counts = lots.group_by(Col.account_id).aggregate([([], "count_all")])
    per_account = dict(zip(counts.column(Col.account_id).to_pylist(), counts.column("count_all").to_pylist()))
    assert np.median([per_account[a] for a in direct if a in per_account]) > 300     # hundreds of lots
    others = [n for a, n in per_account.items() if a not in direct]
    assert 10 < np.median(others) < 150


def test_lots_carry_gains_and_losses_short_and_long(book):
    lots, securities = book["lots"], book["securities"]
    price = dict(zip(securities.column(Col.security_id).to_pylist(), securities.column(Col.price).to_pylist()))
    value = np.array([price.get(s) or np.nan for s in lots.column(Col.security_id).to_pylist()]) \
        * lots.column(Col.quantity).to_numpy()
    gain = value - lots.column(Col.cost_basis).to_numpy()
    held_days = (np.datetime64(synth.AS_OF) - lots.column(Col.acquired).to_numpy()).astype(int)
    long_ = held_days > 366
    for mask in (long_, ~long_):
        assert (gain[mask] > 0).mean() > 0.2 and (gain[mask] < 0).mean() > 0.05


def test_recent_trades_include_loss_sales_and_buys(book):
    tx = book["transactions"]
    window = np.datetime64(synth.AS_OF) - 30
    recent = tx.filter(pc.greater_equal(tx.column(Col.trade_date), window.astype(object)))
    sides = recent.column(Col.side).to_pylist()
    assert "buy" in sides and "sell" in sides
    gains = [g for s, g in zip(sides, recent.column(Col.realized_gain).to_pylist()) if s == "sell"]
    assert min(gains) < 0 and max(gains) > 0


def test_customizations_present(book):
    rules = set(book["restrictions"].column(Col.rule).to_pylist())
    assert rules == {"never_buy", "exclude"} | ({"never_sell"} & rules)
    accounts = book["accounts"]
    assert pc.sum(accounts.column(Col.suspended)).as_py() > 0
    assert pc.min(accounts.column(Col.cash)).as_py() < 0                       # overdrafts
    assert pc.max(accounts.column(Col.withdrawal)).as_py() > 0
    assert accounts.column(Col.tax_budget).null_count < accounts.num_rows
    assert accounts.column(Col.turnover_limit).null_count < accounts.num_rows
    removed = [w for w in book["allocations"].column(Col.weight).to_pylist() if w == 0]
    assert removed
