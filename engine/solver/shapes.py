"""The padded shapes of a night: one ladder per dimension, defined here and nowhere else.

The solver is jitted, and every distinct shape of its arrays compiles its programs: 10–20 s
per solver actor (less from JAX's persistent cache), and an actor that holds too many compiled
programs runs out of memory maps.  A padded slot, in turn, costs only its share of an iteration
(a padding variable is fixed at 0).  So every
dimension of a ``ProblemBatch`` is padded up a coarse ladder, and a night of thousands of
households compiles a handful of shapes:

* ``m``, accounts per household: :func:`pad_accounts`, a power of two (1, 2, 4, ...);
* ``L``, lots per position (the dense arrays of assembly): :func:`pad_position_lots`, a
  power of four (1, 4, 16, 64, ...);
* ``n``, securities of a shard's universe: :func:`pad_securities`, 64 × (1, 2, 4, 8, 12, 16,
  24, 32, 48, ...), doubling up to 512 and then by steps of a half and a third;
* ``P``, lots per household of the solver's compact layout (:mod:`engine.solver.layout`):
  :func:`pad_household_lots`, 64, 128, 256, ... (what an iteration costs, rather than ``m·n·L``);
* ``B``, households per batch: :func:`pad_batch`, a power of two, the size a solve runs at;
  while it iterates, the households that have not converged are compacted into
  :func:`pad_running_batch`'s sizes (4, 8, 12, 16, 24, 32, 48, ...), at least
  :data:`MIN_BUCKET`, which is also the batch the nightly job's actors run a shard of fewer
  households at (:func:`engine.rebalance.shards.shard_sizes`).

Shard planning (:mod:`engine.rebalance.shards`) puts households of one (m, L, n, P) together
and lets a rare shape join a larger one that covers it; problem assembly
(:mod:`engine.rebalance.problem`) pads to the planned shape.  Pure Python: no JAX.
"""

from __future__ import annotations

__all__ = ["SECURITY_BUCKET", "MIN_LOTS", "MIN_BUCKET", "pad_accounts", "pad_position_lots", "pad_securities",
           "pad_household_lots", "pad_batch", "pad_running_batch"]

#: The universe is padded to a multiple of this many securities (:func:`pad_securities`).
SECURITY_BUCKET = 64
#: Fewest lots per household of a compact batch (:func:`pad_household_lots`).
MIN_LOTS = 64
#: Smallest batch the unconverged households are compacted into (:func:`pad_running_batch`), and
#: the batch a nightly shard of fewer households runs at.
MIN_BUCKET = 4


def _geometric(count: int, smallest: int, factor: int) -> int:
    """The first of ``smallest``, ``smallest × factor``, ``smallest × factor²``, ... that is ≥ ``count``."""
    size = smallest
    while size < count:
        size *= factor
    return size


def pad_accounts(count: int) -> int:
    """Accounts per household, padded: the smallest power of two ≥ ``count`` (1, 2, 4, 8, ...)."""
    return _geometric(count, 1, 2)


def pad_position_lots(count: int) -> int:
    """Lots per position, padded: the smallest power of four ≥ ``count`` (1, 4, 16, 64, ...)."""
    return _geometric(count, 1, 4)


def pad_securities(count: int) -> int:
    """Securities of a shard's universe, padded: 64 × (1, 2, 4, 8, 12, 16, 24, 32, 48, ...).

    Doubling up to 512 securities, then alternately × 3/2 and × 4/3: above 512 at most a
    third of the universe is padding, and a night of direct indices and ETFs compiles a
    handful of universe sizes.
    """
    size = SECURITY_BUCKET
    while size < count:
        if size < 8 * SECURITY_BUCKET:
            size = size * 2
        elif (size // SECURITY_BUCKET) % 3:
            size = size * 3 // 2
        else:
            size = size * 4 // 3
    return size


def pad_household_lots(count: int) -> int:
    """Lots per household of a compact batch: 64, 128, 256, 512, ... (each size compiles once per shape)."""
    return _geometric(count, MIN_LOTS, 2)


def pad_batch(households: int) -> int:
    """The batch a solve runs at: the next power of two of its households (1, 2, 4, 8, ...)."""
    return 1 << max(households - 1, 0).bit_length()


def pad_running_batch(count: int, total: int) -> int:
    """The batch ``count`` unconverged households run in: 4, 8, 12, 16, 24, 32, 48, ... (at most ``total``).

    Powers of two and three quarters of them: every batch size compiles
    every jitted step once per shape (and an actor that holds too many
    compiled programs runs out of memory maps), while a frozen or padded
    slot costs a whole iteration.  The wash-sale re-solve of most of a batch
    (say 92 of 128 households) runs at 96, not 128.
    """
    size = _geometric(count, MIN_BUCKET, 2)
    if size >= 4 * MIN_BUCKET and count <= size * 3 // 4:
        size = size * 3 // 4
    return min(size, total)
