"""The compact lot layout the jitted solver runs on, and the moves between it and the dense one.

A ``ProblemBatch`` is assembled dense: every lot field is (B, m, n, L), each
position padded to the most lots any position of the shard holds.  On a real
book that is mostly padding: a direct index holds 500 positions of one to a
dozen lots each, and a household's IRA holding five funds is padded to the
household's whole universe, so 7–20 of every 21 lot variables of a nightly
shard are padding (``benchmarks/solver.py`` instances: about half).  An
interior-point iteration is a few hundred elementwise passes over the lot
variables, so padding costs its full share of the time.

The compact layout keeps each household's *real* lots (a width, or a sale
allowed or forced), in their dense order, in a (B, P) array; P is the most
real lots of any household of the batch, padded to
:func:`~engine.solver.shapes.pad_household_lots` (a ladder, so a night
compiles a handful of sizes).  ``lot_position`` (B, P) says which position
``a·n + i`` a lot belongs to; sums over a position's lots are segment sums
over it (``jax.ops.segment_sum``, sorted indices) and broadcasts are
gathers.  Padding lots have width, cost, tax and bounds 0 (a fixed variable
at 0, as in the dense layout) and sit at position ``m·n``, past the last,
which no sum keeps and no broadcast reaches: the maps stay each other's
transposes, and the positions sorted.

The layout is fixed for the whole of one ``solve``: its re-solves only lower
sale bounds to 0, which turns a real lot into a fixed one.  Where a batch is
little padded (the dense layout has fewer than ``COMPACT_RATIO`` slots per
compact lot) it stays dense: there the segment sums cost more than the
padding they save.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from engine.solver.shapes import pad_household_lots
from engine.solver.types import ProblemBatch, SolverState

#: The lot fields of ``ProblemBatch``: (B, m, n, L) dense, (B, P) compact.
LOT_FIELDS = ("lot_width", "lot_cost", "lot_tax", "lot_loss", "sell_lower", "sell_upper")
#: The lot fields of ``SolverState``.
STATE_LOT_FIELDS = ("sell", "z_sell", "y_sell")
#: The compact layout is used where the dense one has at least this many lot slots per compact lot.
#: Its position sums are scatters (about 9 ns an element on XLA's CPU backend, some 18 an
#: interior-point iteration): at (500 securities, 1 account) of the solver benchmark, 4,500 dense
#: slots for 4,096 compact lots, an iteration cost 1.0 ms compact and 0.44 ms dense.
COMPACT_RATIO = 2.0


class LotLayout(NamedTuple):
    """Where each compact lot lives in the dense layout.

    Attributes
    ----------
    index : (B, P) int64
        Flat index of the lot in the household's dense ``m·n·L`` lots
        (padding slots: distinct dense slots that hold no lot); empty, as
        are ``valid`` and ``position``, where the layout is dense.
    valid : (B, P) bool
        A real lot (False: padding).
    position : (B, P) int32
        ``a·n + i`` of the lot's position (padding: ``m·n``, a position of its own that no sum keeps).
    shape : (m, n, L)
        The dense shape of one household's lots.
    dense : bool
        The batch stays dense (little padding: see ``COMPACT_RATIO``);
        ``compact`` and ``expand`` are then the identity.
    """

    index: np.ndarray
    valid: np.ndarray
    position: np.ndarray
    shape: tuple[int, int, int]
    dense: bool = False

    @property
    def lots(self) -> int:
        return int(np.prod(self.shape)) if self.dense else int(self.index.shape[1])

    def compact(self, dense) -> np.ndarray:
        """(B, m, n, L) → (B, P); padding slots 0 (False)."""
        dense = np.asarray(dense)
        if self.dense:
            return dense
        values = np.take_along_axis(dense.reshape(dense.shape[0], -1), self.index, axis=1)
        return np.where(self.valid, values, np.zeros((), values.dtype))

    def expand(self, compact) -> np.ndarray:
        """(B, P) → (B, m, n, L); lots that are not real 0."""
        compact = np.asarray(compact)
        if self.dense:
            return compact
        B = compact.shape[0]
        out = np.zeros((B, int(np.prod(self.shape))), compact.dtype)
        np.put_along_axis(out, self.index, np.where(self.valid, compact, np.zeros((), compact.dtype)), axis=1)
        return out.reshape((B,) + self.shape)

    def put(self, dense, compact) -> np.ndarray:
        """``dense`` (B, m, n, L) with its real lots' values replaced by ``compact`` (B, P)."""
        dense = np.asarray(dense)
        if self.dense:
            return np.asarray(compact)
        B = dense.shape[0]
        out = dense.reshape(B, -1).copy()
        kept = np.take_along_axis(out, self.index, axis=1)
        np.put_along_axis(out, self.index, np.where(self.valid, compact, kept), axis=1)
        return out.reshape(dense.shape)


def lot_layout(problem: ProblemBatch, lots: int | None = None, dense: bool | None = None) -> LotLayout:
    """The compact layout of a dense batch: each household's real lots, in dense order.

    ``lots`` pads to at least that many lots per household (a shard's
    planned P, or a larger batch's, so that a household has the same arrays
    as in that batch).  ``dense`` forces the choice of layout (None: by
    ``COMPACT_RATIO``).
    """
    width = np.asarray(problem.lot_width)
    B, m, n, L = width.shape
    real = ((width > 0) | (np.asarray(problem.sell_upper) > 0)
            | (np.asarray(problem.sell_lower) > 0)).reshape(B, -1)
    counts = real.sum(axis=1)
    P = min(max(pad_household_lots(int(counts.max()) if B else 1), lots or 0), m * n * L)
    if dense is None:
        dense = m * n * L < COMPACT_RATIO * P
    if dense:                                   # compact and expand are the identity: no index to build
        empty = np.zeros((B, 0), np.int64)
        return LotLayout(empty, empty.astype(bool), empty.astype(np.int32), (m, n, L), True)
    index = np.argsort(~real, axis=1, kind="stable")[:, :P]     # real lots first, in dense order
    valid = np.arange(P)[None, :] < counts[:, None]
    position = np.where(valid, index // L, m * n).astype(np.int32)
    return LotLayout(index.astype(np.int64), valid, position, (m, n, L), False)


def compact_problem(problem: ProblemBatch, layout: LotLayout) -> ProblemBatch:
    """The dense batch in the compact layout (``lot_position`` set); itself where the layout is dense."""
    if layout.dense:
        return problem
    fields = {f: layout.compact(getattr(problem, f)) for f in LOT_FIELDS}
    return problem._replace(lot_position=layout.position, **fields)


def compact_state(state: SolverState, layout: LotLayout) -> SolverState:
    """A dense ``SolverState`` (a warm start) in the compact layout."""
    return state._replace(**{f: layout.compact(getattr(state, f)) for f in STATE_LOT_FIELDS})


def expand_state(state: SolverState, layout: LotLayout) -> SolverState:
    """A compact ``SolverState`` in the dense layout (what ``SolverResult.state`` holds)."""
    return state._replace(**{f: layout.expand(getattr(state, f)) for f in STATE_LOT_FIELDS})
