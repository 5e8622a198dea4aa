"""The shard dispatcher: a pool of solver actors, a bounded number of shards in
flight, and what to do when a worker dies.

Failures are handled here rather than by Ray's automatic task retries because
the right response depends on what failed:

* a shard whose task fails (its worker died, its node went away, or it raised)
  is tried again, up to ``RunConfig.max_task_retries`` tries; when an actor
  dies, only the shard it was running is charged a try (an actor runs its
  shards one at a time, in order), and the shards queued behind it go again
  uncharged, so a poisonous household cannot use up its neighbours' tries;
* a shard that fails every try is split into its households, each tried alone,
  so one poisonous household cannot take its shard-mates down with it;
* a single household that fails every try is ``failed``, with the last error
  as its detail, and the run goes on;
* more than ``RunConfig.max_failed_accounts`` failed accounts stop the run
  (:class:`~engine.contract.errors.RunError`): something is wrong beyond one household.

An actor that dies is replaced by a new one, which gets work only once its
``__init__`` has finished; if the cluster no longer has room for it (a node
was removed), the remaining actors carry on.  The run fails only when no actor
is left alive and none could start within ``RunConfig.actor_start_timeout``.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Callable, Iterable, Mapping

import pyarrow as pa
import ray

from engine.actors.solver import ShardSolver, actor_env
from engine.actors.work import Failure, Flight, Retries, Work, error_text, split_households
from engine.contract.config import Config, default_compilation_cache
from engine.contract.errors import RunError
from engine.rebalance.pipeline import ShardOutput
from engine.rebalance.shards import Shard
from engine.rebalance.targets import Targets

__all__ = ["Dispatcher", "Failure", "actor_slots", "pick", "split_households"]

#: Shards drawn ahead of need, per actor and shard in flight: enough to find one of the actor's shapes.
LOOKAHEAD = 4


def actor_slots() -> tuple[int, float]:
    """How many solver actors the cluster holds, and the GPUs each gets (0 on CPU)."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return gpus, 1.0
    return max(1, int(resources.get("CPU", 1))), 0.0


class Dispatcher(Retries):
    """Run shards on a pool of :class:`ShardSolver` actors.

    Parameters
    ----------
    shared
        The shared tables, ``ray.put`` once here.
    as_of, config
        The run's date and settings (``config.run`` sizes the pool and the retries).
    actors
        Number of actors (default: one per CPU, or per GPU when the cluster has GPUs).
    """

    def __init__(self, shared: Mapping[str, pa.Table], as_of: dt.date, config: Config,
                 actors: int | None = None):
        self.config = config
        self.run_config = config.run
        self.shared_ref = ray.put(dict(shared))
        slots, gpus = actor_slots()
        self.size = actors or slots
        self.pin = config.run.pin_actors and not gpus     # GPU actors take no CPU of their own
        env = actor_env(gpus)
        # compiled solver shapes survive actor restarts and runs (each node keeps its own)
        env.setdefault("JAX_COMPILATION_CACHE_DIR", default_compilation_cache())
        self._actor_class = ray.remote(ShardSolver).options(
            num_cpus=0 if gpus else 1, num_gpus=gpus, max_restarts=0, max_task_retries=0,
            runtime_env={"env_vars": env})
        self.as_of = as_of
        self.live: list = []
        self.starting: dict[ray.ObjectRef, object] = {}
        self.started = 0
        self.submitted = 0
        self.start_failures = 0
        for _ in range(self.size):
            self._start_actor()

    def _start_actor(self) -> None:
        actor = self._actor_class.remote(self.shared_ref, self.as_of, self.config, pin=self.pin)
        self.starting[actor.ready.remote()] = actor
        self.started += 1

    def run(self, work: Iterable[tuple[Shard, dict[str, pa.Table], Targets]],
            on_result: Callable[[ShardOutput], None]) -> list[Failure]:
        """Solve every shard of ``work``; call ``on_result`` with each output as it arrives.

        Shards are drawn from ``work`` a few ahead of need, and each actor
        is given, of those, a shard of a shape it has solved before, else
        one of a shape no other actor has, else the first (see
        :func:`pick`): every shape an actor meets costs it its compiled
        programs (seconds each, even from the persistent cache), so a
        shape of a few shards stays with one actor.  ``work`` in order of
        shape, the largest shapes first, suits this.

        Returns the failures (households that failed every try).

        Raises
        ------
        RunError
            More failed accounts than ``max_failed_accounts``, or no actor left.
        """
        flight = Flight(iter(work), LOOKAHEAD * self.size * self.run_config.max_in_flight)
        while True:
            self._submit(flight)
            if flight.finished:
                break
            self._keep_an_actor(flight)
            waiting = list(flight.pending) + list(self.starting)
            done, _ = ray.wait(waiting, num_returns=1, timeout=1.0)
            for ref in done:
                if ref in self.starting:
                    self._actor_started(ref)
                elif ref in flight.pending:          # else sent again already: its actor died
                    self._collect(flight, ref, on_result)
        return flight.failures

    def _submit(self, flight: Flight) -> None:
        """Keep every live actor busy (``max_in_flight`` shards each), drawing shards a few ahead of need."""
        limit = self.run_config.max_in_flight
        for actor in list(self.live):
            while flight.in_flight[actor] < limit:
                flight.draw()
                if not flight.queue:
                    break
                self._send(flight, actor)

    def _send(self, flight: Flight, actor) -> None:
        """Give ``actor`` the queued shard :func:`pick` chooses for it."""
        others = set().union(*(flight.shapes[a] for a in self.live if a is not actor))
        chosen = pick([w.shard.key for w in flight.queue], flight.shapes[actor], others)
        item = flight.queue[chosen]
        del flight.queue[chosen]
        flight.shapes[actor].add(item.shard.key)
        if item.ref is None:
            item.ref = ray.put(item.tables)
        ref = actor.solve.remote(item.shard, item.ref, item.targets)
        flight.pending[ref] = (item, actor, self.submitted)
        self.submitted += 1
        flight.in_flight[actor] += 1

    def _keep_an_actor(self, flight: Flight) -> None:
        """Start an actor when none is alive or starting; stop the run when none has started in time.

        Raises
        ------
        RunError
            No actor alive for longer than ``actor_start_timeout``.
        """
        if not self.live and not self.starting:
            self._start_actor()
        if not self.live:
            flight.lonely_since = flight.lonely_since or time.monotonic()
            if time.monotonic() - flight.lonely_since > self.run_config.actor_start_timeout:
                raise RunError(f"no solver actor could start within {self.run_config.actor_start_timeout:g} s "
                               f"({self.started} started, none alive); check the cluster's resources")
        else:
            flight.lonely_since = None

    def _actor_started(self, ready: ray.ObjectRef) -> None:
        """An actor's ``ready`` answered: it joins the live actors, or its failure to start is counted.

        Raises
        ------
        RunError
            More than ``2 * size + 1`` actors failed to start.
        """
        actor = self.starting.pop(ready)
        try:
            ray.get(ready)
            self.live.append(actor)
        except ray.exceptions.RayError as exc:
            # could not start (its node went away, or __init__ raised): another is
            # started when none is left, but an actor that never starts is a bug
            self.start_failures += 1
            if self.start_failures > 2 * self.size + 1:
                raise RunError(f"solver actors fail to start ({self.start_failures} tries); "
                               f"last error: {error_text(exc)}") from exc

    def _collect(self, flight: Flight, ref: ray.ObjectRef, on_result: Callable[[ShardOutput], None]) -> None:
        """A shard answered: pass its output to ``on_result``, or charge the failure to the shard that ran."""
        item, actor, number = flight.pending.pop(ref)
        flight.in_flight[actor] -= 1
        try:
            output = ray.get(ref)
        except ray.exceptions.RayError as exc:
            if isinstance(exc, ray.exceptions.RayActorError):
                self._replace_actor(actor)
                item = self._requeue_behind(flight, ref, item, actor, number)
            self._charge(flight, item, exc)
            return
        on_result(output)

    def _replace_actor(self, actor) -> None:
        """``actor`` died: drop it, and start another while the pool is short."""
        if actor in self.live:
            self.live.remove(actor)
            if len(self.live) + len(self.starting) < self.size:
                self._start_actor()

    @staticmethod
    def _requeue_behind(flight: Flight, ref: ray.ObjectRef, item: Work, actor, number: int) -> Work:
        """The shards of dead ``actor`` go back to the queue, uncharged, but the one it was running.

        The actor ran its shards one at a time, in order: the oldest was
        running when it died; the others only waited behind it.  ``ref``,
        ``item`` and ``number`` are the shard whose failure was seen.
        Returns the shard to charge.
        """
        others = sorted((n, r) for r, (_, a, n) in flight.pending.items() if a is actor)
        if others and others[0][0] < number:
            flight.queue.appendleft(item)
            ref = others[0][1]
            item = flight.pending[ref][0]
        for _, other in reversed(others):
            if other != ref:
                flight.queue.appendleft(flight.pending[other][0])
            flight.pending.pop(other)
            flight.in_flight[actor] -= 1
        return item

    def shutdown(self) -> None:
        for actor in self.live + list(self.starting.values()):
            ray.kill(actor, no_restart=True)
        self.live, self.starting = [], {}


def pick(keys: list, mine: set, others: set) -> int:
    """Which of the queued shards (their shape ``keys``, in queue order) an actor gets.

    The first of a shape it has (``mine``), else the first of a shape no
    other actor has (``others``), else the first.
    """
    for wanted in (lambda k: k in mine, lambda k: k not in others):
        for i, key in enumerate(keys):
            if wanted(key):
                return i
    return 0
