"""``canopy warmup``: compile the solver's programs for a book's shapes into the persistent cache.

A new install (or a new version: the exports are keyed by the solver's source) compiles every
shape its first night and its first what-ifs meet, 10–20 s each.  The warm-up does it ahead,
for the shapes of a book as its night plans them (:func:`engine.rebalance.shards.plan_shards`
on the shape ladder of :mod:`engine.solver.shapes`), into the cache both read
(``JAX_COMPILATION_CACHE_DIR``, default :func:`engine.contract.config.default_compilation_cache`):

* the night's programs: one shard of each shape, solved in a child process with a solver
  actor's settings (:func:`engine.actors.nightly.compile_shapes`; XLA keys its programs by
  those settings, so they must be the actors');
* the what-if's programs: in this process (the settings of ``canopy whatif``), tonight's
  proposal for one account of each shape (:meth:`engine.simulate.whatif.WhatIfSession.warm_up`).

    python -m engine.warmup --book BOOK [--config canopy.toml]      # what canopy warmup runs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any, Mapping

from engine.contract.config import default_compilation_cache, load_config
from engine.contract.errors import RunError

__all__ = ["warm_up"]


def _night(book: str, config_path: str | None, storage_options: str | None) -> dict[str, Any]:
    """:func:`engine.actors.nightly.compile_shapes` in a child process with an actor's environment."""
    from engine.actors.local import has_gpu
    from engine.actors.solver import actor_env

    command = [sys.executable, "-m", "engine.warmup", "--night", "--book", book]
    command += ["--config", config_path] if config_path else []
    command += ["--storage-options", storage_options] if storage_options else []
    env = {**os.environ, **actor_env(1 if has_gpu() else 0)}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RunError(f"the night's warm-up failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def warm_up(book: str, config_path: str | None = None, *, whatif: bool = True, night: bool = True,
            storage_options: str | None = None) -> dict[str, Any]:
    """Compile the night's and the what-if's programs for ``book``'s shapes; return what was done.

    Parameters
    ----------
    book
        Folder or fsspec URI of the book.
    config_path
        The night's canopy.toml (the what-if uses its own solver settings,
        :data:`engine.simulate.whatif.WHATIF_SOLVER`, as ``canopy whatif`` does).
    whatif, night
        Which programs to compile.
    storage_options
        fsspec options as JSON.

    Returns
    -------
    dict
        ``cache`` (the directory), ``night`` (shapes, their first accounts, seconds) and
        ``whatif`` (per account, seconds).
    """
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", default_compilation_cache())
    done: dict[str, Any] = {"cache": os.environ["JAX_COMPILATION_CACHE_DIR"]}
    if night:
        done["night"] = _night(book, config_path, storage_options)
    if whatif:
        from engine.book.storage import read_book, storage_options_from
        from engine.simulate.whatif import WhatIfSession

        accounts = done["night"]["accounts"] if night else _first_accounts(book, config_path, storage_options)
        session = WhatIfSession(read_book(book, storage_options=storage_options_from(storage_options)))
        done["whatif"] = {}
        for account in accounts:
            start = time.perf_counter()
            session.warm_up(account)
            done["whatif"][account] = time.perf_counter() - start
    return done


def _first_accounts(book: str, config_path: str | None, storage_options: str | None) -> list[str]:
    """One usable account of each shape the night of ``book`` plans."""
    from engine.book.storage import read_book, storage_options_from
    from engine.rebalance.shards import household_transactions, plan_shards
    from engine.rebalance.targets import build_targets

    config = load_config(config_path)
    loaded = read_book(book, config.policy, storage_options_from(storage_options))
    targets = build_targets(loaded)
    usable = targets.account_ids[targets.usable]
    first: dict = {}
    for shard in plan_shards(household_transactions(loaded.tables, usable), targets, usable, config.run):
        first.setdefault(shard.key, str(shard.account_ids[0]))
    return list(first.values())


def _night_main(args: argparse.Namespace) -> Mapping[str, Any]:
    from engine.actors.nightly import compile_shapes
    from engine.book.storage import storage_options_from

    options = storage_options_from(args.storage_options)
    return compile_shapes(args.book, load_config(args.config), storage_options=options)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m engine.warmup", description=__doc__.splitlines()[0])
    parser.add_argument("--book", required=True)
    parser.add_argument("--config", default=None)
    parser.add_argument("--storage-options", default=None)
    parser.add_argument("--night", action="store_true", help="only the night's programs, in this process")
    arguments = parser.parse_args()
    result = _night_main(arguments) if arguments.night else warm_up(arguments.book, arguments.config,
                                                                   storage_options=arguments.storage_options)
    print(json.dumps(result))
