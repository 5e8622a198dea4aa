"""The nightly job on Ray: the driver, the solver actors and the dispatch of shards.

Owns the Ray side of the run (:mod:`~engine.actors.nightly`, :mod:`~engine.actors.dispatch`,
:mod:`~engine.actors.solver`, :mod:`~engine.actors.cores`), the run in one process without Ray
(:mod:`~engine.actors.local`; the retry rules both share: :mod:`~engine.actors.work`) and process
memory settings (:mod:`~engine.actors.memory`). With ``jobs/``, the only code that imports ray
(only on the Ray path).

May import: :mod:`engine.contract`, :mod:`engine.kernels`, :mod:`engine.solver`, :mod:`engine.book`,
:mod:`engine.rebalance`.
"""
