"""The tax-risk frontier: the interpolation on a hand-made curve, and a tiny sweep's report.

The full frontier is a benchmark (``canopy backtest --frontier``); here a
two-seed, twelve-stock sweep with two settings per strategy checks the
report's structure, that Canopy never has a loss disallowed, and that the
harvester without substitutes holds its proceeds in cash.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from engine.contract.config import Config, SolverConfig
from engine.simulate.frontier import FrontierGrid, frontier_summary, interpolate_at
from engine.simulate.frontier_study import FrontierStudy, run_frontier_study


def test_interpolation_runs_along_the_efficient_part_of_the_curve():
    te = np.array([0.010, 0.000, 0.005, 0.020, 0.015])
    alpha = np.array([0.020, 0.000, 0.015, 0.025, 0.010])       # the point at 1.5% is dominated
    assert interpolate_at(te, alpha, 0.0075) == (pytest.approx(0.0175), "inside")
    assert interpolate_at(te, alpha, 0.015) == (pytest.approx(0.0225), "inside")
    assert interpolate_at(te, alpha, 0.010) == (pytest.approx(0.020), "inside")
    assert interpolate_at(te, alpha, 0.030) == (pytest.approx(0.025), "above")   # its best point, no more
    value, where = interpolate_at(te + 0.001, alpha, 0.0005)
    assert math.isnan(value) and where == "below"


def test_summary_gives_canopy_at_each_harvesters_tracking_error_and_the_ratio():
    def p(curve, strategy, knob, te, alpha):
        return {"curve": curve, "strategy": strategy, "knob": knob, "tracking_error": te, "tax_alpha": alpha}
    points = {"canopy/monthly/0": p("canopy/monthly", "canopy", 0, 0.001, 0.001),
              "canopy/monthly/1": p("canopy/monthly", "canopy", 1, 0.008, 0.024),
              "canopy/monthly/4": p("canopy/monthly", "canopy", 4, 0.016, 0.032),
              "canopy/daily/1": p("canopy/daily", "canopy", 1, 0.004, 0.090),      # not the curve used
              "harvester/monthly/0": p("harvester/monthly", "harvester", 0, 0.012, 0.014),
              "buy_and_hold/monthly/0": p("buy_and_hold/monthly", "buy_and_hold", 0, 0.0, 0.0)}
    rows = frontier_summary(points, "h")
    assert len(rows) == 1
    row = rows[0]
    assert row["history"] == "h" and row["harvester"] == "harvester/monthly/0"
    assert row["harvester_te"] == 0.012 and row["harvester_tax_alpha"] == 0.014
    assert row["canopy_tax_alpha_at_harvester_te"] == pytest.approx(0.028)
    assert row["ratio"] == pytest.approx(2.0)


TINY_GRID = FrontierGrid(tax_sensitivities=(0.0, 1.0), thresholds=(0.0, 0.10), daily_tax_sensitivities=(1.0,),
                         no_substitutes_tax_sensitivities=(1.0,), no_substitutes_thresholds=(0.0,),
                         risk_aversions=(96.0,))
TINY_CONFIG = Config(solver=SolverConfig(eps_abs=1e-5, eps_rel=1e-5))


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    """Two tiny universes, Canopy monthly only (daily, a solve a day, is the slow test's)."""
    out = tmp_path_factory.mktemp("frontier")
    study = FrontierStudy(seeds=2, stocks=12, years=1, daily_seeds=0, real=False, workers=1, grid=TINY_GRID)
    report = run_frontier_study(study, out, config=TINY_CONFIG)
    return out, report, study, TINY_CONFIG


@pytest.mark.slow
def test_canopy_daily_walks_beside_monthly(tmp_path):
    study = FrontierStudy(seeds=1, stocks=12, years=1, daily_seeds=1, real=False, workers=1, grid=TINY_GRID)
    report = run_frontier_study(study, tmp_path, config=TINY_CONFIG)
    daily = report["curves"]["synthetic_12 the 1 seed(s) with Canopy daily"]["canopy/daily"]
    assert [s["knob"] for s in daily] == [1.0]
    point = report["histories"]["synthetic_12 seed 0"]["points"]["canopy/daily/1"]
    assert point["disallowed_losses"] == 0.0 and point["harvested_losses"] > 0


def test_tiny_sweep_writes_the_report_with_every_curve_and_a_summary(tiny_report):
    out, report, _, _ = tiny_report
    assert (out / "frontier.png").stat().st_size > 10_000
    written = json.loads((out / "frontier.json").read_text())
    assert set(written) >= {"settings", "engine_config", "targets", "summary", "curves", "histories"}
    assert list(written["histories"]) == ["synthetic_12 seed 0", "synthetic_12 seed 1"]
    curves = written["curves"]["synthetic_12 mean of 2 seeds"]
    assert set(curves) == {"buy_and_hold/monthly", "buy_and_hold/daily", "canopy/monthly",
                           "canopy/monthly/no_substitutes", "harvester/monthly", "harvester/daily",
                           "harvester/monthly/no_substitutes", "harvester/daily/no_substitutes"}
    assert [(s["knob"], s["risk_aversion"]) for s in curves["canopy/monthly"]] == [(0.0, None), (1.0, None),
                                                                                  (1.0, 96.0)]
    assert curves["canopy/monthly"][0]["seeds"] == 2
    assert not any(k.endswith("with Canopy daily") for k in written["curves"])
    keys = {"history", "harvester", "harvester_te", "harvester_tax_alpha", "canopy_tax_alpha_at_harvester_te",
            "ratio"}
    rows = written["summary"]
    assert all(keys <= set(r) for r in rows)
    # six harvester settings: the mean over the seeds, then each seed
    assert len(rows) == 6 * 3
    assert {r["history"] for r in rows} == {"synthetic_12 mean of 2 seeds", "synthetic_12 seed 0",
                                            "synthetic_12 seed 1"}
    for name, history in written["histories"].items():
        for label, point in history["points"].items():
            for key in ("tax_alpha", "tax_alpha_liquidated", "tracking_error", "losses_harvested",
                        "gains_taxed", "gains_deferred", "short_term_gains_avoided", "wash_sales_cost"):
                assert np.isfinite(point[key]), (name, label, key)
        assert history["points"]["buy_and_hold/monthly/0"]["tax_alpha"] == 0.0


def test_canopy_never_has_a_loss_disallowed_and_harvests_something(tiny_report):
    _, report, _, _ = tiny_report
    assert report["targets"]["canopy disallowed losses"]["met"]
    harvested = 0.0
    for history in report["histories"].values():
        for point in history["points"].values():
            if point["strategy"] == "canopy":
                assert point["disallowed_losses"] == 0.0
                harvested += point["harvested_losses"]
            if point["strategy"] == "buy_and_hold":
                assert point["harvested_losses"] == 0.0 and point["gains_taxed"] == 0.0
    assert harvested > 0


def test_a_higher_risk_aversion_tracks_closer(tiny_report):
    """λ is the second knob: at θ = 1, λ = 96 (64 times the default) keeps the account nearer the
    index than the default does, in each history."""
    _, report, _, _ = tiny_report
    for history in report["histories"].values():
        points = history["points"]
        assert points["canopy/monthly/1/risk96"]["risk_aversion"] == 96.0
        assert points["canopy/monthly/1/risk96"]["tracking_error"] < points["canopy/monthly/1"]["tracking_error"]


def test_a_rerun_resumes_from_the_finished_histories(tiny_report, monkeypatch):
    out, report, study, config = tiny_report
    import engine.simulate.frontier_study as study_module

    def never(_):
        raise AssertionError("a finished history was run again")
    monkeypatch.setattr(study_module, "_one_history", never)
    again = run_frontier_study(study, out, config=config)
    assert json.dumps(again["summary"]) == json.dumps(report["summary"])
