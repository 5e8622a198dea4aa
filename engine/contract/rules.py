"""The contract's rules that several stages compute: defined once, here.

* :func:`cash_floor`: the cash an account keeps after trading (rule 4), ``min_cash +
  reserve_cash + withdrawal`` in USD.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from engine.contract.arrow import numbers
from engine.contract.schema import Col

__all__ = ["CASH_FLOOR_COLUMNS", "cash_floor"]

#: The accounts columns whose sum is the cash floor, USD.
CASH_FLOOR_COLUMNS = (Col.min_cash, Col.reserve_cash, Col.withdrawal)


def cash_floor(accounts: pa.Table, rows=None) -> np.ndarray:
    """``min_cash + reserve_cash + withdrawal`` of each account (at ``rows``), USD; nulls count 0.

    Cash after trading is at least this wherever selling what may be sold reaches it
    (rule 4); what is above it may be invested, up to ``max_cash`` on top of it (rule 5).
    """
    return sum(numbers(accounts, name, rows, fill=0.0, dtype=float) for name in CASH_FLOOR_COLUMNS)
