"""The pipeline: households from Arrow tables to proposals, in this process.

Every caller that solves households runs this code: the nightly job's solver actors
(:func:`solve_shard`, one shard at a time, as the driver sends them), the actors'
warm-up, the what-if session, transitions and the backtest (:func:`solve_households`,
which plans its households' shards first).  One shard's work is

1. problem assembly (:func:`engine.rebalance.problem.build_problem_batch`): targets,
   lots, tax curves, wash-sale blocks and limits into a padded :class:`ProblemBatch`;
2. the batched solve (:func:`engine.solver.solve`), warm-started where it fits;
3. proposals (:func:`engine.rebalance.proposals.propose`): lots relieved, shares
   rounded, the run's ``trades`` and ``accounts`` rows.

Pure: no storage, no ray.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pyarrow as pa

from engine.contract.config import Config
from engine.rebalance.problem import build_problem_batch
from engine.rebalance.proposals import propose
from engine.rebalance.shards import SHARED_TABLES, Shard, household_transactions, plan_shards, shard_tables
from engine.rebalance.targets import Targets
from engine.solver import program_seconds, solve
from engine.solver.shapes import pad_securities

__all__ = ["ShardOutput", "WarmStart", "solve_shard", "solve_households"]


@dataclass
class ShardOutput:
    """What one shard sends back: its run rows and where its time went (seconds)."""

    shard_id: int
    trades: pa.Table
    accounts: pa.Table
    timings: dict[str, float] = field(default_factory=dict)
    iterations: int = 0
    warm: "WarmStart | None" = None
    warm_started: bool = False  # the solve started from the ``warm`` it was given (it fit)
    worker: str = ""            # host:pid of the solver actor that ran it (the nightly job's)


@dataclass(frozen=True)
class WarmStart:
    """A solved shard's final iterate, to start a re-solve of the same households from.

    It applies only to a problem of the same padded shape over the same
    universe in the same order (a what-if that changes a screen, weights or
    cash; not one that brings new securities in): :func:`solve_shard` checks.
    """

    security_ids: np.ndarray
    account_ids: np.ndarray
    state: Any


def solve_shard(shared: Mapping[str, pa.Table], tables: Mapping[str, pa.Table], targets: Targets,
                shard: Shard, as_of: dt.date, config: Config = Config(), *,
                warm: WarmStart | None = None, keep_warm: bool = False,
                households: int | None = None) -> ShardOutput:
    """Problem assembly, solve and proposals of one shard.

    Parameters
    ----------
    shared
        The tables of :data:`~engine.rebalance.shards.SHARED_TABLES`.
    tables
        The shard's slices of :data:`~engine.rebalance.shards.ACCOUNT_TABLES` (from
        :func:`~engine.rebalance.shards.shard_tables`).
    targets
        The targets of the shard's accounts (``Targets.take``).
    shard
        Which households, and their padded shape.
    as_of, config
        The run's date and settings.
    warm
        Start the solve from this iterate where it fits the assembled problem
        (same universe and accounts; see :class:`WarmStart`), else cold.
    keep_warm
        Return the final iterate as ``ShardOutput.warm`` (what-ifs keep it).
    households
        Solve the batch padded to at least this many households (see
        :func:`engine.solver.solve`): the nightly job's actors run a shard
        of one to three households at four, with the programs its shape's
        larger shards already have, where a what-if or a backtest step of
        one household runs alone.
    """
    timings = {}
    clock = time.perf_counter()
    book = {**shared, **tables}
    m, L, n = shard.shape
    problem, index = build_problem_batch(book, targets, shard.account_ids, as_of, config.policy,
                                         accounts_per_household=m, lots_per_position=L,
                                         pad_universe=lambda count: max(n, pad_securities(count)))
    timings["assemble"] = time.perf_counter() - clock
    clock = time.perf_counter()
    fits = (warm is not None and np.array_equal(warm.security_ids, index.security_ids)
            and np.array_equal(warm.account_ids, index.account_ids))
    programs = program_seconds()
    result = solve(problem, config.solver, warm.state if fits else None, lots=shard.lots or None,
                   households=households)
    timings["solve"] = time.perf_counter() - clock
    timings["programs"] = program_seconds() - programs      # part of "solve"
    clock = time.perf_counter()
    trades, accounts = propose(book, targets, problem, index, result, as_of, config.policy)
    timings["propose"] = time.perf_counter() - clock
    kept = None
    if keep_warm:  # a host copy: the solver donates the device buffers of the state it starts from
        kept = WarmStart(index.security_ids, index.account_ids,
                         type(result.state)(*(np.array(v) for v in result.state)))
    return ShardOutput(shard.shard_id, trades, accounts, timings, int(np.asarray(result.iterations).sum()), kept,
                       warm_started=fits)


def solve_households(tables: Mapping[str, pa.Table], targets: Targets, account_ids, as_of: dt.date,
                     config: Config = Config(), *, warm: WarmStart | None = None,
                     keep_warm: bool = False) -> list[ShardOutput]:
    """Plan the shards of ``account_ids``' households and solve them one after the other.

    Parameters
    ----------
    tables
        The book's tables (every table of the contract; at least the rows of these accounts).
    targets
        Targets of the book, or of at least ``account_ids``.
    account_ids
        The accounts to solve: usable, and whole households.  A household-mate left
        out (rejected) still blocks its mates' wash-sale windows
        (:func:`~engine.rebalance.shards.household_transactions`).
    as_of, config, warm, keep_warm
        As :func:`solve_shard` (``warm`` is tried on every shard; it fits one at most).

    Returns
    -------
    list of ShardOutput, in the plan's order.
    """
    tables = household_transactions(tables, account_ids)
    shards = plan_shards(tables, targets, account_ids, config.run)
    shared = {name: tables[name] for name in SHARED_TABLES if name in tables}   # substitutes: optional
    return [solve_shard(shared, part, targets.of(shard.account_ids), shard, as_of, config,
                        warm=warm, keep_warm=keep_warm)
            for shard, part in zip(shards, shard_tables(tables, shards))]
