"""Canopy: tax-aware overlay portfolio management.

The subpackages read as the pipeline, bottom to top; each imports only those below it
(``tests/test_layers.py`` keeps it so):

* :mod:`engine.contract`: the book and run schemas, the errors, the settings.
* :mod:`engine.kernels`: Numba kernels (lots, wash-sale windows, rounding, dates).
* :mod:`engine.solver`: the batched JAX household solver and its shape ladder.
* :mod:`engine.book`: books and runs on storage (fsspec), validation, synthetic books.
* :mod:`engine.rebalance`: targets, problem assembly, proposals: one shard from Arrow tables to trades.
* :mod:`engine.review`: approval rules, reports and charts, the run check, explanations.
* :mod:`engine.simulate`: what-ifs, transitions, the tax-alpha backtest.
* :mod:`engine.actors`: the Ray actors, the in-process executor and the nightly driver.
* :mod:`engine.warmup`: ``canopy warmup``, the solver's programs compiled ahead into the cache.
* :mod:`engine.portal`: the advisor portal (web pages and a JSON API over what-ifs, saves, new accounts).
* :mod:`engine.testing`: random solver instances and the cvxpy oracle (tests and benchmarks only).
* :mod:`engine.cli`: the ``canopy`` command.
"""
