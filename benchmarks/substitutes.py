"""What substitutes cost: a book's securities and compiled shapes with them and without, and a small night's time.

    .venv/bin/python benchmarks/substitutes.py --plan-accounts 100000 --solve-accounts 2000

Planning, nothing solved: the synthetic book of ``--plan-accounts`` accounts
(:func:`engine.book.synth.iter_tables`) is taken chunk by chunk (whole households, so
the whole book never sits in memory); each chunk is validated, its targets are built with
``[policy] substitutes`` on and off, and each household's shape (m, L, n, P) is found as the
nightly plan finds it (:func:`engine.rebalance.shards.household_shapes`, wash-sale windows
of the household included); then the rare shapes merge over the whole book
(:func:`engine.rebalance.shards.merge_rare_shapes`).  Per setting it reports the households,
the securities per household (unpadded: held, targeted, substitutes), the households whose
padded ``n`` grows, the distinct compiled shapes, and the plan's work ``Σ m·n + P``
(:func:`engine.rebalance.shards.shape_work`).

Solving: a book of ``--solve-accounts`` accounts, every usable household solved in this
process (:func:`engine.rebalance.pipeline.solve_households`) with each setting, after one
warm-up of each (compiles not timed twice); wall seconds, trades and buys of substitutes.

Prints a table and writes ``benchmarks/results/substitutes.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.book.synth import AS_OF, generate_tables, iter_tables
from engine.book.validate import validate
from engine.contract.config import Config, PolicyConfig, RunConfig, SolverConfig
from engine.contract.schema import Col, Side
from engine.rebalance.pipeline import solve_households
from engine.rebalance.shards import household_shapes, household_transactions, merge_rare_shapes, shape_work
from engine.rebalance.targets import build_targets

RESULTS = Path(__file__).resolve().parent / "results" / "substitutes.json"
SETTINGS = {"off": PolicyConfig(substitutes=False), "on": PolicyConfig(substitutes=True)}


def _usable_targets(tables, policy):
    """The targets of validated ``tables`` and the accounts that are usable."""
    rejected = set(validate(tables, AS_OF, policy).column(Col.account_id).drop_null().to_pylist())
    targets = build_targets(tables, rejected=rejected, policy=policy, as_of=AS_OF)
    return targets, targets.account_ids[targets.usable]


def plan_counts(accounts: int, seed: int) -> dict:
    """Per setting, the securities and compiled shapes of the book's plan (no solving)."""
    stream = iter_tables(accounts, seed)
    universe = next(stream)
    keys = {name: [] for name in SETTINGS}
    securities = {name: [] for name in SETTINGS}
    used = {name: set() for name in SETTINGS}
    for chunk in stream:
        tables = {**universe, **chunk}
        for name, policy in SETTINGS.items():
            targets, usable = _usable_targets(tables, policy)
            shapes = household_shapes(household_transactions(tables, usable), targets, usable)
            keys[name].append(shapes.keys)
            securities[name].append(shapes.securities)
            used[name] |= set(targets.security_ids[np.unique(np.r_[targets.weights.indices,
                                                                   targets.substitutes.indices])])
    out = {}
    for name in SETTINGS:
        raw = np.concatenate(keys[name])
        merged = merge_rare_shapes(raw, RunConfig.min_shape_households)
        count = np.concatenate(securities[name])
        out[name] = {"households": int(raw.shape[0]), "securities_mean": round(float(count.mean()), 2),
                     "securities_max": int(count.max()), "padded_n_mean": round(float(merged[:, 2].mean()), 1),
                     "shapes": int(np.unique(merged, axis=0).shape[0]),
                     "work": int(sum(shape_work(k) for k in merged)),
                     "book_securities_named": len(used[name]), "_raw_n": raw[:, 2]}
    out["on"]["households_n_grew"] = int((out["on"].pop("_raw_n") > out["off"].pop("_raw_n")).sum())
    return out


def solve_counts(accounts: int, seed: int, repeat: int) -> dict:
    """Per setting, the wall seconds of solving every usable household of a small book, and its trades."""
    tables = generate_tables(accounts, seed)
    config = Config(solver=SolverConfig())
    out = {}
    for name, policy in SETTINGS.items():
        targets, usable = _usable_targets(tables, policy)
        run = Config(policy=policy, solver=config.solver, run=config.run)
        solve_households(tables, targets, usable[:8], AS_OF, run)         # compiles the common shapes
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            outputs = solve_households(tables, targets, usable, AS_OF, run)
            times.append(time.perf_counter() - start)
        trades = pa.concat_tables([o.trades for o in outputs])
        buys = trades.filter(pc.equal(trades.column(Col.side), Side.buy))
        targeted = {(a, s) for a in usable for s in targets.target_of(a)}
        substitute_buys = sum((a, s) not in targeted for a, s in zip(buys.column(Col.account_id).to_pylist(),
                                                                       buys.column(Col.security_id).to_pylist()))
        out[name] = {"seconds": round(min(times), 2), "accounts": int(usable.size), "trades": trades.num_rows,
                     "buys_outside_targets": int(substitute_buys)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plan-accounts", type=int, default=100_000)
    parser.add_argument("--solve-accounts", type=int, default=2_000, help="0: plan only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    start = time.perf_counter()
    plan = plan_counts(args.plan_accounts, args.seed)
    plan_s = time.perf_counter() - start
    solved = solve_counts(args.solve_accounts, args.seed, args.repeat) if args.solve_accounts else {}
    print(f"plan of {args.plan_accounts:,} accounts ({plan_s:.0f} s to count):")
    print("| substitutes | households | securities a household, mean / max | padded n, mean | households whose n "
          "grows | shapes | work Σ m·n+P |")
    for name, row in plan.items():
        print(f"| {name} | {row['households']:,} | {row['securities_mean']} / {row['securities_max']} | "
              f"{row['padded_n_mean']} | {row.get('households_n_grew', '-')} | {row['shapes']} | {row['work']:,} |")
    for name, row in solved.items():
        print(f"solve of {args.solve_accounts:,} accounts, substitutes {name}: {row['seconds']} s, "
              f"{row['trades']:,} trades, {row['buys_outside_targets']:,} buys outside the targets")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"plan_accounts": args.plan_accounts, "solve_accounts": args.solve_accounts,
                                   "seed": args.seed, "plan": plan, "solve": solved,
                                   "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}},
                                  indent=2) + "\n")


if __name__ == "__main__":
    main()
