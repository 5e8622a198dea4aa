"""PNG charts (matplotlib, Agg backend): of a run, for its report and the portal; of simulations.

A run's charts return PNG bytes and draw on their own Agg canvas (no pyplot
state, so several threads may draw at once): :func:`status_chart`,
:func:`histogram_chart`, :func:`tracking_error_chart`, :func:`taxes_chart`; and one
account's holdings against its target by asset class, :func:`asset_class_chart`.
The simulations' charts write a PNG file: :func:`backtest_chart`,
:func:`frontier_chart` and :func:`transition_chart`.

Pure: figures from NumPy arrays; no storage layer, no ray.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Mapping

import numpy as np

from engine.contract.schema import Decision, Status
from engine.review.pages import money

__all__ = ["status_chart", "histogram_chart", "tracking_error_chart", "taxes_chart", "asset_class_chart",
           "backtest_chart", "transition_chart", "frontier_chart"]

_COLORS = {"buy_and_hold": "#7f7f7f", "monthly_harvester": "#d62728", "canopy": "#2ca02c"}


_DECISION_COLOURS = {Decision.approve: "#2e7d32", Decision.review: "#f9a825", Decision.suspend: "#c62828",
                     "undecided": "#78909c"}


def _figure(width: float = 6.4, height: float = 3.6):
    """A matplotlib Figure on its own Agg canvas, ``width`` x ``height`` inches at 110 dpi."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(figure)
    return figure


def _png(figure) -> bytes:
    figure.tight_layout()
    sink = io.BytesIO()
    figure.savefig(sink, format="png")
    return sink.getvalue()


def status_chart(statuses: list[str], decisions: list[str] | None) -> bytes:
    """Accounts by status (one bar each), coloured by decision where ``decisions`` (one per status) is given."""
    figure = _figure()
    axes = figure.add_subplot()
    present = [s for s in Status.all if s in statuses] or list(Status.all)
    kinds = [d for d in (*Decision.all, "undecided") if d in decisions] if decisions is not None else ["undecided"]
    left = np.zeros(len(present))
    for kind in kinds:
        counts = np.array([sum(1 for s, d in zip(statuses, decisions or ["undecided"] * len(statuses))
                               if s == status and d == kind) for status in present], float)
        if counts.any():
            axes.barh(present, counts, left=left, color=_DECISION_COLOURS[kind],
                      label=kind if decisions is not None else "accounts")
            left += counts
    for y, total in enumerate(left):
        axes.text(total, y, f" {int(total):,}", va="center", fontsize=9)
    axes.set_xlabel("accounts")
    axes.set_title("Accounts by status" + (" and decision" if decisions is not None else ""))
    axes.invert_yaxis()
    axes.legend(loc="lower right", fontsize=8, frameon=False)
    axes.set_xlim(0, max(left.max(initial=1) * 1.15, 1))
    return _png(figure)


def histogram_chart(values: np.ndarray, title: str, xlabel: str, colour: str, marker: float | None = None) -> bytes:
    """A histogram of ``values`` (one per account) with its median dashed, and ``marker`` as a red line."""
    figure = _figure()
    axes = figure.add_subplot()
    if values.size:
        axes.hist(values, bins=min(40, max(5, values.size // 3)), color=colour, edgecolor="white")
        axes.axvline(float(np.median(values)), color="#333", linestyle="--", linewidth=1,
                     label=f"median {np.median(values):.3g}")
        axes.legend(fontsize=8, frameon=False)
    else:
        axes.text(0.5, 0.5, "no accounts", ha="center", transform=axes.transAxes)
    if marker is not None:
        axes.axvline(marker, color="#c62828", linewidth=1)
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel("accounts")
    return _png(figure)


def tracking_error_chart(before: np.ndarray, after: np.ndarray) -> bytes:
    """Each account's tracking error (fraction a year) before trading against after the proposal, and y = x."""
    figure = _figure()
    axes = figure.add_subplot()
    top = float(max(before.max(initial=0), after.max(initial=0)) * 100 * 1.05) or 1.0
    axes.plot([0, top], [0, top], color="#999", linewidth=1, linestyle="--", label="no change")
    axes.scatter(before * 100, after * 100, s=14, color="#1565c0", alpha=0.7, label="account")
    axes.set_xlim(0, top)
    axes.set_ylim(0, top)
    axes.set_xlabel("tracking error before trading (% a year)")
    axes.set_ylabel("after the proposal (% a year)")
    axes.set_title("Tracking error to target, before and after")
    axes.legend(fontsize=8, frameon=True, loc="lower right")
    return _png(figure)


def taxes_chart(totals: Mapping[str, float]) -> bytes:
    """One bar per label of ``totals`` (USD, e.g. gains realized, tax saved, tax deferred), each with its amount."""
    figure = _figure(7.2, 3.8)
    axes = figure.add_subplot()
    labels = list(totals)
    values = np.array([totals[k] for k in labels])
    colours = ["#6d4c41", "#8d6e63", "#c62828", "#2e7d32", "#43a047", "#1565c0"][:len(labels)]
    bars = axes.bar(labels, values, color=colours)
    for bar, value in zip(bars, values):
        axes.annotate(money(value), (bar.get_x() + bar.get_width() / 2, value), ha="center",
                      va="bottom" if value >= 0 else "top", fontsize=8)
    axes.axhline(0, color="#333", linewidth=0.8)
    axes.set_ylabel("USD")
    axes.set_title("Taxes: realized, saved and deferred (all accounts)")
    axes.tick_params(axis="x", labelsize=8, rotation=15)
    return _png(figure)


def asset_class_chart(asset_classes: list[str], held: np.ndarray, target: np.ndarray,
                      after: np.ndarray | None = None, title: str = "Holdings and target by asset class") -> bytes:
    """One account's weight in each asset class, held now (and after the proposal), against its target.

    ``held``, ``target``, ``after``: fractions of the account's value, one per
    entry of ``asset_classes``; ``after`` may be None (no proposal).

    Raises
    ------
    ValueError
        An array whose length is not that of ``asset_classes``.
    """
    series = {"held now": held, "target": target, **({"after the proposal": after} if after is not None else {})}
    for name, values in series.items():
        if len(values) != len(asset_classes):
            raise ValueError(f"asset_class_chart: {name} has {len(values)} weights for {len(asset_classes)} "
                             f"asset classes; pass one weight per asset class")
    figure = _figure(6.4, max(2.4, 0.9 + 0.42 * len(asset_classes) * (1 + (after is not None) / 2)))
    axes = figure.add_subplot()
    y = np.arange(len(asset_classes), dtype=float)
    height = 0.8 / (len(series) - 1)
    colours = {"held now": "#90a4ae", "after the proposal": "#1565c0"}
    bars = [name for name in series if name != "target"]
    for i, name in enumerate(bars):
        axes.barh(y + (i - (len(bars) - 1) / 2) * height, 100 * np.asarray(series[name], float), height,
                  color=colours[name], label=name)
    axes.scatter(100 * np.asarray(target, float), y, marker="|", s=400, linewidths=2.5, color="#c62828",
                 label="target", zorder=3)
    axes.set_yticks(y, asset_classes)
    axes.invert_yaxis()
    axes.set_xlabel("% of the account's value")
    axes.set_xlim(0, max(1.0, 100 * max(max(np.max(v, initial=0.0) for v in series.values()), 0.0) * 1.1))
    axes.set_title(title)
    axes.legend(fontsize=8, frameon=True, loc="best")
    return _png(figure)


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
