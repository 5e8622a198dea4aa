"""The nightly job's driver: read the book, shard its households over solver actors,
write the proposal run atomically.

:func:`run_nightly` runs it on the Ray instance this process has joined
(:func:`ray_connection` joins ``RAY_ADDRESS`` or starts a local one), or with
``executor="local"`` in this process alone, without Ray
(:class:`engine.actors.local.LocalExecutor`: a node where Ray is not installed, a GPU
node); ``canopy run`` and the Ray job entry point ``python -m jobs.nightly`` call it
(:func:`executor_connection`).  Ray is imported only by the Ray executor.

Stages, each timed in the manifest:

1. ``read``: :func:`engine.book.storage.read_book` (whole-book problems stop here,
   before anything is written; a committed date stops here too unless
   ``--replace``);
2. ``targets``: :func:`engine.rebalance.targets.build_targets` for the whole book;
3. ``plan``: :func:`engine.rebalance.shards.plan_shards` groups households by shape;
4. ``solve``: :class:`engine.actors.dispatch.Dispatcher` ships each shard's
   tables to the actors (a bounded number in flight) and gathers the run rows
   (the local executor solves them here, one after another);
5. ``write``: the rows, sorted (same book and config, same files), go to
   staging; ``manifest.json``; then ``_SUCCESS`` (:class:`engine.book.runs.RunWriter`).
"""

from __future__ import annotations

import collections
import contextlib
import importlib
import logging
import os
import sys
import time
from importlib import metadata
from typing import Any, Callable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.actors.memory import keep_freed_memory
from engine.book.runs import RunWriter
from engine.book.storage import read_book
from engine.contract import arrow, schema
from engine.contract.config import Config
from engine.contract.errors import ConfigError, RunError
from engine.contract.schema import Col, Side, Status
from engine.rebalance.pipeline import ShardOutput
from engine.rebalance.proposals import status_rows
from engine.rebalance.shards import SHARED_TABLES, Shard, household_transactions, plan_shards, shard_tables
from engine.rebalance.targets import build_targets

log = logging.getLogger("canopy.nightly")

#: Rows per part file of the run's tables.
PART_ROWS = 1_000_000
#: The executors of :func:`run_nightly`; ``auto`` is Ray where it is installed, else local.
EXECUTORS = ("auto", "ray", "local")


def choose_executor(executor: str) -> str:
    """``ray`` or ``local``: ``executor`` itself, or for ``auto``, Ray where it can be imported.

    Raises
    ------
    ConfigError
        An executor that is not one of :data:`EXECUTORS`.
    """
    if executor not in EXECUTORS:
        raise ConfigError(f"executor is {executor!r}: use one of {', '.join(EXECUTORS)}")
    if executor != "auto":
        return executor
    try:
        importlib.import_module("ray")
    except ImportError:              # not installed, or installed but broken: run without it
        return "local"
    return "ray"


def engine_version() -> str:
    try:
        return metadata.version("canopy-rebalance")
    except metadata.PackageNotFoundError:
        return "unknown"


class Progress:
    """A progress bar on a terminal, a log line every ``interval`` seconds otherwise."""

    def __init__(self, total: int, enabled: bool | None = None, interval: float = 10.0):
        self.total, self.done, self.interval = total, 0, interval
        self.start = self.last = time.monotonic()
        self.bar = None
        if enabled is None:
            enabled = sys.stderr.isatty()
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn
            from rich.progress import Progress as Bar
            from rich.progress import TextColumn, TimeElapsedColumn, TimeRemainingColumn
            self.bar = Bar(TextColumn("solving"), BarColumn(), MofNCompleteColumn(), TextColumn("accounts"),
                           TimeElapsedColumn(), TimeRemainingColumn(), transient=True)
            self.task = self.bar.add_task("accounts", total=total)
            self.bar.start()

    def advance(self, accounts: int) -> None:
        self.done += accounts
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done)
            return
        now = time.monotonic()
        if now - self.last >= self.interval or self.done >= self.total:
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            log.info("solved %d of %d accounts (%.0f accounts/s)", self.done, self.total, rate)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def dispatch_order(shards: list[Shard]) -> list[Shard]:
    """Shards by shape, the shape of most work first, and within a shape the largest first.

    The dispatcher keeps a shape with one actor where it can (each shape an
    actor meets costs it its compiled programs), and the largest work goes
    first, so that the last shards to finish are small and no actor idles
    long at the end.  The output does not depend on the order: rows are
    sorted before writing.
    """
    total = collections.Counter()
    for s in shards:
        total[s.key] += s.work
    return sorted(shards, key=lambda s: (-total[s.key], s.key, -s.work, s.shard_id))


def _shapes_per_actor(shards: list[Shard], outputs: list[ShardOutput]) -> list[int]:
    """How many shard shapes each actor met (each costs it its compiled programs), most first."""
    shape = {s.shard_id: s.key for s in shards}
    met = collections.defaultdict(set)
    for output in outputs:
        met[output.worker].add(shape[output.shard_id])
    return sorted((len(v) for v in met.values()), reverse=True)


def _sorted(table: pa.Table, keys: list[str]) -> pa.Table:
    """``table`` sorted by ``keys``, in one chunk.

    The run's rows arrive in a chunk per shard, and Arrow's ``take`` from a table of many
    chunks costs with every chunk (:func:`engine.contract.arrow.one_chunk`): sorting the
    100,000-account night's 11.5 million trades in their 2,359 chunks took 20 s, 16 s of it
    in ``take``.
    """
    if table.num_rows == 0:
        return table
    return arrow.one_chunk(table).sort_by([(k, "ascending") for k in keys])


def _write(writer: RunWriter, name: str, table: pa.Table) -> None:
    for start in range(0, max(table.num_rows, 1), PART_ROWS):
        writer.write(name, table.slice(start, PART_ROWS))


def _rejection_details(rejections: pa.Table) -> dict[str, str]:
    """Per rejected account, its problems in words (the first three, and how many more)."""
    messages: dict[str, list[str]] = collections.defaultdict(list)
    for account_id, message in zip(rejections.column(Col.account_id).to_pylist(),
                                   rejections.column(Col.message).to_pylist()):
        if account_id is not None:
            messages[account_id].append(message)
    details = {}
    for account_id, found in messages.items():
        more = f" (and {len(found) - 3} more)" if len(found) > 3 else ""
        details[account_id] = "rejected: " + "; ".join(found[:3]) + more
    return details


def summarize(accounts: pa.Table, trades: pa.Table) -> dict[str, Any]:
    """Counts and totals of a run: accounts by status, trades, taxes, harvested losses."""
    statuses = accounts.column(Col.status).to_pylist()
    counts = collections.Counter(statuses)
    sells = trades.filter(pc.equal(trades.column(Col.side), Side.sell)) if trades.num_rows else trades

    def total(table: pa.Table, name: str) -> float:
        return float(pc.sum(table.column(name)).as_py() or 0.0) if table.num_rows else 0.0

    return {"accounts": accounts.num_rows,
            "accounts_by_status": {s: counts.get(s, 0) for s in Status.all},
            "trades": trades.num_rows,
            "traded_value": total(trades, Col.value),
            Col.est_tax: total(accounts, Col.est_tax),
            "realized_gain": total(sells, Col.realized_gain),
            Col.harvested_loss: total(accounts, Col.harvested_loss),
            Col.tax_saved: total(accounts, Col.tax_saved)}


def run_nightly(book: str, out: str, config: Config = Config(), *, replace: bool = False,
                storage_options: Mapping[str, Any] | None = None, progress: bool | None = None,
                actors: int | None = None, on_result: Callable[[ShardOutput], None] | None = None,
                executor: str = "ray") -> dict[str, Any]:
    """Run the nightly job on the Ray instance already initialized, or in this process; return the
    committed manifest.

    This process, and each solver actor, keeps the memory it frees for its own next use
    (:func:`engine.actors.memory.keep_freed_memory`; ``CANOPY_KEEP_FREED_MEMORY=0`` to not).

    Parameters
    ----------
    book, out
        Folder or fsspec URI of the book, and of the runs (``OUT/as_of=YYYY-MM-DD/``).
    config
        Policy, solver and run settings.
    replace
        Replace a run already committed for the book's date (readers never see a mix).
    storage_options
        fsspec options for both URIs (e.g. an S3 endpoint and keys).
    progress
        A progress bar (True), log lines (False), or whichever suits stderr (None).
    actors
        Number of solver actors (default: one per CPU or GPU of the cluster).
    on_result
        Called with each shard's output as it arrives (monitoring, tests).
    executor
        ``ray`` (the solver actors of the Ray instance this process joined), ``local``
        (this process, :class:`~engine.actors.local.LocalExecutor`; Ray is not imported), or
        ``auto`` (:func:`choose_executor`).

    Raises
    ------
    BookError, SchemaError
        The whole book is unusable; nothing is written.
    RunError
        The date is committed already (without ``replace``), or too many
        accounts failed; nothing is committed.
    """
    executor = choose_executor(executor)
    if executor == "ray":
        import ray

        if not ray.is_initialized():
            raise RunError("Ray is not initialized: call ray.init() first, use ray_connection() / canopy run, "
                           "or run with executor='local'")
    keep_freed_memory()
    timings: dict[str, float] = {}
    started = time.perf_counter()
    clock = time.perf_counter()
    loaded = read_book(book, config.policy, storage_options)
    writer = RunWriter(out, loaded.as_of, replace=replace, storage_options=storage_options)
    timings["read"] = time.perf_counter() - clock
    log.info("read %s: %d accounts, %d lots (%.1f s)", book, loaded.accounts.num_rows,
             loaded.lots.num_rows, timings["read"])
    try:
        manifest = _run(loaded, writer, config, timings, progress, actors, on_result, executor)
    except BaseException:
        writer.abort()
        raise
    timings["total"] = time.perf_counter() - started
    return manifest


def _run(loaded, writer: RunWriter, config: Config, timings: dict[str, float], progress, actors,
         on_result, executor: str = "ray") -> dict[str, Any]:
    if executor == "local":
        from engine.actors.local import LocalExecutor as Dispatcher
    else:
        from engine.actors.dispatch import Dispatcher

    # Ray's actors start (import, warm up) while this process builds the targets and plans
    dispatcher = Dispatcher({name: loaded.tables[name] for name in SHARED_TABLES}, loaded.as_of, config, actors)
    try:
        return _solve_and_write(loaded, writer, config, timings, progress, on_result, dispatcher)
    finally:
        dispatcher.shutdown()


def _solve_and_write(loaded, writer: RunWriter, config: Config, timings: dict[str, float], progress,
                     on_result, dispatcher) -> dict[str, Any]:
    """The stages after ``read``: targets, plan, solve, write; return the committed manifest."""
    tables = loaded.tables
    clock = time.perf_counter()
    targets = build_targets(loaded, policy=config.policy)
    rejections = pa.concat_tables([loaded.rejections, targets.rejections.cast(loaded.rejections.schema)])
    details = _rejection_details(rejections)
    usable = targets.account_ids[targets.usable & ~np.isin(targets.account_ids, list(details))]
    timings["targets"] = time.perf_counter() - clock

    clock = time.perf_counter()
    tables = household_transactions(tables, usable)
    shards = plan_shards(tables, targets, usable, config.run)
    row_of = {a: i for i, a in enumerate(targets.account_ids)}
    shapes = collections.Counter(s.key for s in shards)
    ordered = dispatch_order(shards)
    slices = shard_tables(tables, ordered)
    timings["plan"] = time.perf_counter() - clock
    log.info("%d usable accounts in %d shards of %d shapes; %d rejected", usable.size, len(shards),
             len(shapes), len(details))

    clock = time.perf_counter()
    work = ((shard, part, targets.take([row_of[a] for a in shard.account_ids]))
            for shard, part in zip(ordered, slices))
    outputs, failures, stage_time = _solve(dispatcher, work, int(usable.size), progress, on_result)
    timings["solve"] = time.perf_counter() - clock
    timings.update({f"solve.{stage}": seconds for stage, seconds in stage_time.items()})

    clock = time.perf_counter()
    unsolved = _unsolved_rows(loaded, targets, details, failures)
    accounts, trades = _run_tables(outputs, unsolved)
    if accounts.num_rows != loaded.accounts.num_rows:
        raise RunError(f"the run has {accounts.num_rows} account rows for {loaded.accounts.num_rows} accounts "
                       f"in the book; nothing is committed")
    _write(writer, "trades", trades)
    _write(writer, "accounts", accounts)
    _write(writer, "rejections", rejections)
    summary = summarize(accounts, trades)
    timings["write"] = time.perf_counter() - clock
    manifest = _manifest(loaded, config, summary, shards, shapes, dispatcher, outputs, failures, timings)
    written = writer.commit(manifest)
    timings["write"] = time.perf_counter() - clock
    written["timings"] = {k: round(v, 3) for k, v in timings.items()}
    return written


def _solve(dispatcher, work, accounts: int, progress, on_result
           ) -> tuple[list[ShardOutput], list, dict[str, float]]:
    """Run ``work`` (shard, tables, targets) on the dispatcher's actors, showing progress over ``accounts``.

    Returns the shard outputs in the order they arrived, the dispatcher's
    failures, and the seconds the shards spent in each of their stages, summed.
    """
    outputs: list[ShardOutput] = []
    stage_time: dict[str, float] = collections.defaultdict(float)
    bar = Progress(accounts, enabled=progress)

    def collect(output: ShardOutput) -> None:
        outputs.append(output)
        for stage, seconds in output.timings.items():
            stage_time[stage] += seconds
        bar.advance(output.accounts.num_rows)
        if on_result is not None:
            on_result(output)

    try:
        failures = dispatcher.run(work, collect)
    finally:
        bar.close()
        dispatcher.shutdown()
    return outputs, failures, stage_time


def _unsolved_rows(loaded, targets, details: Mapping[str, str], failures) -> list[pa.Table]:
    """The accounts rows of the accounts not solved: the rejected (with their problems) and the failed."""
    parts = []
    rejected_ids = [a for a, usable in zip(targets.account_ids, targets.usable) if a in details or not usable]
    if rejected_ids:
        parts.append(status_rows(loaded.accounts, rejected_ids, Status.rejected,
                                 [details.get(a, "rejected: the account has no usable target") for a in rejected_ids],
                                 loaded.as_of, lots=loaded.lots, securities=loaded.securities))
    for failure in failures:
        parts.append(status_rows(loaded.accounts, list(failure.account_ids), Status.failed,
                                 [failure.detail] * failure.account_ids.size, loaded.as_of,
                                 lots=loaded.lots, securities=loaded.securities))
    return parts


def _run_tables(outputs: list[ShardOutput], unsolved: list[pa.Table]) -> tuple[pa.Table, pa.Table]:
    """The run's ``accounts`` and ``trades`` tables, conformed to their schemas and sorted.

    Sorted (accounts by account; trades by account, side, security, lot),
    the same book and config write the same files whatever order the
    shards finished in.
    """
    parts = [o.accounts for o in outputs] + unsolved
    accounts = _sorted(pa.concat_tables([schema.conform(p, schema.RUN_TABLES["accounts"], name="accounts")
                                         for p in parts]) if parts else schema.empty(schema.RUN_TABLES["accounts"]),
                       [Col.account_id])
    trades = [schema.conform(o.trades, schema.RUN_TABLES["trades"], name="trades") for o in outputs]
    trades = _sorted(pa.concat_tables(trades) if trades else schema.empty(schema.RUN_TABLES["trades"]),
                     [Col.account_id, Col.side, Col.security_id, Col.lot_id])
    return accounts, trades


def _manifest(loaded, config: Config, summary: dict[str, Any], shards: list[Shard], shapes: collections.Counter,
              dispatcher, outputs: list[ShardOutput], failures, timings: dict[str, float]) -> dict[str, Any]:
    """The run's manifest: its inputs and settings, the summary, how it was sharded, failures, timings (s)."""
    return {"engine_version": engine_version(), "book": loaded.uri, "inputs": dict(loaded.fingerprints),
            "config": config.to_dict(), "summary": summary,
            "counts": summary["accounts_by_status"],
            "shards": {"count": len(shards), "shapes": {f"m={m} L={L} n={n} P={P}": c
                                                     for (m, L, n, P), c in shapes.items()},
                       "actors": dispatcher.size, "actors_started": dispatcher.started,
                       "shapes_per_actor": _shapes_per_actor(shards, outputs),
                       "iterations": int(sum(o.iterations for o in outputs))},
            "failures": [{"accounts": f.account_ids.tolist(), "detail": f.detail} for f in failures],
            "timings": {k: round(v, 3) for k, v in timings.items()}}


@contextlib.contextmanager
def ray_connection(address: str | None):
    """Connect to ``address`` (or ``RAY_ADDRESS``), else start a local instance; disconnect after.

    A Ray instance already initialized in this process is used as it is, and left running.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def compile_shapes(book: str, config: Config = Config(), *,
                   storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Solve one shard of each shape and batch size the night of ``book`` plans, in this process.

    The local executor (:class:`engine.actors.local.LocalExecutor`) takes the actors' settings and
    keeps what it compiles in the persistent compilation cache, so that a solver actor (or a
    local run) of a later process loads those programs instead of compiling them.  A shard runs
    at the batch :func:`~engine.solver.shapes.pad_batch` gives its households (at least
    :data:`~engine.solver.shapes.MIN_BUCKET`, as an actor runs it), so each (shape, batch) is
    solved once.  Nothing is written but the cache.  Returns the shapes (``m=.. L=.. n=.. P=..``),
    the first account of each shape, how many shards were solved, failed accounts and seconds.
    """
    from engine.actors.local import LocalExecutor
    from engine.solver.shapes import MIN_BUCKET, pad_batch

    started = time.perf_counter()
    loaded = read_book(book, config.policy, storage_options)
    targets = build_targets(loaded)
    usable = targets.account_ids[targets.usable]
    tables = household_transactions(loaded.tables, usable)
    first = {}
    for shard in dispatch_order(plan_shards(tables, targets, usable, config.run)):
        first.setdefault((shard.key, pad_batch(max(shard.households, MIN_BUCKET))), shard)
    chosen = list(first.values())
    row_of = {a: i for i, a in enumerate(targets.account_ids)}
    work = ((shard, part, targets.take([row_of[a] for a in shard.account_ids]))
            for shard, part in zip(chosen, shard_tables(tables, chosen)))
    executor = LocalExecutor({name: loaded.tables[name] for name in SHARED_TABLES}, loaded.as_of, config)
    failures = executor.run(work, lambda output: None)
    shapes = {}
    for shard in chosen:
        shapes.setdefault(shard.key, str(shard.account_ids[0]))
    return {"shapes": [f"m={m} L={L} n={n} P={P}" for (m, L, n, P) in shapes], "accounts": list(shapes.values()),
            "shards": len(chosen), "failed": int(sum(f.account_ids.size for f in failures)),
            "seconds": time.perf_counter() - started}


def executor_connection(executor: str, address: str | None):
    """What ``executor`` (:func:`choose_executor`'s answer) needs around a run: :func:`ray_connection`
    for ``ray``, nothing for ``local``."""
    return ray_connection(address) if executor == "ray" else contextlib.nullcontext()


def print_summary(manifest: Mapping[str, Any], file=None) -> None:
    """The run's summary as a table: accounts by status, trades, taxes, time per stage."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=file or sys.stdout)
    summary = manifest["summary"]
    table = Table(title=f"run {manifest['run_id']} for {manifest[Col.as_of]}", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for status, count in summary["accounts_by_status"].items():
        table.add_row(f"accounts {status}", f"{count:,}")
    table.add_row("trades", f"{summary['trades']:,}")
    table.add_row("traded value", f"${summary['traded_value']:,.0f}")
    table.add_row("estimated tax", f"${summary[Col.est_tax]:,.0f}")
    table.add_row("harvested losses", f"${summary[Col.harvested_loss]:,.0f}")
    table.add_row("tax saved", f"${summary[Col.tax_saved]:,.0f}")
    for stage, seconds in manifest["timings"].items():
        table.add_row(f"time {stage}", f"{seconds:,.1f} s")
    console.print(table)
