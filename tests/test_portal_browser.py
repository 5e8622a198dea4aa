"""The advisor portal driven in Debian's Chromium (pytest-playwright), as an advisor uses it.

The server is the portal as ``canopy portal`` builds it, served by uvicorn on 127.0.0.1 and a free
port, over a copy of the small run's book and runs (approved by rules.toml); the last test starts
the real command in a subprocess (slow: a process of its own compiles or loads the solver).  With ``PORTAL_SCREENSHOTS=FOLDER``
the tests also save screenshots of the main pages there (docs/images/ holds the docs' copies).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (make chromium)")
ROOT = Path(__file__).resolve().parents[1]
SHOTS = os.environ.get("PORTAL_SCREENSHOTS")


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """Debian's Chromium: Playwright's own browser download is not reachable here."""
    return {**browser_type_launch_args, "executable_path": str(CHROMIUM)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """The portal as ``canopy portal`` builds it (:func:`engine.portal.serve.build`: the book read, the
    solver warmed), served by uvicorn on 127.0.0.1 in a thread of this process, so the solver programs
    compiled by the other portal tests are reused.  :meth:`stop` and :meth:`start` restart it: a new
    service reads the book and its saves from disk again, nothing kept in memory."""

    def __init__(self, book: str, runs: str):
        self.book, self.runs = book, runs
        self.port = _free_port()
        self.server = None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 300.0) -> None:
        import uvicorn

        from engine.portal.serve import build

        app = build(self.book, self.runs, say=lambda text: None)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the portal did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
            self.thread.join(timeout=30)
            self.server = None


@pytest.fixture(scope="module")
def server(small_run, tmp_path_factory):
    from engine.review.approval import approve, load_rules

    root = tmp_path_factory.mktemp("browser")
    book, runs = root / "book", root / "runs"
    shutil.copytree(small_run[0], book)
    shutil.copytree(small_run[1], runs)
    approve(str(runs), load_rules(ROOT / "rules.toml"))
    server = Server(str(book), str(runs))
    server.start()
    yield server
    server.stop()


def _pick(book_uri: str, *, direct_index: bool, tagged: bool) -> str:
    """A usable account alone in its household that may pick a direct index it does not hold yet (an
    asset class whose alternatives have one, on its template's default product) or that holds tagged
    securities; one with no turnover limit or tax budget first (a screen then sells what it excludes)."""
    from engine.book.storage import read_book
    from engine.contract.schema import Col

    book = read_book(book_uri)
    households = book.accounts.column(Col.household_id).to_pylist()
    tags = {s for s, t in zip(*(book.securities.column(n).to_pylist() for n in (Col.security_id, Col.tags))) if t}
    direct = {}
    for r in book.templates.to_pylist():
        if any(m.startswith("DI-") for m in r[Col.alternatives] or []):
            direct.setdefault(r[Col.template_id], set()).add(r[Col.asset_class])
    chosen = {(a, c) for a, c, m in zip(*(book.allocations.column(n).to_pylist()
                                          for n in (Col.account_id, Col.asset_class, Col.model_id))) if m}
    held = {}
    for a, s in zip(*(book.lots.column(n).to_pylist() for n in (Col.account_id, Col.security_id))):
        held[a] = held.get(a, 0) + (s in tags)
    free = lambda r: r[Col.turnover_limit] is None and r[Col.tax_budget] is None     # noqa: E731
    for row in sorted(book.accounts.to_pylist(), key=lambda r: (not free(r), -held.get(r[Col.account_id], 0))):
        a = row[Col.account_id]
        may = {c for c in direct.get(row[Col.template_id], ()) if (a, c) not in chosen}
        if (a not in book.rejected and households.count(row[Col.household_id]) == 1
                and (may or not direct_index) and (held.get(a) or not tagged)):
            return a
    pytest.fail("the small book has no account to drive: generate it with another seed or size")


@pytest.fixture(scope="module")
def account(small_run):
    return _pick(small_run[0], direct_index=True, tagged=False)


@pytest.fixture(scope="module")
def screened(small_run):
    return _pick(small_run[0], direct_index=False, tagged=True)


def _shot(page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


def _impact(page) -> dict[str, str]:
    return {name: page.locator(f"#impact #{name}").inner_text() for name in ("sold-fraction", "tax", "trade-count")}


def _wait_for_impact(page, action) -> None:
    with page.expect_response(lambda r: r.url.endswith("/impact") and r.request.method == "POST", timeout=120_000):
        action()
    page.wait_for_selector("#impact #sold-fraction, #impact #impact-error")


def test_the_direct_index_on_the_pull_down_changes_the_impact(server, page, account):
    page.goto(f"{server.url}/")
    _shot(page, "portal-households")
    page.goto(f"{server.url}/accounts/{account}")
    page.wait_for_selector("#impact #sold-fraction", timeout=120_000)
    before = _impact(page)
    selects = page.locator("select[name^='product:']").filter(has=page.locator("option[value^='DI-']"))
    select = next(selects.nth(i) for i in range(selects.count()) if not selects.nth(i).input_value().startswith("DI-"))
    option = next(v for v in select.locator("option").evaluate_all("o => o.map(x => x.value)") if v.startswith("DI-"))
    _wait_for_impact(page, lambda: select.select_option(option))
    after = _impact(page)
    assert after != before
    assert page.locator("#impact-status").inner_text() == "proposed"
    _shot(page, "portal-account")


def test_a_screen_shows_the_sold_share_and_the_tax(server, page, screened):
    page.goto(f"{server.url}/accounts/{screened}")
    page.wait_for_selector("#impact #sold-fraction", timeout=120_000)
    before = float(page.locator("#impact #sold-fraction").inner_text().rstrip("%"))
    tags = page.locator("input[name='screen']:not(:checked)").evaluate_all("boxes => boxes.map(b => b.value)")
    best = 0.0
    for tag in tags:
        box = page.locator(f"input[name='screen'][value='{tag}']")
        _wait_for_impact(page, box.check)
        sold = float(page.locator("#impact #sold-fraction").inner_text().rstrip("%"))
        best = max(best, sold)
        if sold > before:
            assert page.locator("#impact #tax").inner_text().startswith(("$", "-$"))
            break
        _wait_for_impact(page, box.uncheck)
    assert best > before


def test_a_save_survives_a_restart_with_its_audit_line(server, page, account):
    page.goto(f"{server.url}/accounts/{account}")
    page.wait_for_selector("#impact #sold-fraction", timeout=120_000)
    page.fill("input[name='reserve_cash']", "4321.00")
    page.click("#customize button[type='submit']")
    page.wait_for_selector("#saved")
    server.stop()
    server.start()
    page.goto(f"{server.url}/accounts/{account}")
    assert page.input_value("input[name='reserve_cash']") == "4321.00"
    audit = page.locator("#audit").inner_text()
    assert "reserve_cash" in audit and "4321" in audit and "change" in audit


def test_a_new_account_shows_first_trades_and_a_transition_chart(server, page, small_run):
    from engine.book.storage import read_book
    from engine.contract.schema import Col

    book = read_book(small_run[0])
    priced = [s for s in book.securities.to_pylist() if s[Col.price] and s[Col.symbol]][:4]
    csv = "symbol,quantity,cost_basis,acquired\n" + "".join(
        f"{s[Col.symbol]},200,{40 * s[Col.price]:.2f},2019-05-01\n" for s in priced)
    page.goto(f"{server.url}/new")
    page.fill("input[name='account_id']", "BROWSER-NEW")
    page.fill("input[name='cash']", "15000")
    page.fill("input[name='tax_budget']", "3000")
    page.set_input_files("input[name='lots']", files=[{"name": "lots.csv", "mimeType": "text/csv",
                                                      "buffer": csv.encode()}])
    _shot(page, "portal-new-account-form")
    page.click("button[type='submit']")
    page.wait_for_selector("#transition-chart", timeout=120_000)
    assert page.locator("#first-trades tr").count() > 0
    assert "No trades" not in page.locator("#first-trades").inner_text()
    assert page.locator("#transition-chart").evaluate("img => img.naturalWidth") > 0
    assert page.locator("#plan tbody tr").count() >= 1
    _shot(page, "portal-new-account")


def test_a_withdrawal_request_reaches_the_rebalancing_page(server, page, account):
    page.goto(f"{server.url}/accounts/{account}")
    page.fill("input[name='amount']", "12,500")
    page.fill("input[name='note']", "house deposit")
    page.click("#withdrawals + form button[type='submit']")
    page.goto(f"{server.url}/rebalancing")
    pending = page.locator("#pending").inner_text()
    assert account in pending and "$12,500" in pending and "house deposit" in pending
    assert page.locator("#decisions tbody tr").count() > 0
    _shot(page, "portal-rebalancing")


def test_an_advisor_is_denied_another_advisors_account(small_run, page, tmp_path):
    """A users-file server: alice signs in, sees her household, and is refused another's account."""
    import uvicorn

    from engine.book.storage import read_book
    from engine.contract.schema import Col
    from engine.portal.app import create_app
    from engine.portal.service import Portal
    from engine.portal.users import add_user, load_users

    book = read_book(small_run[0])
    ids = book.accounts.column(Col.account_id).to_pylist()
    households = book.accounts.column(Col.household_id).to_pylist()
    mine, theirs = ids[0], next(a for a, h in zip(ids, households) if h != households[0])
    users = tmp_path / "users.json"
    add_user(users, "alice", "alice-pw", "advisor", [households[0]])
    app = create_app(Portal(small_run[0]), load_users(users))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        page.goto(f"{url}/")
        assert page.url.endswith("/login")
        page.fill("input[name='user']", "alice")
        page.fill("input[name='password']", "alice-pw")
        page.click("button[type='submit']")
        page.wait_for_selector("#accounts")
        listed = page.locator("#accounts").inner_text()
        assert mine in listed and theirs not in listed
        answer = page.goto(f"{url}/accounts/{theirs}")
        assert answer.status == 403
        assert "not in a household assigned to alice" in page.locator("#error").inner_text()
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.mark.slow
def test_canopy_portal_warms_then_serves(small_run):
    """The command itself: it reads the book, warms the solver, says it is ready, and serves."""
    import httpx

    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "engine.cli", "portal", "--book", small_run[0], "--port",
                                str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("ready:"):
                break
        assert any("warmed the solver" in line for line in lines), lines
        assert httpx.get(f"http://127.0.0.1:{port}/api/session").json()["role"] == "rebalancing"
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_canopy_portal_refuses_another_host_without_users(small_run):
    answer = subprocess.run([sys.executable, "-m", "engine.cli", "portal", "--book", small_run[0], "--host",
                             "0.0.0.0"], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert answer.returncode == 2 and "only this machine" in answer.stderr
