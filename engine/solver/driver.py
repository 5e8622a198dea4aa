"""``solve``: the batched solve of a ``ProblemBatch`` on the host.

1. The batch runs at the next power of two of its households, padded with
   households fixed at no trade (they never iterate), so that batches of a
   shape share their compiled programs.
2. :func:`engine.solver.evaluate.prepare` lowers unreachable cash floors (the
   households are reported ``infeasible`` with the missing cash).
3. ADMM runs in jitted chunks of ``check_interval`` iterations, vmapped over
   the households; between chunks the households that converged leave the
   batch (the rest are compacted into a batch padded to a power of two, so a
   night compiles a handful of times).
4. Wash sales inside the proposal: a wash group bought and sold at a loss in
   one household is fixed to one direction (the larger side is kept, unless
   dropping the loss sales would put the cash floor out of reach), the
   household's other groups keep the direction they took, and the changed
   households are solved again (docs/optimization.md; Moehle et al. 2021), except
   where the first solution put on the new bounds is already within the
   tolerance of the first solve's objective, a lower bound.
5. The solution is the projection of the iterate onto the bounds, with any
   remaining shortfall of a cash floor (at most the primal residual) repaired
   by trimming buys, then selling more (:mod:`engine.solver.repair`).

The jitted steps are :func:`engine.solver.programs.persistent`: with a
compilation cache directory set, a new process reads their exports instead
of tracing and lowering them again.
"""

from __future__ import annotations

import logging
import os

import jax
import jax.numpy as jnp
import numpy as np

from engine.contract.config import SolverConfig
from engine.solver import admm, evaluate, ipm
from engine.solver.layout import LotLayout, compact_problem, compact_state, expand_state, lot_layout
from engine.solver.programs import persistent, use_cache
from engine.solver.repair import objective_tolerance, repair, without_dust
from engine.solver.shapes import pad_batch, pad_running_batch
from engine.solver.types import (BATCH_AXES, INFEASIBLE, NON_FINITE, SOLVED, ProblemBatch, SolverResult, SolverState,
                                 batch_size, take)

_log = logging.getLogger(__name__)

jax.config.update("jax_enable_x64", True)
if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    use_cache(os.environ["JAX_COMPILATION_CACHE_DIR"])

#: JAX's events of making a program: tracing, lowering to MLIR, compiling (or fetching from
#: the persistent cache).
_PROGRAM_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")
_program_seconds = [0.0]


def _count_program_time(event: str, duration: float, **_) -> None:
    if event in _PROGRAM_EVENTS:
        _program_seconds[0] += duration


jax.monitoring.register_event_duration_secs_listener(_count_program_time)


def program_seconds() -> float:
    """Seconds this process has spent making programs (tracing, lowering, compiling or loading them)."""
    return _program_seconds[0]


#: A floor missed by more than this (units of V) makes the household infeasible.
INFEASIBLE_TOLERANCE = 1e-9
#: Share of the kernel's memory-map limit past which ``solve`` drops JAX's compiled programs.
#: Later is not cheaper: at 3/4 the 100,000-account night's actors spent 395 s making
#: programs, at 1/2 182 s (it seems a process that holds more programs makes and loads
#: new ones more slowly).
MAP_SHARE = 0.5


def _memory_maps() -> tuple[int, int]:
    """(memory maps of this process, the kernel's limit); (0, 0) where /proc does not say (not Linux)."""
    try:
        with open("/proc/sys/vm/max_map_count") as fh:
            limit = int(fh.read())
        with open("/proc/self/maps", "rb") as fh:
            return fh.read().count(b"\n"), limit
    except (OSError, ValueError):
        return 0, 0


def trim_compiled(share: float = MAP_SHARE) -> bool:
    """Drop JAX's in-memory compiled programs when this process holds too many memory maps.

    Each program XLA compiles for the CPU maps its code in many pieces, and a
    long-lived worker that meets many shapes (a night's shards: shapes × batch
    buckets × jitted steps) reaches ``vm.max_map_count`` (65,530 by default),
    where LLVM fails with "Cannot allocate memory".  Past ``share`` of the
    limit the caches are cleared; programs needed again come back from the
    persistent compilation cache when one is set (else they compile again).
    Returns whether it cleared.
    """
    maps, limit = _memory_maps()
    if limit and maps > share * limit:
        jax.clear_caches()
        _log.info("dropped the compiled programs: %d memory maps of the limit %d", maps, limit)
        return True
    return False


@persistent(static_argnames=("config",))
def _chunk(problem: ProblemBatch, state: SolverState, config: SolverConfig) -> SolverState:
    new = jax.vmap(admm.chunk, in_axes=(BATCH_AXES, 0, None))(problem, state, config)
    # a household that had finished stays as it was (it waits for the next compaction)
    done = state.status != admm.RUNNING
    return SolverState(*[jnp.where(done.reshape(done.shape + (1,) * (old.ndim - 1)), old, fresh)
                         for old, fresh in zip(state, new)])


@persistent(donate_argnums=(0,))
def _scatter(state: SolverState, sub: SolverState, index) -> SolverState:
    """Write the sub-batch back (``index`` may repeat a household: its copies are identical)."""
    return type(state)(*[full.at[index].set(part) for full, part in zip(state, sub)])


@persistent
def _polish(problem: ProblemBatch, state: SolverState):
    return jax.vmap(admm.polish, in_axes=(BATCH_AXES, 0))(problem, state)


def _solution(prepared, device_problem, state, config: SolverConfig):
    buy, sell = _polish(device_problem, state)
    return without_dust(prepared, np.asarray(buy, float), np.asarray(sell, float), config)


def _settle_without_resolve(prepared: ProblemBatch, settled: ProblemBatch, buy, sell, changed,
                            config: SolverConfig):
    """Households whose wash-sale fix costs no more than the tolerance keep their solution: no re-solve.

    The solution of the looser problem (no wash-sale rule) bounds the
    settled problem's optimum from below, to within the tolerance.  Where
    the solution put on the settled bounds (blocked buys and loss sales
    dropped, a cash floor repaired) is within the tolerance of that bound,
    no re-solve could do better by more than the tolerance: that point is
    the household's solution.  Returns the solution and the households that
    still need a re-solve.
    """
    # on the whole batch: a household that did not change is already on its bounds, and
    # gathering the changed ones' dense lot arrays costs more than the arithmetic
    fixed_buy, fixed_sell = repair(settled, buy, sell)
    bound = evaluate.objective(prepared, buy, sell)
    cost = evaluate.objective(settled, fixed_buy, fixed_sell) - bound
    close = changed & (cost <= objective_tolerance(config, bound))
    if not close.any():
        return buy, sell, changed
    return (np.where(_per_household(close, buy), fixed_buy, buy),
            np.where(_per_household(close, sell), fixed_sell, sell), changed & ~close)


def _per_household(values: np.ndarray, like: np.ndarray) -> np.ndarray:
    """(B,) values shaped to broadcast against ``like`` (B, ...)."""
    return values.reshape(values.shape + (1,) * (like.ndim - 1))


def _wash_round(prepared: ProblemBatch, buy, sell, config: SolverConfig, last: bool):
    """One round of the wash-sale fix: the settled problem, the solution, and the households to solve again.

    The last round blocks buys only: it never takes cash away from a floor.
    """
    settled, changed = _wash_fix(prepared, buy, sell, config, buys_only=last)
    if changed.any():
        buy, sell, changed = _settle_without_resolve(prepared, settled, buy, sell, changed, config)
    return settled, buy, sell, changed


@persistent(static_argnames=("config",))
def _init(problem: ProblemBatch, config: SolverConfig) -> SolverState:
    return jax.vmap(lambda p: admm.init(p, config), in_axes=(BATCH_AXES,))(problem)


#: One household's chunk, jitted on its own: JAX traces it once per shape and, for each
#: batch size, batches that trace (vmap of a jitted function) instead of tracing the
#: vmapped chunk again.  Making a chunk program took 0.48 s a batch size, 0.22 s of it
#: tracing; now 0.33 s, 0.13 s of it batching (nine sizes of a direct-index shape).
_household_chunk = jax.jit(ipm.chunk, static_argnames=("config",))


@persistent(static_argnames=("config",))
def _ipm_chunk(problem: ProblemBatch, state: ipm.IPMState, config: SolverConfig) -> ipm.IPMState:
    # a household that has finished is left as it is inside ipm.step
    return jax.vmap(lambda p, s: _household_chunk(p, s, config), in_axes=(BATCH_AXES, 0))(problem, state)


@persistent(static_argnames=("config",))
def _ipm_init(problem: ProblemBatch, config: SolverConfig, warm: SolverState | None = None) -> ipm.IPMState:
    if warm is None:
        return jax.vmap(lambda p: ipm.init(p, config), in_axes=(BATCH_AXES,))(problem)
    return jax.vmap(lambda p, w: ipm.init(p, config, w), in_axes=(BATCH_AXES, 0))(problem, warm)


@persistent(static_argnames=("config",))
def _ipm_restart(problem: ProblemBatch, state: ipm.IPMState, changed, config: SolverConfig) -> ipm.IPMState:
    """Households ``changed`` (their bounds changed: wash groups fixed) start again, warm from their point.

    The start is the household's best point and its duals, pushed inside the new bounds
    (:func:`engine.solver.ipm.init`): on the 10,000-account book the re-solves took 32% fewer
    iterations than from the cold start.  One program, as the cold start's was.
    """
    fresh = jax.vmap(lambda p, s: ipm.init(p, config, ipm.to_solver_state(p, s)), in_axes=(BATCH_AXES, 0))(
        problem, state)
    return ipm.IPMState(*[jnp.where(changed.reshape(changed.shape + (1,) * (old.ndim - 1)), new, old)
                          for old, new in zip(state, fresh)])


@persistent
def _ipm_solver_state(problem: ProblemBatch, state: ipm.IPMState) -> SolverState:
    return jax.vmap(ipm.to_solver_state, in_axes=(BATCH_AXES, 0))(problem, state)


def _on_device(value: np.ndarray) -> jax.Array:
    """A host array on the device as it is.

    ``jnp.asarray`` of a NumPy array runs a small jitted program per shape and
    dtype: traced, lowered and looked up in the compilation cache, 50–100 ms
    each (177 of the 560 programs the 10,000-account book's shards made,
    solved in one process).
    """
    return jax.device_put(np.asarray(value))


def _device_problem(problem: ProblemBatch, dtype) -> ProblemBatch:
    """The host batch on the device, floats in ``dtype``."""
    out = []
    for field, value in zip(ProblemBatch._fields, problem):
        if value is None:
            out.append(None)
            continue
        value = np.asarray(value)
        if value.dtype.kind == "f":
            value = value.astype(dtype)
        out.append(_on_device(value))
    return ProblemBatch(*out)


@persistent
def _take(problem: ProblemBatch, state, index):
    """The households ``index`` of a problem and its state, in one jitted gather (shared fields kept)."""
    return take(problem, index), type(state)(*[v[index] for v in state])


#: ``SolverConfig.lot_layout`` → ``lot_layout(dense=...)``.
_LAYOUTS = {"auto": None, "compact": False, "dense": True}


def _fixed(problem: ProblemBatch) -> np.ndarray:
    """Households with no free variable (an unreachable floor, everything screened or blocked), (B,).

    Their solution is the one point of their bounds: they need no iteration.
    """
    buys = (np.asarray(problem.buy_upper) > 0).any(axis=(1, 2))
    sells = np.asarray(problem.sell_upper) > np.asarray(problem.sell_lower)
    sells = sells.reshape(batch_size(problem), -1).any(axis=1)
    return ~(buys | sells)


def _iterate(problem: ProblemBatch, state, config: SolverConfig,
             active: np.ndarray, chunk=_chunk, fixed: np.ndarray | None = None):
    """Run chunks until every household in ``active`` has a final status.

    The unconverged households are compacted into a smaller batch (see
    :func:`~engine.solver.shapes.pad_running_batch`) whenever one fits them;
    households that finish in between are frozen in place.  Households ``fixed`` (see :func:`_fixed`)
    are solved at their start and never iterate.  Returns the state and the
    iterations each household ran here.
    """
    total = active.size
    fixed = np.zeros(total, bool) if fixed is None else fixed
    running = active & ~fixed
    status = np.where(active & fixed, SOLVED, np.where(active, admm.RUNNING, np.asarray(state.status)))
    state = state._replace(status=_on_device(status.astype(np.int32)),
                           iteration=_on_device(np.zeros(np.shape(state.iteration), np.int32)))
    index = None
    sub_problem = sub_state = None
    while running.any():
        live = np.flatnonzero(running)
        size = pad_running_batch(live.size, total)
        if index is None or size < index.size:
            if sub_state is not None:
                state = _scatter(state, sub_state, _on_device(index))
            index = np.concatenate([live, np.full(size - live.size, live[0])])
            whole = size == total and (index == np.arange(total)).all()
            sub_problem, sub_state = (problem, state) if whole else _take(problem, state, _on_device(index))
        sub_state = chunk(sub_problem, sub_state, config)
        status = np.asarray(sub_state.status)
        running[index[status != admm.RUNNING]] = False
    if sub_state is not None:
        state = _scatter(state, sub_state, _on_device(index))
    iterations = np.where(active, np.asarray(state.iteration), 0).astype(np.int64)
    return state, iterations


def _wash_fix(problem: ProblemBatch, buy, sell, config: SolverConfig, buys_only: bool = False):
    """Fix one direction of each two-sided wash group; return the new problem and which households changed.

    A group bought and sold at a loss keeps its larger side (its sales where
    they are forced, where dropping them would put a cash floor out of reach,
    or in ``buys_only`` mode).  In a household that changes, every other
    group is settled too, in the direction the solution took: a group sold at
    a loss may no longer be bought, any other may no longer be sold at a loss.
    The re-solve then cannot make a new group two-sided, so one re-solve
    separates the household (instead of a round per group the re-solve
    moves into); where the settled loss sales would put a cash floor out of
    reach, only the two-sided groups are fixed.
    """
    two_sided, bought, loss_sold = evaluate.wash_two_sided(problem, buy, sell, config.wash_tolerance)
    changed = two_sided.any(axis=1)
    if not changed.any():
        return problem, changed
    groups = np.asarray(problem.wash_group)
    n_groups = two_sided.shape[1]
    sell_upper = np.asarray(problem.sell_upper)
    lot_loss = np.asarray(problem.lot_loss)
    loss = lot_loss & (np.asarray(problem.sell_lower) <= 0)
    forced_lots = evaluate.position_sums(problem, lot_loss & (np.asarray(problem.sell_lower) > 0)).sum(axis=1)
    forced = evaluate.group_sums(forced_lots, groups, n_groups) > 0                               # (B, G)
    reach = evaluate.max_cash(problem)
    floor = np.asarray(problem.cash_floor) - INFEASIBLE_TOLERANCE
    optional = evaluate.group_sums(evaluate.position_sums(problem, sell_upper * loss), groups, n_groups)  # B, m, G
    keep_sales = (buys_only | (bought < loss_sold) | forced
                  | (reach[:, :, None] - optional < floor[:, :, None]).any(axis=1))
    block_buys = two_sided & keep_sales
    block_losses = two_sided & ~keep_sales
    sold = ~two_sided & (loss_sold > config.wash_tolerance)
    settled_buys = block_buys | sold
    settled_losses = block_losses | (~two_sided & ~sold)
    lost = (optional * settled_losses[:, None, :]).sum(axis=2)
    settle = (changed & ~(reach - lost < floor).any(axis=1))[:, None]
    block_buys = np.where(settle, settled_buys, block_buys) & changed[:, None]
    block_losses = np.where(settle, settled_losses, block_losses) & changed[:, None]
    buy_upper = np.where(block_buys[:, None, groups], 0.0, np.asarray(problem.buy_upper))
    sell_upper = np.where(loss & _group_lots(problem, block_losses), 0.0, sell_upper)
    return problem._replace(buy_upper=buy_upper, sell_upper=sell_upper), changed


def _group_lots(problem: ProblemBatch, flags: np.ndarray) -> np.ndarray:
    """A flag per wash group (B, G) on each lot of the group's securities."""
    by_security = flags[:, np.asarray(problem.wash_group)]                                        # (B, n)
    return evaluate.to_lots(problem, np.broadcast_to(by_security[:, None, :], np.shape(problem.holdings)))


def _drop_wash_dust(problem: ProblemBatch, buy, sell) -> ProblemBatch:
    """Bound to 0 the smaller side (buys or loss sales) of every group still two-sided.

    The loss sales go only where they are the smaller side and none of them is forced.
    """
    two_sided, bought, loss_sold = evaluate.wash_two_sided(problem, buy, sell, tolerance=0.0)
    if not two_sided.any():
        return problem
    groups = np.asarray(problem.wash_group)
    loss = np.asarray(problem.lot_loss) & (np.asarray(problem.sell_lower) <= 0)
    optional_sold = evaluate.group_sums(evaluate.position_sums(problem, np.asarray(sell) * loss).sum(axis=1),
                                        groups, two_sided.shape[1])
    drop_sales = two_sided & (loss_sold < bought) & (optional_sold >= loss_sold * (1 - 1e-12))
    drop_buys = two_sided & ~drop_sales
    return problem._replace(
        buy_upper=np.where(drop_buys[:, None, groups], 0.0, np.asarray(problem.buy_upper)),
        sell_upper=np.where(loss & _group_lots(problem, drop_sales), 0.0, np.asarray(problem.sell_upper)))


def _pad_batch(problem: ProblemBatch, warm: SolverState | None, size: int):
    """``problem`` (and ``warm``) padded to ``size`` households by fixed copies of the first.

    A padding household has no free variable (buys bounded by 0, lots at
    their lower bound), so it never iterates and never holds back compaction.
    """
    total = batch_size(problem)
    index = np.r_[np.arange(total), np.zeros(size - total, np.int64)]
    padded = take(problem, index)
    pad = (np.arange(size) >= total)
    buy_upper = np.where(pad[:, None, None], 0.0, np.asarray(padded.buy_upper))
    sell_upper = np.where(pad[:, None, None, None], np.asarray(padded.sell_lower), np.asarray(padded.sell_upper))
    padded = padded._replace(buy_upper=buy_upper, sell_upper=sell_upper)
    return padded, None if warm is None else type(warm)(*[np.asarray(v)[index] for v in warm])


def _first_households(result: SolverResult, total: int) -> SolverResult:
    """The first ``total`` households of a padded batch's result."""
    return result._replace(**{f: np.asarray(getattr(result, f))[:total] for f in SolverResult._fields
                              if f not in ("state", "problem")},
                           state=type(result.state)(*[np.asarray(v)[:total] for v in result.state]),
                           problem=take(result.problem, np.arange(total)))


def solve(problem: ProblemBatch, config: SolverConfig = SolverConfig(),
          warm: SolverState | None = None, *, lots: int | None = None,
          households: int | None = None) -> SolverResult:
    """Solve every household of a batch.

    Parameters
    ----------
    problem
        The batch (see :class:`engine.solver.types.ProblemBatch`), NumPy or JAX arrays.
    config
        Solver settings; ``config.dtype`` selects float64 or float32.
    warm
        A previous result's ``state`` for the same shapes (e.g. yesterday's
        solution), or None for a cold start at "no trade".
    lots
        Pad the compact lot layout (:mod:`engine.solver.layout`) to at least
        this many lots per household (default: the batch's most real lots, on
        :func:`~engine.solver.shapes.pad_household_lots`'s ladder): a shard's planned P,
        so that every shard of a shape compiles one program.  A household
        solved alone at its batch's padding sees the same arrays as in the
        batch (XLA may still round a batch of one differently).
    households
        Run the batch at least this large.  A batch runs at the next power
        of two of its households (padded with households fixed at no trade,
        which never iterate), so batches of a shape share their compiled
        programs with each other and with the solver's compaction.

    Returns
    -------
    SolverResult
        Trades in units of V, objective, status, iterations, residuals,
        missing cash, and the final state for the next warm start.
    """
    total = batch_size(problem)
    size = pad_batch(max(total, households or 0))
    if size > total:
        padded, padded_warm = _pad_batch(problem, warm, size)
        return _first_households(solve(padded, config, padded_warm, lots=lots), total)
    trim_compiled()
    dtype = jnp.float64 if config.dtype == "float64" else jnp.float32
    prepared, missing = evaluate.prepare(problem)
    if config.lot_layout not in _LAYOUTS:
        raise ValueError(f"SolverConfig.lot_layout is {config.lot_layout!r}: use one of {sorted(_LAYOUTS)}")
    layout = lot_layout(prepared, lots, _LAYOUTS[config.lot_layout])
    # every step from here on, on the host too, runs in the compact layout: a direct index's
    # dense lot arrays are 93% padding; the result is dense again (_result)
    dense, prepared = prepared, compact_problem(prepared, layout)
    device_problem = _device_problem(prepared, dtype)
    total = np.shape(prepared.target)[0]
    warm = None if warm is None else _device_state(warm, layout, dtype)
    if config.method == "ipm":
        return _solve_ipm(dense, prepared, missing, device_problem, layout, config, warm, dtype)
    if warm is None:
        state = _init(device_problem, config)
    else:
        state = warm._replace(status=jnp.full(total, admm.RUNNING, jnp.int32))
    state, iterations = _iterate(device_problem, state, config, np.ones(total, bool), fixed=_fixed(prepared))

    def resolve(device_problem, state, changed):
        return _iterate(device_problem, state, config, changed)

    def solution(prepared, device_problem, state):
        return _solution(prepared, device_problem, state, config)

    prepared, _, state, iterations, buy, sell = _wash_resolves(prepared, device_problem, state, iterations, config,
                                                               dtype, resolve, solution)
    return _result(dense, prepared, layout, missing, state, iterations, buy, sell)


def _wash_resolves(prepared, device_problem, state, iterations, config: SolverConfig, dtype, resolve, solution):
    """The wash-sale re-solves of a first solve (``state``), for either method.

    Each round fixes one side of every wash group that came out two-sided (``_wash_round``) and
    solves the changed households again, ``resolve(device_problem, state, changed) → (state,
    iterations)``; ``solution(prepared, device_problem, state) → (buy, sell)`` reads the
    solution, USD / household value.  Groups still two-sided after the last round (rare) have
    their buys dropped; what is left two-sided is below ``wash_tolerance`` on one side, which is
    dropped (``_separate_wash``).  Returns ``(prepared, device_problem, state, iterations, buy, sell)``.
    """
    buy, sell = solution(prepared, device_problem, state)
    rounds = config.wash_rounds
    for round_ in range(rounds):
        prepared, buy, sell, changed = _wash_round(prepared, buy, sell, config, last=round_ == rounds - 1)
        if not changed.any():
            break
        device_problem = _device_problem(prepared, dtype)
        state, more = resolve(device_problem, state, changed)
        iterations += more
        buy, sell = solution(prepared, device_problem, state)
    if rounds > 0:
        prepared, buy, sell = _separate_wash(prepared, buy, sell, config)
    return prepared, device_problem, state, iterations, buy, sell


def _device_state(state: SolverState, layout: LotLayout, dtype) -> SolverState:
    """A dense warm start on the device, in the compact layout."""
    state = compact_state(SolverState(*[np.asarray(v) for v in state]), layout)
    return SolverState(*[_on_device(v.astype(dtype) if v.dtype.kind == "f" else v) for v in state])


def _separate_wash(prepared, buy, sell, config):
    """After the last re-solve: drop the buys of groups still two-sided, then the dust side."""
    prepared_new, changed = _wash_fix(prepared, buy, sell, config, buys_only=True)
    if changed.any():
        prepared = prepared_new
        buy, sell = repair(prepared, buy, sell)
    prepared = _drop_wash_dust(prepared, buy, sell)
    buy, sell = repair(prepared, buy, sell)
    return prepared, buy, sell


def _solve_ipm(dense, prepared, missing, device_problem, layout: LotLayout, config: SolverConfig, warm,
               dtype) -> SolverResult:
    """``solve`` by the interior-point method; wash re-solves start the changed households from their point.

    ``dense`` is the prepared batch, ``prepared`` the same in ``layout`` (see ``solve``).
    """
    total = np.shape(prepared.target)[0]
    state = _ipm_init(device_problem, config, warm)
    state, iterations = _iterate(device_problem, state, config, np.ones(total, bool), _ipm_chunk,
                                 fixed=_fixed(prepared))

    def resolve(device_problem, state, changed):
        state = _ipm_restart(device_problem, state, _on_device(changed), config)
        return _iterate(device_problem, state, config, changed, _ipm_chunk)

    def solution(prepared, device_problem, state):
        return without_dust(prepared, np.asarray(state.best_buy, float), np.asarray(state.best_sell, float),
                            config)

    prepared, device_problem, state, iterations, buy, sell = _wash_resolves(
        prepared, device_problem, state, iterations, config, dtype, resolve, solution)
    return _result(dense, prepared, layout, missing, _ipm_solver_state(device_problem, state),
                   iterations, buy, sell)


def _result(dense: ProblemBatch, prepared: ProblemBatch, layout: LotLayout, missing, state: SolverState,
            iterations, buy, sell) -> SolverResult:
    """The result in the dense layout: ``prepared`` (in ``layout``) put back on ``dense``, the state expanded."""
    status = np.asarray(state.status).copy()
    B = batch_size(prepared)
    finite = np.isfinite(buy).all(axis=(1, 2)) & np.isfinite(sell).reshape(B, -1).all(axis=1)
    status[~finite] = NON_FINITE
    status[(missing > INFEASIBLE_TOLERANCE).any(axis=1) & (status != NON_FINITE)] = INFEASIBLE
    buy = np.nan_to_num(buy)
    sell = np.nan_to_num(sell)
    cash_after = evaluate.rows(prepared, buy, sell)[0]
    objective = evaluate.objective(prepared, buy, sell)
    primal = np.asarray(state.primal_residual, float).copy()
    # a household that stalled returns its best point, not its last iterate, whose residual may
    # have been lost (NaN): report the returned point's largest hard-constraint violation instead
    lost = ~np.isfinite(primal) & finite
    if lost.any():
        primal[lost] = evaluate.violations(prepared, buy, sell)[lost]
    if not layout.dense:
        sell = layout.expand(sell)
        prepared = dense._replace(buy_upper=prepared.buy_upper,
                                  **{f: layout.put(getattr(dense, f), getattr(prepared, f))
                                     for f in ("sell_lower", "sell_upper")})
    return SolverResult(buy=buy, sell=sell, cash_after=cash_after, objective=objective,
                        status=status.astype(np.int32), iterations=iterations.astype(np.int32),
                        primal_residual=primal,
                        dual_residual=np.asarray(state.dual_residual, float),
                        missing_cash=missing, state=expand_state(state, layout), problem=prepared)


__all__ = ["program_seconds", "solve", "trim_compiled"]
