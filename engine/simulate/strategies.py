"""The strategies a backtest compares: buy-and-hold, a monthly loss harvester, and Canopy.

Each strategy looks at one :class:`Step` (the day, prices, the index's
weights, the risk model, the account's cash and ledger) and returns
:class:`Order` s; :mod:`engine.simulate.backtest` executes them (sells first) and
keeps the books through :class:`engine.simulate.ledger.Ledger`, the same for all.

* :class:`BuyAndHold`: holds what it bought on day one; invests new cash pro
  rata to the index and raises cash it owes (taxes, withdrawals) pro rata,
  highest basis first.
* :class:`MonthlyHarvester`: once a month sells every lot at a loss, buys
  the most correlated stock (by the risk model, outside the wash group,
  not itself sold at a loss in the last 30 days), and 31 days later sells
  the substitute and buys the original back: the textbook "sell every loser,
  buy a substitute, wait 31 days" harvester.
* :class:`CanopyStrategy`: the engine itself.  Each step writes the account
  as a book in memory (docs/contract.md §1 tables: :mod:`engine.simulate.account_book`), and
  runs validation, targets, problem assembly, the solve and proposals exactly
  as a shard of the nightly job does (:func:`engine.rebalance.shards.solve_shard`);
  the proposal's trades are the orders.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import pyarrow as pa

from engine.contract.config import Config
from engine.contract.schema import Col, Side
from engine.kernels.wash import BUY, SELL, WINDOW_DAYS
from engine.simulate.account_book import Holder, run_engine, shared_book
from engine.simulate.histories import RiskModel
from engine.simulate.ledger import Ledger

__all__ = ["Order", "Step", "BuyAndHold", "MonthlyHarvester", "CanopyStrategy", "STRATEGIES"]


@dataclass(frozen=True)
class Order:
    """Sell ``quantity`` shares of purchase ``lot_code``, or buy ``quantity`` shares of ``security``."""

    side: int
    security: int
    quantity: float
    lot_code: int = -1


@dataclass
class Step:
    """What a strategy sees on a rebalance day (USD, shares; ``day`` in days since 1970-01-01)."""

    date: dt.date
    day: int
    prices: np.ndarray                 # (N,)
    weights: np.ndarray                # (N,) the index today
    risk: RiskModel
    cash: float                        # after today's flows; negative = owed
    ledger: Ledger
    spread: np.ndarray                 # (N,) fraction of value
    st_rate: float
    lt_rate: float
    security_ids: np.ndarray
    asset_class: str
    ytd_short: float = 0.0
    ytd_long: float = 0.0

    @property
    def value(self) -> float:
        return self.cash + float(self.ledger.shares(self.prices.size) @ self.prices)


def loss_sold_recently(step: Step) -> np.ndarray:
    """Securities whose wash group the account sold at a loss in the 30 days before (and on) today."""
    groups = set()
    for r in step.ledger.recent(step.day - WINDOW_DAYS):
        if r.side == SELL and r.gain < 0:
            groups.add(int(step.ledger.group_of[r.security]))
    return np.isin(step.ledger.group_of, list(groups))


def bought_recently(step: Step) -> np.ndarray:
    """Securities whose wash group the account bought in the 30 days before today."""
    groups = {int(step.ledger.group_of[r.security]) for r in step.ledger.recent(step.day - WINDOW_DAYS)
              if r.side == BUY}
    return np.isin(step.ledger.group_of, list(groups))


def invest(step: Step, amount: float, allowed: np.ndarray) -> list[Order]:
    """Buy ``amount`` USD (spread included) pro rata to the index over the ``allowed`` securities."""
    weights = np.where(allowed, step.weights, 0.0)
    if amount <= 0 or weights.sum() <= 0:
        return []
    weights = weights / weights.sum()
    quantity = amount * weights / (step.prices * (1 + step.spread))
    return [Order(BUY, int(i), float(quantity[i])) for i in np.flatnonzero(quantity > 0)]


def raise_cash(step: Step, amount: float) -> list[Order]:
    """Sell about ``amount`` USD pro rata to the holdings, each position's highest-basis lots first."""
    code, security, quantity, basis, _ = step.ledger.open_lots()
    if amount <= 0 or code.size == 0:
        return []
    held = np.bincount(security, weights=quantity * step.prices[security], minlength=step.prices.size)
    fraction = min(1.0, amount / max(held.sum(), 1e-12) / (1 - step.spread.max()))
    orders = []
    for i in np.flatnonzero(held > 0):
        rows = np.flatnonzero(security == i)
        rows = rows[np.argsort(-basis[rows] / quantity[rows], kind="stable")]
        need = fraction * held[i] / step.prices[i]
        for code_i, q in _by_code(code[rows], quantity[rows]):
            if need <= 1e-12:
                break
            take = min(q, need)
            orders.append(Order(SELL, int(i), float(take), int(code_i)))
            need -= take
    return orders


def _by_code(codes: np.ndarray, quantity: np.ndarray):
    """``(code, shares)`` per lot code, pieces summed, in first-seen order."""
    unique, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
    total = np.bincount(inverse.ravel(), weights=quantity, minlength=unique.size)
    order = np.argsort(first, kind="stable")
    return list(zip(unique[order].tolist(), total[order].tolist()))


class BuyAndHold:
    """Hold; invest cash flows pro rata; raise what is owed pro rata, highest basis first."""

    name = "buy_and_hold"

    #: Cash below this fraction of the account stays uninvested (no dust trades).
    cash_tolerance = 1e-3

    def orders(self, step: Step) -> list[Order]:
        if step.cash < -self.cash_tolerance * step.value:
            return raise_cash(step, -step.cash)
        if step.cash > self.cash_tolerance * step.value:
            return invest(step, step.cash, np.ones(step.prices.size, bool))
        return []


@dataclass
class _Wait:
    original: int
    substitute: int
    sale_day: int
    codes: list[int]
    reserved: float = 0.0        # USD held in cash for the original (no substitute)


@dataclass
class MonthlyHarvester:
    """Once a month (or every day): sell every loss lot, buy the closest substitute, swap back after ``wait_days``.

    Attributes
    ----------
    wait_days
        Days a substitute is held before the original is bought back (31:
        just outside the wash-sale window).
    min_loss
        A lot is a loser when its loss is at least this fraction of its basis (0: every loss).
    scan
        ``"monthly"``: harvest on the first rebalance day of each month;
        ``"daily"``: on every rebalance day (run it with daily steps).
    substitutes
        False: a loser's proceeds wait in cash until the original is bought
        back ``wait_days`` later, instead of buying the most correlated stock.
    """

    wait_days: int = 31
    min_loss: float = 0.0
    name: str = "monthly_harvester"
    scan: str = "monthly"
    substitutes: bool = True
    waits: list[_Wait] = field(default_factory=list)
    _month: tuple[int, int] | int | None = None
    cash_tolerance: float = 1e-3
    _risk: RiskModel | None = field(default=None, repr=False)
    _corr: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.scan not in ("monthly", "daily"):
            raise ValueError(f"scan must be monthly or daily, got {self.scan!r}")

    def orders(self, step: Step) -> list[Order]:
        month = (step.date.year, step.date.month) if self.scan == "monthly" else step.day
        orders: list[Order] = []
        cash = step.cash
        if month != self._month:
            self._month = month
            swap, cash = self._swap_back(step, cash)
            orders += swap
            harvest, cash = self._harvest(step, cash, orders)
            orders += harvest
        cash -= sum(w.reserved for w in self.waits)
        if cash < -self.cash_tolerance * step.value:
            orders += raise_cash(step, -cash)
        elif cash > self.cash_tolerance * step.value:
            blocked = loss_sold_recently(step) | self._blocked(step, orders)
            orders += invest(step, cash, ~blocked)
        return orders

    def _blocked(self, step: Step, orders: list[Order]) -> np.ndarray:
        """Originals waiting out their window, and what today's orders sell at a loss."""
        out = np.zeros(step.prices.size, bool)
        for w in self.waits:
            out[step.ledger.group_of == step.ledger.group_of[w.original]] = True
        for o in orders:
            if o.side == SELL:
                out[step.ledger.group_of == step.ledger.group_of[o.security]] = True
        return out

    def _swap_back(self, step: Step, cash: float) -> tuple[list[Order], float]:
        code, _, quantity, _, _ = step.ledger.open_lots()
        held = dict(_by_code(code, quantity))
        orders, keep = [], []
        for w in self.waits:
            if step.day - w.sale_day < self.wait_days:
                keep.append(w)
                continue
            proceeds = w.reserved
            for c in w.codes:
                if held.get(c, 0.0) > 0:
                    orders.append(Order(SELL, w.substitute, held[c], c))
                    proceeds += held[c] * step.prices[w.substitute] * (1 - step.spread[w.substitute])
            price = step.prices[w.original] * (1 + step.spread[w.original])
            cash -= w.reserved
            if proceeds > 0:
                orders.append(Order(BUY, w.original, proceeds / price))
        self.waits = keep
        return orders, cash

    def _harvest(self, step: Step, cash: float, pending: list[Order]) -> tuple[list[Order], float]:
        code, security, quantity, basis, _ = step.ledger.open_lots()
        if code.size == 0:
            return [], cash
        loss = basis - quantity * step.prices[security]
        loser = loss > self.min_loss * basis
        skip = bought_recently(step) | self._blocked(step, pending)
        for o in pending:
            if o.side == BUY:
                skip[step.ledger.group_of == step.ledger.group_of[o.security]] = True
        loser &= ~skip[security]
        if not loser.any():
            return [], cash
        correlation = self._correlation(step.risk)
        harvested = np.unique(security[loser])
        unavailable = loss_sold_recently(step) | skip
        for i in harvested:
            unavailable[step.ledger.group_of == step.ledger.group_of[i]] = True
        orders = []
        for i in harvested:
            rows = np.flatnonzero(loser & (security == i))
            proceeds = 0.0
            for c, q in _by_code(code[rows], quantity[rows]):
                orders.append(Order(SELL, int(i), q, c))
                proceeds += q * step.prices[i] * (1 - step.spread[i])
            if not self.substitutes:              # wait in cash for the original
                self.waits.append(_Wait(int(i), -1, step.day, [], proceeds))
                cash += proceeds
                continue
            choice = np.where(unavailable, -np.inf, correlation[i])
            j = int(np.argmax(choice))
            if not np.isfinite(choice[j]):
                cash += proceeds                   # nothing to substitute: the cash is invested later
                continue
            buy = Order(BUY, j, proceeds / (step.prices[j] * (1 + step.spread[j])))
            orders.append(buy)
            self.waits.append(_Wait(int(i), j, step.day, []))
            unavailable[step.ledger.group_of == step.ledger.group_of[j]] = True
        return orders, cash

    def _correlation(self, risk: RiskModel) -> np.ndarray:
        """The risk model's correlation matrix, kept while the model is the same object."""
        if self._risk is not risk:
            covariance = risk.covariance()
            vol = np.sqrt(np.diag(covariance))
            self._risk, self._corr = risk, covariance / np.outer(vol, vol)
        return self._corr

    def filled(self, buys: dict[int, list[int]]) -> None:
        """The lot codes today's buys created, per security: a substitute's are remembered."""
        for w in self.waits:
            if not w.codes and w.substitute in buys:
                w.codes = [buys[w.substitute][0]]      # the substitute's buy comes first


def proposal_orders(trades: pa.Table, lot_ids: Mapping[str, int], security_ids: np.ndarray) -> list[Order]:
    """A proposal's trades as :class:`Order` s on the ledger's lot codes (``lot_ids``: the book's lot id → code)."""
    position = {s: i for i, s in enumerate(security_ids)}
    orders = []
    for side, security, lot_id, quantity in zip(trades.column(Col.side).to_pylist(),
                                                trades.column(Col.security_id).to_pylist(),
                                                trades.column(Col.lot_id).to_pylist(),
                                                trades.column(Col.quantity).to_pylist()):
        if side == Side.sell:
            orders.append(Order(SELL, position[security], float(quantity), lot_ids[lot_id]))
        else:
            orders.append(Order(BUY, position[security], float(quantity)))
    return orders


@dataclass
class CanopyStrategy:
    """The engine: each step, the account as a book, and one shard's assembly, solve and proposals.

    Attributes
    ----------
    config
        The engine's settings (``[policy]``, ``[solver]``).
    tax_budget
        Most tax per calendar year, USD (``None``: no cap).
    tax_sensitivity
        The account's ``θ``: how much the tax weighs against tracking error
        in the objective (0: tax-blind, 1: the tax at face value).
    substitutes
        False: the engine sees a single-index risk model (the index as its
        one factor: :func:`engine.simulate.account_book.shared_book`), so it
        cannot hold a correlated stock in place of a wash-blocked one; a
        harvested name's weight is spread across the index instead.
    """

    config: Config = field(default_factory=Config)
    tax_budget: float | None = None
    name: str = "canopy"
    tax_sensitivity: float = 1.0
    substitutes: bool = True
    last_status: str = ""
    solve_seconds: float = 0.0

    def batch_key(self) -> tuple:
        """Accounts with equal keys are solved together (one book, one engine call)."""
        return ("canopy", id(self.config), self.substitutes)

    def orders(self, step: Step) -> list[Order]:
        return self.orders_many([(self, step)])[0]

    @staticmethod
    def orders_many(pairs: list[tuple["CanopyStrategy", Step]]) -> list[list[Order]]:
        """The orders of several accounts on one day, from one book and one batched engine call.

        Every pair's strategy must share ``config`` and ``substitutes`` (its ``batch_key``).
        """
        import time

        clock = time.perf_counter()
        first = pairs[0][0]
        holders = [Holder(f"SIM-{n + 1}", step, strategy.tax_sensitivity, strategy.tax_budget)
                   for n, (strategy, step) in enumerate(pairs)]
        tables, lot_codes = shared_book(holders, substitutes=first.substitutes)
        ids = [h.account_id for h in holders]
        trades, accounts = run_engine(tables, pairs[0][1].date, first.config, ids)
        status = dict(zip(accounts.column(Col.account_id).to_pylist(), accounts.column(Col.status).to_pylist()))
        owner = np.asarray(trades.column(Col.account_id).to_pylist(), dtype=object)
        out = []
        seconds = (time.perf_counter() - clock) / len(pairs)
        for holder, (strategy, step) in zip(holders, pairs):
            strategy.last_status = status[holder.account_id]
            strategy.solve_seconds += seconds
            mine = trades.filter(pa.array(owner == holder.account_id)) if len(owner) else trades
            out.append(proposal_orders(mine, lot_codes[holder.account_id], step.security_ids))
        return out


STRATEGIES = {"buy_and_hold": BuyAndHold, "monthly_harvester": MonthlyHarvester, "canopy": CanopyStrategy}
