"""Review: what the rebalancing group and the clients see of a run.

Owns approval rules (:mod:`~engine.review.approval`), the HTML report and its charts
(:mod:`~engine.review.report`, :mod:`~engine.review.charts`, :mod:`~engine.review.taxes`),
the page templates the report and the advisor portal share (:mod:`~engine.review.pages`, ``templates/``),
the independent check of a run against the contract's rules (:mod:`~engine.review.check`)
and trades in words (:mod:`~engine.review.explain`).

May import: :mod:`engine.contract`, :mod:`engine.kernels`, :mod:`engine.book`,
:mod:`engine.rebalance`.
"""
