"""Holding period, tax curves and lot relief against their references."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.kernels import dates, lots
from engine.kernels import reference as ref

AS_OF = dates.to_days(dt.date(2026, 11, 20)).item()
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def day(y, m, d):
    return int(dates.to_days(dt.date(y, m, d)))


# --- holding period ---------------------------------------------------------

def test_bought_2025_03_14_is_long_from_2026_03_15():
    acquired = day(2025, 3, 14)
    assert dates.first_long_day_scalar(acquired) == day(2026, 3, 15)
    assert not lots.long_term([acquired], day(2026, 3, 14))[0]  # exactly one year: short
    assert lots.long_term([acquired], day(2026, 3, 15))[0]


def test_lot_bought_exactly_one_year_ago_is_short():
    assert not lots.long_term([day(2025, 11, 20)], AS_OF)[0]
    assert lots.long_term([day(2025, 11, 19)], AS_OF)[0]


def test_bought_on_29_february_is_long_from_1_march():
    acquired = day(2024, 2, 29)
    assert dates.first_long_day_scalar(acquired) == day(2025, 3, 1)
    assert not lots.long_term([acquired], day(2025, 2, 28))[0]
    assert lots.long_term([acquired], day(2025, 3, 1))[0]


def test_bought_28_february_before_leap_year():
    # Anniversary 2024-02-28 exists; long from the 29th.
    assert dates.first_long_day_scalar(day(2023, 2, 28)) == day(2024, 2, 29)


@SETTINGS
@given(st.lists(st.integers(-30000, 40000), min_size=1, max_size=50))
def test_first_long_day_matches_datetime(acquired):
    got = dates.first_long_day(np.array(acquired, dtype=np.int64))
    assert list(got) == [ref.first_long_day_reference(a) for a in acquired]


def test_civil_roundtrip_over_centuries():
    days = np.arange(-200000, 200000, 97)
    for d in days[:: 50]:
        y, m, dd = dates.civil_from_days(d)
        assert dt.date(y, m, dd) == dates.to_date(d)
        assert dates.days_from_civil(y, m, dd) == d


def test_to_days_accepts_arrow_numpy_and_dates():
    when = [dt.date(1970, 1, 1), dt.date(2026, 11, 20), dt.date(1969, 12, 31)]
    expect = [0, AS_OF, -1]
    assert list(dates.to_days(pa.array(when, pa.date32()))) == expect
    assert list(dates.to_days(pa.chunked_array([pa.array(when, pa.date32())]))) == expect
    assert list(dates.to_days(np.array(when, dtype="datetime64[D]"))) == expect
    assert list(dates.to_days(when)) == expect
    assert dates.to_days(dt.date(2026, 11, 20)) == AS_OF
    with pytest.raises(ValueError):
        dates.to_days(pa.array([None], pa.date32()))
    assert list(dates.to_days(pa.array([None], pa.date32()), null=-7)) == [-7]


# --- generated shards -------------------------------------------------------

quantities = st.one_of(st.integers(1, 500).map(float), st.floats(0.001, 500),
                       st.sampled_from([0.0, -1.0, float("nan")]))
bases = st.one_of(st.floats(0, 50000), st.sampled_from([0.0, -5.0, float("nan")]))
prices = st.one_of(st.floats(0.5, 500), st.sampled_from([0.0, float("nan"), 10.0]))
rates = st.sampled_from([0.0, 0.15, 0.2, 0.238, 0.37, 0.408])


@st.composite
def shards(draw, max_positions=6, max_lots=40, clean=False):
    """A shard: positions with lots, and an amount to sell per position."""
    n_pos = draw(st.integers(1, max_positions))
    counts = [draw(st.integers(0 if not clean else 1, max_lots if p == 0 else 8)) for p in range(n_pos)]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    n = int(offsets[-1])
    q_strat = st.integers(1, 500).map(float) if clean else quantities
    b_strat = st.floats(0, 50000) if clean else bases
    p_strat = st.floats(0.5, 500) if clean else prices
    quantity = np.array([draw(q_strat) for _ in range(n)], dtype=float)
    # Ties on purpose: repeated bases and dates exercise the tie-breaks.
    cost_basis = np.array([draw(st.one_of(b_strat, st.just(1000.0))) for _ in range(n)], dtype=float)
    acquired = np.array([AS_OF - draw(st.one_of(st.integers(0, 900), st.just(365), st.just(366)))
                         for _ in range(n)], dtype=np.int64)
    price = np.array([draw(p_strat) for _ in range(n_pos)], dtype=float)
    st_rate = np.array([draw(rates) for _ in range(n_pos)])
    lt_rate = np.array([min(draw(rates), s) for s in st_rate])
    fraction = np.array([draw(st.sampled_from([0.0, 0.1, 0.5, 0.999, 1.0, 1.5]))
                         for _ in range(n_pos)])
    return offsets, quantity, cost_basis, acquired, price, st_rate, lt_rate, fraction


def held_value(offsets, quantity, price):
    q = np.where(np.isfinite(quantity) & (quantity > 0), quantity, 0.0)
    return np.add.reduceat(np.append(q, 0.0), offsets[:-1]) * np.nan_to_num(price) \
        if len(q) else np.zeros(len(offsets) - 1)


@SETTINGS
@given(shards())
def test_tax_curves_match_reference(shard):
    offsets, quantity, basis, acquired, price, st_rate, lt_rate, _ = shard
    args = (offsets, quantity, basis, acquired, price, st_rate, lt_rate, AS_OF)
    got, want = lots.tax_curves(*args), ref.tax_curves_reference(*args)
    for name in got._fields:
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    # Convex: slopes ascend within each position; order is a permutation of the slice.
    for p in range(len(offsets) - 1):
        s, e = offsets[p], offsets[p + 1]
        assert np.all(np.diff(got.slope[s:e]) >= 0)
        assert sorted(got.order[s:e]) == list(range(s, e))


@SETTINGS
@given(shards(), st.sampled_from([lots.CURVE, lots.FIFO, lots.LIFO, lots.HIFO, lots.SPECIFIC]),
       st.booleans())
def test_relieve_lots_matches_reference(shard, method, in_dollars):
    offsets, quantity, basis, acquired, price, st_rate, lt_rate, fraction = shard
    n = len(quantity)
    rng = np.random.default_rng(n)
    priority = rng.permutation(n).astype(float)
    priority[rng.random(n) < 0.1] = np.nan
    held = np.add.reduceat(np.append(np.where(quantity > 0, quantity, 0.0), 0.0), offsets[:-1])
    shares = held * fraction
    amount = dict(sell_dollars=shares * price) if in_dollars else dict(sell_shares=shares)
    args = (offsets, quantity, basis, acquired, price, st_rate, lt_rate, AS_OF)
    got = lots.relieve_lots(*args, method=method, priority=priority, **amount)
    want = ref.relieve_lots_reference(*args, method=method, priority=priority, **amount)
    for name in got._fields:
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=1e-12,
                                   atol=1e-9, err_msg=name)
    # Shares sold never exceed shares held; never negative.
    assert np.all(got.shares_sold >= 0)
    ok = np.isfinite(quantity)
    assert np.all(got.shares_sold[ok] <= np.maximum(quantity[ok], 0))


@SETTINGS
@given(shards(clean=True))
def test_curve_relief_realizes_the_curve_tax(shard):
    """Selling y dollars along the curve costs exactly g(y) in estimated tax."""
    offsets, quantity, basis, acquired, price, st_rate, lt_rate, fraction = shard
    args = (offsets, quantity, basis, acquired, price, st_rate, lt_rate, AS_OF)
    curves = lots.tax_curves(*args)
    value = np.add.reduceat(quantity, offsets[:-1]) * price
    dollars = value * np.minimum(fraction, 1.0)
    relief = lots.relieve_lots(*args, sell_dollars=dollars)
    tax_by_pos = np.add.reduceat(relief.est_tax, offsets[:-1])
    expect = lots.curve_tax(offsets, curves.slope, curves.width, dollars)
    np.testing.assert_allclose(tax_by_pos, expect, rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(expect, ref.curve_tax_reference(offsets, curves.slope, curves.width,
                                                               dollars), rtol=1e-12, atol=1e-9)
    # Proceeds: shares sold × price add back to the dollars asked.
    proceeds = np.add.reduceat(relief.shares_sold, offsets[:-1]) * price
    np.testing.assert_allclose(proceeds, dollars, rtol=1e-9, atol=1e-6)


def test_curve_order_losses_first_then_long_then_short():
    # One position, price 10: a big ST loss, a small LT loss, an LT gain, an ST gain.
    offsets = np.array([0, 4])
    quantity = np.full(4, 100.0)
    cost_basis = np.array([500.0, 1500.0, 900.0, 1100.0])  # gains +50%, -50%, +10%, -10% per value
    acquired = np.array([AS_OF - 10, AS_OF - 10, AS_OF - 400, AS_OF - 400])
    price = np.array([10.0])
    curves = lots.tax_curves(offsets, quantity, cost_basis, acquired, price,
                             np.array([0.37]), np.array([0.2]), AS_OF)
    # ST loss (-0.5·0.37), LT loss (-0.1·0.2), LT gain (0.1·0.2), ST gain (0.5·0.37)
    assert list(curves.order) == [1, 3, 2, 0]
    np.testing.assert_allclose(curves.slope, [-0.185, -0.02, 0.02, 0.185])
    np.testing.assert_allclose(curves.width, [1000.0] * 4)
    assert list(curves.long_term) == [False, True, True, False]


def test_zero_rate_account_orders_largest_loss_first():
    offsets = np.array([0, 3])
    curves = lots.tax_curves(offsets, np.full(3, 10.0), np.array([50.0, 200.0, 120.0]),
                             np.full(3, AS_OF - 5), np.array([10.0]), np.zeros(1), np.zeros(1), AS_OF)
    assert list(curves.order) == [1, 2, 0]
    assert np.all(curves.slope == 0)


def test_relieve_by_methods_and_oversell():
    offsets = np.array([0, 3])
    quantity = np.array([10.0, 20.0, 30.0])
    cost_basis = np.array([100.0, 600.0, 150.0])  # per share 10, 30, 5
    acquired = np.array([AS_OF - 100, AS_OF - 500, AS_OF - 50])
    args = (offsets, quantity, cost_basis, acquired, np.array([20.0]), np.array([0.4]),
            np.array([0.2]), AS_OF)
    fifo = lots.relieve_lots(*args, sell_shares=np.array([25.0]), method=lots.FIFO)
    np.testing.assert_allclose(fifo.shares_sold, [5.0, 20.0, 0.0])
    hifo = lots.relieve_lots(*args, sell_shares=np.array([25.0]), method=lots.HIFO)
    np.testing.assert_allclose(hifo.shares_sold, [5.0, 20.0, 0.0])
    lifo = lots.relieve_lots(*args, sell_shares=np.array([35.0]), method=lots.LIFO)
    np.testing.assert_allclose(lifo.shares_sold, [5.0, 0.0, 30.0])
    np.testing.assert_allclose(lifo.realized_gain, [5 * 20 - 50, 0, 30 * 20 - 150])
    np.testing.assert_allclose(lifo.est_tax, [50 * 0.4, 0, 450 * 0.4])
    spec = lots.relieve_lots(*args, sell_shares=np.array([100.0]), method=lots.SPECIFIC,
                             priority=np.array([2.0, np.nan, 1.0]))
    np.testing.assert_allclose(spec.shares_sold, [10.0, 0.0, 30.0])
    assert spec.status[0] == lots.OVERSOLD
    curve = lots.relieve_lots(*args, sell_dollars=np.array([20.0 * 60]))
    np.testing.assert_array_equal(curve.shares_sold, quantity)  # whole position, no dust
    assert curve.status[0] == lots.OK


def test_bad_inputs_give_status_not_exceptions():
    offsets = np.array([0, 1, 2, 2])
    args = (offsets, np.array([1.0, -1.0]), np.array([1.0, 1.0]), np.array([AS_OF, AS_OF]),
            np.array([np.nan, 5.0, 5.0]), np.zeros(3), np.zeros(3), AS_OF)
    relief = lots.relieve_lots(*args, sell_shares=np.array([1.0, 1.0, np.nan]))
    assert relief.status[0] == lots.BAD_PRICE
    assert relief.status[1] == lots.BAD_LOT | lots.OVERSOLD
    assert relief.status[2] == lots.BAD_REQUEST
    assert "price" in lots.describe_status(int(relief.status[0]))
    assert np.all(relief.shares_sold == 0)
    bad = lots.relieve_lots(*args, sell_shares=np.ones(3), method=99)
    assert np.all(bad.status & lots.BAD_METHOD)


@SETTINGS
@given(st.integers(-30000, 40000))
def test_last_long_acquired_is_the_long_term_cutoff(as_of):
    cutoff = dates.last_long_acquired(as_of)
    assert ref.first_long_day_reference(cutoff) <= as_of < ref.first_long_day_reference(cutoff + 1)


def test_long_positions_sort_like_short_ones():
    """Segments past the insertion-sort size take the merge-sort path: same order, ties included."""
    rng = np.random.default_rng(3)
    n = 200
    offsets = np.array([0, n])
    quantity = rng.choice([10.0, 20.0], n)
    cost_basis = rng.choice([50.0, 100.0, 300.0], n) * quantity / 10
    acquired = AS_OF - rng.choice([10, 400], n)
    args = (offsets, quantity, cost_basis, acquired, np.array([10.0]), np.array([0.37]),
            np.array([0.2]), AS_OF)
    got, want = lots.tax_curves(*args), ref.tax_curves_reference(*args)
    np.testing.assert_array_equal(got.order, want.order)
    for method in (lots.FIFO, lots.LIFO, lots.HIFO):
        sell = dict(sell_shares=np.array([quantity.sum() / 3]), method=method)
        np.testing.assert_array_equal(lots.relieve_lots(*args, **sell).shares_sold,
                                      ref.relieve_lots_reference(*args, **sell).shares_sold)
