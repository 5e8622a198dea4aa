"""A transition plan on a synthetic book: an account funded with legacy holdings, moved to a new target.

    .venv/bin/python benchmarks/transition.py [--years 6] [--tax-budget 6000]

Generates a small synthetic book, turns one taxable account into "a new
account funded with legacy holdings" (its lots' basis cut to 40%, as if
bought long ago, and its template switched from conservative to
aggressive), writes the book to ``benchmarks/books/transition`` and runs
``canopy transition`` on it, which prints the plan and writes
``transition.json`` and ``transition.png`` to ``benchmarks/results/transition``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.book import synth
from engine.book.storage import write_book
from engine.contract.schema import Col

ACCOUNT = "A0000009"


def legacy_book(path: str, seed: int = 11) -> str:
    tables = synth.generate_tables(40, seed=seed, bad_fraction=0.0)
    lots = tables["lots"]
    mine = pc.equal(lots.column(Col.account_id), ACCOUNT).to_numpy(zero_copy_only=False)
    basis = lots.column(Col.cost_basis).to_numpy().copy()
    basis[mine] *= 0.4
    index = lots.schema.get_field_index(Col.cost_basis)
    tables["lots"] = lots.set_column(index, lots.schema.field(index), pa.array(basis))
    accounts = tables["accounts"]
    template = np.asarray(accounts.column(Col.template_id).to_pylist(), dtype=object)
    template[np.asarray(accounts.column(Col.account_id).to_pylist(), dtype=object) == ACCOUNT] = "T15"
    index = accounts.schema.get_field_index(Col.template_id)
    tables["accounts"] = accounts.set_column(index, accounts.schema.field(index), pa.array(template, pa.string()))
    write_book(path, synth.AS_OF, tables, overwrite=True)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--years", type=int, default=6)
    parser.add_argument("--tax-budget", type=float, default=6000.0)
    parser.add_argument("--book", default="benchmarks/books/transition")
    parser.add_argument("--out", default="benchmarks/results/transition")
    parser.add_argument("--config", default="canopy.toml")
    args = parser.parse_args()
    legacy_book(args.book)
    return subprocess.call([sys.executable, "-m", "engine.cli", "transition", "--book", args.book,
                            "--account", ACCOUNT, "--years", str(args.years), "--tax-budget", str(args.tax_budget),
                            "--config", args.config, "--out", args.out])


if __name__ == "__main__":
    sys.exit(main())
