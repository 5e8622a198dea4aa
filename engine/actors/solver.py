"""The solver actor: one per CPU (or GPU), each solving shard after shard.

Heavy set-up happens once, in ``__init__``: JAX is configured for one thread
per actor (the actors share the machine's cores), the shared tables arrive
once from the object store, and a tiny synthetic shard runs end to end so the
Numba kernels load from their cache and JAX's jit machinery is warm before
the first real shard.  Shapes the warm-up did not see compile on first use,
from JAX's persistent compilation cache when ``JAX_COMPILATION_CACHE_DIR`` is
set (actors on one machine share it).

Chaos testing: two environment variables, forwarded by the dispatcher from
the driver, make a worker die the way a real fault would (``os._exit``, no
clean-up), so the fault tests exercise Ray's real failure paths:

* ``CANOPY_CHAOS_CRASH_HOUSEHOLDS``: comma-separated household ids; a shard
  holding one of them kills its worker, every time.
* ``CANOPY_CHAOS_EXIT_ONCE``: a file path; the first shard to find no file
  there creates it and kills its worker (one crash per run).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from typing import Mapping

import pyarrow as pa

from engine.actors.cores import pin_to_free_core
from engine.actors.memory import keep_freed_memory
from engine.contract.config import Config
from engine.contract.schema import Col
from engine.rebalance.pipeline import ShardOutput, solve_households, solve_shard
from engine.rebalance.shards import Shard
from engine.rebalance.targets import Targets

CHAOS_CRASH_HOUSEHOLDS = "CANOPY_CHAOS_CRASH_HOUSEHOLDS"
CHAOS_EXIT_ONCE = "CANOPY_CHAOS_EXIT_ONCE"
#: Environment every actor gets: one XLA thread, since there is one actor per core.
ACTOR_ENV = {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
             "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
#: Driver environment variables passed on to the actors.
FORWARDED_ENV = (CHAOS_CRASH_HOUSEHOLDS, CHAOS_EXIT_ONCE, "JAX_COMPILATION_CACHE_DIR", "JAX_PLATFORMS")
#: XLA's GPU reductions and scatters are otherwise free to add in any order: on an H200 the same
#: shard gave different trades on every solve, which the contract's re-run rule forbids.
GPU_DETERMINISM = "--xla_gpu_deterministic_ops=true"


def actor_env(gpus: float) -> dict[str, str]:
    """The environment of a solver actor: :data:`ACTOR_ENV`, the forwarded driver variables, and
    on a GPU, XLA's deterministic ops (:data:`GPU_DETERMINISM`)."""
    env = {**ACTOR_ENV, **{k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}}
    if gpus:
        env["XLA_FLAGS"] = f"{env['XLA_FLAGS']} {GPU_DETERMINISM}"
    return env


class ShardSolver:
    """Solves shards of households (see :func:`engine.rebalance.pipeline.solve_shard`).

    Parameters
    ----------
    shared
        The shared tables (:data:`engine.rebalance.shards.SHARED_TABLES`), from ``ray.put`` once.
    as_of, config
        The run's date and settings.
    warm_up
        Run a tiny synthetic shard first (compiles and loads the kernels).
    pin
        Pin this actor to a core no other actor of the node holds
        (:mod:`engine.actors.cores`); ``core`` says which, or None.
    """

    def __init__(self, shared: Mapping[str, pa.Table], as_of: dt.date, config: Config, warm_up: bool = True,
                 pin: bool = False):
        keep_freed_memory()
        self.core = pin_to_free_core() if pin else None
        self.shared = dict(shared)
        self.as_of = as_of
        self.config = config
        if warm_up:
            self._warm_up()

    def _warm_up(self) -> None:
        from engine.book import synth
        from engine.rebalance.targets import build_targets

        tables = synth.generate_tables(3, seed=0, bad_fraction=0.0)
        targets = build_targets(tables, policy=self.config.policy)
        first = targets.account_ids[targets.usable][:1]
        solve_households(tables, targets, first, synth.AS_OF, self.config)

    def ready(self) -> str:
        """Where this actor runs, once ``__init__`` is done."""
        return f"{socket.gethostname()}:{os.getpid()}"

    def solve(self, shard: Shard, tables: Mapping[str, pa.Table], targets: Targets) -> ShardOutput:
        _chaos(shard, tables)
        from engine.solver.shapes import MIN_BUCKET

        # a shard of one to three households runs at the smallest batch its shape's others use
        output = solve_shard(self.shared, tables, targets, shard, self.as_of, self.config,
                             households=MIN_BUCKET)
        output.worker = self.ready()
        return output


def _chaos(shard: Shard, tables: Mapping[str, pa.Table]) -> None:
    crash = os.environ.get(CHAOS_CRASH_HOUSEHOLDS)
    if crash:
        households = set(tables["accounts"].column(Col.household_id).to_pylist()) | set(shard.account_ids)
        if households & set(crash.split(",")):
            os._exit(1)
    marker = os.environ.get(CHAOS_EXIT_ONCE)
    if marker:
        try:
            with open(marker, "x"):
                pass
        except FileExistsError:
            return
        os._exit(1)
