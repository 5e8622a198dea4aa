"""Arrow columns as NumPy arrays, and the lookups every stage makes on them.

The one place where Canopy turns Arrow into NumPy: :func:`numbers` and :func:`strings` for a
column (at some rows, nulls filled), :func:`index_in` for positions of keys, and
:func:`unique_sorted` and :func:`one_chunk` for the sorts and takes that grow with a book.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["numbers", "strings", "one_chunk", "index_in", "unique_sorted"]


def _at(table: pa.Table, name: str, rows) -> pa.ChunkedArray:
    column = table.column(name)
    return column if rows is None else column.take(pa.array(np.asarray(rows), pa.int64()))


def numbers(table: pa.Table, name: str, rows=None, fill=np.nan, dtype=None) -> np.ndarray:
    """Column ``name`` of ``table`` (at ``rows``, all rows where None) as NumPy; nulls become ``fill``.

    ``fill`` None keeps the nulls (NumPy's conversion: NaN for floats, an object array for others).
    """
    column = _at(table, name, rows)
    if fill is not None:
        column = column.fill_null(fill)
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=dtype)


def strings(table: pa.Table, name: str, rows=None) -> np.ndarray:
    """Column ``name`` of ``table`` (at ``rows``) as an object array of ``str`` and None."""
    return np.asarray(_at(table, name, rows).to_pylist(), dtype=object)


def one_chunk(table: pa.Table) -> pa.Table:
    """``table`` in one chunk where its string columns fit one (2 GB each).

    Arrow's ``take`` from a table of many chunks costs time with the whole table, not with the
    rows taken: 8 times a one-chunk take for a shard of a 10,000-account book's lots (27 chunks),
    so slicing every shard grew with the square of the book (787 s of wall time at 100,000
    accounts with the stand-in solver of ``benchmarks/stages.py``).
    """
    try:
        return table.combine_chunks()
    except pa.ArrowInvalid:                      # offsets overflow: keep the chunks
        return table


def index_in(values, keys) -> np.ndarray:
    """Position of each of ``values`` in ``keys`` (int64), -1 where absent or null, hashed in Arrow.

    Either side may be an Arrow array (chunked or not) or a sequence of strings.  Chunked
    ``values`` are looked up chunk by chunk, not combined first: combining the 100,000-account
    book's 33 million lots' ids copied 0.7 GB a column and took 3 s each time, more than the
    lookup.
    """
    def arrow(x):
        return x if isinstance(x, (pa.Array, pa.ChunkedArray)) else pa.array(np.asarray(x, dtype=object), pa.string())
    keys = arrow(keys)
    found = pc.index_in(arrow(values), value_set=keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys)
    return np.asarray(found.fill_null(-1).to_numpy(), dtype=np.int64)


def unique_sorted(values, return_counts: bool = False):
    """The distinct values of an integer (or any sortable) array, ascending: ``np.unique(values)``.

    By a stable sort: NumPy 2.4's ``np.unique`` and ``np.union1d`` hash integer and string
    arrays without ``return_*`` and take ~3.5 s on a million int64 keys where a sort takes
    0.05 s (measured on the 2-core development machine), which made problem assembly and
    shard planning grow with lots like 60 times their other work.  The stable sort (radix or
    merge runs) is the quicker one on keys that come mostly in order, as a book's lots do, by
    account: the 100,000-account book's 33 million position keys sort in 0.1 s, against 2.6 s
    by quicksort and 4.2 s by ``np.unique(..., return_counts=True)``.  With ``return_counts``,
    also how many times each occurs.
    """
    ordered = np.sort(np.asarray(values).ravel(), kind="stable")
    first = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]]) if ordered.size else np.zeros(0, np.int64)
    distinct = ordered[first]
    if return_counts:
        return distinct, np.diff(np.r_[first, ordered.size])
    return distinct
