"""Shards: households grouped by shape, the tables of each, and the work on one.

The nightly job cuts a book into shards of whole households, each solved as
one padded batch (:mod:`engine.rebalance.problem`).  A vmapped solve pads every
household to the largest of its batch and runs until its slowest member
converges, so households of like shape go together:

* ``m``: accounts in the household, padded to a power of two
  (:func:`~engine.solver.shapes.pad_accounts`);
* ``L``: most lots any of its positions holds, padded to a power of four
  (:func:`~engine.solver.shapes.pad_position_lots`);
* ``n``: securities it holds or targets, and the substitutes it can use
  (:func:`engine.rebalance.substitutes.usable`), padded to
  :func:`~engine.solver.shapes.pad_securities`' ladder (64 × 1, 2, 4, 8, 12,
  16, 24, 32, ...);
* ``P``: lots it holds, padded to
  :func:`~engine.solver.shapes.pad_household_lots`' ladder (64, 128, 256,
  ...): the solver runs on each household's real lots (the compact layout),
  so this, not ``m × n × L``, is what an iteration costs; ``L`` only sizes
  the dense arrays of assembly.

The ladders (:mod:`engine.solver.shapes`) are coarse on purpose: every
distinct shape costs a compile of 10–20 s per actor (less from JAX's
persistent cache), and a padded variable costs only its share of an
iteration.  For the same reason a shape of few households is solved in a
larger shape of the book that covers it (:func:`merge_rare_shapes`).

Within a shape, households are taken in household-id order (deterministic)
and cut into shards of at most ``RunConfig.shard_accounts`` accounts and
``RunConfig.shard_elements`` lot variables ``B × m × n × L`` (the solver's
memory), each of a power-of-two number of households (:func:`shard_sizes`):
the solver runs a batch at a power of two, so the shards of a shape share
their compiled programs.  :func:`shard_tables` slices the book's tables per shard with one
sort of each table; :func:`engine.rebalance.pipeline.solve_shard` is the work of one
shard.  Pure: no storage, no ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.contract.arrow import index_in, one_chunk, unique_sorted
from engine.contract.config import RunConfig
from engine.contract.schema import ACCOUNT_TABLES, Col
from engine.rebalance import substitutes
from engine.rebalance.targets import Targets
from engine.solver.shapes import MIN_BUCKET, pad_accounts, pad_household_lots, pad_position_lots, pad_securities

#: The tables every shard shares (the driver ``ray.put``s them once; ``substitutes`` is optional).
SHARED_TABLES = ("securities", "factor_exposures", "factor_covariance", "models", "templates", "substitutes")

__all__ = ["Shard", "HouseholdShapes", "household_shapes", "plan_shards", "merge_rare_shapes", "cap_solver_shapes",
           "shape_work", "shard_sizes", "shard_tables", "household_ids", "household_transactions",
           "SHARED_TABLES", "ACCOUNT_TABLES"]


@dataclass(frozen=True)
class Shard:
    """Whole households of one shape.

    Attributes
    ----------
    shard_id : int
        Position in the plan (results are written in this order).
    account_ids : (a,) object
        The shard's accounts, household by household.
    households : int
    shape : (m, L, n)
        Accounts per household, lots per position and securities, padded.
    lots : int
        Lots per household of the solver's compact layout, P, padded (0: the
        batch's own most).
    """

    shard_id: int
    account_ids: np.ndarray
    households: int
    shape: tuple[int, int, int]
    lots: int = 0

    @property
    def accounts(self) -> int:
        return int(self.account_ids.size)

    @property
    def key(self) -> tuple[int, int, int, int]:
        """(m, L, n, P): what the solver compiles for (shards of one key share their programs)."""
        return self.shape + (self.lots,)

    @property
    def work(self) -> int:
        """The shard's share of the solver's work: :func:`shape_work` times its households."""
        return self.households * shape_work(self.key)


#: A rare shape joins a larger one where that costs a household at most this many times its
#: own shape's work (:func:`merge_rare_shapes`).
MERGE_GROWTH = 4.0


def shape_work(key) -> int:
    """What one household's iteration costs at shape ``key`` = (m, L, n, P): positions plus lots, ``m·n + P``.

    The interior-point iteration passes over the compact layout's lots and over the
    household's positions; on the 10,000-account book's shards a household-iteration took
    0.10 ms at (1, 16, 64, 64), 0.36 at (1, 16, 768, 1024) and 0.88 at (4, 16, 768, 2048).
    """
    m, _, n, P = key
    return m * n + P


def merge_rare_shapes(keys: np.ndarray, least: int = RunConfig.min_shape_households,
                      growth: float = MERGE_GROWTH) -> np.ndarray:
    """Each household's shape (rows of (m, L, n, P)), a rare shape moved into a larger one.

    Every shape an actor meets costs it its programs: 0.6–7.5 s even from JAX's persistent
    cache (tracing, lowering and loading each of its jitted steps at each batch size; measured
    before :mod:`engine.solver.programs` kept their exports, which spare most of the tracing
    and lowering), which a shape of a household or two pays alone; a household solved padded
    to a larger shape costs only its iterations there.  So a shape held by fewer than
    ``least`` households joins, of the shapes that cover it (every one of m, L, n and P at
    least its own), the one of least :func:`shape_work` where that is at most ``growth`` times
    its own.  The shapes of ``least`` households or more are candidates first; then, the rare
    shapes from the most work down, each left in place is one for the rarer ones after it (the
    few households with 64 lots in one position gather in one or two shapes).
    Padding is what the ladders do anyway: the solve of a household does not change with it,
    beyond rounding.  ``least`` 0 leaves every shape as it is.
    """
    keys = np.asarray(keys, np.int64).reshape(-1, 4)
    if keys.size == 0 or least <= 1:
        return keys
    shapes, member, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    member = member.reshape(-1)
    work = np.array([shape_work(k) for k in shapes], np.float64)
    target = np.arange(len(shapes))
    kept = list(np.flatnonzero(counts >= least))
    for rare in sorted(np.flatnonzero(counts < least), key=lambda i: (-work[i], tuple(shapes[i]))):
        covers = [k for k in kept if (shapes[k] >= shapes[rare]).all() and work[k] <= growth * work[rare]]
        if covers:
            target[rare] = min(covers, key=lambda k: (work[k], tuple(shapes[k])))
        else:
            kept.append(rare)
    return shapes[target[member]]


def cap_solver_shapes(keys: np.ndarray, most: int = RunConfig.max_solver_shapes) -> np.ndarray:
    """Each household's shape (rows of (m, L, n, P)), padded so that at most ``most`` solver shapes remain.

    The solver compiles its programs per (m, n, P) (``L`` only sizes assembly's dense arrays),
    and every such shape costs each actor that meets it its programs: compiled on a fresh
    install's first night, loaded from the cache on later ones.  While there are more than
    ``most``, the two whose join (the larger of each of m, n and P) adds the least
    :func:`shape_work` over their households are solved at that join.  Each household keeps
    its ``L``.  ``most`` 0 leaves every shape as it is.
    """
    keys = np.array(keys, np.int64).reshape(-1, 4)
    if keys.size == 0 or most <= 0:
        return keys
    solver = keys[:, [0, 2, 3]]
    shapes, member, counts = np.unique(solver, axis=0, return_inverse=True, return_counts=True)
    shapes, counts, member = [tuple(map(int, k)) for k in shapes], list(map(int, counts)), member.reshape(-1)
    target = list(range(len(shapes)))

    def work(shape):
        m, n, P = shape
        return shape_work((m, 0, n, P))

    while len(set(target)) > most:
        live = sorted(set(target))
        best = None
        for i, a in enumerate(live):
            for b in live[i + 1:]:
                join = tuple(max(x, y) for x, y in zip(shapes[a], shapes[b]))
                added = sum(counts[s] * (work(join) - work(shapes[s])) for s in range(len(shapes))
                            if target[s] in (a, b))
                if best is None or (added, join) < best[:2]:
                    best = (added, join, a, b)
        _, join, a, b = best
        if join not in shapes:
            shapes.append(join)
            counts.append(0)
            target.append(len(shapes) - 1)
        to = shapes.index(join)
        target = [to if t in (a, b) else t for t in target]
    final = np.array([shapes[target[k]] for k in member], np.int64).reshape(-1, 3)
    keys[:, 0], keys[:, 2], keys[:, 3] = final[:, 0], final[:, 1], final[:, 2]
    return keys


def _household_ids(accounts: pa.Table) -> np.ndarray:
    """``household_id``, or the account's own id where it is null."""
    return np.asarray(pc.coalesce(accounts.column(Col.household_id),
                                  accounts.column(Col.account_id)).to_pylist(), dtype=object)


def household_ids(accounts: pa.Table, account_ids) -> np.ndarray:
    """The household of each of ``account_ids`` (rows of ``accounts``), in that order."""
    rows = index_in(account_ids, accounts.column(Col.account_id).combine_chunks())
    return _household_ids(accounts.take(pa.array(rows)))


def household_transactions(tables: Mapping[str, pa.Table], account_ids) -> dict[str, pa.Table]:
    """The tables with every household's recent trades attributed to an account that is solved.

    The wash-sale windows are the household's (docs/contract.md §3 rule 6): a loss
    sale or purchase of a member that is not solved (rejected) still blocks
    its household-mates.  Its ``transactions`` rows are relabelled to the
    household's first solved account, so they travel with the household's shard,
    and name the member in an added ``traded_by`` column (null on the others'
    rows): a purchase it made cannot be sold today, so a screen that meets it waits
    (:mod:`engine.rebalance.screen_window`).
    """
    accounts = tables["accounts"]
    ids = np.asarray(accounts.column(Col.account_id).to_pylist(), dtype=object)
    households = _household_ids(accounts)
    solved = set(account_ids)
    stand_in: dict[str, str] = {}
    for account_id, household in zip(ids, households):
        if account_id in solved:
            stand_in.setdefault(household, account_id)
    relabel = {a: stand_in[h] for a, h in zip(ids, households) if a not in solved and h in stand_in}
    transactions = tables["transactions"]
    if not relabel or transactions.num_rows == 0:
        return dict(tables)
    column = transactions.column(Col.account_id)
    traders = column.to_pylist()
    moved = pa.array([relabel.get(a, a) for a in traders], column.type)
    index = transactions.schema.get_field_index(Col.account_id)
    transactions = transactions.set_column(index, transactions.schema.field(index), moved)
    traded_by = pa.array([a if a in relabel else None for a in traders], pa.string())
    return {**tables, "transactions": transactions.append_column(Col.traded_by, traded_by)}


@dataclass(frozen=True)
class HouseholdShapes:
    """Each household's own shape, before rare shapes merge (:func:`household_shapes`).

    Attributes
    ----------
    account_ids : (A,) object
        The accounts, in the accounts table's order.
    households : (H,) str
        Sorted household ids.
    member : (A,) int64
        Each account's household (row of ``households``).
    keys : (H, 4) int64
        (m, L, n, P) of each household, padded by the ladders.
    securities : (H,) int64
        The securities each holds, targets or may buy as a substitute, unpadded.
    """

    account_ids: np.ndarray
    households: np.ndarray
    member: np.ndarray
    keys: np.ndarray
    securities: np.ndarray


def household_shapes(tables: Mapping[str, pa.Table], targets: Targets, account_ids) -> HouseholdShapes | None:
    """The padded shape (m, L, n, P) of each household of ``account_ids``; None for no accounts.

    ``n`` counts the securities the household holds or targets and the substitutes its
    accounts can use today (:func:`engine.rebalance.substitutes.usable`).
    """
    accounts = tables["accounts"]
    wanted = set(account_ids)
    book_ids = np.asarray(accounts.column(Col.account_id).to_pylist(), dtype=object)
    rows = np.flatnonzero([a in wanted for a in book_ids])
    ids = book_ids[rows]
    if ids.size == 0:
        return None
    household = _household_ids(accounts.take(pa.array(rows)))
    households, member = np.unique(household.astype(str), return_inverse=True)
    H = households.size
    securities = np.asarray(tables["securities"].column(Col.security_id).to_pylist(), dtype=object)
    S = max(securities.size, 1)

    lots = tables["lots"]
    lot_account = index_in(lots.column(Col.account_id), ids)
    keep = lot_account >= 0
    lot_account = lot_account[keep]
    lot_security = index_in(lots.column(Col.security_id), securities)[keep]
    positions, lots_held = unique_sorted(lot_account * S + lot_security, return_counts=True)
    position_account = positions // S
    most_lots = np.zeros(H, np.int64)
    np.maximum.at(most_lots, member[position_account], lots_held)
    household_lots = np.bincount(member[lot_account], minlength=H)

    weights = targets.weights[index_in(ids, targets.account_ids)].tocoo()
    target_security = index_in(targets.security_ids, securities)
    subs = substitutes.usable(tables, targets, ids, member).tocoo()
    pairs = unique_sorted(np.concatenate([member[position_account] * S + positions % S,
                                          member[weights.row] * S + target_security[weights.col],
                                          member[subs.row] * S + target_security[subs.col]]))
    universe = np.bincount(pairs // S, minlength=H)
    members = np.bincount(member, minlength=H)
    keys = np.stack([[pad_accounts(int(c)) for c in members], [pad_position_lots(int(c)) for c in most_lots],
                     [pad_securities(int(c)) for c in universe], [pad_household_lots(int(c)) for c in household_lots]],
                    axis=1).astype(np.int64)
    return HouseholdShapes(ids, households, member, keys, universe)


def plan_shards(tables: Mapping[str, pa.Table], targets: Targets, account_ids,
                run: RunConfig = RunConfig()) -> list[Shard]:
    """Group the households of ``account_ids`` by shape and cut them into shards.

    Parameters
    ----------
    tables
        The book's tables.
    targets
        Targets of the book (every account of ``account_ids`` has one).
    account_ids
        The accounts to solve (usable, not rejected); their households are
        the accounts sharing ``household_id``.
    run
        ``shard_accounts``, ``shard_elements`` and ``min_shape_households``.

    Returns
    -------
    list of Shard, in a deterministic order (shape, then household id).
    """
    shapes = household_shapes(tables, targets, account_ids)
    if shapes is None:
        return []
    ids, households, member = shapes.account_ids, shapes.households, shapes.member
    H = households.size
    members = np.bincount(member, minlength=H)
    m, L, n, P = cap_solver_shapes(merge_rare_shapes(shapes.keys, run.min_shape_households),
                                   run.max_solver_shapes).T
    order = np.lexsort((households, P, n, L, m))
    by_household = np.argsort(member, kind="stable")
    first = np.r_[0, np.cumsum(members)]

    keys = np.stack([m, L, n, P], axis=1)[order]
    shards: list[Shard] = []
    start = 0
    while start < H:
        key = tuple(int(k) for k in keys[start])
        end = start + int(np.argmax((keys[start:] != keys[start]).any(axis=1)) or H - start)
        per_shard = max(1, min(run.shard_accounts // key[0], run.shard_elements // (key[0] * key[1] * key[2])))
        for size in shard_sizes(end - start, per_shard):
            chosen = order[start:start + size]
            account_rows = np.concatenate([by_household[first[h]:first[h + 1]] for h in chosen])
            shards.append(Shard(len(shards), ids[account_rows], int(chosen.size), key[:3], key[3]))
            start += size
    return shards


def shard_sizes(households: int, most: int) -> list[int]:
    """Cut ``households`` of one shape into shards of powers of two, each at most ``most``.

    The solver runs a batch at a power-of-two size (:func:`engine.solver.solve`
    pads it), and each size compiles its programs once per shape: shards of
    128, 128 and 16 households share the programs that the solver's
    compaction uses anyway, where shards of 144 would each compile their
    own.  Full shards come first, then the rest in falling powers of two;
    a last rest of fewer than :data:`~engine.solver.shapes.MIN_BUCKET`
    households is a shard of its own (the nightly job's actors run it
    padded to that: ``engine.rebalance.pipeline.solve_shard(households=...)``).
    """
    full = 1 << (max(most, 1).bit_length() - 1)
    sizes = [full] * (households // full)
    rest = households % full
    while rest >= MIN_BUCKET:
        sizes.append(1 << (rest.bit_length() - 1))
        rest -= sizes[-1]
    return sizes + [rest] * (rest > 0)


def shard_tables(tables: Mapping[str, pa.Table], shards: list[Shard]) -> Iterator[dict[str, pa.Table]]:
    """The per-account tables of each shard, in the order of ``shards``.

    Each table is sorted by shard once, here (a few seconds for a book of 33 million lots,
    spent before the first shard is asked for); a shard's rows are then one slice.
    """
    all_ids = np.concatenate([s.account_ids for s in shards]) if shards else np.zeros(0, object)
    shard_of = np.concatenate([np.full(s.accounts, i) for i, s in enumerate(shards)]) \
        if shards else np.zeros(0, np.int64)
    cuts = {}
    for name in ACCOUNT_TABLES:
        table = tables[name]
        position = index_in(table.column(Col.account_id), all_ids)
        code = np.where(position >= 0, shard_of[np.maximum(position, 0)] if all_ids.size else -1, -1)
        # the narrowest type: NumPy's stable sort of 16-bit keys is a radix sort (0.3 s for the
        # 100,000-account book's 33 million lots, against 2.7 s for int64 keys)
        order = np.argsort(code.astype(np.int16 if len(shards) < 2**15 else np.int64), kind="stable")
        bounds = np.searchsorted(code[order], np.arange(len(shards) + 1))
        cuts[name] = (one_chunk(table), order, bounds)
    return _slices(cuts, len(shards))


def _slices(cuts: Mapping[str, tuple[pa.Table, np.ndarray, np.ndarray]], count: int
            ) -> Iterator[dict[str, pa.Table]]:
    for i in range(count):
        yield {name: table.take(pa.array(order[bounds[i]:bounds[i + 1]]))
               for name, (table, order, bounds) in cuts.items()}
