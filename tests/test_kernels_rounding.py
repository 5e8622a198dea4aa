"""Rounding dollar trades to shares, against the reference and the contract's rules."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.kernels import rounding
from engine.kernels import reference as ref
from engine.kernels.wash import BUY, SELL

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def one_account(lines, cash, floor=0.0, min_trade=100.0):
    """lines: (side, price, fractional, dollars, lot_quantity)."""
    side, price, frac, dollars, lot = zip(*lines)
    args = (np.array([0, len(lines)]), np.array(side, np.int8), np.array(price, float),
            np.array(frac), np.array(dollars, float), np.array(lot, float),
            np.array([cash], float), np.array([floor], float), np.array([min_trade], float))
    return rounding.round_trades(*args)


def test_whole_shares_unless_fractional():
    r = one_account([(BUY, 10.0, False, 1234.0, 0), (BUY, 10.0, True, 1234.0, 0)], cash=5000)
    assert r.shares.tolist() == [123.0, 123.4]
    assert r.cash_after[0] == 5000 - 1230 - 1234


def test_small_trades_dropped_except_sells_that_close_a_lot():
    r = one_account([(BUY, 10.0, False, 50.0, 0),        # $50 buy: dropped
                     (SELL, 10.0, False, 50.0, 20.0),    # $50 of a 20-share lot: dropped
                     (SELL, 10.0, False, 45.0, 4.5)],    # closes the 4.5-share lot: kept whole
                    cash=0)
    assert r.shares.tolist() == [0.0, 0.0, 4.5]
    assert r.status[0] == rounding.OK


def test_rounding_up_buys_is_repaired_by_cutting_the_largest_buy():
    # Rounding 10.6 and 20.6 shares up overspends the $3,120 of cash.
    r = one_account([(BUY, 100.0, False, 1060.0, 0), (BUY, 100.0, False, 2060.0, 0)],
                    cash=3120.0, floor=0.0)
    assert r.shares.tolist() == [11.0, 20.0]
    assert r.cash_after[0] == 20.0 and r.status[0] == rounding.OK


def test_floor_repaired_by_raising_a_sell():
    r = one_account([(SELL, 30.0, False, 290.0, 50.0)], cash=-5.0, floor=300.0)
    assert r.shares.tolist() == [11.0]  # 10 shares rounded, +1 to reach the floor
    assert r.cash_after[0] == 325.0


def test_floor_unmet_and_negative_cash_flagged():
    r = one_account([(SELL, 10.0, False, 0.0, 5.0)], cash=-100.0, floor=10.0)
    assert r.shares.tolist() == [5.0]
    assert r.status[0] == rounding.FLOOR_UNMET | rounding.NEGATIVE_CASH


lines = st.tuples(st.sampled_from([BUY, SELL, SELL, 9]), st.sampled_from([1.0, 7.25, 33.0, 250.0, 0.0]),
                  st.booleans(), st.one_of(st.floats(0, 20000), st.just(np.nan)),
                  st.sampled_from([0.5, 1.0, 3.0, 12.75, 100.0, 0.0]))


@SETTINGS
@given(st.lists(st.tuples(st.lists(lines, max_size=8), st.floats(-2000, 20000),
                          st.floats(0, 5000), st.sampled_from([0.0, 50.0, 250.0])),
                min_size=1, max_size=5))
def test_round_trades_matches_reference_and_rules(accounts):
    counts = [len(a[0]) for a in accounts]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    flat = [line for a in accounts for line in a[0]]
    side = np.array([x[0] for x in flat], np.int8)
    price = np.array([x[1] for x in flat], float)
    frac = np.array([x[2] for x in flat], bool)
    dollars = np.array([x[3] for x in flat], float)
    lot = np.array([x[4] for x in flat], float)
    cash = np.array([a[1] for a in accounts])
    floor = np.array([a[2] for a in accounts])
    min_trade = np.array([a[3] for a in accounts])
    args = (offsets, side, price, frac, dollars, lot, cash, floor, min_trade)
    got, want = rounding.round_trades(*args), ref.round_trades_reference(*args)
    np.testing.assert_allclose(got.shares, want.shares, rtol=1e-12)
    np.testing.assert_allclose(got.cash_after, want.cash_after, rtol=1e-9, atol=1e-6)
    np.testing.assert_array_equal(got.status, want.status)
    for a in range(len(accounts)):
        sl = slice(offsets[a], offsets[a + 1])
        s, px, sd, lq, fr = got.shares[sl], price[sl], side[sl], lot[sl], frac[sl]
        sells = sd == SELL
        closes = sells & (s == lq)
        assert np.all(s >= 0) and np.all(s[sells] <= lq[sells])            # rule 1
        traded = s > 0
        assert np.all((s * px >= min_trade[a] - 1e-9) | closes | ~traded)    # rule 10
        assert np.all((s == np.round(s)) | fr | closes)                      # rule 11
        # The floor holds whenever selling every valid sell line whole can reach it.
        ok = sells & (px > 0) & (lq > 0) & np.isfinite(dollars[sl])
        reachable = cash[a] + np.sum(lq[ok] * px[ok]) >= floor[a] + 1e-6
        if reachable:
            assert not got.status[a] & rounding.FLOOR_UNMET
            assert got.cash_after[a] >= floor[a] - 1e-6
        if not got.status[a] & rounding.NEGATIVE_CASH:
            assert got.cash_after[a] >= -1e-6
