"""The backtest's accounting: a tiny run of every strategy, and the ledger on named cases.

Benchmarks, not tests, measure tax alpha (``jobs/backtest.py``); here the
invariants every run must keep: shares conserved, no disallowed loss for
Canopy, taxes equal to the recognized gains at the rates, nothing realized by
buy-and-hold, and the wash-sale rule applied by the ledger.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from engine.contract.config import Config, PolicyConfig, SolverConfig
from engine.kernels.wash import BUY, SELL
from engine.simulate.backtest import BacktestSettings, rebalance_days, simulate, summarize
from engine.simulate.histories import synthetic_history
from engine.simulate.ledger import Ledger
from engine.simulate.strategies import BuyAndHold, CanopyStrategy, MonthlyHarvester


def _day(date: str) -> int:
    return int((dt.date.fromisoformat(date) - dt.date(1970, 1, 1)).days)


def test_ledger_disallows_a_loss_rebought_within_30_days_and_moves_it_to_the_new_basis():
    ledger = Ledger(np.arange(2))
    first = ledger.buy(_day("2024-01-02"), 0, 10, 10.0)
    ledger.settle()
    ledger.sell(_day("2024-02-01"), first, 10, 8.0)          # a loss of 20
    ledger.buy(_day("2024-03-01"), 0, 10, 8.5)               # 29 days later: a wash sale
    ledger.settle()
    sale = ledger.trades[1]
    assert sale.gain == pytest.approx(-20.0)
    assert sale.disallowed == pytest.approx(20.0)
    assert sale.short_term == pytest.approx(0.0)              # recognized: gain + disallowed
    code, security, quantity, basis, acquired = ledger.open_lots()
    assert basis.tolist() == pytest.approx([105.0])
    # the holding period of the shares sold carries over: 30 days back
    assert acquired.tolist() == [_day("2024-03-01") - 30]


def test_ledger_rebuying_on_day_31_is_no_wash_sale_and_lots_are_sold_by_purchase():
    ledger = Ledger(np.arange(1))
    cheap = ledger.buy(_day("2023-01-03"), 0, 5, 10.0)
    dear = ledger.buy(_day("2023-06-01"), 0, 5, 20.0)
    ledger.settle()
    ledger.sell(_day("2024-07-01"), dear, 5, 15.0)            # the dear lot, though bought later
    ledger.buy(_day("2024-08-01"), 0, 5, 15.0)                # day 31
    ledger.settle()
    sale = ledger.trades[2]
    assert sale.gain == pytest.approx(-25.0) and sale.disallowed == 0.0
    assert sale.short_term == pytest.approx(0.0) and sale.long_term == pytest.approx(-25.0)
    code, _, quantity, basis, _ = ledger.open_lots()
    assert sorted(zip(code.tolist(), basis.tolist())) == [(cheap, 50.0), (code.max(), 75.0)]


@pytest.fixture(scope="module")
def tiny_runs():
    history = synthetic_history(12, 1, seed=3).window(end=dt.date(2015, 5, 10))
    config = Config(policy=PolicyConfig(), solver=SolverConfig(eps_abs=1e-5, eps_rel=1e-5))
    settings = BacktestSettings(contribution=5_000.0)
    runs = {s.name: simulate(history, s, settings)
            for s in (BuyAndHold(), MonthlyHarvester(), CanopyStrategy(config))}
    return history, settings, runs


def test_rebalance_days_every_business_day_first_of_each_week_or_month():
    days = np.asarray([np.datetime64(d) for d in ("2024-01-30", "2024-01-31", "2024-02-01", "2024-02-02",
                                                  "2024-02-05", "2024-02-06", "2024-03-01")])
    assert rebalance_days(days, 1, "daily").tolist() == [1, 2, 3, 4, 5, 6]
    assert rebalance_days(days, 1, "weekly").tolist() == [1, 4, 6]        # Mondays 01-29, 02-05, 02-26
    assert rebalance_days(days, 1, "monthly").tolist() == [1, 2, 6]
    with pytest.raises(ValueError, match="monthly, weekly or daily"):
        rebalance_days(days, 1, "hourly")


def test_shares_are_conserved_and_never_short(tiny_runs):
    history, _, runs = tiny_runs
    n = history.security_ids.size
    for run in runs.values():
        bought = np.zeros(n)
        sold = np.zeros(n)
        for t in run.ledger.trades:
            (bought if t.side == BUY else sold)[t.security] += t.quantity
        held = run.ledger.shares(n)
        np.testing.assert_allclose(held, bought - sold, atol=1e-8, err_msg=run.name)
        assert (held >= -1e-9).all()
        _, _, quantity, _, _ = run.ledger.open_lots()
        assert (quantity > 0).all()


def test_taxes_are_the_recognized_gains_at_the_rates(tiny_runs):
    _, settings, runs = tiny_runs
    for run in runs.values():
        for year in {d.year for d in run.dates}:
            sells = [t for t in run.ledger.trades if t.side == SELL
                     and (dt.date(1970, 1, 1) + dt.timedelta(days=t.day)).year == year]
            for t in sells:
                assert t.short_term + t.long_term == pytest.approx(t.gain + t.disallowed, abs=1e-9)
                assert 0.0 <= t.disallowed <= max(-t.gain, 0.0) + 1e-9
            expected = sum(settings.st_rate * t.short_term + settings.lt_rate * t.long_term for t in sells)
            # the year is still open at the end: its tax is accrued, not yet paid
            assert run.accrued_tax[-1] == pytest.approx(expected, abs=1e-6), run.name


def test_buy_and_hold_realizes_nothing_and_canopy_has_no_wash_sale(tiny_runs):
    _, _, runs = tiny_runs
    assert not [t for t in runs["buy_and_hold"].ledger.trades if t.side == SELL]
    canopy_sells = [t for t in runs["canopy"].ledger.trades if t.side == SELL]
    assert canopy_sells, "the tiny history should give Canopy something to harvest"
    assert sum(t.disallowed for t in canopy_sells) == 0.0
    assert sum(-t.gain for t in canopy_sells if t.gain < 0) > 0


def test_summary_has_every_metric_per_year_and_overall(tiny_runs):
    _, _, runs = tiny_runs
    summary = summarize(runs, 12)
    for name in runs:
        overall = summary["strategies"][name]["overall"]
        for key in ("tax_alpha", "after_tax_excess", "pretax_excess", "tracking_error", "turnover_rate",
                    "harvested_losses", "disallowed_losses"):
            assert np.isfinite(overall[key]), (name, key)
    buy_and_hold = summary["strategies"]["buy_and_hold"]["overall"]
    assert buy_and_hold["tax_alpha"] == 0.0 and buy_and_hold["harvested_losses"] == 0.0
    assert summary["strategies"]["canopy"]["overall"]["disallowed_losses"] == 0.0
