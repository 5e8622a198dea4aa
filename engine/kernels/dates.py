"""Calendar days as integers, the way every kernel sees dates.

Inside kernels a date is an ``int64`` count of days since 1970-01-01 (the
Unix epoch), which is exactly Arrow's ``date32`` value and NumPy's
``datetime64[D]`` value.  Day arithmetic is then integer arithmetic: "30 days
before ``as_of``" is ``as_of - 30``.

The civil-calendar conversions are Howard Hinnant's ``days_from_civil`` and
``civil_from_days`` (proleptic Gregorian calendar), compiled with Numba so the
holding-period rule (one calendar year, not 365 days) runs inside kernels.
"""

from __future__ import annotations

import datetime as _dt

import numba as nb
import numpy as np

EPOCH = _dt.date(1970, 1, 1)

# A day no trade can have: marks "never" (e.g. a lot from before the history).
NO_DAY = np.iinfo(np.int64).min // 2


@nb.njit(cache=True, nogil=True)
def days_from_civil(year, month, day):
    """Days since 1970-01-01 of the Gregorian date ``year-month-day``.

    Parameters
    ----------
    year, month, day : int
        Month 1..12, day 1..31 (not checked: out-of-range days roll over).

    Returns
    -------
    int
        Days since the epoch (negative before 1970).
    """
    y = year - (1 if month <= 2 else 0)
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    mp = (month + 9) % 12
    doy = (153 * mp + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


@nb.njit(cache=True, nogil=True)
def civil_from_days(days):
    """Gregorian ``(year, month, day)`` of ``days`` since 1970-01-01."""
    z = days + 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return y + (1 if m <= 2 else 0), m, d


@nb.njit(cache=True, nogil=True)
def first_long_day_scalar(acquired):
    """First day on which a lot acquired on day ``acquired`` is long-term.

    A lot is long-term only when held *more than* one year: the holding period
    starts the day after acquisition, so the lot becomes long-term the day
    after the one-year anniversary of ``acquired`` (IRS Publication 550,
    "Holding Period").  Bought 2025-03-14: long from 2026-03-15.  The
    anniversary of 29 February is 28 February, so a lot bought on 29 February
    is long from 1 March of the next year.

    Parameters
    ----------
    acquired : int
        Acquisition day, days since 1970-01-01.

    Returns
    -------
    int
        Days since 1970-01-01.
    """
    y, m, d = civil_from_days(acquired)
    if m == 2 and d == 29:
        return days_from_civil(y + 1, 3, 1)
    return days_from_civil(y + 1, m, d) + 1


@nb.njit(cache=True, nogil=True)
def first_long_day(acquired):
    """:func:`first_long_day_scalar` of every element of an int64 array."""
    out = np.empty(acquired.shape[0], dtype=np.int64)
    for i in range(acquired.shape[0]):
        out[i] = first_long_day_scalar(acquired[i])
    return out


@nb.njit(cache=True, nogil=True)
def last_long_acquired(as_of):
    """Latest acquisition day whose lot is long-term on ``as_of``.

    :func:`first_long_day_scalar` never decreases with ``acquired``, so a lot
    is long-term on ``as_of`` exactly when ``acquired <= last_long_acquired(as_of)``:
    one comparison per lot instead of a calendar conversion.
    """
    a = as_of - 364
    while first_long_day_scalar(a) > as_of:
        a -= 1
    return a


def to_days(values, *, null=None) -> np.ndarray:
    """Dates to int64 days since 1970-01-01.

    Parameters
    ----------
    values
        A pyarrow ``date32`` Array or ChunkedArray, a NumPy ``datetime64``
        array, a ``datetime.date``, or a sequence of ``datetime.date``.
    null : int, optional
        Day to put where a value is null.  Without it a null raises
        ``ValueError`` (a kernel cannot tell a null from a day).

    Returns
    -------
    numpy.ndarray
        int64 days (a 0-d array for a single date).
    """
    if isinstance(values, _dt.datetime):
        values = values.date()
    if isinstance(values, _dt.date):
        return np.asarray((values - EPOCH).days, dtype=np.int64)
    if hasattr(values, "null_count") and hasattr(values, "cast"):
        import pyarrow as pa
        import pyarrow.compute as pc

        if values.null_count:
            if null is None:
                raise ValueError(f"{values.null_count} null dates; pass null= to fill them")
            values = pc.fill_null(values.cast(pa.int32()), int(null))
        arr = values.cast(pa.int32())
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        return arr.to_numpy(zero_copy_only=False).astype(np.int64)
    arr = np.asarray(values)
    if np.issubdtype(arr.dtype, np.datetime64):
        days = arr.astype("datetime64[D]")
        mask = np.isnat(days)
        out = days.astype(np.int64)
        if mask.any():
            if null is None:
                raise ValueError(f"{int(mask.sum())} null dates; pass null= to fill them")
            out[mask] = null
        return out
    if arr.dtype == object:
        out = np.empty(arr.shape, dtype=np.int64)
        for i, v in enumerate(arr.ravel()):
            if v is None:
                if null is None:
                    raise ValueError("null date; pass null= to fill it")
                out.ravel()[i] = null
            else:
                out.ravel()[i] = to_days(v)
        return out
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int64)
    raise TypeError(f"expected dates (date32, datetime64, datetime.date), got {arr.dtype}")


def from_days(days) -> np.ndarray:
    """int64 days since 1970-01-01 to a NumPy ``datetime64[D]`` array."""
    return np.asarray(days, dtype=np.int64).astype("datetime64[D]")


def to_date(day: int) -> _dt.date:
    """One int day since 1970-01-01 to a ``datetime.date``."""
    return EPOCH + _dt.timedelta(days=int(day))
