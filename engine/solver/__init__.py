"""The batched JAX solver of the household problem (docs/optimization.md).

Public API: :func:`solve`, :func:`program_seconds`, the types
:class:`ProblemBatch`, :class:`SolverState`, :class:`SolverResult`, and the
status codes.

May import: :mod:`engine.contract`. Pure: neither ray nor fsspec.
"""

from engine.solver.driver import program_seconds, solve
from engine.solver.types import (INFEASIBLE, MAX_ITERATIONS, NON_FINITE, SOLVED, STATUS_NAMES, ProblemBatch,
                                 SolverResult, SolverState)

__all__ = ["solve", "program_seconds", "ProblemBatch", "SolverState", "SolverResult", "SOLVED",
           "MAX_ITERATIONS", "INFEASIBLE", "NON_FINITE", "STATUS_NAMES"]
