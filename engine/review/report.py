"""The run report: one HTML page with PNG charts for the rebalancing group, and per-account pages.

:func:`build_report` turns a committed run (its tables and manifest), its
decision set if there is one (``canopy approve``), and its book into files:

* ``index.html``: the run at a glance — accounts by status and decision,
  the distribution of scores, tracking error before and after, turnover,
  taxes realized and saved (and deferred against a plain rebalance), and the
  largest outliers, each chart with a sentence on how to read it;
* ``status.png``, ``scores.png``, ``tracking_error.png``, ``turnover.png``, ``taxes.png``;
* ``accounts/<account_id>.html``: per account with trades, a *Taxes Saved or
  Deferred* report (:mod:`engine.review.taxes`: losses harvested and the tax they
  save, gains deferred against a plain rebalance to target, year to date)
  and every trade explained in words (:func:`engine.review.explain.explain`).

Charts are drawn with matplotlib's Agg canvas (no display, no pyplot state).
The files are returned as bytes; :func:`engine.book.runs.write_report` commits
them.  Pure apart from that: no storage here.
"""

from __future__ import annotations

import datetime as dt
import html
import io
from typing import Any, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.contract.schema import Col, Decision, Side, Status
from engine.rebalance.targets import Targets
from engine.review.explain import explain
from engine.review.taxes import tax_report

#: The report's per-account tax figures (:func:`engine.review.taxes.tax_report`), read back by later reports.
REPORT_TAXES = "taxes.parquet"

__all__ = ["build_report", "account_page", "CHARTS"]

CHARTS = ("status.png", "scores.png", "tracking_error.png", "turnover.png", "taxes.png")
_DECISION_COLOURS = {Decision.approve: "#2e7d32", Decision.review: "#f9a825", Decision.suspend: "#c62828",
                     "undecided": "#78909c"}
_STYLE = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: .92em; }
th, td { border: 1px solid #ddd; padding: .3em .6em; text-align: right; }
th { background: #f3f5f7; } td.text, th.text { text-align: left; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: .92em; max-width: 900px; }
.grid { display: grid; grid-template-columns: 1fr 1fr; gap: 1em; }
.note { color: #555; font-size: .92em; } .big { font-size: 1.3em; font-weight: 600; }
"""


def _money(value: float) -> str:
    return f"-${-value:,.0f}" if value < 0 else f"${value:,.0f}"


def _pct(value: float, digits: int = 2) -> str:
    return f"{100 * value:.{digits}f}%"


def _e(text: Any) -> str:
    return html.escape(str(text))


def _page(title: str, body: str) -> bytes:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(title)}</title>"
            f"<style>{_STYLE}</style></head><body>\n{body}\n</body></html>\n").encode()


def _table(headers: list[str], rows: list[list[str]], text_columns: int = 1) -> str:
    head = "".join(f"<th class=\"text\">{_e(h)}</th>" if i < text_columns else f"<th>{_e(h)}</th>"
                   for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f"<td class=\"text\">{c}</td>" if i < text_columns else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# --------------------------------------------------------------------------
# Charts.

def _figure(width: float = 6.4, height: float = 3.6):
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


def _status_chart(statuses: list[str], decisions: list[str] | None) -> bytes:
    figure = _figure()
    axes = figure.add_subplot()
    present = [s for s in Status.all if s in statuses] or list(Status.all)
    kinds = [d for d in (*Decision.all, "undecided") if decisions is None or d in decisions] \
        if decisions is not None else ["undecided"]
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


def _histogram(values: np.ndarray, title: str, xlabel: str, colour: str, marker: float | None = None) -> bytes:
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


def _tracking_chart(before: np.ndarray, after: np.ndarray) -> bytes:
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


def _taxes_chart(totals: Mapping[str, float]) -> bytes:
    figure = _figure(7.2, 3.8)
    axes = figure.add_subplot()
    labels = list(totals)
    values = np.array([totals[k] for k in labels])
    colours = ["#6d4c41", "#8d6e63", "#c62828", "#2e7d32", "#43a047", "#1565c0"][:len(labels)]
    bars = axes.bar(labels, values, color=colours)
    for bar, value in zip(bars, values):
        axes.annotate(_money(value), (bar.get_x() + bar.get_width() / 2, value), ha="center",
                      va="bottom" if value >= 0 else "top", fontsize=8)
    axes.axhline(0, color="#333", linewidth=0.8)
    axes.set_ylabel("USD")
    axes.set_title("Taxes: realized, saved and deferred (all accounts)")
    axes.tick_params(axis="x", labelsize=8, rotation=15)
    return _png(figure)


# --------------------------------------------------------------------------
# Pages.

def account_page(account: Mapping[str, Any], taxes: Mapping[str, Any] | None, trades: list[dict],
                 book_account: Mapping[str, Any] | None, decision: str | None, as_of: dt.date,
                 history: Mapping[str, float] | None = None, history_runs: int = 0) -> bytes:
    """One account's Taxes Saved or Deferred report and its trades in words.

    ``history``: this year's earlier approved proposals of the account, summed
    (``harvested_loss``, ``tax_saved``, ``tax_deferred``; see :func:`make_report`).
    """
    aid = account[Col.account_id]
    parts = [f"<p><a href=\"../index.html\">&larr; run report</a></p>",
             f"<h1>Taxes Saved or Deferred: account {_e(aid)}</h1>",
             f"<p>Household {_e(account[Col.household_id])}; proposal of {as_of.isoformat()}; status "
             f"<b>{_e(account[Col.status])}</b>{f', decision <b>{_e(decision)}</b>' if decision else ''}; "
             f"value {_money(account[Col.value])}"
             f"{f'; {_e(book_account[Col.tax_status])} account' if book_account else ''}.</p>"]
    if account.get(Col.detail):
        parts.append(f"<p class=\"note\">{_e(account[Col.detail])}</p>")
    if taxes is not None:
        saved, deferred = taxes[Col.tax_saved], taxes[Col.tax_deferred]
        parts.append("<h2>Saved and deferred today</h2>")
        parts.append(f"<p class=\"big\">Tax saved {_money(saved)} &middot; tax deferred {_money(deferred)}</p>")
        parts.append(_table(["", "USD"], [
            ["losses harvested by this proposal", _money(taxes[Col.harvested_loss])],
            ["tax those losses save at the account's rates", _money(saved)],
            ["value a plain rebalance to target would sell", _money(taxes[Col.plain_sold])],
            ["net gain it would realize", _money(taxes[Col.plain_realized])],
            ["tax on its gains", _money(taxes[Col.plain_gain_tax])],
            ["tax on the gains this proposal realizes", _money(taxes[Col.gain_tax])],
            ["tax deferred (the difference)", _money(deferred)]]))
        parts.append("<p class=\"note\">A <i>plain rebalance to target</i> sells, of every security held above "
                     "its target (the account's target weights times its value less the cash it must keep), "
                     "the excess, oldest lots first (first in, first out), without regard to taxes. Tax deferred "
                     "is the tax on the gains it would realize less the tax on the gains this proposal realizes; "
                     "harvested losses count as saved, not here. Negative means this proposal realizes more "
                     "gain than the plain rebalance would, e.g. to carry out a screen or product change at once.</p>")
        budget = taxes.get(Col.tax_budget)
        parts.append("<h2>Year to date</h2>")
        parts.append(_table(["", "before today", "with this proposal"], [
            ["short-term gains realized", _money(taxes[Col.ytd_realized_st_before]), _money(taxes[Col.ytd_realized_st_after])],
            ["long-term gains realized", _money(taxes[Col.ytd_realized_lt_before]), _money(taxes[Col.ytd_realized_lt_after])],
            ["their tax at the account's rates", _money(taxes[Col.ytd_tax_before]), _money(taxes[Col.ytd_tax_after])],
            ["tax budget for the year", _money(budget) if budget is not None else "none",
             _money(budget) if budget is not None else "none"],
            *[[label, _money(earlier.get(key, 0.0)), _money(earlier.get(key, 0.0) + today)]
              for label, key, today in (
                  ("losses harvested by approved Canopy proposals", Col.harvested_loss, taxes[Col.harvested_loss]),
                  ("tax saved by them", Col.tax_saved, saved),
                  ("tax deferred against a plain rebalance", Col.tax_deferred, deferred))
              for earlier in [history or {}]]]))
        parts.append(f"<p class=\"note\">Gains realized before today are the system of record's figures "
                     f"(realized_st_ytd, realized_lt_ytd); negative is a net loss carried in the year. "
                     f"Harvested, saved and deferred before today add up this year's earlier runs whose "
                     f"decision set approved the account ({history_runs} earlier run(s) with a decision set "
                     f"this year; deferred only where that run's report was written); the last column adds "
                     f"today's proposal, approved or not.</p>")
    else:
        parts.append("<p class=\"note\">No tax figures: the account has no target tonight (rejected), "
                     "or the book was not available.</p>")
    parts.append(f"<h2>Trades ({len(trades)})</h2>")
    if trades:
        rows = [[_e(explain(t)), _e(t[Col.side]), _e(t[Col.security_id]), f"{t[Col.quantity]:,.4g}",
                 _money(t[Col.value]), _money(t[Col.realized_gain]) if t[Col.realized_gain] is not None else "",
                 _money(t[Col.est_tax]) if t[Col.side] == Side.sell else ""] for t in trades]
        parts.append(_table(["why, in words", "side", "security", "shares", "USD", "gain", "est. tax"], rows, 3))
    else:
        parts.append("<p>No trades are proposed for this account today.</p>")
    return _page(f"Taxes Saved or Deferred: {aid}", "\n".join(parts))


def build_report(run: Mapping[str, pa.Table], manifest: Mapping[str, Any], *, book_tables: Mapping[str, pa.Table]
                 | None = None, targets: Targets | None = None, decisions: pa.Table | None = None,
                 as_of: dt.date, max_accounts: int = 500, accounts: list[str] | None = None,
                 outliers: int = 10, history: Mapping[str, Mapping[str, float]] | None = None,
                 history_runs: int = 0) -> dict[str, bytes]:
    """The report's files, by path relative to the report's folder (see the module docstring).

    Parameters
    ----------
    run, manifest
        From :func:`engine.book.runs.read_run`.
    book_tables, targets
        The run's book and its targets (:func:`engine.rebalance.targets.build_targets`); without them
        the tax figures are left out.
    decisions
        The run's decision set (:func:`engine.book.runs.read_decisions`), if any.
    max_accounts
        Per-account pages at most, accounts with trades, largest saved + deferred tax first.
    accounts
        Accounts that get a page whatever their rank.
    history, history_runs
        Per account, this year's earlier approved proposals summed (:func:`make_report`), and
        how many earlier runs had a decision set.
    """
    table = run["accounts"]
    rows = table.to_pylist()
    statuses = [r[Col.status] for r in rows]
    decision_of = dict(zip(decisions.column(Col.account_id).to_pylist(), decisions.column(Col.decision).to_pylist())) \
        if decisions is not None else {}
    decision_list = [decision_of.get(r[Col.account_id], "undecided") for r in rows] if decisions is not None else None
    traded = [r for r in rows if r[Col.trade_count] > 0]
    proposed = [r for r in rows if r[Col.status] == Status.proposed]
    numbers = {name: np.array([r[name] for r in traded], float) for name in
               (Col.score, Col.tracking_error_before, Col.tracking_error_after, Col.turnover)}
    taxes = tax_report(book_tables, targets, run, as_of) if book_tables is not None and targets is not None else None
    tax_rows = {r[Col.account_id]: r for r in taxes.to_pylist()} if taxes is not None else {}

    def total(name: str, source=table) -> float:
        return float(pc.sum(source.column(name)).as_py() or 0.0) if source.num_rows else 0.0

    totals = {"net short-term gains": total(Col.realized_st), "net long-term gains": total(Col.realized_lt),
              "estimated tax": total(Col.est_tax), "losses harvested": total(Col.harvested_loss),
              "tax saved": total(Col.tax_saved)}
    if taxes is not None:
        totals["tax deferred"] = total(Col.tax_deferred, taxes)
    files = {
        "status.png": _status_chart(statuses, decision_list),
        "scores.png": _histogram(numbers[Col.score] * 1e4, "Cost-benefit scores of accounts with trades",
                                 "score (basis points of account value)", "#6a1b9a"),
        "tracking_error.png": _tracking_chart(numbers[Col.tracking_error_before], numbers[Col.tracking_error_after]),
        "turnover.png": _histogram(numbers[Col.turnover] * 100, "Turnover of accounts with trades",
                                   "traded value (% of account value)", "#00838f"),
        "taxes.png": _taxes_chart(totals),
    }

    # per-account pages
    trades_by_account: dict[str, list[dict]] = {}
    for t in run["trades"].to_pylist():
        trades_by_account.setdefault(t[Col.account_id], []).append(t)
    book_accounts = {r[Col.account_id]: r for r in book_tables["accounts"].to_pylist()} if book_tables else {}
    benefit = {a: r[Col.tax_saved] + max(r[Col.tax_deferred], 0.0) for a, r in tax_rows.items()}
    ranked = sorted((r[Col.account_id] for r in traded), key=lambda a: (-benefit.get(a, 0.0), a))
    chosen = list(dict.fromkeys([*(accounts or []), *ranked[:max_accounts]]))
    by_id = {r[Col.account_id]: r for r in rows}
    for aid in chosen:
        if aid in by_id:
            ordered = sorted(trades_by_account.get(aid, []), key=lambda t: -t[Col.value])
            files[f"accounts/{aid}.html"] = account_page(by_id[aid], tax_rows.get(aid), ordered,
                                                         book_accounts.get(aid), decision_of.get(aid), as_of,
                                                         (history or {}).get(aid), history_runs)
    if taxes is not None:
        import pyarrow.parquet as pq
        sink = io.BytesIO()
        pq.write_table(taxes, sink, compression="zstd")
        files[REPORT_TAXES] = sink.getvalue()

    files["index.html"] = _index(manifest, as_of, rows, statuses, decision_of, traded, proposed, totals,
                                 tax_rows, chosen, by_id, len(ranked), outliers)
    return files


def _index(manifest, as_of, rows, statuses, decision_of, traded, proposed, totals, tax_rows, chosen, by_id,
           ranked_count, outliers) -> bytes:
    def link(aid: str) -> str:
        return f"<a href=\"accounts/{_e(aid)}.html\">{_e(aid)}</a>" if aid in set(chosen) else _e(aid)

    counts = {s: statuses.count(s) for s in Status.all if statuses.count(s)}
    parts = [f"<h1>Canopy proposal run of {as_of.isoformat()}</h1>",
             f"<p>Run <code>{_e(manifest.get('run_id', '?'))}</code> of book <code>{_e(manifest.get('book', '?'))}"
             f"</code>: {len(rows):,} accounts, {sum(r[Col.trade_count] for r in rows):,} trades worth "
             f"{_money(sum(r[Col.turnover] * r[Col.value] for r in rows))}. "
             + ("Decisions from the committed decision set (<code>canopy approve</code>): "
                + ", ".join(f"{d} {list(decision_of.values()).count(d):,}" for d in Decision.all) + "."
                if decision_of else "No decision set is committed yet (<code>canopy approve</code>).") + "</p>",
             _table([Col.status, "accounts"], [[_e(s), f"{c:,}"] for s, c in counts.items()]),
             "<h2>Accounts by status and decision</h2>",
             _figure_html("status.png", "Each bar is one status of the run (proposed: trades to approve; "
                          "no_trade: nothing worth trading; rejected: a problem in the book, see its detail; "
                          "infeasible: the cash need cannot be met, or a screen waits for a wash-sale window, "
                          "see its detail). Colours show the rebalancing group's "
                          "decisions where a decision set exists."),
             "<div class=\"grid\">",
             _figure_html("scores.png", "The cost-benefit score of each account with trades: the value of the "
                          "risk removed and losses harvested, net of tax and trading cost, per unit of account "
                          "value. Approval rules usually approve above a threshold."),
             _figure_html("turnover.png", "How much of each account trades today. A long right tail is worth "
                          "a look before approving."),
             _figure_html("tracking_error.png", "Each dot is an account: how far it is from its target before "
                          "(across) and after (up) the proposal. Dots below the dashed line move closer. A dot above "
                          "it trades a little tracking error for harvested losses (a replacement tracks its "
                          "position closely, not exactly), or belongs to a household: its accounts are managed "
                          "jointly, so one may move away from its own target while the household moves closer."),
             _figure_html("taxes.png", "Gains realized by the proposals, their estimated tax (net of harvested "
                          "losses), the losses harvested and the tax they save, and the tax deferred against a "
                          "plain rebalance to target (see any account's page for how it is computed)."),
             "</div>",
             "<h2>Taxes</h2>",
             _table(["", "USD"], [[_e(k), _money(v)] for k, v in totals.items()]),
             "<h2>Largest outliers</h2>",
             f"<p class=\"note\">The {outliers} most extreme accounts with trades by each measure.</p>"]

    def top(title: str, key, fmt, keep=lambda r: True) -> None:
        picked = sorted([r for r in traded if keep(r)], key=key)[:outliers]
        if picked:
            parts.append(f"<h3>{_e(title)}</h3>")
            parts.append(_table(["account", Col.status, Col.decision, "market value", Col.turnover, "score (bps)",
                                 "TE before", "TE after", "est. tax", "measure"],
                                [[link(r[Col.account_id]), _e(r[Col.status]),
                                  _e(decision_of.get(r[Col.account_id], "")), _money(r[Col.value]),
                                  _pct(r[Col.turnover], 1), f"{r[Col.score] * 1e4:.2f}",
                                  _pct(r[Col.tracking_error_before]), _pct(r[Col.tracking_error_after]),
                                  _money(r[Col.est_tax]), fmt(r)] for r in picked], 3))

    top("Highest turnover", lambda r: -r[Col.turnover], lambda r: _pct(r[Col.turnover], 1))
    top("Most tax", lambda r: -r[Col.est_tax], lambda r: _money(r[Col.est_tax]), lambda r: r[Col.est_tax] > 0)
    top("Largest tracking error after trading", lambda r: -r[Col.tracking_error_after],
        lambda r: _pct(r[Col.tracking_error_after]))
    top("Lowest score", lambda r: r[Col.score], lambda r: f"{r[Col.score] * 1e4:.2f} bps")
    parts.append("<h2>Taxes Saved or Deferred, per account</h2>")
    if chosen:
        rows_html = [[link(a), _e(by_id[a][Col.status]), _money(tax_rows[a][Col.tax_saved]) if a in tax_rows else "",
                      _money(tax_rows[a][Col.tax_deferred]) if a in tax_rows else ""] for a in chosen if a in by_id]
        more = ranked_count - len([a for a in chosen if by_id.get(a, {}).get(Col.trade_count, 0) > 0])
        parts.append(_table(["account", Col.status, "tax saved", "tax deferred"], rows_html))
        if more > 0:
            parts.append(f"<p class=\"note\">{more:,} more accounts with trades have no page here "
                         f"(raise --max-accounts, or name them with --account).</p>")
    else:
        parts.append("<p>No account has trades in this run.</p>")
    return _page(f"Canopy run {as_of.isoformat()}", "\n".join(parts))


def _figure_html(name: str, caption: str) -> str:
    return (f"<figure><img src=\"{name}\" alt=\"{_e(caption.split('.')[0])}\">"
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def make_report(run_uri: str, *, book: str | None = None, out: str | None = None, as_of: dt.date | None = None,
                replace: bool = False, max_accounts: int = 500, accounts: list[str] | None = None,
                storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read a committed run (its decision set and book too) and commit its report.

    The report goes to ``OUT/as_of=DATE/report/`` beside the run, or to ``out``;
    the book is ``book`` or the one the run's manifest names.  Returns where it
    went and how many files and account pages it has.

    Raises
    ------
    RunError
        No committed run; or a report already committed there (without ``replace``);
        or a book for another date.
    """
    from engine.book.runs import locate_run, read_decisions, read_run, report_folder, write_report
    from engine.book.storage import read_book
    from engine.contract.config import PolicyConfig
    from engine.contract.errors import RunError
    from engine.rebalance.targets import build_targets

    runs, date = locate_run(run_uri, as_of, storage_options)
    run, manifest = read_run(runs, date, storage_options)
    decided = read_decisions(runs, date, storage_options)
    book_uri = book or manifest.get("book")
    book_tables = targets = None
    if book_uri:
        loaded = read_book(book_uri, storage_options=storage_options)
        if loaded.as_of != date:
            raise RunError(f"book {book_uri} is as of {loaded.as_of}, the run of {date}; pass the run's book")
        # the targets as the run built them: its policy's substitute settings (defaults where it has none)
        ran = (manifest.get("config") or {}).get("policy") or {}
        policy = PolicyConfig(**{k: ran[k] for k in ("substitutes", "substitute_max_securities") if k in ran})
        book_tables, targets = loaded.tables, build_targets(loaded, policy=policy)
    history, history_runs = year_so_far(runs, date, storage_options)
    files = build_report(run, manifest, book_tables=book_tables, targets=targets,
                         decisions=decided[0] if decided else None, as_of=date, max_accounts=max_accounts,
                         accounts=accounts, history=history, history_runs=history_runs)
    if out is None:
        where = write_report(runs, report_folder(date), files, replace=replace, storage_options=storage_options)
    else:
        where = write_report(out, "", files, replace=replace, storage_options=storage_options)
    return {"folder": where, "files": len(files), "account_pages": sum(1 for f in files if f.startswith("accounts/")),
            "book": book_uri, "decisions": decided is not None}


def year_so_far(runs: str, as_of: dt.date, storage_options: Mapping[str, Any] | None = None
                ) -> tuple[dict[str, dict[str, float]], int]:
    """Per account, the harvested losses, tax saved and tax deferred of this year's earlier approved proposals.

    Reads every run committed under ``runs`` in ``as_of``'s calendar year before
    ``as_of`` that has a decision set, and sums, over the accounts it approved,
    the run's ``harvested_loss`` and ``tax_saved`` and, where that run's report
    was committed beside it, its ``tax_deferred``.  A run without a decision set
    is left out: its proposals may never have been traded.  Returns the sums
    and the number of runs read.
    """
    from engine.book.runs import committed_dates, read_decisions, read_report_taxes, read_run_table
    from engine.contract.schema import Decision

    sums: dict[str, dict[str, float]] = {}
    counted = 0
    for date in committed_dates(runs, storage_options):
        if date.year != as_of.year or date >= as_of:
            continue
        decided = read_decisions(runs, date, storage_options)
        if decided is None:
            continue
        counted += 1
        decisions = decided[0]
        approved = set(decisions.filter(pc.equal(decisions.column(Col.decision), Decision.approve))
                       .column(Col.account_id).to_pylist())
        rows = read_run_table(runs, date, "accounts", [Col.account_id, Col.harvested_loss, Col.tax_saved],
                              storage_options).to_pylist()
        deferred = read_report_taxes(runs, date, storage_options)
        deferred = dict(zip(deferred.column(Col.account_id).to_pylist(),
                            deferred.column(Col.tax_deferred).to_pylist())) if deferred is not None else {}
        for row in rows:
            aid = row[Col.account_id]
            if aid in approved:
                entry = sums.setdefault(aid, {Col.harvested_loss: 0.0, Col.tax_saved: 0.0, Col.tax_deferred: 0.0})
                entry[Col.harvested_loss] += row[Col.harvested_loss]
                entry[Col.tax_saved] += row[Col.tax_saved]
                entry[Col.tax_deferred] += deferred.get(aid, 0.0) or 0.0
    return sums, counted
