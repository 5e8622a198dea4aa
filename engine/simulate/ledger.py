"""A tax ledger over time: one account's lots, realized gains and wash sales, replayed by the kernel.

A simulation (the backtest, a transition) trades one taxable account day
after day.  :class:`Ledger` keeps every trade and answers, after each day,
what Publication 550 makes of them: the open lots with their adjusted basis
and holding period, the gain each sale realized, the loss the wash-sale rule
disallowed, and the term of each disposition.  All of it comes from
:func:`engine.kernels.washsale.wash_sale_accounting`, so every strategy that
trades through a ledger is accounted for by the same rules.

Specific-lot identification.  The kernel relieves a security's lots first in,
first out.  A strategy that sells chosen lots (Canopy sells along its tax
curves, the harvester sells its loss lots) is replayed with one kernel
"security" code per purchase (a *lot code*) and the real security's code as
the wash group: a sale of lot code ``c`` relieves exactly the shares of that
purchase, and replacement shares are still matched across every purchase of
the group.  A purchase that replaced part of a loss is split by the kernel
into two pieces with different bases; both keep the lot code, and a sale of
either piece relieves the code's pieces in the kernel's order (a rare case,
only after a wash sale).

The wash-sale rule works within a wash group, so the replay is per group:
after a day of trades only the groups traded that day are replayed, each over
its whole history.  Dates are int64 days since 1970-01-01 (:mod:`engine.kernels.dates`).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np

from engine.kernels.wash import BUY, SELL, WINDOW_DAYS
from engine.kernels.washsale import wash_sale_accounting

__all__ = ["Ledger", "TradeRecord"]


@dataclass
class TradeRecord:
    """One trade of the ledger (USD, shares, days)."""

    day: int
    security: int
    lot_code: int
    side: int
    quantity: float
    price: float
    gain: float = 0.0                 # sells: proceeds − relieved basis (before the rule)
    disallowed: float = 0.0           # sells: loss disallowed by the rule (≥ 0)
    short_term: float = 0.0           # sells: recognized gain (gain + disallowed) that is short-term
    long_term: float = 0.0            # sells: recognized gain that is long-term


@dataclass
class _Group:
    trades: list[int] = field(default_factory=list)       # indices into Ledger.trades
    lots: tuple = ()                                       # (code, quantity, basis, acquired) arrays


class Ledger:
    """The trades, lots and taxes of one taxable account (or one of any tax status).

    Parameters
    ----------
    group_of : (N,) int
        Wash group code of each security (substantially identical securities
        share one; a security with none has its own).
    taxable : bool
        False for a tax-deferred or exempt account: losses are then never
        "losses" for the rule (the kernel's convention).
    """

    def __init__(self, group_of: np.ndarray, taxable: bool = True):
        self.group_of = np.asarray(group_of, dtype=np.int64)
        self.taxable = taxable
        self.trades: list[TradeRecord] = []
        self.lot_security: dict[int, int] = {}
        self._groups: dict[int, _Group] = {}
        self._next_code = 0
        self._dirty: set[int] = set()
        self._open: tuple | None = None                # open_lots, until the next replay
        self._security_of_code = np.zeros(0, np.int64)

    # -- recording ---------------------------------------------------------
    def buy(self, day: int, security: int, quantity: float, price: float) -> int:
        """Record a purchase; returns its lot code."""
        code = self._next_code
        self._next_code += 1
        self.lot_security[code] = int(security)
        self._add(TradeRecord(int(day), int(security), code, BUY, float(quantity), float(price)))
        return code

    def sell(self, day: int, lot_code: int, quantity: float, price: float) -> None:
        """Record a sale of ``quantity`` shares of the purchase ``lot_code``."""
        self._add(TradeRecord(int(day), self.lot_security[lot_code], int(lot_code), SELL,
                              float(quantity), float(price)))

    def _add(self, record: TradeRecord) -> None:
        if self.trades and record.day < self.trades[-1].day:
            raise ValueError(f"trades must be recorded in date order: day {record.day} after "
                             f"{self.trades[-1].day}")
        group = int(self.group_of[record.security])
        self._groups.setdefault(group, _Group()).trades.append(len(self.trades))
        self.trades.append(record)
        self._dirty.add(group)

    # -- replay ------------------------------------------------------------
    def settle(self) -> None:
        """Replay the groups traded since the last call (the kernel, per group)."""
        for group in sorted(self._dirty):
            self._replay(group)
        self._dirty = set()

    def _replay(self, group: int) -> None:
        self._open = None
        g = self._groups[group]
        records = [self.trades[i] for i in g.trades]
        n = len(records)
        acc = wash_sale_accounting(
            np.fromiter((r.day for r in records), np.int64, n), np.zeros(n, np.int64),
            np.fromiter((r.lot_code for r in records), np.int64, n), np.full(n, group, np.int64),
            np.fromiter((r.side for r in records), np.int8, n),
            np.fromiter((r.quantity for r in records), np.float64, n),
            np.fromiter((r.price for r in records), np.float64, n),
            np.array([self.taxable]), window=WINDOW_DAYS)
        if np.any(acc.status):
            bad = int(np.flatnonzero(acc.status)[0])
            raise ValueError(f"ledger trade {records[bad]} was not accepted by the wash-sale "
                             f"kernel (status {int(acc.status[bad])}): sold more than held?")
        recognized = acc.disp_realized_gain + acc.disp_disallowed_loss
        short = np.bincount(acc.disp_trade, weights=np.where(acc.disp_long_term, 0.0, recognized), minlength=n)
        long_ = np.bincount(acc.disp_trade, weights=np.where(acc.disp_long_term, recognized, 0.0), minlength=n)
        for i, r in enumerate(records):
            if r.side == SELL:
                r.gain = float(acc.realized_gain[i])
                r.disallowed = float(acc.disallowed_loss[i])
                r.short_term = float(short[i])
                r.long_term = float(long_[i])
        open_ = acc.lot_quantity > 1e-12
        g.lots = (acc.lot_security[open_], acc.lot_quantity[open_], acc.lot_cost_basis[open_],
                  acc.lot_acquired[open_])

    # -- views -------------------------------------------------------------
    def open_lots(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(lot_code, security, quantity, cost_basis, acquired)`` of every open lot piece.

        Call :meth:`settle` first.  Ordered by group, then as the kernel keeps them.
        """
        if self._open is None:
            self._open = self._gather_open_lots()
        return tuple(a.copy() for a in self._open)

    def _gather_open_lots(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        parts = [g.lots for _, g in sorted(self._groups.items()) if g.lots and len(g.lots[0])]
        if not parts:
            empty = np.zeros(0, np.int64)
            return empty, empty, np.zeros(0), np.zeros(0), empty
        code = np.concatenate([p[0] for p in parts])
        security = self._group_security_of(code)
        return (code, security, np.concatenate([p[1] for p in parts]),
                np.concatenate([p[2] for p in parts]), np.concatenate([p[3] for p in parts]))

    def _group_security_of(self, code: np.ndarray) -> np.ndarray:
        """The security of each lot code (codes are issued 0, 1, 2, ... by :meth:`buy`)."""
        if self._security_of_code.size < self._next_code:
            self._security_of_code = np.asarray([self.lot_security[c] for c in range(self._next_code)], np.int64)
        return self._security_of_code[code]

    def year_gains(self, year_start: int, year_end: int) -> tuple[float, float]:
        """Recognized short- and long-term gains of the sales on days ``[year_start, year_end)``, USD."""
        first = bisect.bisect_left(self.trades, year_start, key=lambda r: r.day)
        short = long_ = 0.0
        for r in self.trades[first:]:
            if r.day >= year_end:
                break
            if r.side == SELL:
                short += r.short_term
                long_ += r.long_term
        return short, long_

    def shares(self, n_securities: int) -> np.ndarray:
        """Shares held of each security."""
        _, security, quantity, _, _ = self.open_lots()
        return np.bincount(security, weights=quantity, minlength=n_securities)

    def recent(self, since_day: int) -> list[TradeRecord]:
        """Trades on or after ``since_day`` (for the wash-sale windows of a book)."""
        out = []
        for r in reversed(self.trades):
            if r.day < since_day:
                break
            out.append(r)
        return out[::-1]
