"""Simulation: the engine run on books that do not exist yet.

Owns what-ifs (:mod:`~engine.simulate.whatif`), multi-year transitions
(:mod:`~engine.simulate.transition`) and the tax-alpha backtest (:mod:`~engine.simulate.backtest`,
its strategies, ledger, price histories, the simulated account's book, and
:mod:`~engine.simulate.study`, which runs the strategies side by side) and its tax–risk
frontier (:mod:`~engine.simulate.frontier`, every setting of every strategy in lockstep, and
:mod:`~engine.simulate.frontier_study`, which sweeps the histories and writes the report).

May import: :mod:`engine.contract`, :mod:`engine.kernels`, :mod:`engine.solver`,
:mod:`engine.book`, :mod:`engine.rebalance`, :mod:`engine.review`.
"""
