"""The batched solver against its cvxpy/Clarabel oracle, and its own invariants."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

from engine.contract.config import SolverConfig  # noqa: E402
from engine.solver import INFEASIBLE, MAX_ITERATIONS, SOLVED, admm, evaluate, solve  # noqa: E402
from engine.solver.ipm import tolerances as ipm_tolerances  # noqa: E402
from engine.solver.layout import compact_problem, lot_layout  # noqa: E402
from engine.solver.types import SHARED_FIELDS, ProblemBatch, take  # noqa: E402
from engine.testing import oracle
from engine.testing.instances import MIXES, random_batch  # noqa: E402

pytest.importorskip("cvxpy")

SHAPE = dict(n=20, lots=3, factors=3, classes=3)
CONFIG = SolverConfig()
#: The ADMM, for what only it does (warm starts, an exact iteration cap) and beside the default.
ADMM = SolverConfig(method="admm")


def _one(problem: ProblemBatch, h: int) -> ProblemBatch:
    return ProblemBatch(*[v if v is None else jnp.asarray(v) if f in SHARED_FIELDS else jnp.asarray(np.asarray(v)[h])
                          for f, v in zip(ProblemBatch._fields, problem)])


def _within(ours: float, best: float) -> bool:
    return abs(ours - best) <= max(1e-4 * abs(best), 1e-7)


def check_against_oracle(problem: ProblemBatch, config: SolverConfig = CONFIG):
    """Solve a batch; compare each household with Clarabel on the problem finally solved."""
    result = solve(problem, config)
    final = result.problem
    report = []
    for h in range(problem.target.shape[0]):
        buy, sell, status = oracle.solve_household(final, h)
        assert status == "optimal", status
        best = evaluate.objective(final, np.broadcast_to(buy, result.buy.shape),
                                  np.broadcast_to(sell, result.sell.shape))[h]
        report.append((h, result.objective[h], best, result.status[h]))
    violation = evaluate.violations(final, result.buy, result.sell)
    return result, report, violation


@pytest.mark.parametrize("accounts,layout", [(1, "auto"), (2, "auto"), (3, "auto"), (2, "compact"), (3, "compact")])
def test_objective_matches_clarabel(accounts, layout):
    problem = random_batch(8, accounts=accounts, seed=10 + accounts, **SHAPE)
    result, report, violation = check_against_oracle(problem, dataclasses.replace(CONFIG, lot_layout=layout))
    bad = [r for r in report if not _within(r[1], r[2])]
    assert not bad, f"objective off Clarabel's (household, ours, Clarabel, status): {bad}"
    assert (violation <= 1e-6).all(), violation
    assert np.isin(result.status, [SOLVED, INFEASIBLE]).all(), result.status


@pytest.mark.parametrize("accounts", [1, 2])
def test_admm_matches_clarabel(accounts):
    """The ADMM (``method="admm"``) on the same households as the default interior-point method."""
    problem = random_batch(8, accounts=accounts, seed=10 + accounts, **SHAPE)
    result, report, violation = check_against_oracle(problem, ADMM)
    bad = [r for r in report if not _within(r[1], r[2])]
    assert not bad, f"objective off Clarabel's (household, ours, Clarabel, status): {bad}"
    assert (violation <= 1e-6).all(), violation


def test_convex_relaxation_matches_clarabel():
    """Without the wash-sale separation the solve is the convex problem itself."""
    problem = random_batch(8, accounts=2, seed=5, mix="all", **SHAPE)
    _, report, violation = check_against_oracle(problem, SolverConfig(wash_rounds=0))
    assert all(_within(r[1], r[2]) for r in report), report
    assert (violation <= 1e-6).all()


def test_infeasible_floor_reported_with_missing_cash():
    problem = random_batch(4, accounts=2, seed=3, mix="infeasible_floor", **SHAPE)
    result = solve(problem, CONFIG)
    assert (result.status == INFEASIBLE).all()
    missing = result.missing_cash.max(axis=1)
    assert (missing > 0).all()
    # everything that may be sold is sold in the account that is short
    short = result.missing_cash.argmax(axis=1)
    for h, a in enumerate(short):
        np.testing.assert_allclose(result.sell[h, a], np.asarray(problem.sell_upper)[h, a], atol=1e-6)
        assert result.buy[h, a].sum() <= 1e-6


def test_wash_groups_never_bought_and_loss_sold():
    problem = random_batch(8, accounts=3, seed=21, **SHAPE)
    result = solve(problem, CONFIG)
    two_sided, _, _ = evaluate.wash_two_sided(problem, result.buy, result.sell, tolerance=0.0)
    assert not two_sided.any()


def test_a_household_that_needs_a_wash_re_solve_has_every_group_settled():
    """After the first solve, a household with a two-sided group gets one direction for every group."""
    from engine.solver import driver

    problem, _ = evaluate.prepare(random_batch(8, accounts=2, seed=21, mix="wash", **SHAPE))
    first = solve(problem, SolverConfig(wash_rounds=0))
    fixed, changed = driver._wash_fix(problem, first.buy, first.sell, CONFIG)
    assert changed.any() and not changed.all()
    groups = np.asarray(problem.wash_group)
    optional_loss = np.asarray(problem.lot_loss) & (np.asarray(problem.sell_lower) <= 0)
    for h in range(8):
        if not changed[h]:
            np.testing.assert_array_equal(fixed.buy_upper[h], np.asarray(problem.buy_upper)[h])
            np.testing.assert_array_equal(fixed.sell_upper[h], np.asarray(problem.sell_upper)[h])
            continue
        for g in np.unique(groups):
            in_group = groups == g
            can_buy = (fixed.buy_upper[h][:, in_group] > 0).any()
            can_loss_sell = (fixed.sell_upper[h][:, in_group] * optional_loss[h][:, in_group]).sum() > 0
            assert not (can_buy and can_loss_sell), (h, g)
    # the re-solve of the settled problem leaves no group two-sided
    again = solve(fixed, SolverConfig(wash_rounds=0))
    assert not evaluate.wash_two_sided(fixed, again.buy, again.sell, CONFIG.wash_tolerance)[0].any()


def test_a_wash_re_solve_starts_from_the_first_solution_and_ends_where_a_cold_start_does():
    """The re-solve of a household whose wash groups were settled starts at its first solution
    (pushed inside the new bounds) and ends at a cold start's objective within the tolerance; a
    household that did not change keeps its state.  (Whether it saves iterations is measured on
    the nightly book, not here: on these small households it may take a few more.)"""
    from engine.solver import driver

    problem, _ = evaluate.prepare(random_batch(8, accounts=2, seed=21, mix="wash", **SHAPE))
    first = solve(problem, SolverConfig(wash_rounds=0))
    fixed, changed = driver._wash_fix(problem, first.buy, first.sell, CONFIG)
    assert changed.any() and not changed.all()
    everyone = np.ones(8, bool)
    original, settled = (driver._device_problem(p, jnp.float64) for p in (problem, fixed))
    state, _ = driver._iterate(original, driver._ipm_init(original, CONFIG), CONFIG, everyone, driver._ipm_chunk)
    restarted = driver._ipm_restart(settled, state, jnp.asarray(changed), CONFIG)
    for old, new in zip(state, restarted):
        np.testing.assert_array_equal(np.asarray(new)[~changed], np.asarray(old)[~changed])
    assert (np.asarray(restarted.iteration)[changed] == 0).all()
    # a lot whose bounds the fix left alone starts within the margin of its first solution
    lower, upper = np.asarray(fixed.sell_lower), np.asarray(fixed.sell_upper)
    kept = changed[:, None, None, None] & (upper == np.asarray(problem.sell_upper)) & (upper > lower)
    moved = np.abs(np.asarray(restarted.sell) - np.asarray(state.best_sell))
    assert kept.any() and (moved[kept] <= CONFIG.ipm_warm_margin * (upper - lower)[kept] + 1e-15).all()

    warm, _ = driver._iterate(settled, restarted, CONFIG, changed, driver._ipm_chunk)
    cold, _ = driver._iterate(settled, driver._ipm_init(settled, CONFIG), CONFIG, everyone, driver._ipm_chunk)
    objective = {name: evaluate.objective(fixed, np.asarray(s.best_buy, float), np.asarray(s.best_sell, float))
                 for name, s in (("warm", warm), ("cold", cold))}
    for h in np.flatnonzero(changed):
        assert _within(objective["warm"][h], objective["cold"][h]), (h, objective["warm"][h], objective["cold"][h])


def test_a_wash_fix_that_costs_no_more_than_the_tolerance_is_taken_without_a_re_solve():
    """The first solve bounds the settled problem from below: a fix within the tolerance of it is final."""
    from engine.solver import driver, repair

    problem, _ = evaluate.prepare(random_batch(4, accounts=1, seed=21, mix="wash", **SHAPE))
    relaxed = solve(problem, SolverConfig(wash_rounds=0))
    final = solve(problem, CONFIG)
    # household 0: its final solution, made two-sided by a hair of a buy in a group it sells at a loss
    _, _, loss_sold = evaluate.wash_two_sided(problem, final.buy, final.sell, CONFIG.wash_tolerance)
    groups = np.asarray(problem.wash_group)
    group = int(np.argmax(loss_sold[0]))
    assert loss_sold[0, group] > 1e-4
    security = int(np.flatnonzero((groups == group) & (np.asarray(problem.buy_upper)[0, 0] > 1e-6))[0])
    buy, sell = relaxed.buy.copy(), relaxed.sell.copy()
    buy[0], sell[0] = final.buy[0], final.sell[0]
    buy[0, 0, security] += 2 * CONFIG.wash_tolerance
    settled, changed = driver._wash_fix(problem, buy, sell, CONFIG)
    assert changed.all()
    out_buy, out_sell, resolve = driver._settle_without_resolve(problem, settled, buy, sell, changed, CONFIG)
    # the hair is dropped and household 0 is done; the others' fixes cost more than the tolerance
    assert not resolve[0] and resolve[1:].all()
    assert out_buy[0, 0, security] <= final.buy[0, 0, security] + 1e-12
    assert not evaluate.wash_two_sided(settled, out_buy, out_sell, 0.0)[0][0].any()
    cost = evaluate.objective(settled, out_buy, out_sell)[0] - evaluate.objective(problem, buy, sell)[0]
    assert cost <= repair.objective_tolerance(CONFIG, final.objective[:1])[0]
    np.testing.assert_array_equal(out_buy[1:], buy[1:])
    np.testing.assert_array_equal(out_sell[1:], sell[1:])


def test_vmapped_admm_equals_loop_of_single_solves():
    problem = random_batch(3, accounts=2, seed=8, **SHAPE)
    batched = solve(problem, ADMM)
    lots = lot_layout(evaluate.prepare(problem)[0]).lots
    for h in range(3):
        single = solve(take(problem, [h]), ADMM, lots=lots)   # the batch's padding: its rounding too
        np.testing.assert_allclose(single.objective[0], batched.objective[h], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(single.buy[0], batched.buy[h], atol=1e-9)
        np.testing.assert_allclose(single.sell[0], batched.sell[h], atol=1e-9)


def test_a_batch_padded_to_more_households_solves_its_own_the_same():
    """Padding households (fixed at no trade) change nothing: not the solution, not the iterations."""
    problem = random_batch(3, accounts=2, seed=8, **SHAPE)
    own = solve(problem, ADMM)                       # runs at 4
    padded = solve(problem, ADMM, households=16)     # runs at 16, then compacts to 4
    assert padded.buy.shape == own.buy.shape and padded.state.buy.shape[0] == 3
    assert padded.problem.target.shape[0] == 3
    np.testing.assert_array_equal(padded.iterations, own.iterations)
    np.testing.assert_array_equal(padded.status, own.status)
    np.testing.assert_allclose(padded.objective, own.objective, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(padded.sell, own.sell, atol=1e-9)


def test_vmapped_ipm_equals_loop_of_single_solves_to_its_stopping_rule():
    """Batched and alone, a household ends within the stopping rule's distance of its optimum.

    Not bitwise: XLA multiplies a batch of one (a matrix–vector product) in
    another order than a batch of three, and the last interior-point steps of
    a degenerate household amplify that rounding into another point of the
    same optimal face (within the gap, ``ipm_accept`` × the tolerance when it
    stalls there).
    """
    problem = random_batch(3, accounts=2, seed=8, **SHAPE)
    batched = solve(problem, CONFIG)
    absolute, relative = ipm_tolerances(CONFIG)
    for h in range(3):
        single = solve(take(problem, [h]), CONFIG)
        assert single.status[0] == batched.status[h] == SOLVED
        bound = 2 * CONFIG.ipm_accept * max(absolute, relative * abs(batched.objective[h]))
        assert abs(single.objective[0] - batched.objective[h]) <= bound, (h, single.objective, batched.objective[h])


def test_warm_start_needs_fewer_iterations():
    problem = random_batch(4, accounts=1, seed=4, mix="plain", **SHAPE)
    config = SolverConfig(method="admm", wash_rounds=0)   # the same problem both times
    cold = solve(problem, config)
    warm = solve(problem, config, warm=cold.state)
    assert warm.iterations.sum() < cold.iterations.sum()
    np.testing.assert_allclose(warm.objective, cold.objective, rtol=1e-4, atol=1e-7)


def test_float32_and_max_iterations():
    problem = random_batch(2, accounts=1, seed=6, mix="plain", **SHAPE)
    result = solve(problem, SolverConfig(method="admm", dtype="float32", eps_abs=1e-4, eps_rel=1e-4))
    assert np.isfinite(result.objective).all()
    capped = solve(problem, SolverConfig(method="admm", max_iterations=25, eps_abs=1e-12, eps_rel=1e-12,
                                         wash_rounds=0))
    assert (capped.status == MAX_ITERATIONS).all() and (capped.iterations == 25).all()


def test_a_lost_residual_is_reported_as_the_returned_points_violation(monkeypatch):
    """A stalled household returns its best point, not its last iterate, whose residual may have
    been lost (NaN): the result reports the returned point's largest hard-constraint violation, so
    that every number of a run stays finite (the contract's rule 14)."""
    from engine.solver import driver

    problem = random_batch(2, accounts=1, seed=6, mix="plain", **SHAPE)
    made = driver._ipm_solver_state

    def losing(*args, **kwargs):
        state = made(*args, **kwargs)
        residual = np.asarray(state.primal_residual, float).copy()
        residual[0] = np.nan
        return state._replace(primal_residual=residual)

    monkeypatch.setattr(driver, "_ipm_solver_state", losing)
    result = solve(problem, CONFIG)
    assert np.isfinite(result.primal_residual).all()
    assert result.primal_residual[0] == pytest.approx(
        evaluate.violations(result.problem, result.buy, result.sell)[0], abs=1e-12)


@pytest.mark.parametrize("dense", [False, True], ids=["compact", "dense"])
def test_kkt_solve_matches_dense_matrix(dense):
    """The Woodbury solve, in either lot layout, equals a dense solve of K on the same variables."""
    problem, _ = evaluate.prepare(random_batch(1, n=6, accounts=2, lots=2, factors=2, classes=2, seed=3))
    layout = lot_layout(problem, dense=dense)
    p = _one(compact_problem(problem, layout), 0)
    m, n = p.holdings.shape
    P = layout.lots
    N = m * n + P
    eye = np.eye(N)
    lot_shape = np.shape(p.lot_width)

    def unflat(x):
        return jnp.asarray(x[:m * n].reshape(m, n)), jnp.asarray(x[m * n:].reshape(lot_shape))

    M = np.stack([np.asarray(admm.trade(p, *unflat(e))) for e in eye], 1)
    G = np.stack([np.asarray(admm.account_rows(p, *unflat(e))).ravel() for e in eye], 1)
    C = np.asarray(admm.class_onehot(p)).T @ M
    X, F, d = (np.asarray(p.exposures), np.asarray(p.factor_covariance), np.asarray(p.specific_variance))
    P_ = 2 * float(p.risk_aversion) * M.T @ (X @ F @ X.T + np.diag(d)) @ M
    rho = 0.37
    rb, rz = admm.bound_rho(p, rho, CONFIG)
    K = (P_ + np.diag(CONFIG.sigma + np.concatenate([np.ravel(rb), np.ravel(rz)]))
         + rho * CONFIG.row_rho_scale * (G.T @ G + C.T @ C))
    v = np.random.default_rng(0).standard_normal(N)
    xb, xz = admm.solve_kkt(p, admm.factorize(p, jnp.asarray(rho), jnp.full((m, 3), CONFIG.row_rho_scale),
                                                 jnp.full(C.shape[0], CONFIG.row_rho_scale), CONFIG), *unflat(v))
    np.testing.assert_allclose(np.concatenate([np.ravel(xb), np.ravel(xz)]), np.linalg.solve(K, v),
                               rtol=1e-9, atol=1e-12)


def test_a_batch_stays_dense_unless_padding_is_most_of_it():
    little = evaluate.prepare(random_batch(2, n=30, accounts=1, lots=2, seed=5))[0]
    much = evaluate.prepare(random_batch(2, n=30, accounts=2, lots=24, seed=5))[0]
    assert lot_layout(little).dense and not lot_layout(much).dense
    assert lot_layout(much).lots * 2 <= np.asarray(much.lot_width)[0].size


def test_the_compact_layout_keeps_every_real_lot_and_drops_the_padding():
    problem, _ = evaluate.prepare(random_batch(3, n=30, accounts=2, lots=6, factors=2, classes=2, seed=5))
    layout = lot_layout(problem, dense=False)
    assert lot_layout(problem, dense=True).compact(problem.lot_width) is problem.lot_width
    width = np.asarray(problem.lot_width)
    real = (width > 0).reshape(3, -1).sum(1)
    assert layout.lots < width[0].size and (layout.valid.sum(1) == real).all()
    for name in ("lot_width", "lot_tax", "sell_upper"):
        dense = np.asarray(getattr(problem, name))
        np.testing.assert_array_equal(layout.expand(layout.compact(dense)), np.where(width > 0, dense, 0))
    m, n, L = layout.shape
    position = np.where(layout.valid, layout.index // L, -1)
    np.testing.assert_array_equal(position[layout.valid], layout.position[layout.valid])
    assert (np.diff(layout.position, axis=1) >= 0).all()      # sorted, padding at the last position


def test_the_host_steps_measure_the_same_in_both_lot_layouts():
    """``solve``'s host-side steps run on the compact layout: each agrees with its dense self."""
    from engine.solver import driver, repair

    raw = random_batch(6, n=30, accounts=2, lots=6, factors=2, classes=2, seed=21, mix="wash")
    dense, _ = evaluate.prepare(raw)
    layout = lot_layout(dense, dense=False)
    compact = compact_problem(dense, layout)
    np.testing.assert_array_equal(evaluate.prepare(compact_problem(raw, layout))[0].sell_lower, compact.sell_lower)
    first = solve(dense, SolverConfig(wash_rounds=0))
    rng = np.random.default_rng(3)
    # off the bounds here and there, so that violations and repairs have something to find
    buy = first.buy + rng.normal(0, 1e-3, first.buy.shape) * (rng.random(first.buy.shape) < 0.2)
    sell = np.where(np.asarray(dense.lot_width) > 0, first.sell + rng.normal(0, 1e-3, first.sell.shape), 0.0)
    sell_c = layout.compact(sell)
    same = functools.partial(np.testing.assert_allclose, rtol=1e-12, atol=1e-15)
    same(evaluate.objective(compact, buy, sell_c), evaluate.objective(dense, buy, sell))
    same(evaluate.violations(compact, buy, sell_c), evaluate.violations(dense, buy, sell))
    same(evaluate.max_cash(compact), evaluate.max_cash(dense))
    for ours, theirs in zip(evaluate.rows(compact, buy, sell_c), evaluate.rows(dense, buy, sell)):
        same(ours, theirs)
    for ours, theirs in zip(evaluate.wash_two_sided(compact, first.buy, layout.compact(first.sell)),
                            evaluate.wash_two_sided(dense, first.buy, first.sell)):
        same(ours, theirs)
    repaired, repaired_c = repair.repair(dense, buy, sell, 1e-4), repair.repair(compact, buy, sell_c, 1e-4)
    same(repaired_c[0], repaired[0])
    same(layout.expand(repaired_c[1]), repaired[1])
    fixed, changed = driver._wash_fix(dense, first.buy, first.sell, CONFIG)
    fixed_c, changed_c = driver._wash_fix(compact, first.buy, layout.compact(first.sell), CONFIG)
    assert changed.any() and (changed_c == changed).all()
    np.testing.assert_array_equal(fixed_c.buy_upper, fixed.buy_upper)
    np.testing.assert_array_equal(layout.put(dense.sell_upper, fixed_c.sell_upper), fixed.sell_upper)
    assert fixed_c.lot_position is compact.lot_position


def test_prox_of_exact_penalty():
    v = jnp.asarray([-3.0, -1.5, 0.5, 1.2, 5.0])
    out = admm.prox_interval(v, 0.0, 1.0, jnp.inf, 2.0, 1.0)
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 3.0])


@pytest.mark.parametrize("seed", range(5))
def test_the_step_to_the_boundary_is_the_smallest_ratio_over_the_pairs_that_shrink(seed):
    """The step length from reciprocals (ipm._max_step) against the quotients it replaced,
    with masked-out entries whose values are 0 (infinite reciprocals) among them."""
    from engine.solver import ipm

    rng = np.random.default_rng(seed)
    pairs, reciprocals, ratios = [], [], []
    for size in (7, 30, 1):
        s, z = rng.uniform(1e-9, 2.0, size), rng.uniform(1e-9, 2.0, size)
        ds, dz = rng.normal(size=size), rng.normal(size=size)
        mask = rng.random(size) < 0.7
        s, z = np.where(mask, s, 0.0), np.where(mask, z, 0.0)
        with np.errstate(divide="ignore"):
            pairs.append(tuple(jnp.asarray(v) for v in (s, z, ds, dz, mask)))
            reciprocals.append((jnp.asarray(1.0 / s), jnp.asarray(1.0 / z)))
            for v, dv in ((s, ds), (z, dz)):
                shrinking = mask & (dv < 0)
                ratios.extend((v[shrinking] / -dv[shrinking]).tolist())
    expected = min(ratios, default=np.inf)
    got = float(ipm._max_step(pairs, reciprocals))
    if np.isinf(expected):
        assert np.isinf(got)
    else:
        assert got == pytest.approx(expected, rel=1e-14)


@pytest.mark.slow
@pytest.mark.parametrize("config", [CONFIG, ADMM, SolverConfig(eps_abs=1e-5, eps_rel=1e-5),
                                    SolverConfig(eps_abs=1e-5, eps_rel=1e-5, lot_layout="compact"),
                                    SolverConfig(eps_abs=1e-5, eps_rel=1e-5, ipm_refine=1)],
                         ids=["ipm", "admm", "ipm-1e-5", "ipm-1e-5-compact", "ipm-1e-5-refine-1"])
def test_two_hundred_instances_match_clarabel(config):
    """≥ 200 households of varied sizes and every constraint mix against Clarabel.

    ``ipm-1e-5`` is the tolerance of ``canopy.toml`` and of the solver benchmark.
    """
    bad, count = [], 0
    shapes = [dict(n=20, accounts=1, lots=3), dict(n=40, accounts=2, lots=4), dict(n=30, accounts=4, lots=3),
              dict(n=60, accounts=1, lots=6)]
    for s, shape in enumerate(shapes):
        for mix in MIXES:
            problem = random_batch(6, factors=4, classes=4, seed=100 * s + MIXES.index(mix), mix=mix, **shape)
            result, report, violation = check_against_oracle(problem, config)
            count += len(report)
            bad += [(shape, mix) + r for r in report if not _within(r[1], r[2])]
            assert (violation <= 1e-6).all(), (shape, mix, violation)
            if mix == "infeasible_floor":
                assert (result.status == INFEASIBLE).all()
    assert count >= 200
    assert not bad, f"{len(bad)} of {count} households off Clarabel: {bad}"


def test_compiled_programs_are_dropped_past_a_share_of_the_memory_map_limit():
    from engine.solver.driver import _memory_maps, trim_compiled

    maps, limit = _memory_maps()
    if not limit:
        pytest.skip("no /proc memory-map counts here")
    problem = random_batch(1, accounts=1, seed=2, mix="plain", **SHAPE)
    solve(problem, CONFIG)
    assert not trim_compiled(share=1.0)                  # under the limit: kept
    assert trim_compiled(share=0.0)                      # past it: cleared ...
    assert np.isfinite(solve(problem, CONFIG).objective).all()   # ... and compiled again on use


def test_program_seconds_counts_the_making_of_a_program_once():
    import jax

    from engine.solver import program_seconds

    double = jax.jit(lambda x: 2.0 * x + 1.0)
    before = program_seconds()
    double(np.ones(13)).block_until_ready()
    made = program_seconds()
    assert made > before                                 # traced, lowered, compiled: counted
    double(np.ones(13)).block_until_ready()
    assert program_seconds() == made                     # the same program again: nothing to make


def test_an_unknown_lot_layout_is_refused():
    with pytest.raises(ValueError, match="lot_layout"):
        solve(random_batch(1, accounts=1, seed=2, mix="plain", **SHAPE), SolverConfig(lot_layout="sparse"))


@pytest.mark.parametrize("key,value", [("lot_layout", "sparse"), ("method", "newton"), ("dtype", "float16")])
def test_a_word_setting_outside_its_choices_is_refused_at_load(key, value):
    from engine.contract.config import config_from_dict
    from engine.contract.errors import ConfigError

    with pytest.raises(ConfigError, match=f"solver\\]\\.{key}: '{value}' is not one of"):
        config_from_dict({"solver": {key: value}}, where="canopy.toml")
    assert getattr(config_from_dict({"solver": {key: getattr(SolverConfig(), key)}}).solver, key)


def test_dust_is_put_on_its_bounds_unless_that_costs_more_than_the_tolerance():
    """A household's hair-thin buys go to 0, except where together they are worth more than the tolerance."""
    from engine.solver import repair

    problem, _ = evaluate.prepare(random_batch(4, accounts=2, seed=12, **SHAPE))
    raw = solve(problem, dataclasses.replace(CONFIG, dust=0.0, wash_rounds=0))
    buy, sell = raw.buy, raw.sell
    dust = float(np.quantile(buy[buy > 0], 0.5))          # half the buys are "dust" at this size
    before = evaluate.objective(problem, buy, sell)

    strict = dataclasses.replace(CONFIG, dust=dust)
    b, s = repair.without_dust(problem, buy, sell, strict)
    absolute, relative = ipm_tolerances(strict)
    assert (evaluate.objective(problem, b, s) - before <= np.maximum(absolute, relative * np.abs(before))).all()
    assert ((b > 0) & (b < dust)).any()                   # kept: snapping them costs more

    loose = dataclasses.replace(CONFIG, dust=dust, eps_abs=1.0, eps_rel=1.0)
    b, s = repair.without_dust(problem, buy, sell, loose)
    assert not ((b > 0) & (b < dust)).any()               # within a loose tolerance: snapped
    assert (evaluate.violations(problem, b, s) <= 1e-9).all()
