"""``canopy warmup`` (engine.warmup): the night's and the what-if's programs compiled ahead, so that a
later process loads them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.book import synth
from engine.warmup import _first_accounts

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("book") / "book")
    synth.generate(path, 12, seed=3, bad_fraction=0.0)
    return path


def test_one_account_of_each_shape_the_night_plans(book):
    from engine.book.storage import read_book
    from engine.contract.config import RunConfig
    from engine.rebalance.shards import household_transactions, plan_shards
    from engine.rebalance.targets import build_targets

    accounts = _first_accounts(book, None, None)
    loaded = read_book(book)
    targets = build_targets(loaded)
    usable = targets.account_ids[targets.usable]
    shards = plan_shards(household_transactions(loaded.tables, usable), targets, usable, RunConfig())
    assert len(accounts) == len({s.key for s in shards}) >= 1
    assert set(accounts) <= set(usable.tolist())


@pytest.mark.slow
def test_after_the_warm_up_a_new_process_compiles_nothing(book, tmp_path):
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    warm = subprocess.run([sys.executable, "-m", "engine.warmup", "--book", book], env=env, capture_output=True,
                          text=True, timeout=1800)
    assert warm.returncode == 0, warm.stderr[-3000:]
    done = json.loads(warm.stdout.strip().splitlines()[-1])
    assert done["night"]["failed"] == 0 and done["night"]["shapes"]
    account = done["night"]["accounts"][0]
    script = ("import time; from engine.simulate.whatif import WhatIfSession; from engine.book.storage import "
              "read_book; from engine.solver import program_seconds; "
              f"s = WhatIfSession(read_book({book!r})); s.warm_up({account!r}); print(program_seconds())")
    later = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert later.returncode == 0, later.stderr[-3000:]
    # loading the programs from the cache, not compiling them (10-20 s each)
    assert float(later.stdout.strip().splitlines()[-1]) < 5.0
