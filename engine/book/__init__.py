"""Books and runs on storage, and what makes a book usable.

Owns reading and writing books (:mod:`~engine.book.storage`: the only module that opens
files through fsspec, with :mod:`~engine.book.runs`, the run store that commits a run
behind ``_SUCCESS``), validation into whole-book errors and per-account rejections
(:mod:`~engine.book.validate`), and synthetic books (:mod:`~engine.book.synth`).

May import: :mod:`engine.contract`, :mod:`engine.kernels`.
"""
