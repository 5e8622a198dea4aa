"""The contract: what every other part of Canopy agrees on.

Owns the Arrow schemas of the book and the run and the names of their columns
(:mod:`~engine.contract.schema`), the error hierarchy (:mod:`~engine.contract.errors`)
and the settings read from ``canopy.toml`` (:mod:`~engine.contract.config`).

May import: nothing of Canopy's (it is the bottom floor).
"""
