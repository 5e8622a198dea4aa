"""How long ``canopy whatif`` takes from the process start to its answer, on a book on disk.

    JAX_COMPILATION_CACHE_DIR=.jax_cache .venv/bin/python benchmarks/whatif_process.py \\
        --book benchmarks/books/book-100000-1 --sample 4

For ``--sample`` accounts spread over the book (every ``accounts / sample``-th account), runs
``canopy whatif --book BOOK --account A --screen-tag fossil_fuel`` in a new process ``--repeat``
times and reports its wall time, and the parts the command prints: reading the account's
household, the warm-up (tonight's proposal: loads or compiles the household's solver programs)
and the question.  The first run of an account may compile its shape into the compilation
cache; the later runs show a warm cache.  What is left of the wall time is the interpreter and
the imports (JAX's among them).  Prints a table and writes ``benchmarks/results/whatif_process.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.dataset as ds

RESULTS = Path(__file__).resolve().parent / "results" / "whatif_process.json"
#: The line ``canopy whatif`` prints with its timings.
TIMINGS = re.compile(r"household read in ([\d.]+) s; warm-up .*?([\d.]+)\s+s; what-if (\d+) ms", re.S)


def _canopy() -> str:
    found = Path(sys.executable).with_name("canopy")
    return str(found) if found.exists() else shutil.which("canopy") or "canopy"


def _accounts(book: str, sample: int) -> list[str]:
    ids = ds.dataset(f"{book}/accounts", format="parquet").to_table(columns=["account_id"])
    ids = sorted(ids.column("account_id").to_pylist())
    step = max(1, len(ids) // sample)
    return ids[::step][:sample]


def ask(book: str, account: str, tag: str) -> dict:
    """One ``canopy whatif`` process: its wall time and the timings it printed."""
    with tempfile.TemporaryDirectory() as folder:
        answer = Path(folder) / "answer.json"
        command = [_canopy(), "whatif", "--book", book, "--account", account, "--screen-tag", tag,
                   "--trades", "0", "--json", str(answer)]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        status = json.loads(answer.read_text())["with_change"]["status"]
    found = TIMINGS.search(done.stdout)
    if not found:
        raise SystemExit(f"no timings in the output of {' '.join(command)}:\n{done.stdout}")
    read, warm, question = float(found.group(1)), float(found.group(2)), float(found.group(3)) / 1000
    return {"account": account, "wall_s": round(wall, 3), "read_s": read, "warm_up_s": warm,
            "whatif_s": question, "rest_s": round(wall - read - warm - question, 3), "status": status}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--book", required=True)
    parser.add_argument("--sample", type=int, default=4, help="accounts asked about")
    parser.add_argument("--repeat", type=int, default=2, help="processes per account (the first may compile)")
    parser.add_argument("--tag", default="fossil_fuel", help="the screen asked about")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    rows = []
    print(f"{'account':<10}{'run':>4}{'wall s':>8}{'read s':>8}{'warm-up s':>10}{'what-if s':>10}{'rest s':>8}  status")
    for account in _accounts(args.book, args.sample):
        for run in range(args.repeat):
            row = {**ask(args.book, account, args.tag), "run": run + 1}
            rows.append(row)
            print(f"{account:<10}{run + 1:>4}{row['wall_s']:>8.2f}{row['read_s']:>8.1f}{row['warm_up_s']:>10.1f}"
                  f"{row['whatif_s']:>10.2f}{row['rest_s']:>8.2f}  {row['status']}", flush=True)
    warm = sorted(r["wall_s"] for r in rows if r["run"] > 1)
    if warm:
        print(f"warm cache: {warm[len(warm) // 2]:.2f} s median, {warm[-1]:.2f} s worst, over {len(warm)} processes")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"book": args.book, "rows": rows, "machine": {
        "platform": platform.platform(), "cpus": os.cpu_count()}}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
