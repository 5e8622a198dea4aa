"""How fast a warm what-if session answers, per kind of question.

    PYTHONPATH=. .venv/bin/python benchmarks/whatif.py --accounts 200 --sample 4

Builds a synthetic book in memory (:func:`engine.book.synth.generate_tables`;
not timed), opens a :class:`engine.simulate.whatif.WhatIfSession` on it, and for
``--sample`` usable accounts (the largest households and direct-index holders
first, then others, so several shapes are measured):

* ``warm_up``: tonight's proposal for the household (compiles its shape the
  first time a shape is seen in the process: 10–20 s without JAX's persistent cache);
* then ``--repeat`` times each question: ``screen`` (exclude tag
  fossil_fuel), ``allocation`` (the account's largest asset class +5% of
  weight, within the template's bounds), ``withdrawal`` (10% of the value),
  ``product`` (us_large_cap to the next allowed product; a new universe, and a
  new compile where its padded shape is new).

The first call of each question is reported apart from the others ("first"
may compile; "warm" is the median of the repeats after it).  Prints a table
and writes ``benchmarks/results/whatif.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from engine.book.storage import Book
from engine.book.synth import AS_OF, generate_tables
from engine.book.validate import validate
from engine.contract.config import Config, load_config
from engine.contract.schema import Col
from engine.rebalance.customization import CustomizationChange
from engine.simulate.whatif import WHATIF_SOLVER, WhatIfSession

RESULTS = Path(__file__).resolve().parent / "results" / "whatif.json"


def _book(tables, as_of: dt.date) -> Book:
    rejections = validate(tables, as_of, Config().policy)
    rejected = frozenset(a for a in rejections.column(Col.account_id).to_pylist() if a is not None)
    return Book(uri="memory", as_of=as_of, base_currency="USD", rejections=rejections, rejected=rejected,
                **tables)


def _questions(session: WhatIfSession, account: str) -> dict[str, tuple[CustomizationChange, float]]:
    targets = session.targets
    row = session.row_of[account]
    questions = {"screen": (CustomizationChange.screen(tag="fossil_fuel"), 0.0)}
    templates = session.tables["templates"].to_pylist()
    template = next(r[Col.template_id] for r in session.tables["accounts"].to_pylist()
                    if r[Col.account_id] == account)
    mine = {r[Col.asset_class]: r for r in templates if r[Col.template_id] == template}
    weights = dict(zip(targets.asset_classes, targets.class_weights[row]))
    largest = max(mine, key=lambda c: weights.get(c, 0.0))
    weight = min(mine[largest][Col.max_weight], weights[largest] + 0.05)
    questions["allocation"] = (CustomizationChange.allocation({largest: float(weight)}), 0.0)
    questions["withdrawal"] = (CustomizationChange(), 0.1 * session.baseline[account].numbers[Col.value])
    if "us_large_cap" in mine:
        current = targets.class_models[row][list(targets.asset_classes).index("us_large_cap")]
        allowed = [mine["us_large_cap"][Col.model_id], *(mine["us_large_cap"][Col.alternatives] or [])]
        other = next((m for m in allowed if m != current), None)
        if other:
            questions["product"] = (CustomizationChange.product("us_large_cap", other), 0.0)
    return questions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample", type=int, default=4, help="accounts asked about")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--config", default=None, help="canopy.toml (default: the what-if solver, eps 1e-5)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    tables = generate_tables(args.accounts, args.seed, bad_fraction=0.0)
    config = load_config(args.config) if args.config else Config(solver=WHATIF_SOLVER)
    start = time.perf_counter()
    session = WhatIfSession(_book(tables, AS_OF), config)
    open_s = time.perf_counter() - start
    usable = [a for a in session.targets.account_ids if a not in session.rejected]
    size = {a: len(session.members[session.household_of[a]]) for a in usable}
    lots = dict(zip(*np.unique(np.asarray(tables["lots"].column(Col.account_id).to_pylist()), return_counts=True)))
    ranked = sorted(usable, key=lambda a: (-size[a], -lots.get(a, 0), a))
    sample = ranked[: max(1, args.sample // 2)] + ranked[::-1][: args.sample - max(1, args.sample // 2)]

    rows = []
    for account in sample:
        start = time.perf_counter()
        baseline = session.warm_up(account)
        warm_up_s = time.perf_counter() - start
        for kind, (change, withdrawal) in _questions(session, account).items():
            times, answer = [], None
            for _ in range(args.repeat + 1):
                answer = session.whatif(account, change, withdrawal=withdrawal)
                times.append(answer.seconds)
            rows.append({"account": account, "household_accounts": size[account], "lots": int(lots.get(account, 0)),
                         "question": kind, "status": answer.status, "warm_start": answer.warm_started,
                         "warm_up_s": round(warm_up_s, 3), "first_s": round(times[0], 4),
                         "warm_median_s": round(statistics.median(times[1:]), 4), "warm_max_s": round(max(times[1:]), 4),
                         "solve_s": round(answer.timings.get("solve", 0.0), 4),
                         "trades": int(answer.numbers.get(Col.trade_count, 0)),
                         "baseline_trades": int(baseline.numbers.get(Col.trade_count, 0))})

    warm = [r["warm_median_s"] for r in rows]
    result = {"accounts": args.accounts, "seed": args.seed, "repeat": args.repeat,
              "solver": config.solver.__dict__ if hasattr(config.solver, "__dict__") else str(config.solver),
              "open_session_s": round(open_s, 3), "rows": rows,
              "warm_median_s": round(statistics.median(warm), 4) if warm else None,
              "warm_max_s": round(max(warm), 4) if warm else None,
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count()}}
    print(f"what-ifs on a {args.accounts:,}-account book; session opened in {open_s:.1f} s")
    header = f"{'account':<10}{'hh':>3}{'lots':>6} {'question':<11}{'warm?':>6}{'warm-up s':>10}{'first s':>9}" \
             f"{'warm ms':>9}{'max ms':>8}{'trades':>7}"
    print(header)
    for r in rows:
        print(f"{r['account']:<10}{r['household_accounts']:>3}{r['lots']:>6} {r['question']:<11}"
              f"{'yes' if r['warm_start'] else 'no':>6}{r['warm_up_s']:>10.1f}{r['first_s']:>9.2f}"
              f"{1000 * r['warm_median_s']:>9.0f}{1000 * r['warm_max_s']:>8.0f}{r['trades']:>7}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
