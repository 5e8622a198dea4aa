"""PNG charts of simulations (matplotlib, Agg backend): the backtest, its frontier and the transition plan.

Pure: figures from NumPy arrays to a local PNG path; no storage layer, no ray.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

__all__ = ["backtest_chart", "transition_chart", "frontier_chart"]

_COLORS = {"buy_and_hold": "#7f7f7f", "monthly_harvester": "#d62728", "canopy": "#2ca02c"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def backtest_chart(histories: Mapping[str, dict], path: str | Path) -> None:
    """One row per history: cumulative tax alpha over time, and the overall figures per strategy.

    ``histories[name]`` holds ``dates`` (list of dates), ``series`` (strategy ->
    cumulative tax alpha, fraction of wealth, per date) and ``overall``
    (strategy -> the summary's overall metrics).
    """
    plt = _pyplot()
    rows = len(histories)
    fig, axes = plt.subplots(rows, 2, figsize=(13, 4.2 * rows), squeeze=False,
                             gridspec_kw={"width_ratios": [2.2, 1]})
    for row, (name, data) in enumerate(histories.items()):
        ax = axes[row][0]
        for strategy, series in data["series"].items():
            ax.plot(data["dates"], 100 * np.asarray(series), color=_COLORS.get(strategy), label=strategy)
        ax.axhline(0, color="black", lw=0.5)
        ax.set_title(f"{name}: cumulative tax alpha vs buy-and-hold (after-tax minus pre-tax wealth)")
        ax.set_ylabel("% of wealth")
        ax.legend(loc="upper left")
        ax = axes[row][1]
        strategies = list(data["overall"])
        x = np.arange(len(strategies))
        alpha = [100 * data["overall"][s]["tax_alpha"] for s in strategies]
        te = [100 * data["overall"][s]["tracking_error"] for s in strategies]
        ax.bar(x - 0.2, alpha, 0.4, label="tax alpha, %/yr", color="#2ca02c")
        ax.bar(x + 0.2, te, 0.4, label="tracking error, %/yr", color="#1f77b4")
        for xi, a, t in zip(x, alpha, te):
            ax.text(xi - 0.2, a, f"{a:.2f}", ha="center", va="bottom", fontsize=8)
            ax.text(xi + 0.2, t, f"{t:.2f}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(x, [s.replace("_", "\n") for s in strategies])
        ax.set_title("over the whole run")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def transition_chart(years: np.ndarray, tracking_error: np.ndarray, tax: np.ndarray, budget: float | None,
                     path: str | Path, title: str, start: float | None = None) -> None:
    """Projected tracking error (line, from ``start`` at year 0) and tax (bars) of each year of a transition plan."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.bar(years, tax / 1000, color="#ff7f0e", alpha=0.7, label="tax realized, USD thousands")
    if budget is not None:
        ax.axhline(budget / 1000, color="#ff7f0e", ls="--", lw=1, label="yearly tax budget")
    ax.set_xlabel("year of the plan")
    ax.set_ylabel("tax, USD thousands")
    ax.set_xticks(np.r_[0, years] if start is not None else years)
    other = ax.twinx()
    te_years, te = (np.r_[0, years], np.r_[start, tracking_error]) if start is not None else (years, tracking_error)
    other.plot(te_years, 100 * te, color="#1f77b4", marker="o", label="tracking error after the year's trades, %")
    other.set_ylabel("tracking error, %")
    other.set_ylim(bottom=0)
    lines = ax.get_legend_handles_labels()
    more = other.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="lower left", fontsize=8, framealpha=0.9)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


_CURVE_STYLE = {"canopy": ("#2ca02c", "o"), "harvester": ("#d62728", "s"), "buy_and_hold": ("#7f7f7f", "x")}


def frontier_chart(groups: Mapping[str, Mapping[str, list]], path: str | Path) -> None:
    """One panel per history group: tax alpha against tracking error, one line per curve.

    ``groups[name][curve]`` is a list of settings, each with ``tracking_error``,
    ``tax_alpha`` (means over the group's seeds) and their ``*_std``; the
    bars are ± one standard deviation over the seeds.  Daily curves are
    dashed, curves without substitutes dotted.
    """
    plt = _pyplot()
    cols = min(2, len(groups))
    rows = -(-len(groups) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, 5 * rows), squeeze=False)
    for ax, (name, curves) in zip(axes.flat, groups.items()):
        for curve, settings in curves.items():
            strategy = curve.split("/")[0]
            color, marker = _CURVE_STYLE.get(strategy, ("#1f77b4", "o"))
            line = "--" if "/daily" in curve else "-"
            line = ":" if "no_substitutes" in curve else line
            te = 100 * np.asarray([p["tracking_error"] for p in settings])
            alpha = 100 * np.asarray([p["tax_alpha"] for p in settings])
            order = np.argsort(te)
            ax.errorbar(te[order], alpha[order],
                        xerr=100 * np.asarray([p["tracking_error_std"] for p in settings])[order],
                        yerr=100 * np.asarray([p["tax_alpha_std"] for p in settings])[order],
                        color=color, marker=marker, linestyle=line, capsize=2, label=curve,
                        alpha=0.6 if line != "-" else 1.0)
        ax.axhline(0, color="black", lw=0.5)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("tracking error, %/yr (monthly returns)")
        ax.set_ylabel("tax alpha, %/yr")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
