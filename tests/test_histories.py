"""The backtest's price histories: skfolio's S&P 500 data offline, and the synthetic universe."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from engine.simulate.histories import sp500_history, synthetic_history


def test_sp500_history_loads_offline_with_a_risk_model_from_the_past_only():
    pytest.importorskip("skfolio")
    history = sp500_history()
    assert history.prices.shape[1] == 20 and np.isfinite(history.prices).all()
    assert history.days[0] == np.datetime64("1990-01-02") and history.days[-1] >= np.datetime64("2022-12-01")
    assert history.days[history.first] >= np.datetime64("1991-01-01")
    risk = history.risk(history.first)
    covariance = risk.covariance()
    assert np.linalg.eigvalsh(covariance).min() > 0
    # annualized volatilities of daily returns: 15% to 150% (RRC, a small energy stock, 1990: 133%)
    assert (0.15 < np.sqrt(np.diag(covariance))).all() and (np.sqrt(np.diag(covariance)) < 1.5).all()
    window = history.window(dt.date(2001, 1, 1), dt.date(2010, 12, 31))
    assert window.days[window.first] == np.datetime64("2001-01-02") and window.days[-1] == np.datetime64("2010-12-31")


def test_synthetic_history_is_deterministic_and_weighted():
    a = synthetic_history(40, 1, seed=2)
    b = synthetic_history(40, 1, seed=2)
    np.testing.assert_array_equal(a.prices, b.prices)
    assert a.prices.shape == (a.days.size, 40) and (a.prices > 0).all()
    assert a.start_weights.sum() == pytest.approx(1.0) and (a.start_weights > 0).all()
