"""Where a night's solve time goes: the interior-point chunks of a book's shards, by shape and batch.

    JAX_COMPILATION_CACHE_DIR=.jax_cache .venv/bin/python benchmarks/solve_profile.py --book benchmarks/books/book-10000-1

Runs the nightly job on one book in this one process (the local executor, one XLA
thread, as a solver actor) and times every jitted interior-point chunk
(``engine.solver.driver._ipm_chunk``, waited on).  It prints

* the chunks' share of the night, and per (accounts, securities, lots) shape their seconds;
* the batch efficiency: iterations the households needed over the iterations their
  batches ran (a household that has finished, or a padding slot, still costs its share
  of every chunk until its batch is compacted);
* the iterations of first solves and of wash-sale re-solves;
* the share of free buy and lot variables per shape (a fixed one costs an iteration too).

The first call of a shape and batch size also makes its program (from the
persistent cache when warm): run ``canopy warmup`` on the book first, or read
the figures of the larger shapes.  Results go to ``benchmarks/results/solve_profile.json``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import time
from pathlib import Path

from engine.actors.solver import ACTOR_ENV

for _key, _value in ACTOR_ENV.items():
    os.environ.setdefault(_key, _value)


def profile(book: str, out: str, config_path: str | None) -> dict:
    import jax
    import numpy as np

    from engine.actors.nightly import run_nightly
    from engine.contract.config import load_config
    from engine.solver import driver

    seconds = collections.Counter()
    calls = collections.Counter()
    free = collections.defaultdict(lambda: np.zeros(3))
    counts = collections.Counter()
    chunk, iterate = driver._ipm_chunk, driver._iterate

    def timed_chunk(problem, state, config):
        started = time.perf_counter()
        result = jax.block_until_ready(chunk(problem, state, config))
        elapsed = time.perf_counter() - started
        batch, key = state.buy.shape[0], (*state.buy.shape[1:], state.sell.shape[1])
        seconds[key] += elapsed
        calls[key, batch] += 1
        counts["batch_iterations"] += batch * config.ipm_check_interval
        if calls[key, batch] % 10 == 1:                 # a sample of the batches: the transfer costs
            free[key] += (float(np.mean(np.asarray(problem.buy_upper) > 0)),
                          float(np.mean(np.asarray(problem.sell_upper) > np.asarray(problem.sell_lower))), 1)
        return result

    def counted_iterate(problem, state, config, active, *args, **kwargs):
        state, iterations = iterate(problem, state, config, active, *args, **kwargs)
        if args and args[0] is timed_chunk:
            kind = "first" if "fixed" in kwargs else "resolve"       # only the first solve passes ``fixed``
            counts[f"{kind}_solves"] += int((iterations > 0).sum())
            counts[f"{kind}_iterations"] += int(iterations.sum())
        return state, iterations

    driver._ipm_chunk, driver._iterate = timed_chunk, counted_iterate
    try:
        started = time.perf_counter()
        run_nightly(book, out, load_config(config_path), replace=True, progress=False, executor="local")
        wall = time.perf_counter() - started
    finally:
        driver._ipm_chunk, driver._iterate = chunk, iterate
    needed = counts["first_iterations"] + counts["resolve_iterations"]
    shapes = []
    for key, s in seconds.most_common():
        buys, lots, sampled = free[key]
        shapes.append({"accounts": key[0], "securities": key[1], "lots": key[2], "seconds": round(s, 1),
                       "free_buys": round(buys / max(sampled, 1), 3), "free_lots": round(lots / max(sampled, 1), 3),
                       "batches": {b: c for (k, b), c in sorted(calls.items()) if k == key}})
    return {"book": book, "seconds": round(wall, 1), "chunk_seconds": round(sum(seconds.values()), 1),
            "batch_efficiency": round(needed / max(counts["batch_iterations"], 1), 3), **counts, "shapes": shapes}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--book", required=True, help="a book folder (benchmarks/nightly.py generates them)")
    parser.add_argument("--runs", default="benchmarks/runs/solve_profile", help="where the run is written")
    parser.add_argument("--config", default=None, help="canopy.toml for the run")
    parser.add_argument("--out", default="benchmarks/results/solve_profile.json")
    args = parser.parse_args(argv)
    result = profile(args.book, args.runs, args.config)
    print(f"{result['seconds']:.1f} s in one process, {result['chunk_seconds']:.1f} s of it in interior-point chunks "
          f"({result['chunk_seconds'] / result['seconds']:.0%})")
    print(f"batch efficiency {result['batch_efficiency']:.1%} (iterations needed / iterations the batches ran)")
    for kind in ("first", "resolve"):
        solves, iterations = result.get(f"{kind}_solves", 0), result.get(f"{kind}_iterations", 0)
        print(f"{kind} solves: {solves:,} households, {iterations:,} iterations ({iterations / max(solves, 1):.1f} each)")
    print(f"{'accounts':>8} {'securities':>10} {'lots':>6} {'seconds':>8} {'free buys':>9} {'free lots':>9}  batches (size: chunks)")
    for s in result["shapes"]:
        batches = ", ".join(f"{b}: {c}" for b, c in s["batches"].items())
        print(f"{s['accounts']:>8} {s['securities']:>10} {s['lots']:>6} {s['seconds']:>8.1f} "
              f"{s['free_buys']:>9.0%} {s['free_lots']:>9.0%}  {batches}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
