"""What an executor of the nightly job does with shards, Ray or not: the work items, the bookkeeping of
one run, and what follows a failed try.

Both executors (:class:`engine.actors.dispatch.Dispatcher`, Ray's actor pool, and
:class:`engine.actors.local.LocalExecutor`, one process) draw shards a few ahead of need
(:class:`Flight`), and charge a failed try the same way (:class:`Retries`): the shard is tried
again up to ``RunConfig.max_task_retries`` tries, then its households alone, and a household
that fails every try is ``failed``; more than ``RunConfig.max_failed_accounts`` failed accounts
stop the run.  Imports no ray.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import pyarrow as pa

from engine.contract.config import RunConfig
from engine.contract.errors import RunError
from engine.rebalance.shards import Shard, shard_tables
from engine.rebalance.targets import Targets

__all__ = ["Failure", "Flight", "Retries", "Work", "error_text", "split_households"]


@dataclass
class Work:
    shard: Shard
    tables: dict[str, pa.Table]
    targets: Targets
    tries: int = 0
    errors: list[str] = field(default_factory=list)
    ref: object | None = None                  # Ray: the tables in the object store, put once


@dataclass
class Flight:
    """The bookkeeping of one executor run: shards drawn, sent, and failed."""

    source: Iterator[tuple[Shard, dict[str, pa.Table], Targets]]
    ahead: int                                 # shards drawn ahead of need, at most
    queue: collections.deque[Work] = field(default_factory=collections.deque)    # retries at the front
    exhausted: bool = False                    # ``source`` has no more shards
    pending: dict = field(default_factory=dict)  # Ray: object ref → (item, actor, number)
    in_flight: dict[object, int] = field(default_factory=lambda: collections.defaultdict(int))
    shapes: dict[object, set] = field(default_factory=lambda: collections.defaultdict(set))  # actor → its shapes
    failures: list[Failure] = field(default_factory=list)
    failed_accounts: int = 0
    lonely_since: float | None = None          # since when no actor has been alive

    def draw(self) -> None:
        """Queue shards from ``source`` until ``ahead`` are queued or it runs out."""
        while len(self.queue) < self.ahead and not self.exhausted:
            try:
                shard, tables, targets = next(self.source)
                self.queue.append(Work(shard, tables, targets))
            except StopIteration:
                self.exhausted = True

    @property
    def finished(self) -> bool:
        """Every shard drawn, sent and answered."""
        return not self.pending and not self.queue and self.exhausted


@dataclass(frozen=True)
class Failure:
    """Accounts that could not be solved, and why."""

    account_ids: np.ndarray
    detail: str


def error_text(exc: BaseException) -> str:
    """An error in one line: its type and its last line, at most 500 characters."""
    text = str(exc).strip().splitlines()
    kind = type(exc).__name__
    last = next((line for line in reversed(text) if line.strip()), "")
    return f"{kind}: {last}"[:500]


class Retries:
    """What follows a failed try of a shard (``run_config``: the run's :class:`RunConfig`)."""

    run_config: RunConfig

    def _charge(self, flight: Flight, item: Work, exc: BaseException) -> None:
        """``item`` failed a try: queue what comes next, and fail its household when it has no try left.

        Raises
        ------
        RunError
            More failed accounts than ``max_failed_accounts``.
        """
        item.tries += 1
        item.errors.append(error_text(exc))
        for retry in self._after_failure(item):
            flight.queue.appendleft(retry)
        if item.tries >= self.run_config.max_task_retries and item.shard.households == 1:
            flight.failures.append(Failure(item.shard.account_ids,
                                           f"the worker failed {item.tries} times on this household; "
                                           f"last error: {item.errors[-1]}"))
            flight.failed_accounts += item.shard.accounts
            if flight.failed_accounts > self.run_config.max_failed_accounts:
                raise RunError(
                    f"{flight.failed_accounts} accounts failed, more than max_failed_accounts = "
                    f"{self.run_config.max_failed_accounts}; the run stops uncommitted. "
                    f"Last error: {item.errors[-1]}")

    def _after_failure(self, item: Work) -> list[Work]:
        """What to try next after ``item`` failed: itself again, its households alone, or nothing."""
        if item.tries < self.run_config.max_task_retries:
            return [item]
        if item.shard.households == 1:
            return []
        return split_households(item)


def split_households(item: Work) -> list[Work]:
    """One work item per household of ``item``'s shard, each to be tried alone."""
    from engine.rebalance.shards import household_ids

    shard = item.shard
    households = household_ids(item.tables["accounts"], shard.account_ids)
    singles = []
    for number, household in enumerate(dict.fromkeys(households)):
        ids = shard.account_ids[households == household]
        singles.append(Shard(shard.shard_id, ids, 1, shard.shape, shard.lots))
    rows = {a: i for i, a in enumerate(item.targets.account_ids)}
    return [Work(single, tables, item.targets.take([rows[a] for a in single.account_ids]))
            for single, tables in zip(singles, shard_tables(item.tables, singles))]
