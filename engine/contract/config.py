"""Settings: frozen, hashable dataclasses loaded from an optional TOML file.

A ``canopy.toml`` has up to three tables, ``[policy]``, ``[solver]`` and
``[run]``; any key left out keeps the default documented on the field.
Because the dataclasses are frozen and hashable, a ``SolverConfig`` can be a
static argument of a jitted function.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from engine.contract.errors import ConfigError


@dataclass(frozen=True)
class PolicyConfig:
    """How the firm trades off taxes, risk and costs.

    Attributes
    ----------
    stale_price_days
        A price older than this many calendar days before ``as_of`` is stale;
        an account holding or targeting the security is rejected.
    model_weight_tolerance
        How far a model's or template's weights may sum from 1.
    harvest_deferral
        Share of the later tax that deferring it saves.  A harvested loss
        saves its term's rate now, but lowers the replacement's basis by as
        much, so a gain as large is taxed later at the long-term rate: per
        USD of loss it is worth ``rate − (1 − this) × lt_rate``.  A long-term
        loss is worth this × ``lt_rate``; a short-term one more (it offsets
        ``st_rate`` now against ``lt_rate`` later).  1 = the full tax (the
        basis is never taxed: a step-up at death, a gift to charity).
    harvest_min_fraction
        Smallest loss worth harvesting, as a fraction of the lot's value
        (a loss must pass both thresholds; both scale through the year, see
        ``harvest_year_end_scale``).  The solver already weighs a harvest's
        spread and tracking error against the loss, so the thresholds only
        keep off losses too small to be worth a ticket; higher thresholds
        harvest less (the backtest of docs/backtest.md: at 5% and USD 100 Canopy's
        tax alpha fell below the monthly harvester's on 500 stocks).
    harvest_min_dollars
        Smallest loss worth harvesting, in USD.
    harvest_year_end_scale
        The harvest thresholds tighten through the year: on each day they are
        ``1 − (1 − this) × (share of the year gone)`` times themselves, so
        this times themselves on December 31 (1 = the same all year).  A loss
        harvested in December saves its tax the next April, one in January
        fifteen months later: late in the year smaller losses are worth it.
    window_harvest_ratio
        A purchase of a wash group in the last 30 days blocks every loss sale
        of the group, unless every share bought then is sold today too (rule
        6).  Where every buyer can sell, the engine sells those shares when
        that costs (tax and spread) at most this times what the group's other
        losses are worth to the objective, and the solver may then harvest
        them; the group is not bought that day (0 = the window always waits).
    long_term_wait_days
        A lot at a short-term gain that turns long-term within this many days
        is not sold unless a screen forces it or the account starts below its
        cash floor: waiting turns the short-term rate into the long-term one
        (0 = off).
    long_term_gain_weight
        Weight of the tax of a long-term gain in the trade-off against
        tracking error, as a fraction of the tax (1 = the full tax, deferred
        unless the risk it removes is worth it; lower realizes long-term gains
        more readily to stay on target).
    forced_harvest_dollars
        Realize up to this many USD of losses now in every taxable account
        that harvests: its loss lots, largest loss per dollar first, are sold
        (the last in part) unless the wash-sale rule blocks them; the solver
        chooses their replacements through the risk model, never from their
        wash group (0 = off; a one-off lever for a run).
    tax_inefficient_classes
        Asset classes whose income is taxed every year (taxable bonds, REITs):
        in a household with a tax-deferred or exempt account, its taxable
        accounts buy none of them while the tax-advantaged accounts can hold
        the household's target of them (asset location).
    asset_location_credit
        Objective credit per USD sold of a tax-inefficient class in such a
        taxable account (times its tax sensitivity): moves it to the
        tax-advantaged accounts when that costs little tax.
    prorate_tax_budget
        Prorate each account's yearly ``tax_budget`` to the day: on a day a
        share ``f`` into the year, at most ``f × tax_budget`` of tax realized
        so far (false = the whole budget from January 1).
    risk_aversion
        Weight of the tracking-error variance against taxes and costs, per
        unit of variance (annualized) and per unit of account value.  1.5
        with the harvest thresholds above kept the backtest's tracking error
        below the monthly harvester's on every history tried; the realized
        tracking error of a 20-stock account moves with it by tenths of a
        percent either way, not monotonically (docs/backtest.md).
    substitutes
        An account may buy, besides its targets, the securities of the
        products its template lists for the same asset class and those the
        book's ``substitutes`` table names for its targets, where it cannot
        buy a target itself (a restriction, a loss to harvest, a wash-sale
        window); the risk model sizes them (docs/substitutes.md).  False
        gives the behaviour before substitutes exactly.
    substitute_max_securities
        A listed product of more securities than this (a direct index) is
        not a substitute: an account that wants it chooses it as its
        product.  An asset class whose own product has more takes no
        substitutes from its template: the index's other names stand in.
    """

    stale_price_days: int = 5
    model_weight_tolerance: float = 1e-6
    harvest_deferral: float = 0.5
    harvest_min_fraction: float = 0.01
    harvest_min_dollars: float = 20.0
    harvest_year_end_scale: float = 0.5
    window_harvest_ratio: float = 0.5
    long_term_wait_days: int = 31
    long_term_gain_weight: float = 1.0
    forced_harvest_dollars: float = 0.0
    tax_inefficient_classes: tuple[str, ...] = ("us_aggregate_bonds", "high_yield_bonds",
                                                "inflation_bonds", "real_estate")
    asset_location_credit: float = 0.002
    prorate_tax_budget: bool = False
    risk_aversion: float = 1.5
    substitutes: bool = True
    substitute_max_securities: int = 20


@dataclass(frozen=True)
class SolverConfig:
    """Settings of the batched ADMM solver (:mod:`engine.solver`).

    The solver is OSQP's ADMM (Stellato et al. 2020, Algorithm 1) on the
    household problem scaled to units of household value V; what each setting
    does to speed and accuracy:

    Attributes
    ----------
    max_iterations
        Iterations after which a household is reported as ``max_iterations``
        (its last iterate is still returned, repaired to the hard bounds).
    eps_abs, eps_rel
        Absolute and relative tolerances on the ∞-norm primal residual
        ``‖Ax − z‖`` and dual residual ``‖Px + q + Aᵀy‖`` of the scaled
        problem (OSQP's criterion).  Looser is faster: 1e-6 takes ~20% fewer
        iterations than 1e-7 on the test instances but leaves ~1% of them
        just outside 1e-4 relative / 1e-7 absolute of Clarabel's objective;
        1e-7 (default) meets it on all 216 of the slow oracle test.
    dtype
        ``float64`` (default) or ``float32`` (about 1.3–2× faster on CPU and
        half the memory; residuals below ~1e-6 are then out of reach, so pair
        it with ``eps ≥ 1e-5``).
    rho
        Initial ADMM step size ρ of the constraint rows.  Adaptive ρ corrects
        a poor choice within a few checks; a good one saves those checks.
    sigma
        Proximal regularization σ of the x-update (keeps the linear system
        definite; tiny, does not affect the solution).
    alpha
        Over-relaxation α ∈ (0, 2); 1.6 is OSQP's default and usually fastest.
    adaptive_rho
        Rescale ρ at each check by ``sqrt(primal/dual)`` residual ratio (both
        normalized): far fewer iterations on badly scaled households.
    adaptive_rho_tolerance
        Change ρ only when the rescale factor is above this or below its
        inverse (each change re-factors the small Woodbury core, r×r per
        household, r = factors + classes + 3 × accounts).
    rho_min, rho_max
        Bounds of ρ.
    fixed_rho_scale
        ρ of a bound row whose lower and upper bound are equal (fixed
        variables: blocks, padding) is ρ times this, as in OSQP.
    bound_scaling
        Exponent e of the per-lot scaling of ρ, ``ρ (w̄ / width)^e``: lots of
        very different sizes converge at one pace (0 = one ρ for all).
    buy_scaling
        Scale the ρ of each purchase the same way, by the position's size
        (held or targeted) instead of the lot's; off by default (it helped
        no instance of the benchmark).
    row_rho_scale
        ρ of an account or class row whose dual is 0 (not binding), as a
        fraction of ρ; binding rows get the full ρ.  Small values let the
        bounds converge without being held back by rows that do not bind.
    check_interval
        Iterations per jitted chunk between convergence checks.  Longer chunks
        cost fewer host round trips and ρ updates, but overshoot convergence
        by up to a chunk and drop converged households from the batch later.
    wash_rounds
        Re-solves allowed to separate wash groups bought and sold at a loss in
        one household.  A household that needs one has every wash group fixed
        to the direction its solution took, so one re-solve usually
        separates it (both methods re-solve from the first solution, the
        interior-point method pushed inside the new bounds).  The last round
        fixes the remaining groups' buys to 0; a group still two-sided after it
        has its buys dropped without a re-solve.  0 skips the separation: the
        result is the convex relaxation, which may buy and loss-sell one group.
    wash_tolerance
        A buy or loss sale smaller than this (units of V) counts as none.
    dust
        A solution's trade within this of a bound (units of V: 1e-8 is one
        cent on USD 1M) is put on the bound.  The interior-point method ends a
        hair inside every bound, and a dust purchase would still open a
        wash-sale window for the household; its effect on the objective is
        that of a trade of this size.  Where that costs a household more
        objective than the solve's tolerance (hundreds of hair-thin buys
        that matter together), its buys are left as they are: they are
        below any trade's minimum, and proposals drop them.
    method
        ``"ipm"`` (default): the primal–dual interior-point method of
        :mod:`engine.solver.ipm` (Mehrotra's predictor–corrector on the same
        Woodbury solve): 10–15 iterations per solve, ~20 at 500 securities
        with the wash-sale re-solve, each ~0.8 ms of CPU per household at
        n = 500, L = 9 (about 20 ADMM iterations); degenerate households
        that stall near 1e-8 end at their best point (see ``ipm_accept``).
        ``"admm"``: the ADMM above, hundreds to thousands of iterations at
        eps 1e-7, but it warm-starts (from yesterday's ``SolverResult.state``),
        which the interior-point method barely can.  The ``ipm_*`` settings
        below apply to the interior-point method only; ``rho`` to
        ``check_interval`` to ADMM only.
    lot_layout
        How the jitted solver lays out the lots (:mod:`engine.solver.layout`):
        ``"compact"``, each household's real lots only (a night's shards are
        mostly padding: about 10× faster there); ``"dense"``, accounts ×
        securities × lots per position (faster where there is little
        padding: its sums are not scatters); ``"auto"`` (default), compact
        where the dense layout has at least ``COMPACT_RATIO`` (2) slots per
        compact lot.
    ipm_absolute
        The interior-point method stops when the primal residual (units of
        V) and the dual residual are below ``ipm_absolute × eps_abs`` and the
        total complementarity gap (units of the objective; it bounds the
        distance to the optimal objective) is below that or ``eps_rel`` ×
        |objective|.  Each 10× tighter costs one or two iterations, until
        the solves lose their digits (see ``ipm_accept``).
    ipm_initial_mu
        Complementarity μ of the interior start, per unit of the mean lot
        width: larger starts better centred and far from the bounds (robust,
        a few more iterations).
    ipm_warm_margin
        A warm start's primal point is pushed this fraction of each bound
        interval inside, and its duals floored at this fraction of the cold
        start's: smaller keeps more of the warm start and risks a poorly
        centred start.
    ipm_check_interval
        Interior-point iterations per jitted chunk between the host's checks
        (finished households stay frozen inside a chunk); fewer checks
        cost fewer host round trips, but finished households leave the
        batch later.
    ipm_refine
        Steps of iterative refinement of each Newton solve (each costs one
        more Woodbury solve and one product with the matrix).  Near the end the barrier's diagonal spans ~20
        orders of magnitude and the Woodbury solve loses digits; without a
        step some households stall short of the tolerance, and with one a
        degenerate household's last iterations still depend on rounding
        (how XLA fuses a chunk), so two steps are the default.
    ipm_regularization
        Primal regularization δ added to the barrier's diagonal (units of
        objective per V²).  Degenerate households (equal-cost lots, one
        security bought in several accounts) make the Newton matrix singular
        along their optimal face as μ → 0; δ keeps the solves accurate there at
        the price of a slightly inexact Newton step.  Too large slows the
        final convergence; too small lets households stall at ~1e-8.
    ipm_accept, ipm_stall_iterations
        A household whose merit (the largest of its residuals and gap over
        their tolerances) has not improved for ``ipm_stall_iterations``, or
        has jumped 1000× above its best, has stalled; its best point is the
        answer, ``solved`` if its merit is at most ``ipm_accept`` (the gap
        then at most ``ipm_accept`` × the tolerance); otherwise it iterates
        on (it may recover) to ``min(max_iterations, ipm_max_iterations)``,
        and ends ``max_iterations`` with its best point.  Larger
        ``ipm_accept`` turns more stalls into solves, at that loss of
        accuracy.
    ipm_max_iterations
        The interior-point method's own cap (it converges in 10–40; a
        household still running at 100 has stalled).
    """

    max_iterations: int = 4000
    eps_abs: float = 1e-7
    eps_rel: float = 1e-7
    dtype: str = "float64"
    rho: float = 1.0
    sigma: float = 1e-6
    alpha: float = 1.6
    adaptive_rho: bool = True
    adaptive_rho_tolerance: float = 5.0
    rho_min: float = 1e-6
    rho_max: float = 1e6
    fixed_rho_scale: float = 1e3
    bound_scaling: float = 0.5
    buy_scaling: bool = False
    row_rho_scale: float = 0.01
    check_interval: int = 25
    wash_rounds: int = 3
    wash_tolerance: float = 1e-7
    dust: float = 1e-8
    method: str = "ipm"
    lot_layout: str = "auto"
    ipm_absolute: float = 1e-2
    ipm_initial_mu: float = 0.1
    ipm_warm_margin: float = 0.01
    ipm_check_interval: int = 5
    ipm_refine: int = 2
    ipm_regularization: float = 1e-8
    ipm_accept: float = 100.0
    ipm_stall_iterations: int = 4
    ipm_max_iterations: int = 100


@dataclass(frozen=True)
class RunConfig:
    """How a nightly run is distributed and committed.

    Attributes
    ----------
    shard_accounts
        Most accounts per shard (households are never split).  Larger shards
        amortize per-call overhead; smaller ones balance the actors better
        and lose less work when a worker dies.
    shard_elements
        Most lot variables ``households × m × n × L`` per shard: bounds the
        solver's memory per actor (about 15 arrays of that size, 8 bytes each)
        and the size of its batch.  A batch whose arrays stay in a core's
        cache costs less a household: a direct-index household-iteration took
        410 µs in a batch of 32 or 64 and 460–470 µs in one of 128 (one
        core, 2 MB of L2), and at 500,000 the 100,000-account night's actors
        spent 13% less time solving (programs aside) than at 2,000,000.
    min_shape_households
        A shard shape (accounts, lots per position, securities and lots,
        each padded) held by fewer households than this is solved padded to
        a larger shape of the book that covers it, where that costs a
        household at most 4 times its own shape's work: every shape costs
        each actor that meets it its compiled programs, 0.6–7.5 s even from
        JAX's compilation cache (measured before the solver kept its
        programs' exports, :mod:`engine.solver.programs`, which took 35–40%
        off the 100,000-account night's program time).  0 keeps every shape.
    max_solver_shapes
        Most shapes (accounts, securities, lots: what the solver compiles
        for) of a night: past it, the two shapes whose common padding adds
        the least work are solved at it, until this many are left
        (:func:`engine.rebalance.shards.cap_solver_shapes`).  Fewer shapes
        mean fewer programs to compile on a fresh install's first night and
        to load on the others, for some padding.  0 keeps every shape.
    max_in_flight
        Shards in flight per solver actor (2 keeps an actor busy while the
        driver ships the next shard).
    max_task_retries
        Tries of a shard before its households are isolated and each tried
        alone this many times; a household that fails them all is ``failed``.
    max_failed_accounts
        More accounts than this marked ``failed`` stop the run uncommitted.
    actor_start_timeout
        Seconds to wait for a replacement solver actor when none is alive
        before the run stops.
    pin_actors
        Pin each CPU solver actor to a core of its own
        (:mod:`engine.actors.cores`): its XLA threads then stop competing
        with the other actors' for every core (4.5–7% faster on 2 cores).  Off
        where the actors share their node with other work.
    """

    shard_accounts: int = 512
    shard_elements: int = 500_000
    min_shape_households: int = 32
    max_solver_shapes: int = 8
    max_in_flight: int = 2
    max_task_retries: int = 3
    max_failed_accounts: int = 100
    actor_start_timeout: float = 300.0
    pin_actors: bool = True


@dataclass(frozen=True)
class Config:
    """Every setting of a run."""

    policy: PolicyConfig = PolicyConfig()
    solver: SolverConfig = SolverConfig()
    run: RunConfig = RunConfig()

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Every setting, JSON-ready (lists for tuples), as the run's manifest records it."""
        return {section: {key: list(value) if isinstance(value, tuple) else value
                          for key, value in part.items()}
                for section, part in dataclasses.asdict(self).items()}


_SECTIONS = {"policy": PolicyConfig, "solver": SolverConfig, "run": RunConfig}
#: Settings that take one of a few words.
_CHOICES = {(SolverConfig, "method"): ("ipm", "admm"), (SolverConfig, "lot_layout"): ("auto", "compact", "dense"),
            (SolverConfig, "dtype"): ("float64", "float32")}


def _build(cls: type, values: Mapping[str, Any], where: str):
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(known))}")
    kwargs = {}
    for key, value in values.items():
        default = getattr(cls(), key)
        if default is not None and not isinstance(default, bool) and isinstance(default, (int, float)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{where}.{key}: expected a number, got {value!r}")
            value = type(default)(value) if isinstance(default, float) else value
            if isinstance(default, int) and not isinstance(value, int):
                raise ConfigError(f"{where}.{key}: expected an integer, got {value!r}")
        elif isinstance(default, tuple):
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where}.{key}: expected a list of strings, got {value!r}")
            value = tuple(value)
        elif default is not None and not isinstance(value, type(default)):
            raise ConfigError(f"{where}.{key}: expected {type(default).__name__}, got {value!r}")
        choices = _CHOICES.get((cls, key))
        if choices and value not in choices:
            raise ConfigError(f"{where}.{key}: {value!r} is not one of {', '.join(choices)}")
        kwargs[key] = value
    return cls(**kwargs)


def config_from_dict(data: Mapping[str, Any], where: str = "config") -> Config:
    """A :class:`Config` from a mapping shaped like ``canopy.toml``."""
    unknown = sorted(set(data) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"{where}: unknown section(s) {', '.join(unknown)}; "
                          f"expected {', '.join(_SECTIONS)}")
    parts = {}
    for name, cls in _SECTIONS.items():
        section = data.get(name, {})
        if not isinstance(section, Mapping):
            raise ConfigError(f"{where}: [{name}] must be a table")
        parts[name] = _build(cls, section, f"{where} [{name}]")
    return Config(**parts)


def load_config(path: str | Path | None) -> Config:
    """Load ``canopy.toml``; ``None`` gives the defaults."""
    if path is None:
        return Config()
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return config_from_dict(data, where=str(path))


def _field_docs(cls: type) -> dict[str, str]:
    """Each field's description from the class docstring's numpydoc ``Attributes`` section."""
    docs: dict[str, list[str]] = {}
    current = None
    for line in (cls.__doc__ or "").splitlines():
        stripped = line.strip()
        if line.startswith("    ") and not line.startswith("        ") and stripped:
            names = [n.strip() for n in stripped.split(",")]
            current = names if all(n.isidentifier() for n in names) else None
            for name in current or ():
                docs[name] = []
        elif current and stripped:
            for name in current:
                docs[name].append(stripped)
    return {name: " ".join(lines) for name, lines in docs.items()}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple):
        return json.dumps(list(value))
    return repr(value)


def default_toml(width: int = 88) -> str:
    """Every setting with its default and what it does, as a ``canopy.toml``."""
    import textwrap

    lines = ["# canopy.toml: every setting of a run, at its default. Keep only what you change.", ""]
    for section, cls in _SECTIONS.items():
        lines.append(f"[{section}]")
        docs = _field_docs(cls)
        for field_ in dataclasses.fields(cls):
            for text in textwrap.wrap(docs.get(field_.name, ""), width - 2):
                lines.append(f"# {text}")
            value = getattr(cls(), field_.name)
            lines.append(f"# {field_.name} =" if value is None else f"{field_.name} = {_toml_value(value)}")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def default_compilation_cache() -> str:
    """Where compiled solver programs are kept when ``JAX_COMPILATION_CACHE_DIR`` is not set.

    ``$XDG_CACHE_HOME/canopy/jax`` (``~/.cache/canopy/jax``): the nightly job's actors and
    ``canopy whatif`` keep their compiled shapes there, so a later process loads them instead
    of compiling each for 10-20 s.
    """
    return os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "canopy", "jax")
