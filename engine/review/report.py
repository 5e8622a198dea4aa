"""The run report: one HTML page with PNG charts for the rebalancing group, and per-account pages.

:func:`build_report` turns a committed run (its tables and manifest), its
decision set if there is one (``canopy approve``), and its book into files:

* ``index.html``: the run at a glance — accounts by status and decision,
  the distribution of scores, tracking error before and after, turnover,
  taxes realized and saved (and deferred against a plain rebalance), and the
  largest outliers, each chart with a sentence on how to read it;
* ``status.png``, ``scores.png``, ``tracking_error.png``, ``turnover.png``, ``taxes.png``;
* ``accounts/<account_id>.html`` (:func:`account_file`): per account with trades, a *Taxes Saved or
  Deferred* report (:mod:`engine.review.taxes`: losses harvested and the tax they
  save, gains deferred against a plain rebalance to target, year to date)
  and every trade explained in words (:func:`engine.review.explain.explain`).

The pages are the templates ``report_index.html`` and ``account.html`` of
:mod:`engine.review.pages`, which the advisor portal shares; the charts are
:mod:`engine.review.charts`'.  The pages link their charts as files beside
them and carry their stylesheet, so the folder opens from disk without a
server.  The files are returned as bytes; :func:`engine.book.runs.write_report`
commits them.  Pure apart from that: no storage here.
"""

from __future__ import annotations

import datetime as dt
import io
from typing import Any, Callable, Mapping
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.contract.schema import Col, Decision, Status
from engine.rebalance.targets import Targets
from engine.review.charts import histogram_chart, status_chart, taxes_chart, tracking_error_chart
from engine.review.pages import render
from engine.review.taxes import tax_report

#: The report's per-account tax figures (:func:`engine.review.taxes.tax_report`), read back by later reports.
REPORT_TAXES = "taxes.parquet"

__all__ = ["build_report", "account_page", "account_file", "run_charts", "tax_totals", "index_context", "make_report",
           "year_so_far", "CHARTS"]

CHARTS = ("status.png", "scores.png", "tracking_error.png", "turnover.png", "taxes.png")


def account_file(account_id: str) -> str:
    """The path of an account's page in the report's folder: ``accounts/<account_id>.html``.

    An id with characters other than letters, digits and ``_.-~`` is
    percent-encoded (``a/b`` -> ``a%2Fb``), so that every page is one file in
    ``accounts/`` whatever the id.
    """
    return f"accounts/{quote(account_id, safe='')}.html"


def account_page(account: Mapping[str, Any], taxes: Mapping[str, Any] | None, trades: list[dict],
                 book_account: Mapping[str, Any] | None, decision: str | None, as_of: dt.date,
                 history: Mapping[str, float] | None = None, history_runs: int = 0,
                 index_href: str = "../index.html") -> bytes:
    """One account's Taxes Saved or Deferred report and its trades in words (template ``account.html``).

    ``history``: this year's earlier approved proposals of the account, summed
    (``harvested_loss``, ``tax_saved``, ``tax_deferred``; see :func:`make_report`).
    ``index_href``: the link back to the run's page.
    """
    return render("account.html", account=account, taxes=taxes, trades=trades, book_account=book_account,
                  decision=decision, as_of=as_of, history=dict(history or {}), history_runs=history_runs,
                  index_href=index_href).encode()


def run_charts(rows: list[dict], decisions: list[str] | None, totals: Mapping[str, float]) -> dict[str, bytes]:
    """The report's charts (:data:`CHARTS`) as PNG bytes, by file name.

    ``rows``: the run's accounts rows; ``decisions``: each one's decision (or
    ``"undecided"``), None without a decision set; ``totals``: the taxes chart's bars, USD.
    """
    traded = [r for r in rows if r[Col.trade_count] > 0]
    numbers = {name: np.array([r[name] for r in traded], float) for name in
               (Col.score, Col.tracking_error_before, Col.tracking_error_after, Col.turnover)}
    return {
        "status.png": status_chart([r[Col.status] for r in rows], decisions),
        "scores.png": histogram_chart(numbers[Col.score] * 1e4, "Cost-benefit scores of accounts with trades",
                                      "score (basis points of account value)", "#6a1b9a"),
        "tracking_error.png": tracking_error_chart(numbers[Col.tracking_error_before],
                                                   numbers[Col.tracking_error_after]),
        "turnover.png": histogram_chart(numbers[Col.turnover] * 100, "Turnover of accounts with trades",
                                        "traded value (% of account value)", "#00838f"),
        "taxes.png": taxes_chart(totals),
    }


def tax_totals(accounts: pa.Table, taxes: pa.Table | None) -> dict[str, float]:
    """The run's taxes over all accounts, USD, by label: gains realized, estimated tax, losses harvested,
    tax saved, and with ``taxes`` (:func:`engine.review.taxes.tax_report`) the tax deferred.

    ``accounts``: the run's ``accounts`` table.
    """
    def total(source: pa.Table, name: str) -> float:
        return float(pc.sum(source.column(name)).as_py() or 0.0) if source.num_rows else 0.0

    totals = {"net short-term gains": total(accounts, Col.realized_st),
              "net long-term gains": total(accounts, Col.realized_lt), "estimated tax": total(accounts, Col.est_tax),
              "losses harvested": total(accounts, Col.harvested_loss), "tax saved": total(accounts, Col.tax_saved)}
    if taxes is not None:
        totals["tax deferred"] = total(taxes, Col.tax_deferred)
    return totals


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
    outliers
        Accounts in each table of largest outliers.
    history, history_runs
        Per account, this year's earlier approved proposals summed (:func:`make_report`), and
        how many earlier runs had a decision set.
    """
    table = run["accounts"]
    rows = table.to_pylist()
    decision_of = dict(zip(decisions.column(Col.account_id).to_pylist(), decisions.column(Col.decision).to_pylist())) \
        if decisions is not None else None
    traded = [r for r in rows if r[Col.trade_count] > 0]
    taxes = tax_report(book_tables, targets, run, as_of) if book_tables is not None and targets is not None else None
    tax_rows = {r[Col.account_id]: r for r in taxes.to_pylist()} if taxes is not None else {}
    totals = tax_totals(table, taxes)
    files = run_charts(rows, [decision_of.get(r[Col.account_id], "undecided") for r in rows]
                       if decision_of is not None else None, totals)

    # per-account pages: the named accounts, then those with trades, most tax saved and deferred first
    trades_by_account: dict[str, list[dict]] = {}
    for t in run["trades"].to_pylist():
        trades_by_account.setdefault(t[Col.account_id], []).append(t)
    book_accounts = {r[Col.account_id]: r for r in book_tables["accounts"].to_pylist()} if book_tables else {}
    benefit = {a: r[Col.tax_saved] + max(r[Col.tax_deferred], 0.0) for a, r in tax_rows.items()}
    ranked = sorted((r[Col.account_id] for r in traded), key=lambda a: (-benefit.get(a, 0.0), a))
    by_id = {r[Col.account_id]: r for r in rows}
    chosen = [a for a in dict.fromkeys([*(accounts or []), *ranked[:max_accounts]]) if a in by_id]
    for aid in chosen:
        ordered = sorted(trades_by_account.get(aid, []), key=lambda t: -t[Col.value])
        files[account_file(aid)] = account_page(by_id[aid], tax_rows.get(aid), ordered, book_accounts.get(aid),
                                                (decision_of or {}).get(aid), as_of, (history or {}).get(aid),
                                                history_runs)
    if taxes is not None:
        import pyarrow.parquet as pq
        sink = io.BytesIO()
        pq.write_table(taxes, sink, compression="zstd")
        files[REPORT_TAXES] = sink.getvalue()

    more = len(ranked) - sum(1 for a in chosen if by_id[a][Col.trade_count] > 0)
    files["index.html"] = render("report_index.html", **index_context(
        manifest, as_of, rows, decision_of, totals, tax_rows, chosen, more, outliers,
        charts={name: name for name in CHARTS}, account_href=lambda aid: quote(account_file(aid)))).encode()
    return files


def index_context(manifest: Mapping[str, Any], as_of: dt.date, rows: list[dict], decision_of: Mapping[str, str]
                  | None, totals: Mapping[str, float], tax_rows: Mapping[str, Mapping[str, Any]], pages: list[str],
                  more_pages: int, outliers: int, *, charts: Mapping[str, str], account_href: Callable[[str], str]
                  ) -> dict[str, Any]:
    """The context of the template ``report_index.html``: a run at a glance.

    ``rows``: the run's accounts rows; ``decision_of``: the decision set by
    account (None without one); ``tax_rows``: :func:`engine.review.taxes.tax_report`'s
    rows by account; ``pages``: the accounts that have a page, in the order listed;
    ``more_pages``: accounts with trades but no page; ``outliers``: rows per table of
    outliers; ``charts``: chart file name (:data:`CHARTS`) -> the image's ``src``;
    ``account_href``: an account id -> the URL of its page.
    """
    statuses = [r[Col.status] for r in rows]
    traded = [r for r in rows if r[Col.trade_count] > 0]

    def top(title: str, measure: str, key, keep=lambda r: True) -> dict[str, Any]:
        return {"title": title, "measure": measure, "rows": sorted(filter(keep, traded), key=key)[:outliers]}

    groups = [top("Highest turnover", Col.turnover, lambda r: -r[Col.turnover]),
              top("Most tax", Col.est_tax, lambda r: -r[Col.est_tax], lambda r: r[Col.est_tax] > 0),
              top("Largest tracking error after trading", Col.tracking_error_after,
                  lambda r: -r[Col.tracking_error_after]),
              top("Lowest score", Col.score, lambda r: r[Col.score])]
    by_id = {r[Col.account_id]: r for r in rows}
    return {
        Col.as_of: as_of, "run_id": manifest.get("run_id", "?"), "book": manifest.get("book", "?"),
        "account_count": len(rows), "trade_count": sum(r[Col.trade_count] for r in rows),
        "traded_value": sum(r[Col.turnover] * r[Col.value] for r in rows),
        "decision_counts": {d: list(decision_of.values()).count(d) for d in Decision.all}
        if decision_of is not None else None,
        "status_counts": {s: statuses.count(s) for s in Status.all if statuses.count(s)},
        "charts": charts, "totals": totals, "outliers": [g for g in groups if g["rows"]], "outlier_count": outliers,
        "decisions": decision_of or {}, "pages": set(pages), "account_href": account_href,
        "tax_rows": [{Col.account_id: a, Col.status: by_id[a][Col.status],
                      Col.tax_saved: tax_rows.get(a, {}).get(Col.tax_saved),
                      Col.tax_deferred: tax_rows.get(a, {}).get(Col.tax_deferred)} for a in pages],
        "more_pages": more_pages,
    }


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
