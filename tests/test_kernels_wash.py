"""Wash-sale windows against their reference, and the day-30/day-31 edges."""

from __future__ import annotations

import datetime as dt

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.kernels import dates, wash
from engine.kernels import reference as ref

AS_OF = int(dates.to_days(dt.date(2026, 11, 20)))
SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def blocks(trades, as_of=AS_OF, taxable=None):
    """trades: (household, group, account, security, day, side, quantity, gain)."""
    cols = list(zip(*trades)) if trades else [[]] * 8
    return wash.wash_sale_blocks(*[np.array(c) for c in cols[:5]], np.array(cols[5], np.int8),
                                 np.array(cols[6], float), np.array(cols[7], float), as_of,
                                 taxable=taxable)


def test_loss_sale_30_days_ago_blocks_a_purchase_today():
    b = blocks([(0, 7, 0, 70, AS_OF - 30, wash.SELL, 10.0, -100.0)])
    assert b.buy_blocked.tolist() == [True] and b.loss_sale_blocked.tolist() == [False]
    assert b.last_loss_sale_day.tolist() == [AS_OF - 30]


def test_loss_sale_31_days_ago_does_not_block():
    b = blocks([(0, 7, 0, 70, AS_OF - 31, wash.SELL, 10.0, -100.0)])
    assert b.buy_blocked.tolist() == [False]
    assert b.household.tolist() == [0] and b.wash_group.tolist() == [7]


def test_purchase_30_days_ago_blocks_a_loss_sale_today_but_31_does_not():
    b = blocks([(0, 7, 0, 70, AS_OF - 30, wash.BUY, 5.0, np.nan),
                (1, 7, 1, 70, AS_OF - 31, wash.BUY, 5.0, np.nan)])
    assert b.loss_sale_blocked.tolist() == [True, False]
    assert b.shares_bought.tolist() == [5.0, 0.0]
    assert b.detail_pair.tolist() == [0] and b.detail_shares_bought.tolist() == [5.0]
    assert b.detail_last_buy_day.tolist() == [AS_OF - 30]


def test_gain_sales_do_not_block_and_ira_purchases_do():
    trades = [(3, 1, 10, 100, AS_OF - 3, wash.SELL, 10.0, 50.0),   # gain: no block
              (3, 2, 11, 200, AS_OF - 3, wash.BUY, 4.0, np.nan),   # IRA buy: blocks loss sales
              (3, 2, 11, 201, AS_OF - 2, wash.BUY, 6.0, np.nan),   # another security, same group
              (3, 2, 10, 200, AS_OF - 1, wash.SELL, 2.0, -10.0)]   # IRA-only loss: not a loss
    b = blocks(trades, taxable=np.array([True, False, False, False]))
    assert b.buy_blocked.tolist() == [False, False]
    assert b.loss_sale_blocked.tolist() == [False, True]
    assert b.shares_bought.tolist() == [0.0, 10.0]
    assert b.detail_security.tolist() == [200, 201]
    assert b.detail_last_buy_day.tolist() == [AS_OF - 3, AS_OF - 2]
    assert b.last_buy_day.tolist() == [wash.NO_DAY, AS_OF - 2]


def test_future_and_bad_trades_are_flagged():
    b = blocks([(0, 0, 0, 0, AS_OF + 1, wash.SELL, 1.0, -1.0),
                (0, 0, 0, 0, AS_OF, wash.BUY, 0.0, np.nan),
                (0, 0, 0, 0, AS_OF, wash.SELL, 1.0, np.nan)])
    assert b.status.tolist() == [wash.FUTURE_TRADE | wash.BAD_TRADE | wash.UNKNOWN_GAIN]
    assert b.buy_blocked.tolist() == [True] and b.loss_sale_blocked.tolist() == [False]


def test_side_codes():
    assert wash.side_codes(["buy", "sell", "x"]).tolist() == [wash.BUY, wash.SELL, -1]


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 4), st.integers(0, 3),
                          st.integers(0, 5), st.integers(AS_OF - 40, AS_OF + 2),
                          st.sampled_from([wash.BUY, wash.SELL, wash.SELL, 5]),
                          st.sampled_from([1.0, 2.5, 10.0, 0.0]),
                          st.sampled_from([-50.0, 0.0, 20.0, np.nan])), max_size=60),
       st.data())
def test_wash_sale_blocks_match_reference(trades, data):
    taxable = np.array(data.draw(st.lists(st.booleans(), min_size=len(trades),
                                          max_size=len(trades))), dtype=bool)
    got = blocks(trades, taxable=taxable)
    cols = list(zip(*trades)) if trades else [[]] * 8
    want = ref.wash_sale_blocks_reference(*[np.array(c) for c in cols], AS_OF, taxable=taxable)
    for name in got._fields:
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), err_msg=name)
