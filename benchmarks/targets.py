"""How fast targets are built for a whole book.

    .venv/bin/python benchmarks/targets.py --accounts 100000

Builds a synthetic book in memory (:func:`engine.book.synth.generate_tables`; not
timed), then times, best of ``--repeat``:

* ``build_targets`` on tables not yet validated (custom allocations checked here too),
* ``build_targets`` on validated tables (``rejected=`` given),
* ``household_targets`` (value-weighted blend),
* ``account_target`` (a what-if for one account: add a screen).

Prints a table and writes ``benchmarks/results/targets.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from engine.book.synth import generate_tables
from engine.contract.schema import Col
from engine.rebalance.customization import CustomizationChange, account_target
from engine.rebalance.targets import build_targets, household_targets

RESULTS = Path(__file__).resolve().parent / "results" / "targets.json"


def best_of(repeat: int, work):
    """Smallest wall-clock seconds of ``repeat`` calls of ``work()``, and its last result."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - start)
    return min(times), result


def account_values(tables) -> np.ndarray:
    """Market value incl. cash of each account (USD), from lots at the securities' prices."""
    accounts, lots, securities = tables["accounts"], tables["lots"], tables["securities"]
    price = dict(zip(securities.column(Col.security_id).to_pylist(),
                     np.nan_to_num(securities.column(Col.price).to_numpy(zero_copy_only=False))))
    row = pc.fill_null(pc.index_in(lots.column(Col.account_id),
                                   value_set=accounts.column(Col.account_id)), -1).to_numpy()
    value = lots.column(Col.quantity).to_numpy() * np.array(
        [price.get(s, 0.0) for s in lots.column(Col.security_id).to_pylist()])
    known = row >= 0
    held = np.bincount(row[known], weights=value[known], minlength=accounts.num_rows)
    return held + accounts.column(Col.cash).to_numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    start = time.perf_counter()
    tables = generate_tables(args.accounts, args.seed)
    generate_s = time.perf_counter() - start
    n_allocations, n_restrictions = tables["allocations"].num_rows, tables["restrictions"].num_rows

    raw_s, targets = best_of(args.repeat, lambda: build_targets(tables))
    rejected = set(targets.rejections.column(Col.account_id).drop_null().to_pylist())
    validated_s, _ = best_of(args.repeat, lambda: build_targets(tables, rejected=rejected))
    values = account_values(tables)
    households = tables["accounts"].column(Col.household_id)
    household_s, (index, household_weights) = best_of(
        args.repeat, lambda: household_targets(targets, values, households))
    first = targets.account_ids[np.flatnonzero(targets.usable)[0]]
    change = CustomizationChange.screen(tag="fossil_fuel")
    what_if_s, _ = best_of(args.repeat, lambda: account_target(tables, first, change))

    result = {
        "accounts": args.accounts, "seed": args.seed, "repeat": args.repeat,
        "securities": len(targets.security_ids), "allocations": n_allocations,
        "restrictions": n_restrictions, "usable_accounts": int(targets.usable.sum()),
        "target_nonzeros": int(targets.weights.nnz), "households": len(index),
        "household_nonzeros": int(household_weights.nnz),
        "seconds": {"generate_book": round(generate_s, 3), "build_targets": round(raw_s, 3),
                    "build_targets_validated": round(validated_s, 3),
                    "household_targets": round(household_s, 3), "account_target": round(what_if_s, 4)},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
    }
    print(f"targets for {args.accounts:,} accounts ({result['usable_accounts']:,} usable, "
          f"{result['target_nonzeros']:,} nonzero weights, {len(targets.security_ids):,} securities)")
    print(f"{'step':<28}{'seconds':>10}")
    for name, seconds in result["seconds"].items():
        print(f"{name:<28}{seconds:>10.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
