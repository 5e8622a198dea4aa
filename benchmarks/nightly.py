"""End-to-end throughput of the nightly job: generate books, run the job, time every stage.

    .venv/bin/python benchmarks/nightly.py                       # 10k, 30k and 100k accounts
    .venv/bin/python benchmarks/nightly.py --accounts 5000 --accounts 10000

For each size: the book is generated once into ``--books`` (kept for reruns),
the job runs on a fresh local Ray instance (one solver actor per CPU), and the
benchmark prints accounts per second end to end, the time of each stage
(read, targets, plan, solve and its parts summed over actors, write), and the
peak memory of the whole process tree (driver, raylet, object store, workers),
sampled every half second.  Results go to ``benchmarks/results/nightly.json``.
Linear cost means accounts per second stays flat as the book grows.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path


def _tree_rss(root: int) -> int:
    """Summed resident memory (bytes) of process ``root`` and its descendants, from /proc (Linux)."""
    parent, rss = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            parent[int(entry)] = int(fields[1])
            rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


class PeakMemory:
    """Peak summed RSS of this process and its descendants, sampled in a thread."""

    def __init__(self, interval: float = 0.5):
        self.peak, self.interval = 0, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            self.peak = max(self.peak, _tree_rss(me))
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_one(accounts: int, books: Path, out: Path, seed: int, config_path: str | None) -> dict:
    import ray

    from engine.actors.nightly import run_nightly
    from engine.book import synth
    from engine.contract.config import load_config

    book = books / f"book-{accounts}-{seed}"
    if not (book / "book.json").exists():
        started = time.perf_counter()
        synth.generate(str(book), accounts, seed, overwrite=True)
        print(f"generated {book} in {time.perf_counter() - started:.0f} s", flush=True)
    config = load_config(config_path)
    ray.init(include_dashboard=False, log_to_driver=False)
    try:
        with PeakMemory() as memory:
            started = time.perf_counter()
            manifest = run_nightly(str(book), str(out / f"run-{accounts}"), config, replace=True, progress=False)
            wall = time.perf_counter() - started
    finally:
        ray.shutdown()
    return {"accounts": accounts, "seconds": round(wall, 1), "accounts_per_second": round(accounts / wall, 1),
            "peak_memory_gb": round(memory.peak / 2**30, 2), "timings": manifest["timings"],
            "trades": manifest["summary"]["trades"], "counts": manifest["counts"],
            "shards": manifest["shards"], "cpus": os.cpu_count()}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, action="append", help="book sizes (repeat)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--books", default="benchmarks/books", help="where generated books are kept")
    parser.add_argument("--runs", default="benchmarks/runs", help="where the runs are written")
    parser.add_argument("--config", default=None, help="canopy.toml for the runs")
    parser.add_argument("--out", default="benchmarks/results/nightly.json")
    args = parser.parse_args(argv)
    sizes = args.accounts or [10_000, 30_000, 100_000]
    results = []
    for accounts in sizes:
        result = run_one(accounts, Path(args.books), Path(args.runs), args.seed, args.config)
        results.append(result)
        stages = ", ".join(f"{k} {v:.1f}s" for k, v in result["timings"].items())
        print(f"{accounts:>8,} accounts: {result['seconds']:>7.1f} s, {result['accounts_per_second']:>7.1f} accounts/s, "
              f"peak {result['peak_memory_gb']:.1f} GB; {stages}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
