"""Rebalancing: from a shard's Arrow tables to its proposed trades, in one process.

Owns the accounts' targets (:mod:`~engine.rebalance.targets`) and an advisor's changes to
them (:mod:`~engine.rebalance.customization`), the tax policy
(:mod:`~engine.rebalance.policy`), problem assembly (:mod:`~engine.rebalance.problem`,
:mod:`~engine.rebalance.screen_window`), the proposals and their trade lines
(:mod:`~engine.rebalance.proposals`, :mod:`~engine.rebalance.lines`), the grouping of
households into shards (:mod:`~engine.rebalance.shards`) and the one pipeline every
caller runs (:mod:`~engine.rebalance.pipeline`).

May import: :mod:`engine.contract`, :mod:`engine.kernels`, :mod:`engine.solver`,
:mod:`engine.book` (validation rules only). Pure: neither ray nor fsspec.
"""
