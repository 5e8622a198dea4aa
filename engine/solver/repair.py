"""A solution put on its bounds: projection, the cash floor repaired, dust snapped off.

An iterative solve stops within its tolerance of the optimum, a hair off its
bounds, and with any cash floor missed by at most its primal residual.  These
host-side NumPy steps turn such an iterate into trades that hold exactly:
:func:`repair` projects onto the bounds and closes a cash-floor shortfall,
and :func:`without_dust` also puts trades within ``SolverConfig.dust`` of a
bound on it, where that costs no more than the solve's tolerance
(:func:`objective_tolerance`).  Trades, bounds and cash are in units of the
household's value V.
"""

from __future__ import annotations

import numpy as np

from engine.contract.config import SolverConfig
from engine.solver import evaluate, ipm
from engine.solver.types import ProblemBatch, take

__all__ = ["objective_tolerance", "repair", "without_dust"]


def without_dust(prepared: ProblemBatch, buy, sell, config: SolverConfig):
    """The solution repaired (:func:`repair`), its trades within ``config.dust`` of a bound put on it.

    Where that costs a household more objective than the solve's tolerance,
    its buys are left as they are (its lots are still put on their bounds):
    a household with little to do can spread its optimum over hundreds of
    buys under ``dust`` each (one of the solver benchmark's, 575 of them,
    4.4e-7 of its value in all, worth 8e-7 of an objective of 5.6e-5).
    Such buys are below any trade's minimum, and proposals drop them.
    """
    snapped = repair(prepared, buy, sell, config.dust)
    if config.dust <= 0:
        return snapped
    before = evaluate.objective(prepared, *repair(prepared, buy, sell))
    costly = evaluate.objective(prepared, *snapped) - before > objective_tolerance(config, before)
    if not costly.any():
        return snapped
    rows = np.flatnonzero(costly)
    buy_out, sell_out = snapped[0].copy(), snapped[1].copy()
    buy_out[rows], sell_out[rows] = repair(take(prepared, rows), np.asarray(buy)[rows], snapped[1][rows])
    return buy_out, sell_out


def objective_tolerance(config: SolverConfig, objective: np.ndarray) -> np.ndarray:
    """How far from its optimum a solve leaves a household's objective, (B,): the stopping rule's tolerance."""
    absolute, relative = ipm.tolerances(config) if config.method == "ipm" else (config.eps_abs, config.eps_rel)
    return np.maximum(absolute, relative * np.abs(objective))


def repair(problem: ProblemBatch, buy: np.ndarray, sell: np.ndarray,
           dust: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Project onto the bounds, then close any cash-floor shortfall: fewer buys, then more sells.

    A variable within ``dust`` (units of V) of a bound is put on it first: an
    interior point leaves every buy and lot a hair off its bounds, and a dust
    buy is still a purchase that opens a wash-sale window downstream.
    """
    lower = np.asarray(problem.sell_lower)
    upper = np.asarray(problem.sell_upper)
    if dust > 0:
        buy = np.where(buy < dust, 0.0, buy)
        sell = np.where(sell - lower < dust, lower, np.where(upper - sell < dust, upper, sell))
    buy = np.clip(buy, 0.0, np.asarray(problem.buy_upper))
    sell = np.clip(sell, lower, upper)
    cash_after = evaluate.rows(problem, buy, sell)[0]
    short = np.maximum(np.asarray(problem.cash_floor) - cash_after, 0.0)
    if (short > 0).any():
        bought = buy.sum(axis=2)
        cut = np.where(bought > 0, np.minimum(short / np.where(bought > 0, bought, 1.0), 1.0), 0.0)
        buy = buy * (1.0 - cut)[:, :, None]
        short = np.maximum(short - cut * bought, 0.0)
        room = np.asarray(problem.sell_upper) - sell
        total = evaluate.position_sums(problem, room).sum(axis=2)
        more = np.where(total > 0, np.minimum(short / np.where(total > 0, total, 1.0), 1.0), 0.0)
        sell = sell + room * evaluate.to_lots(problem, more)
    return buy, sell
