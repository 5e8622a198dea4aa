"""The advisor portal's JSON API on a small generated book: previews, saves, 409/422, new accounts,
withdrawal requests, who may see what, CSRF, and saves that survive kill -9 and concurrent readers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.compute as pc
import pytest
from starlette.testclient import TestClient

from engine.book import synth
from engine.book.customizations import CustomizationStore, customization_of
from engine.book.storage import read_book
from engine.contract.errors import ConfigError
from engine.contract.schema import Col, Rule, Side, Status
from engine.portal.app import create_app
from engine.portal.serve import build, warm
from engine.portal.service import Portal
from engine.portal.users import add_user, hash_password, load_users, verify_password

ROOT = Path(__file__).resolve().parents[1]
LOCAL = dict(base_url="http://127.0.0.1", client=("127.0.0.1", 50000))


@pytest.fixture(scope="module")
def book(small_run, tmp_path_factory):
    """A copy of the small run's book (the what-if tests' shapes: compiled once per session)."""
    uri = tmp_path_factory.mktemp("portal") / "book"
    shutil.copytree(small_run[0], uri)
    return str(uri)


@pytest.fixture(scope="module")
def portal(book, small_run):
    portal = Portal(book, small_run[1])
    warm(portal)
    return portal


@pytest.fixture(scope="module")
def accounts(portal):
    """Usable accounts alone in their household, most lots first, and a multi-account household."""
    session = portal.session
    lots = {r["values"]: r["counts"] for r in session.tables["lots"].column(Col.account_id).value_counts().to_pylist()}
    usable = [a for a in session.household_of if a not in session.rejected]
    alone = sorted((a for a in usable if len(session.members[session.household_of[a]]) == 1),
                   key=lambda a: -lots.get(a, 0))
    return alone


def _client(app, **kwargs) -> tuple[TestClient, dict]:
    client = TestClient(app, **{**LOCAL, **kwargs})
    token = client.get("/api/session").json()["csrf_token"]
    return client, {"X-CSRF-Token": token}


@pytest.fixture(scope="module")
def local(portal):
    return _client(create_app(portal))


def _tagged_tag(portal, account_id) -> str:
    """A tag of a security the account holds (a screen of it sells something)."""
    held = set(portal.session.rows("lots", [account_id]).column(Col.security_id).to_pylist())
    for security, tags in zip(*(portal.book.securities.column(n).to_pylist() for n in (Col.security_id, Col.tags))):
        if security in held and tags:
            return tags[0]
    pytest.skip("the account holds no tagged security")


def test_get_account_is_the_book_contract_and_version(local, portal, accounts):
    client, _ = local
    body = client.get(f"/api/accounts/{accounts[0]}").json()
    assert set(body) == {"account", "restrictions", "allocations", "version"}
    assert body["version"] == 0
    assert Col.cash not in body["account"] and Col.min_cash in body["account"]
    assert body == {**customization_of(read_book(portal.uri).tables, accounts[0]), "version": 0}
    assert client.get("/api/accounts/NOPE").status_code == 404


def test_preview_of_a_screen_sells_and_saves_nothing(local, portal, accounts, book):
    client, csrf = local
    account = accounts[0]
    current = client.get(f"/api/accounts/{account}").json()
    tag = _tagged_tag(portal, account)
    before = client.post(f"/api/accounts/{account}/preview", json={}, headers=csrf).json()
    change = {"restrictions": current["restrictions"] + [{Col.rule: Rule.exclude, Col.tag: tag}]}
    answer = client.post(f"/api/accounts/{account}/preview", json=change, headers=csrf)
    assert answer.status_code == 200, answer.text
    after = answer.json()
    for key in ("sold_fraction", Col.realized_gain, "tax", Col.tracking_error_before, Col.tracking_error_after,
                "trades"):
        assert key in after
    assert after["sold_fraction"] > before["sold_fraction"]
    tagged = {s for s, t in zip(*(portal.book.securities.column(n).to_pylist() for n in (Col.security_id, Col.tags)))
              if tag in (t or [])}
    sold = {t[Col.security_id] for t in after["trades"] if t[Col.side] == Side.sell}
    assert sold & tagged
    assert not {t[Col.security_id] for t in after["trades"] if t[Col.side] == Side.buy} & tagged
    assert client.get(f"/api/accounts/{account}").json() == current          # nothing saved
    assert CustomizationStore(book).versions().get(account) is None


def test_preview_of_the_direct_index_buys_its_stocks(local, portal, accounts):
    client, csrf = local
    templates = portal.book.templates.to_pylist()
    for account in accounts:
        template = portal.book.accounts.filter(pc.equal(portal.book.accounts.column(Col.account_id), account))
        template_id = template.column(Col.template_id)[0].as_py() if template.num_rows else None
        current = client.get(f"/api/accounts/{account}").json()
        chosen = {r[Col.asset_class]: r[Col.model_id] for r in current["allocations"]}
        for row in templates:
            if row[Col.template_id] != template_id:
                continue
            direct = [m for m in row[Col.alternatives] or [] if m.startswith("DI-")]
            if direct and chosen.get(row[Col.asset_class]) != direct[0]:
                change = {"allocations": [r for r in current["allocations"]
                                          if r[Col.asset_class] != row[Col.asset_class]]
                          + [{Col.asset_class: row[Col.asset_class], Col.model_id: direct[0]}]}
                answer = client.post(f"/api/accounts/{account}/preview", json=change, headers=csrf).json()
                members = set(portal.book.models.filter(pc.equal(portal.book.models.column(Col.model_id), direct[0]))
                              .column(Col.security_id).to_pylist())
                bought = {t[Col.security_id] for t in answer["trades"] if t[Col.side] == Side.buy}
                assert answer[Col.status] == Status.proposed
                assert len(bought & members) >= 5
                return
    pytest.skip("no account may choose a direct index it does not hold")


def test_a_save_is_read_by_the_next_run_and_logged(local, portal, accounts, book):
    client, csrf = local
    account = accounts[1]
    current = client.get(f"/api/accounts/{account}").json()
    change = {"account": {Col.min_cash: 1234.5, Col.harvest: True},
              "restrictions": [{Col.rule: Rule.never_sell, Col.tag: "tobacco"}], "version": current["version"]}
    saved = client.put(f"/api/accounts/{account}", json=change, headers=csrf)
    assert saved.status_code == 200, saved.text
    assert saved.json()["version"] == current["version"] + 1
    again = read_book(book)                                   # what canopy run --book reads
    row = next(r for r in again.accounts.to_pylist() if r[Col.account_id] == account)
    assert row[Col.min_cash] == 1234.5 and row[Col.harvest] is True
    assert customization_of(again.tables, account)["restrictions"] == [
        {Col.rule: Rule.never_sell, Col.security_id: None, Col.tag: "tobacco"}]
    assert customization_of(again.tables, account)["allocations"] == current["allocations"]   # left out: kept
    assert again.fingerprints["customizations"].startswith("delta-v")
    (line,) = client.get(f"/api/accounts/{account}/history").json()["history"]
    assert line[Col.saved_by] == portal_user_name() and line[Col.version] == 1
    assert line[Col.before]["account"][Col.min_cash] == current["account"][Col.min_cash]
    assert line[Col.after]["account"][Col.min_cash] == 1234.5
    # a save against the old version is refused, and nothing is saved
    stale = client.put(f"/api/accounts/{account}", json={**change, "account": {Col.min_cash: 1.0}}, headers=csrf)
    assert stale.status_code == 409 and stale.json()["version"] == 1
    assert CustomizationStore(book).versions()[account] == 1
    assert next(r for r in read_book(book).accounts.to_pylist() if r[Col.account_id] == account)[Col.min_cash] == 1234.5


def portal_user_name() -> str:
    from engine.portal.users import LOCAL_USER
    return LOCAL_USER.name


@pytest.mark.parametrize("change, field", [
    ({"account": {Col.max_cash: 1.0, Col.min_cash: 500.0}}, "account.max_cash"),
    ({"account": {Col.min_cash: -5.0}}, "account.min_cash"),
    ({"account": {Col.min_cash: "lots"}}, "account.min_cash"),
    ({"account": {Col.cash: 10.0}}, "account.cash"),
    ({"account": {"colour": "red"}}, "account.colour"),
    ({"restrictions": [{Col.rule: Rule.exclude, Col.security_id: "NOT-A-SECURITY"}]}, "restrictions"),
    ({"restrictions": [{Col.rule: "sometimes", Col.tag: "tobacco"}]}, "restrictions[0].rule"),
    ({"allocations": [{Col.asset_class: "us_large_cap", Col.weight: 0.99}]}, "allocations"),
    ({"allocations": [{Col.asset_class: "us_large_cap", Col.model_id: "NO-SUCH-MODEL"}]}, "allocations"),
    ({"account": {Col.template_id: "NO-TEMPLATE"}}, "account.template_id"),
])
def test_an_invalid_change_is_422_naming_the_field_and_saves_nothing(local, accounts, book, change, field):
    client, csrf = local
    account = accounts[2]
    version = client.get(f"/api/accounts/{account}").json()["version"]
    answer = client.put(f"/api/accounts/{account}", json={**change, "version": version}, headers=csrf)
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == field
    assert field.split(".")[-1].split("[")[0] in answer.json()["detail"] or field in ("restrictions", "allocations")
    assert client.post(f"/api/accounts/{account}/preview", json=change, headers=csrf).status_code == 422
    assert CustomizationStore(book).versions().get(account, 0) == version


def test_a_new_account_gets_first_trades_and_a_plan(local, portal, book):
    client, csrf = local
    securities = portal.book.securities.to_pylist()
    held = [s for s in securities if s[Col.price]][:3]
    lots = [{Col.symbol: s[Col.symbol], Col.quantity: 100.0, Col.cost_basis: 50.0 * s[Col.price],
             Col.acquired: "2020-01-02"} for s in held]
    template = portal.book.templates.column(Col.template_id)[0].as_py()
    body = {"account": {Col.account_id: "NEW-1", Col.template_id: template, Col.tax_status: "taxable",
                        Col.cash: 20000.0, Col.tax_budget: 5000.0}, "lots": lots, "years": 5}
    answer = client.post("/api/accounts", json=body, headers=csrf)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["first_trades"][Col.status] == Status.proposed and result["first_trades"]["trades"]
    plan = result["plan"]
    assert 1 <= len(plan["year"]) <= 5
    assert plan[Col.tracking_error_after][-1] < plan[Col.tracking_error_before][0]
    assert all(tax <= 5000.0 + 1.0 for tax in plan["tax"])
    again = read_book(book)
    assert "NEW-1" in again.accounts.column(Col.account_id).to_pylist() and "NEW-1" not in again.rejected
    assert sorted(again.lots.filter(pc.equal(again.lots.column(Col.account_id), "NEW-1")).column(Col.quantity).to_pylist()) \
        == [100.0] * 3
    duplicate = client.post("/api/accounts", json=body, headers=csrf)
    assert duplicate.status_code == 422 and duplicate.json()["field"] == "account.account_id"
    unknown = client.post("/api/accounts", json={**body, "account": {**body["account"], Col.account_id: "NEW-2"},
                                                 "lots": [{Col.symbol: "ZZZZ", Col.quantity: 1, Col.cost_basis: 1}]},
                          headers=csrf)
    assert unknown.status_code == 422 and "ZZZZ" in unknown.json()["detail"]


def test_a_withdrawal_request_reaches_the_run_and_the_group(local, accounts, book):
    client, csrf = local
    account = accounts[3]
    before = next(r for r in read_book(book).accounts.to_pylist() if r[Col.account_id] == account)[Col.withdrawal]
    answer = client.post(f"/api/accounts/{account}/withdrawals", json={"amount": 2500.0, "note": "tuition"},
                         headers=csrf)
    assert answer.status_code == 200, answer.text
    row = next(r for r in read_book(book).accounts.to_pylist() if r[Col.account_id] == account)
    assert row[Col.withdrawal] == pytest.approx(before + 2500.0)
    pending = client.get("/api/rebalancing").json()["pending_withdrawals"]
    assert [(w[Col.account_id], w[Col.withdrawal], w[Col.note]) for w in pending] == [(account, 2500.0, "tuition")]
    preview = client.post(f"/api/accounts/{account}/preview", json={}, headers=csrf).json()
    assert any(t[Col.reason] == "withdrawal" for t in preview["trades"]) or preview[Col.sold] > 0
    for bad in (-5, 0, "a lot", None):
        assert client.post(f"/api/accounts/{account}/withdrawals", json={"amount": bad}, headers=csrf).status_code == 422


# --------------------------------------------------------------------------- who may see what

@pytest.fixture(scope="module")
def signed(portal, tmp_path_factory, accounts):
    path = tmp_path_factory.mktemp("users") / "users.json"
    mine, theirs = (portal.household_of(a) for a in accounts[4:6])
    add_user(path, "alice", "alice-secret", "advisor", [mine])
    add_user(path, "bob", "bob-secret", "advisor", [theirs])
    add_user(path, "rita", "rita-secret", "rebalancing", [])
    app = create_app(portal, load_users(path))
    return app, accounts[4], accounts[5]


def _login(app, name):
    client, csrf = _client(app, base_url="http://portal.example", client=("192.0.2.7", 4000))
    answer = client.post("/api/login", json={"user": name, "password": f"{name}-secret"}, headers=csrf)
    assert answer.status_code == 200, answer.text
    return client, {"X-CSRF-Token": answer.json()["csrf_token"]}


def test_no_session_is_401_and_pages_send_to_sign_in(signed):
    app, mine, _ = signed
    client = TestClient(app, base_url="http://portal.example", follow_redirects=False)
    assert client.get(f"/api/accounts/{mine}").status_code == 401
    assert client.get("/").headers["location"] == "/login"
    token = client.get("/api/session").json()["csrf_token"]
    wrong = client.post("/api/login", json={"user": "alice", "password": "guess"}, headers={"X-CSRF-Token": token})
    assert wrong.status_code == 401
    assert client.put(f"/api/accounts/{mine}", json={"version": 0}, headers={"X-CSRF-Token": token}).status_code == 401


def test_an_advisor_sees_and_changes_only_their_households(signed):
    app, mine, theirs = signed
    client, csrf = _login(app, "alice")
    assert client.get(f"/api/accounts/{mine}").status_code == 200
    assert client.get(f"/api/accounts/{theirs}").status_code == 403
    assert client.post(f"/api/accounts/{theirs}/preview", json={}, headers=csrf).status_code == 403
    assert client.put(f"/api/accounts/{theirs}", json={"version": 0}, headers=csrf).status_code == 403
    assert client.post(f"/api/accounts/{theirs}/withdrawals", json={"amount": 5}, headers=csrf).status_code == 403
    assert client.get(f"/accounts/{theirs}").status_code == 403
    assert client.get("/api/rebalancing").status_code == 403
    listed = {r[Col.account_id] for r in client.get("/api/accounts").json()["accounts"]}
    assert mine in listed and theirs not in listed
    version = client.get(f"/api/accounts/{mine}").json()["version"]
    saved = client.put(f"/api/accounts/{mine}", json={"account": {Col.reserve_cash: 10.0}, "version": version},
                       headers=csrf)
    assert saved.status_code == 200
    assert client.get(f"/api/accounts/{mine}/history").json()["history"][0][Col.saved_by] == "alice"
    group, _ = _login(app, "rita")
    assert group.get(f"/api/accounts/{theirs}").status_code == 200
    assert group.get("/api/rebalancing").status_code == 200


def test_a_forged_or_stale_csrf_token_is_refused(signed):
    app, mine, _ = signed
    client, csrf = _login(app, "alice")
    other, other_csrf = _login(app, "bob")
    for headers in ({}, {"X-CSRF-Token": "forged"}, other_csrf):
        assert client.post(f"/api/accounts/{mine}/preview", json={}, headers=headers).status_code == 403
    form = client.post(f"/accounts/{mine}/withdrawals", data={"amount": "5", "csrf_token": other_csrf["X-CSRF-Token"]})
    assert form.status_code == 403
    stale = csrf["X-CSRF-Token"]
    client.post("/logout", headers=csrf)
    client2, _ = _login(app, "alice")
    assert client2.post(f"/api/accounts/{mine}/preview", json={}, headers={"X-CSRF-Token": stale}).status_code == 403


def test_without_users_only_loopback_is_served(portal, book):
    app = create_app(portal)
    assert TestClient(app, base_url="http://127.0.0.1", client=("192.0.2.7", 4000)).get("/api/session").status_code == 403
    assert TestClient(app, base_url="http://portal.example", client=("127.0.0.1", 4000)).get(
        "/api/session").status_code == 400
    with pytest.raises(ConfigError, match="only this machine"):
        build(book, host="0.0.0.0")


def test_passwords_are_salted_hashes(tmp_path):
    first, second = hash_password("pw"), hash_password("pw")
    assert first != second and first.startswith("scrypt$") and "pw" not in first
    assert verify_password("pw", first) and not verify_password("pw2", first) and not verify_password("pw", "junk")
    path = tmp_path / "users.json"
    path.write_text(json.dumps({"users": {"x": {"role": "boss", "password": first}}}))
    with pytest.raises(ConfigError, match="role"):
        load_users(path)


# --------------------------------------------------------------------------- saves: atomic, durable

WRITER = """
import sys, time
from engine.book.customizations import CustomizationStore
from engine.contract.schema import Action
store = CustomizationStore(sys.argv[1])
account = sys.argv[2]
for i in range(10_000):
    state = {"account": {"min_cash": float(i)}, "restrictions": [{"rule": "exclude", "security_id": None,
             "tag": f"tag{i}"}], "allocations": []}
    store.save(account, Action.change, None, state, "writer")
    print(i, flush=True)
"""


def _state(book_uri, account):
    """(min_cash, screened tag) of the account in the book as read_book reads it."""
    book = read_book(book_uri)
    row = next(r for r in book.accounts.to_pylist() if r[Col.account_id] == account)
    tags = customization_of(book.tables, account)["restrictions"]
    return row[Col.min_cash], [r[Col.tag] for r in tags]


@pytest.fixture()
def scratch(tmp_path):
    uri = str(tmp_path / "book")
    synth.generate(uri, 4, seed=3, bad_fraction=0.0)
    return uri, read_book(uri).accounts.column(Col.account_id)[0].as_py()


def test_kill_9_during_saves_leaves_the_book_before_or_after(scratch):
    uri, account = scratch
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for attempt in range(2):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, uri, account], stdout=subprocess.PIPE, env=env,
                                  text=True)
        done = [writer.stdout.readline() for _ in range(3 + 2 * attempt)]
        assert all(done)
        time.sleep(0.01 * attempt)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        min_cash, tags = _state(uri, account)             # the book reads and validates
        newest = CustomizationStore(uri).history(account)[0]
        # the state is exactly one save's after, the newest that committed: never half
        assert tags == [f"tag{int(min_cash)}"]
        assert newest[Col.after]["account"][Col.min_cash] == min_cash
        assert account not in read_book(uri).rejected


def test_a_reader_during_saves_sees_one_save_whole(scratch):
    uri, account = scratch
    store = CustomizationStore(uri)
    stop = threading.Event()

    def save():
        i = 0
        while not stop.is_set() and i < 20:
            store.save(account, "change", None, {"account": {Col.min_cash: float(i)}, "allocations": [],
                                                  "restrictions": [{Col.rule: Rule.exclude, Col.tag: f"tag{i}"}]},
                       "writer")
            i += 1

    base = _state(uri, account)
    thread = threading.Thread(target=save)
    thread.start()
    seen = set()
    try:
        while thread.is_alive() and len(seen) < 200:
            min_cash, tags = _state(uri, account)
            assert (min_cash, tags) == base or tags == [f"tag{int(min_cash)}"]
            seen.add(min_cash)
    finally:
        stop.set()
        thread.join()
    assert len(seen) > 1                  # it read while the saves went on


def test_previews_side_by_side_answer_as_one_at_a_time(local, accounts):
    client, csrf = local
    work = [(a, {"account": {Col.tax_budget: budget}}) for a in accounts[6:8] for budget in (500.0, 5000.0)]
    alone = [client.post(f"/api/accounts/{a}/preview", json=c, headers=csrf).json() for a, c in work]

    def ask(item):
        return client.post(f"/api/accounts/{item[0]}/preview", json=item[1], headers=csrf)

    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(ask, work * 2))
    assert all(answer.status_code == 200 for answer in together)
    for answer, expected in zip(together, alone * 2):
        assert answer.json()[Col.trade_count] == expected[Col.trade_count]
        assert answer.json()["tax"] == pytest.approx(expected["tax"], abs=1.0)


@pytest.mark.s3
def test_saves_on_an_s3_book(s3_server):
    uri = "s3://canopy-test/portal-book"
    synth.generate(uri, 4, seed=5, bad_fraction=0.0, storage_options=s3_server)
    account = read_book(uri, storage_options=s3_server).accounts.column(Col.account_id)[0].as_py()
    store = CustomizationStore(uri, s3_server)
    state = {"account": {Col.min_cash: 77.0}, "restrictions": [], "allocations": []}
    assert store.save(account, "change", None, state, "tester", expected_version=0) == 1
    book = read_book(uri, storage_options=s3_server)
    assert next(r for r in book.accounts.to_pylist() if r[Col.account_id] == account)[Col.min_cash] == 77.0
    assert store.history(account)[0][Col.saved_by] == "tester"
