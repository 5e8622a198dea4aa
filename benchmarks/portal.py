"""How fast the advisor portal answers, over HTTP on loopback, as advisors use it.

    PYTHONPATH=. .venv/bin/python benchmarks/portal.py --accounts 2000 --repeat 5

Generates a book (not timed), starts the real server (``canopy portal`` on 127.0.0.1 and a free
port; its start and solver warm-up are reported), then, each bounded in requests and in time
(``--max-seconds`` in all):

* ``one account``: previews (``POST /api/accounts/{id}/preview``) of four kinds of change on
  ``--sample`` usable accounts alone in their household — a tag screen, a tax budget, half the
  cash minimum, the direct index (or another product) for an asset class; the first call of each kind
  on each account is reported apart ("first": a new solver shape may compile or load from the
  cache), the ``--repeat`` calls after it are "warm";
* ``household of 4``: the same on accounts of four-account households;
* ``new account``: ``POST /api/accounts`` with ten ETF lots and cash: first trades and a 5-year
  transition plan;
* ``20 concurrent``: ``--clients`` threads each sending ``--per-client`` previews of several
  accounts at once; latency of each and errors.

Prints a table and writes ``benchmarks/results/portal.json``.  Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from engine.book import synth
from engine.book.storage import read_book
from engine.contract.schema import Col, Rule

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "portal.json"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(book: str, port: int, timeout: float) -> tuple[subprocess.Popen, float, list[str]]:
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "engine.cli", "portal", "--book", book, "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = []
    while time.perf_counter() - started < timeout:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        lines.append(line.rstrip())
        if line.startswith("ready:"):
            threading.Thread(target=process.stdout.read, daemon=True).start()
            return process, time.perf_counter() - started, lines
    process.kill()
    raise SystemExit("the portal did not start:\n" + "\n".join(lines))


def _changes(book, account: str) -> dict[str, dict]:
    """Four changes of ``account`` in the API's shape."""
    row = next(r for r in book.accounts.to_pylist() if r[Col.account_id] == account)
    mine = [r for r in book.allocations.to_pylist() if r[Col.account_id] == account]
    chosen = {r[Col.asset_class]: r[Col.model_id] for r in mine}
    product = None
    for t in book.templates.to_pylist():
        if t[Col.template_id] == row[Col.template_id] and t[Col.alternatives]:
            options = sorted(t[Col.alternatives], key=lambda m: not m.startswith("DI-"))
            pick = next((m for m in options if m != chosen.get(t[Col.asset_class])), None)
            if pick:
                product = (t[Col.asset_class], pick)
                break
    restrictions = [{k: r[k] for k in (Col.rule, Col.security_id, Col.tag)}
                    for r in book.restrictions.to_pylist() if r[Col.account_id] == account]
    allocations = [{k: r[k] for k in (Col.asset_class, Col.weight, Col.model_id)} for r in mine]
    out = {"screen": {"restrictions": restrictions + [{Col.rule: Rule.exclude, Col.tag: "fossil_fuel"}]},
           "tax budget": {"account": {Col.tax_budget: 2000.0}},
           "cash minimum": {"account": {Col.min_cash: round(row[Col.min_cash] / 2, 2)}}}
    if product:
        out["product"] = {"allocations": [a for a in allocations if a[Col.asset_class] != product[0]]
                          + [{Col.asset_class: product[0], Col.model_id: product[1]}]}
    return out


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    return {"n": len(ordered), "p50": statistics.median(ordered),
            "p95": ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))], "max": ordered[-1]}


class Bench:
    def __init__(self, url: str, deadline: float):
        self.url, self.deadline = url, deadline
        self.client = httpx.Client(base_url=url, timeout=120)
        self.csrf = {"X-CSRF-Token": self.client.get("/api/session").json()["csrf_token"]}

    def timed(self, method: str, path: str, body) -> tuple[float, int]:
        start = time.perf_counter()
        # no-cache: the server solves each preview again instead of answering a question it was asked before
        answer = self.client.request(method, path, json=body, headers={**self.csrf, "Cache-Control": "no-cache"})
        return time.perf_counter() - start, answer.status_code

    def previews(self, book, accounts: list[str], repeat: int) -> dict[str, list[float]]:
        first, warm, errors = [], [], 0
        for account in accounts:
            for change in _changes(book, account).values():
                if time.perf_counter() > self.deadline:
                    return {"first": first, "warm": warm, "errors": errors}
                seconds, status = self.timed("POST", f"/api/accounts/{account}/preview", change)
                first.append(seconds)
                errors += status != 200
                for _ in range(repeat):
                    seconds, status = self.timed("POST", f"/api/accounts/{account}/preview", change)
                    warm.append(seconds)
                    errors += status != 200
        return {"first": first, "warm": warm, "errors": errors}

    def new_accounts(self, book, count: int) -> dict[str, list[float]]:
        etfs = [s for s in book.securities.to_pylist() if s[Col.kind] == "etf" and s[Col.price]][:10]
        lots = [{Col.security_id: s[Col.security_id], Col.quantity: 300.0, Col.cost_basis: 200.0 * s[Col.price],
                 Col.acquired: "2018-06-01"} for s in etfs]
        template = book.templates.column(Col.template_id)[0].as_py()
        seconds, errors = [], 0
        for i in range(count):
            if time.perf_counter() > self.deadline:
                break
            body = {"account": {Col.account_id: f"BENCH-{os.getpid()}-{i}", Col.template_id: template,
                                Col.tax_status: "taxable", Col.cash: 25000.0, Col.tax_budget: 10000.0},
                    "lots": lots, "years": 5}
            took, status = self.timed("POST", "/api/accounts", body)
            seconds.append(took)
            errors += status != 200
        return {"seconds": seconds, "errors": errors}

    def concurrent(self, book, accounts: list[str], clients: int, per_client: int) -> dict:
        work = [(a, c) for a in accounts for c in _changes(book, a).values()]

        def client(k: int) -> tuple[list[float], int]:
            bench = Bench(self.url, self.deadline)
            out, errors = [], 0
            for j in range(per_client):
                account, change = work[(k * per_client + j) % len(work)]
                took, status = bench.timed("POST", f"/api/accounts/{account}/preview", change)
                out.append(took)
                errors += status != 200
            return out, errors

        with ThreadPoolExecutor(clients) as pool:
            results = list(pool.map(client, range(clients)))
        return {"seconds": [s for r in results for s in r[0]], "errors": sum(r[1] for r in results)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--sample", type=int, default=4, help="accounts of each kind")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--new", type=int, default=4, help="new accounts to create")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--per-client", type=int, default=5)
    parser.add_argument("--max-seconds", type=float, default=900.0)
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="canopy-portal-bench-")
    uri = f"{folder}/book"
    synth.generate(uri, args.accounts, seed=args.seed)
    book = read_book(uri)
    households: dict[str, list[str]] = {}
    for a, h in zip(book.accounts.column(Col.account_id).to_pylist(), book.accounts.column(Col.household_id).to_pylist()):
        households.setdefault(h or a, []).append(a)
    usable = lambda members: not set(members) & book.rejected          # noqa: E731
    alone = [m[0] for m in households.values() if len(m) == 1 and usable(m)][:args.sample]
    fours = [m[0] for m in households.values() if len(m) == 4 and usable(m)][:max(1, args.sample // 2)]
    port = _free_port()
    process, startup, lines = _start(uri, port, args.max_seconds)
    try:
        bench = Bench(f"http://127.0.0.1:{port}", time.perf_counter() + args.max_seconds)
        one = bench.previews(book, alone, args.repeat)
        four = bench.previews(book, fours, args.repeat)
        new = bench.new_accounts(book, args.new)
        crowd = bench.concurrent(book, alone + fours, args.clients, args.per_client)
    finally:
        process.terminate()
        process.wait(timeout=30)
    result = {"accounts": args.accounts, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
              "startup_seconds": startup, "startup_log": lines,
              "one_account": {k: _percentiles(v) for k, v in one.items() if k != "errors"} | {"errors": one["errors"]},
              "household_of_4": {k: _percentiles(v) for k, v in four.items() if k != "errors"}
              | {"errors": four["errors"]},
              "new_account": _percentiles(new["seconds"]) | {"errors": new["errors"]},
              "concurrent": _percentiles(crowd["seconds"]) | {"errors": crowd["errors"], "clients": args.clients}}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(f"book of {args.accounts} accounts; server ready in {startup:.1f} s (read, warm-up)")
    print(f"{'what':<28}{'n':>5}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}{'errors':>8}")
    rows = [("one account, first", result["one_account"].get("first", {}), one["errors"]),
            ("one account, warm", result["one_account"].get("warm", {}), ""),
            ("household of 4, first", result["household_of_4"].get("first", {}), four["errors"]),
            ("household of 4, warm", result["household_of_4"].get("warm", {}), ""),
            ("new account + 5-year plan", result["new_account"], new["errors"]),
            (f"{args.clients} concurrent clients", result["concurrent"], crowd["errors"])]
    for name, p, errors in rows:
        if p.get("n"):
            print(f"{name:<28}{p['n']:>5}{1000 * p['p50']:>10.0f}{1000 * p['p95']:>10.0f}{1000 * p['max']:>10.0f}"
                  f"{errors!s:>8}")
    print(f"written: {RESULTS}")


if __name__ == "__main__":
    main()
