"""Helpers for tests and benchmarks only: random solver instances and the cvxpy+Clarabel oracle.

Nothing of the engine imports this package; cvxpy is a test dependency.

May import: :mod:`engine.contract`, :mod:`engine.kernels`, :mod:`engine.solver`.
"""
