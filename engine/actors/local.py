"""The nightly job in one process, without Ray: :class:`LocalExecutor`.

It has the dispatcher's interface (:class:`engine.actors.dispatch.Dispatcher`:
``run(work, on_result)``, ``shutdown()``, ``size``, ``started``) and solves each
shard with the same :class:`engine.actors.solver.ShardSolver` a Ray actor
runs, here in this process, one shard after another, with the actors' settings
(:func:`prepare_process`; on a CPU, one XLA thread, pinned to one core where
``RunConfig.pin_actors``: Ray's actors use every core).  A shard that raises is
charged a try as the dispatcher charges one (:class:`engine.actors.work.Retries`):
tried again, then household by household, and a household that fails every try
is ``failed``.  This is how a node without Ray runs the night (a GPU node,
whose one process keeps the device), and what ``canopy run --executor local``
chooses.  Imports no ray.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
from typing import Callable, Iterable, Mapping

import pyarrow as pa

from engine.actors.solver import GPU_DETERMINISM, ShardSolver, actor_env
from engine.actors.work import Failure, Flight, Retries
from engine.contract.config import Config, default_compilation_cache
from engine.rebalance.pipeline import ShardOutput
from engine.rebalance.shards import Shard
from engine.rebalance.targets import Targets

__all__ = ["LocalExecutor", "has_gpu", "prepare_process"]


def has_gpu() -> bool:
    """Whether JAX may run on a GPU here: its CUDA plugin is installed and ``JAX_PLATFORMS`` allows it.

    Asked without starting JAX's backend, whose settings must be made first.
    """
    platforms = os.environ.get("JAX_PLATFORMS", "")
    if platforms and not any(p in platforms for p in ("cuda", "gpu")):
        return False
    return any(importlib.util.find_spec(name) is not None for name in ("jax_cuda12_plugin", "jax_cuda13_plugin"))


def prepare_process() -> int:
    """Give this process, before JAX starts its backend, the settings a Ray solver actor gets.

    :func:`~engine.actors.solver.actor_env` (one XLA thread, one BLAS thread; on a GPU,
    XLA's deterministic ops), where the variable is not set already (a GPU's determinism is always added), so
    that this process compiles the actors' programs and proposes their trades; and the
    persistent compilation cache (``JAX_COMPILATION_CACHE_DIR``, default
    :func:`~engine.contract.config.default_compilation_cache`).  Returns the GPUs it found (0 or 1).
    """
    from threadpoolctl import threadpool_limits

    from engine.solver.programs import use_cache

    gpus = 1 if has_gpu() else 0
    for name, value in actor_env(gpus).items():
        os.environ.setdefault(name, value)
    # numpy is loaded already, its BLAS threads started: OMP_NUM_THREADS comes too late for it
    threadpool_limits(int(os.environ["OMP_NUM_THREADS"]))
    if gpus and GPU_DETERMINISM not in os.environ["XLA_FLAGS"]:
        os.environ["XLA_FLAGS"] = f"{os.environ['XLA_FLAGS']} {GPU_DETERMINISM}"
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", default_compilation_cache())
    use_cache(os.environ["JAX_COMPILATION_CACHE_DIR"])
    return gpus


class LocalExecutor(Retries):
    """Run shards in this process, with one :class:`ShardSolver`.

    Parameters
    ----------
    shared
        The shared tables.
    as_of, config
        The run's date and settings (``config.run``: the retries).
    actors
        Accepted for the dispatcher's interface; one process solves every shard.
    warm_up
        Run the solver's tiny synthetic shard first, as an actor does.
    """

    def __init__(self, shared: Mapping[str, pa.Table], as_of: dt.date, config: Config,
                 actors: int | None = None, warm_up: bool = True):
        gpus = prepare_process()
        self.config = config
        self.run_config = config.run
        self.size = 1
        self.started = 1
        # pinned as an actor is: XLA sizes its thread pool by the cores it may use, and the
        # order of its sums with it (the same trades, residuals apart in the 17th digit)
        self.solver = ShardSolver(shared, as_of, config, warm_up=warm_up, pin=config.run.pin_actors and not gpus)

    def run(self, work: Iterable[tuple[Shard, dict[str, pa.Table], Targets]],
            on_result: Callable[[ShardOutput], None]) -> list[Failure]:
        """Solve every shard of ``work`` in turn, retries first; call ``on_result`` with each output.

        Returns the failures (households that failed every try).

        Raises
        ------
        RunError
            More failed accounts than ``max_failed_accounts``.
        """
        flight = Flight(iter(work), 1)
        while True:
            flight.draw()
            if not flight.queue:
                return flight.failures
            item = flight.queue.popleft()
            try:
                output = self.solver.solve(item.shard, item.tables, item.targets)
            except Exception as exc:                 # noqa: BLE001 - charged as a dead actor's shard is
                self._charge(flight, item, exc)
                continue
            on_result(output)

    def shutdown(self) -> None:
        """Nothing to stop: the solver lives in this process."""
