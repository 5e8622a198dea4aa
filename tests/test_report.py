"""The run report: charts, pages, the Taxes Saved or Deferred arithmetic, and a real render in Chromium."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet  # noqa: F401  (pa.parquet)
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

from engine.book.runs import read_run
from engine.cli import app
from engine.contract import schema
from engine.contract.errors import RunError
from engine.contract.schema import Col, Side, TaxStatus
from engine.rebalance.targets import Targets
from engine.review.approval import approve, load_rules
from engine.review.explain import explain
from engine.review.report import CHARTS, make_report
from engine.review.taxes import plain_rebalance

CHROMIUM = Path("/usr/bin/chromium")
AS_OF = dt.date(2026, 11, 20)
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report(small_run, tmp_path_factory):
    """A copy of the small run, approved by rules.toml, and its report: (runs, report folder)."""
    _, out, as_of = small_run
    runs = tmp_path_factory.mktemp("report") / "runs"
    shutil.copytree(out, runs)
    approve(str(runs), load_rules(Path(__file__).resolve().parents[1] / "rules.toml"))
    written = make_report(str(runs))
    folder = Path(written["folder"])
    assert folder == runs / f"as_of={as_of.isoformat()}" / "report"
    return runs, folder, written


def test_report_files(report, small_run):
    runs, folder, written = report
    run, _ = read_run(str(runs), small_run[2])
    assert (folder / "_SUCCESS").exists() and not any((runs / "_staging").iterdir())
    for chart in CHARTS:
        data = (folder / chart).read_bytes()
        assert data.startswith(PNG) and len(data) > 5_000, chart
    index = (folder / "index.html").read_text()
    assert set(re.findall(r'src="([^"]+)"', index)) == set(CHARTS)
    traded = {r[Col.account_id] for r in run["accounts"].to_pylist() if r[Col.trade_count] > 0}
    pages = {p.stem for p in (folder / "accounts").glob("*.html")}
    assert pages == traded and written["account_pages"] == len(traded)
    for account in traded:
        assert f'href="accounts/{account}.html"' in index
    assert "Decisions from the committed decision set" in index and "approve" in index
    for words in ("Accounts by status and decision", "tracking error", "Turnover", "Largest outliers",
                  "tax deferred", "Taxes Saved or Deferred"):
        assert words.lower() in index.lower(), words


def test_every_trade_is_explained_on_its_account_page(report, small_run):
    runs, folder, _ = report
    run, _ = read_run(str(runs), small_run[2])
    by_account: dict[str, list[dict]] = {}
    for t in run["trades"].to_pylist():
        by_account.setdefault(t[Col.account_id], []).append(t)
    import html
    for account, trades in by_account.items():
        page = html.unescape((folder / "accounts" / f"{account}.html").read_text())
        assert f"Trades ({len(trades)})" in page
        for trade in trades:
            assert explain(trade) in page
        assert "Year to date" in page and "plain rebalance to target" in page


def test_a_report_is_not_silently_replaced(report):
    runs, folder, _ = report
    with pytest.raises(RunError, match="already committed"):
        make_report(str(runs))
    elsewhere = folder.parent.parent.parent / "elsewhere"
    result = CliRunner().invoke(app, ["report", "--run", str(runs), "--out", str(elsewhere), "--max-accounts", "1"])
    assert result.exit_code == 0, result.output
    assert (elsewhere / "index.html").exists() and len(list((elsewhere / "accounts").glob("*.html"))) == 1
    assert "more accounts with trades have no page here" in (elsewhere / "index.html").read_text()


def _tiny_book(tax_status: str = TaxStatus.taxable):
    """One account: security A (two lots: 2019 at $10, 2026-06 at $90; price $100), B (a loss lot), cash."""
    securities = pa.Table.from_pylist([
        {Col.security_id: s, Col.symbol: s, Col.kind: "etf", Col.asset_class: "x", Col.sector: None,
         Col.price: p, Col.price_date: AS_OF, Col.fractional: True, Col.wash_group: None, Col.tags: None,
         Col.specific_variance: 0.01, Col.spread_bps: 1.0} for s, p in (("A", 100.0), ("B", 50.0), ("C", 20.0))],
        schema=schema.SECURITIES)
    account = {f.name: 0.0 for f in schema.ACCOUNTS if f.type == pa.float64()}
    account.update({Col.account_id: "X", Col.household_id: None, Col.template_id: "T", Col.tax_status: tax_status,
                    Col.st_rate: 0.4, Col.lt_rate: 0.2, Col.cash: 1_000.0, Col.min_cash: 1_000.0,
                    Col.max_cash: None, Col.tax_budget: None, Col.turnover_limit: None, Col.harvest: True,
                    Col.tax_sensitivity: 1.0, Col.suspended: False})
    accounts = pa.Table.from_pylist([account], schema=schema.ACCOUNTS)
    lots = pa.Table.from_pylist([
        {Col.account_id: "X", Col.lot_id: "new", Col.security_id: "A", Col.quantity: 10.0, Col.cost_basis: 900.0,
         Col.acquired: dt.date(2026, 6, 1)},
        {Col.account_id: "X", Col.lot_id: "old", Col.security_id: "A", Col.quantity: 10.0, Col.cost_basis: 100.0,
         Col.acquired: dt.date(2019, 1, 2)},
        {Col.account_id: "X", Col.lot_id: "loss", Col.security_id: "B", Col.quantity: 20.0, Col.cost_basis: 1_500.0,
         Col.acquired: dt.date(2025, 1, 2)}], schema=schema.LOTS)
    # target: A 25%, C 75% of the invested value (3,000 = 2,000 of A + 1,000 of B); B is not in the target
    targets = Targets(account_ids=np.array(["X"]), security_ids=np.array(["A", "B", "C"]),
                      weights=sp.csr_matrix(np.array([[0.25, 0.0, 0.75]])), asset_classes=np.array(["x"]),
                      class_weights=np.ones((1, 1)), bands=np.zeros((1, 1)), class_models=np.array([["M"]]),
                      security_classes=np.zeros(3, np.int64), usable=np.array([True]),
                      rejections=schema.empty(schema.REJECTIONS))
    return {"securities": securities, "accounts": accounts, "lots": lots}, targets


def test_plain_rebalance_sells_the_excess_first_in_first_out():
    tables, targets = _tiny_book()
    plain = plain_rebalance(tables, targets, ["X"], AS_OF)
    # invest = 3,000 + 1,000 cash - 1,000 kept = 3,000: A's target 750, so 1,250 of A is sold, the
    # old lot first (1,000: gain 900, long), then 250 of the new one (2.5 shares: gain 25, short);
    # all of B (1,000: loss 500, long)
    assert plain["value_sold"][0] == pytest.approx(1_250 + 1_000)
    assert plain["realized"][0] == pytest.approx(900 + 25 - 500)
    assert plain["gain_tax"][0] == pytest.approx(900 * 0.2 + 25 * 0.4)
    untaxed = plain_rebalance(*_tiny_book(TaxStatus.tax_deferred), ["X"], AS_OF)
    assert untaxed["gain_tax"][0] == 0.0 and untaxed["realized"][0] == pytest.approx(425)


def _chromium(*args: str) -> subprocess.CompletedProcess:
    profile = subprocess.run(["mktemp", "-d"], capture_output=True, text=True).stdout.strip()
    try:
        return subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                               "--no-first-run", "--disable-background-networking", "--disable-component-update",
                               "--disable-sync", f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install chromium); "
                                                  "make test installs it where it can")
def test_the_report_renders_in_headless_chromium_with_its_images(report, tmp_path):
    _, folder, _ = report
    # a copy of the page beside it that records, once loaded, the decoded width of every image
    probe = folder / "_render_probe.html"
    script = ('<script>window.addEventListener("load", () => document.body.setAttribute("data-images", '
              'Array.from(document.images).map(i => i.complete ? i.naturalWidth : -1).join(",")));</script>')
    probe.write_text((folder / "index.html").read_text().replace("</body>", script + "</body>"))
    try:
        dom = _chromium("--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
        found = re.search(r'data-images="([^"]*)"', dom.stdout)
        assert found, dom.stderr[-2000:]
        widths = [int(w) for w in found.group(1).split(",")]
        assert len(widths) == len(CHARTS) and all(w > 100 for w in widths), widths
        assert "Canopy proposal run of" in dom.stdout
    finally:
        probe.unlink()
    shot = tmp_path / "report.png"
    _chromium("--window-size=1200,2400", f"--screenshot={shot}", (folder / "index.html").as_uri())
    from matplotlib.image import imread
    pixels = imread(shot)
    assert pixels.shape[0] == 2400 and pixels.std() > 0.05       # drawn, not a blank page


def test_year_to_date_adds_this_years_earlier_approved_runs(report, small_run, tmp_path):
    from engine.book.runs import read_decisions
    from engine.review.report import year_so_far

    runs, folder, _ = report
    as_of = small_run[2]
    copy = tmp_path / "runs"
    shutil.copytree(runs, copy)
    today = copy / f"as_of={as_of.isoformat()}"
    shutil.copytree(today, copy / "as_of=2026-11-13")                 # an earlier night, approved, reported
    shutil.copytree(today, copy / "as_of=2025-12-30")                 # last year: not counted
    shutil.copytree(today, copy / "as_of=2026-11-16")
    shutil.rmtree(copy / "as_of=2026-11-16" / "approval")             # never approved: not counted
    sums, counted = year_so_far(str(copy), as_of)
    assert counted == 1
    run, _ = read_run(str(copy), as_of)
    decisions = read_decisions(str(copy), as_of)[0]
    approved = {a for a, d in zip(decisions.column(Col.account_id).to_pylist(),
                                  decisions.column(Col.decision).to_pylist()) if d == "approve"}
    taxes = {r[Col.account_id]: r for r in pa.parquet.read_table(folder / "taxes.parquet").to_pylist()}
    rows = {r[Col.account_id]: r for r in run["accounts"].to_pylist()}
    assert set(sums) == approved
    for account in approved:
        assert sums[account][Col.harvested_loss] == pytest.approx(rows[account][Col.harvested_loss])
        assert sums[account][Col.tax_saved] == pytest.approx(rows[account][Col.tax_saved])
        assert sums[account][Col.tax_deferred] == pytest.approx(taxes.get(account, {}).get(Col.tax_deferred, 0.0))
    harvested = [a for a in approved if rows[a][Col.harvested_loss] > 0]
    assert harvested, "the rules approve no account that harvests: pick a book that has one"
    make_report(str(copy), replace=True)
    page = (today / "report" / "accounts" / f"{harvested[0]}.html").read_text()
    loss = rows[harvested[0]][Col.harvested_loss]
    assert f"${loss:,.0f}</td><td>${2 * loss:,.0f}" in page.replace("\n", "")
    assert "1 earlier run(s) with a decision set" in page


def test_every_reason_has_words():
    from engine.contract.schema import Reason
    from engine.review.explain import WHY

    assert {reason for reason, _ in WHY} == set(Reason.all)
    buy = {Col.side: Side.buy, Col.quantity: 2.5, Col.security_id: "S", Col.value: 10.0, Col.reason: Reason.cash_invest}
    assert explain(buy) == "Buy 2.5000 shares of S for $10.00 to invest cash above the account's cash cap."
    gain = {**buy, Col.side: Side.sell, Col.lot_id: "L", Col.reason: Reason.rebalance, Col.realized_gain: 4.0,
            Col.term: "long", Col.est_tax: 0.8}
    assert explain(gain).endswith("toward its target: a long-term gain of $4.00, an estimated $0.80 of tax.")
    untaxed = {**gain, Col.realized_gain: -4.0, Col.est_tax: 0.0}
    assert explain(untaxed).endswith("a long-term loss of $4.00 (no tax effect in this account).")


def test_without_a_book_the_report_leaves_the_tax_figures_out(report, small_run):
    from engine.review.report import build_report

    runs, _, _ = report
    run, manifest = read_run(str(runs), small_run[2])
    files = build_report(run, manifest, as_of=small_run[2], max_accounts=2)
    index = files["index.html"].decode()
    assert "tax deferred" not in index.split("<h2>Taxes</h2>")[1].split("</table>")[0]
    assert "No decision set is committed yet" in index
    assert "http://" not in index and "https://" not in index          # self-contained: opens offline
    pages = [name for name in files if name.startswith("accounts/")]
    assert len(pages) == 2 and all("No tax figures" in files[name].decode() for name in pages)
    assert "taxes.parquet" not in files


BASE_MARKER = '<meta name="generator" content="canopy base.html">'


def test_every_page_is_rendered_from_the_shared_base_template(report):
    _, folder, _ = report
    pages = [folder / "index.html", *(folder / "accounts").glob("*.html")]
    assert len(pages) > 1
    for page in pages:
        text = page.read_text()
        assert text.count(BASE_MARKER) == 1 and text.count("<style>") == 1, page.name
        assert "{{" not in text and "{%" not in text, page.name                   # no template text left over


def test_an_account_id_with_markup_is_escaped_and_its_page_is_one_file(report, small_run):
    from urllib.parse import unquote

    from engine.review.report import account_file, build_report

    runs, _, _ = report
    run, manifest = read_run(str(runs), small_run[2])
    evil = '<script>alert("x")</script>&/../A'
    victim = next(r[Col.account_id] for r in run["accounts"].to_pylist() if r[Col.trade_count] > 0)

    def renamed(table: pa.Table) -> pa.Table:
        ids = [evil if a == victim else a for a in table.column(Col.account_id).to_pylist()]
        return table.set_column(table.schema.get_field_index(Col.account_id), Col.account_id, pa.array(ids))

    run = {**run, "accounts": renamed(run["accounts"]), "trades": renamed(run["trades"])}
    files = build_report(run, manifest, as_of=small_run[2], max_accounts=0, accounts=[evil])
    name = account_file(evil)
    assert name in files and name.count("/") == 1 and name.startswith("accounts/")
    page, index = files[name].decode(), files["index.html"].decode()
    for text in (page, index):
        assert "<script>" not in text and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&amp;/../A" in text
    href = re.search(r'<a href="([^"]+)">&lt;script', index).group(1)
    assert unquote(href) == name                                  # the link opens the page's file


def test_templates_refuse_undefined_names_and_other_packages_can_extend_base():
    import jinja2

    from engine.review.pages import environment, make_environment, render

    with pytest.raises(jinja2.UndefinedError):
        render("account.html", account={Col.account_id: "X"})
    loader = jinja2.ChoiceLoader([jinja2.DictLoader({"portal.html": (
        '{% extends "base.html" %}{% block nav %}<nav><a href="/">home</a></nav>{% endblock %}'
        '{% block content %}{{ amount|money }} {{ share|pct(1) }} {{ name }}{% endblock %}')}),
        jinja2.PackageLoader("engine.review", "templates")])
    page = make_environment(loader).get_template("portal.html").render(amount=-1234.5, share=0.1234, name="<b>")
    assert BASE_MARKER in page and "<nav><a href=\"/\">home</a></nav>" in page
    assert "-$1,234 12.3% &lt;b&gt;" in page
    assert environment() is environment()                         # built once


def test_the_asset_class_chart_draws_held_after_and_target_and_refuses_a_short_array():
    from engine.review.charts import asset_class_chart

    classes = ["us_equity", "intl_equity", "bonds"]
    with_after = asset_class_chart(classes, np.array([.6, .2, .2]), np.array([.5, .25, .25]), np.array([.55, .2, .25]))
    held_only = asset_class_chart(classes, np.array([.6, .2, .2]), np.array([.5, .25, .25]))
    assert with_after.startswith(PNG) and held_only.startswith(PNG) and with_after != held_only
    with pytest.raises(ValueError, match="target has 2 weights for 3 asset classes"):
        asset_class_chart(classes, np.array([.6, .2, .2]), np.array([.5, .5]))
