"""Numba kernels, each with a slow pure-Python reference in :mod:`engine.kernels.reference`.

* :mod:`~engine.kernels.dates`: int64 days since 1970-01-01; holding-period calendar.
* :mod:`~engine.kernels.lots`: ``long_term``, ``tax_curves``, ``curve_tax``, ``relieve_lots``.
* :mod:`~engine.kernels.wash`: ``wash_sale_blocks`` (today's windows per household and group).
* :mod:`~engine.kernels.washsale`: ``wash_sale_accounting`` (Publication 550 over a trade history).
* :mod:`~engine.kernels.rounding`: ``round_trades`` (shares, minimum trade, cash repair).

Kernels never import ray, fsspec or s3fs, and never raise inside: they return status bit flags.

May import: :mod:`engine.contract`.
"""
