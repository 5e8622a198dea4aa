"""A tax-alpha backtest: strategies trading one taxable account through a price history.

:func:`simulate` walks a :class:`engine.simulate.histories.History` from its first
day, rebalancing monthly (the first business day of each month), weekly
(the first of each week) or daily (every business day, the nightly job's
cadence).  On day one every strategy buys the index with ``initial_value``
USD, the same shares for all.  Then, on each rebalance day:

1. taxes: on the first rebalance day on or after April 15 of year y+1, the
   tax of year y, ``st_rate × net short-term + lt_rate × net long-term``
   recognized gains (realized gain plus disallowed loss), is paid from the
   account's cash, or credited to it when negative (the investor is assumed
   to have other gains for the losses to offset, as in the tax-alpha studies);
2. cash flows: ``contribution`` USD per rebalance day, when set;
3. the strategy's orders (:mod:`engine.simulate.strategies`) are executed at the
   close, sells first, each costing the stock's spread (one way);
4. every trade goes through one :class:`engine.simulate.ledger.Ledger` (the
   wash-sale kernel, Publication 550), which gives the lots, the realized
   and disallowed losses and the terms, identically for every strategy.

Measured per strategy and calendar year, and over the whole run
(:func:`summarize`):

* ``after_tax_wealth``: value plus the tax credits still due (minus taxes
  owed) for the years not yet settled;
* ``after_tax_excess``: the strategy's after-tax (wealth) return minus
  buy-and-hold's, per year, annualized over the run; ``pretax_excess``: the
  same for the pre-tax (value) returns, the luck and cost of tracking the
  index differently; ``tax_alpha = after_tax_excess − pretax_excess``, what
  the taxes alone added (with 20 stocks a substitute's luck is several
  percent a year and would swamp the tax effect); ``tax_alpha_liquidated``:
  the same after selling everything on the last day and paying its tax (a
  harvested loss lowers the basis: much of its saving is a deferral);
* ``tracking_error``: the standard deviation of the step returns' difference
  from the index's, annualized by the square root of steps per year;
* ``turnover_rate``: (buys + sells) / 2 / the mean value, per year;
* ``harvested_losses`` (USD of losses realized), ``disallowed_losses`` (USD of
  them the wash-sale rule disallowed), ``taxes`` (USD, of the year's gains).

:func:`simulate_many` walks several accounts through one history together,
day by day, each with its own strategy and rebalance days; on a day several
Canopy accounts rebalance, they are solved in one engine call (the
frontier's batching, :mod:`engine.simulate.frontier`).

Pure: NumPy and the engine, no storage, no ray (:mod:`jobs.backtest` runs it).
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field

import numpy as np

from engine.kernels.dates import first_long_day, to_days
from engine.kernels.wash import BUY, SELL
from engine.simulate.histories import History
from engine.simulate.ledger import Ledger
from engine.simulate.strategies import Order, Step

__all__ = ["BacktestSettings", "StrategyRun", "simulate", "simulate_many", "rebalance_days", "summarize"]

EPOCH = dt.date(1970, 1, 1)


@dataclass(frozen=True)
class BacktestSettings:
    """How a backtest runs.

    Attributes
    ----------
    frequency
        ``"monthly"``, ``"weekly"`` or ``"daily"`` rebalance days.
    initial_value
        USD invested on day one.
    st_rate, lt_rate
        The account's tax rates on short- and long-term gains (35% / 15%, the
        rates of Chaudhuri, Burnham & Lo 2020).
    contribution
        USD added to cash on each rebalance day (0: no cash flows).
    """

    frequency: str = "monthly"
    initial_value: float = 1_000_000.0
    st_rate: float = 0.35
    lt_rate: float = 0.15
    contribution: float = 0.0


@dataclass
class StrategyRun:
    """One strategy's path: per rebalance day (arrays of equal length)."""

    name: str
    dates: list[dt.date] = field(default_factory=list)
    value: list[float] = field(default_factory=list)          # after trading, USD
    value_before: list[float] = field(default_factory=list)   # before flows and trading
    flows: list[float] = field(default_factory=list)          # tax and contributions in, USD
    contributions: list[float] = field(default_factory=list)  # of which contributions, USD
    accrued_tax: list[float] = field(default_factory=list)    # owed for unsettled years (<0: credit)
    bought: list[float] = field(default_factory=list)
    sold: list[float] = field(default_factory=list)
    costs: list[float] = field(default_factory=list)
    index_return: list[float] = field(default_factory=list)   # index return since the last step
    ledger: Ledger | None = None
    taxes: dict[int, float] = field(default_factory=dict)     # year -> tax of its gains
    liquidation_tax: float = 0.0                                # tax of selling everything at the end
    seconds: float = 0.0


def rebalance_days(days: np.ndarray, first: int, frequency: str) -> np.ndarray:
    """Indices of the first business day of each month (or ISO week, or every business day) from ``first``."""
    d = days[first:]
    if frequency == "daily":
        return first + np.arange(d.size)
    if frequency == "monthly":
        key = d.astype("datetime64[M]")
    elif frequency == "weekly":
        key = ((d - np.datetime64("1970-01-05")) // 7).astype(np.int64)
    else:
        raise ValueError(f"frequency must be monthly, weekly or daily, got {frequency!r}")
    return first + np.flatnonzero(np.r_[True, key[1:] != key[:-1]])


def _year_gains(ledger: Ledger, year: int) -> tuple[float, float]:
    """Recognized short- and long-term gains of the sales of calendar ``year``, USD."""
    start = (dt.date(year, 1, 1) - EPOCH).days
    return ledger.year_gains(start, (dt.date(year + 1, 1, 1) - EPOCH).days)


def _execute(ledger: Ledger, orders: list[Order], day: int, prices: np.ndarray, spread: np.ndarray,
             cash: float) -> tuple[float, float, float, float, dict[int, list[int]]]:
    """Sells, then buys; returns cash, bought, sold, cost (USD) and the lot codes bought per security.

    Sells go newest purchase first (lot codes rise with time): shares bought in the wash-sale
    window and sold today are gone before an older lot's loss sale, which is what the
    contract's rule 6 asks of a loss sale behind a recent purchase.
    """
    code, _, quantity, _, _ = ledger.open_lots()
    open_shares = np.bincount(code, weights=quantity) if code.size else np.zeros(0)
    bought = sold = cost = 0.0
    sells: dict[int, float] = {}
    for o in orders:
        if o.side == SELL and o.quantity > 0:
            sells[o.lot_code] = sells.get(o.lot_code, 0.0) + o.quantity
    for c, q in sorted(sells.items(), reverse=True):
        q = min(q, float(open_shares[c]) if c < open_shares.size else 0.0)
        if q <= 0:
            continue
        i = ledger.lot_security[c]
        ledger.sell(day, c, q, prices[i])
        sold += q * prices[i]
        cost += q * prices[i] * spread[i]
    new: dict[int, list[int]] = {}
    for o in orders:
        if o.side == BUY and o.quantity > 0:
            new.setdefault(o.security, []).append(ledger.buy(day, o.security, o.quantity, prices[o.security]))
            bought += o.quantity * prices[o.security]
            cost += o.quantity * prices[o.security] * spread[o.security]
    ledger.settle()
    return cash + sold - bought - cost, bought, sold, cost, new


class _Account:
    """One strategy's account walking a history: its ledger, cash, settled years and the run it records."""

    def __init__(self, history: History, strategy, settings: BacktestSettings):
        self.history, self.strategy, self.settings = history, strategy, settings
        self.steps = rebalance_days(history.days, history.first, settings.frequency)
        self.N = history.security_ids.size
        self.ledger = Ledger(np.arange(self.N))
        self.run = StrategyRun(strategy.name, ledger=self.ledger)
        self.spread = history.spread_bps * 1e-4
        self.index_shares = history.start_weights / history.prices[self.steps[0]]  # the index: buy and hold
        self.cash = settings.initial_value
        self.settled: set[int] = set()
        self.previous_index: float | None = None
        self.start_year = history.days[self.steps[0]].astype(dt.date).year
        self.n = 0

    def begin(self, t: int) -> tuple["Step | None", list[Order]]:
        """Taxes and cash flows of day ``t``; the :class:`Step` to ask the strategy about (None on day one)."""
        history, settings, ledger = self.history, self.settings, self.ledger
        date = history.days[t].astype(dt.date)
        self.day = int(to_days(np.asarray([history.days[t]]))[0])
        prices = history.prices[t]
        self.index_value = float(self.index_shares @ prices)
        self.value_before = self.cash + float(ledger.shares(self.N) @ prices)
        flows = 0.0
        for year in range(date.year - 2, date.year):
            if year not in self.settled and (year < date.year - 1 or (date.month, date.day) >= (4, 15)) \
                    and year >= self.start_year:
                short, long_ = _year_gains(ledger, year)
                tax = settings.st_rate * short + settings.lt_rate * long_
                self.run.taxes[year] = tax
                self.settled.add(year)
                flows -= tax
        self.contribution = settings.contribution if self.n > 0 else 0.0
        self.flows = flows + self.contribution
        self.cash += self.flows
        if self.n == 0:
            value = settings.initial_value * history.start_weights
            return None, [Order(BUY, i, value[i] / (prices[i] * (1 + self.spread[i]))) for i in range(self.N)]
        short, long_ = _year_gains(ledger, date.year)
        weights = self.index_shares * prices / self.index_value
        return Step(date, self.day, prices, weights, history.risk(int(t)), self.cash, ledger, self.spread,
                    settings.st_rate, settings.lt_rate, history.security_ids, history.asset_class,
                    short, long_), []

    def finish(self, t: int, orders: list[Order]) -> None:
        """Execute the day's orders and record the day."""
        history, settings, run = self.history, self.settings, self.run
        date = history.days[t].astype(dt.date)
        prices = history.prices[t]
        self.cash, bought, sold, cost, new = _execute(self.ledger, orders, self.day, prices, self.spread, self.cash)
        if hasattr(self.strategy, "filled"):
            self.strategy.filled(new)
        accrued = 0.0
        for year in range(date.year - 1, date.year + 1):
            if year not in self.settled:
                short, long_ = _year_gains(self.ledger, year)
                accrued += settings.st_rate * short + settings.lt_rate * long_
        run.dates.append(date)
        run.value.append(self.cash + float(self.ledger.shares(self.N) @ prices))
        run.value_before.append(self.value_before)
        run.flows.append(self.flows)
        run.contributions.append(self.contribution)
        run.accrued_tax.append(accrued)
        run.bought.append(bought)
        run.sold.append(sold)
        run.costs.append(cost)
        run.index_return.append(0.0 if self.previous_index is None else self.index_value / self.previous_index - 1)
        self.previous_index = self.index_value
        self.n += 1

    def close(self) -> StrategyRun:
        """The tax of selling every open lot on the last day; the finished run."""
        code, security, quantity, basis, acquired = self.ledger.open_lots()
        long_ = first_long_day(acquired) <= self.day
        last = self.history.prices[self.steps[-1]]
        self.run.liquidation_tax = float(np.sum((quantity * last[security] - basis)
                                                * np.where(long_, self.settings.lt_rate, self.settings.st_rate)))
        return self.run


def _ask(pending: list[tuple[_Account, Step]]) -> dict[int, list[Order]]:
    """Each pending account's orders, by ``id``: strategies with a ``batch_key`` are asked together.

    Accounts whose strategies share a ``batch_key`` (Canopy accounts of one
    engine configuration) go to their class's ``orders_many`` in one call:
    one book, one batched solve of every such account of the day.
    """
    out: dict[int, list[Order]] = {}
    batches: dict = {}
    for account, step in pending:
        key = getattr(account.strategy, "batch_key", None)
        if key is None:
            clock = time.perf_counter()
            out[id(account)] = account.strategy.orders(step)
            account.run.seconds += time.perf_counter() - clock
        else:
            batches.setdefault(key(), []).append((account, step))
    for group in batches.values():
        clock = time.perf_counter()
        orders = type(group[0][0].strategy).orders_many([(a.strategy, s) for a, s in group])
        share = (time.perf_counter() - clock) / len(group)
        for (account, _), o in zip(group, orders):
            out[id(account)] = o
            account.run.seconds += share
    return out


def simulate_many(history: History, strategies: list[tuple[object, BacktestSettings]],
                  progress=None) -> list[StrategyRun]:
    """Run several strategies through ``history`` in lockstep, each in its own account; see the module docstring.

    Every account has its own rebalance days (its settings' frequency); on a
    day several accounts rebalance, the strategies that can be batched
    (Canopy's) are asked together (:func:`_ask`).  Each account's run is what
    :func:`simulate` would give it alone.
    """
    clock = time.perf_counter()
    accounts = [_Account(history, strategy, settings) for strategy, settings in strategies]
    days = np.unique(np.concatenate([a.steps for a in accounts]))
    due = [set(a.steps.tolist()) for a in accounts]
    for count, t in enumerate(days):
        pending, orders = [], {}
        for account, days_of in zip(accounts, due):
            if t in days_of:
                step, first = account.begin(int(t))
                if step is None:
                    orders[id(account)] = first
                else:
                    pending.append((account, step))
        orders.update(_ask(pending))
        for account, days_of in zip(accounts, due):
            if t in days_of:
                account.finish(int(t), orders[id(account)])
        if progress is not None:
            progress(history.name, count + 1, days.size)
    runs = [a.close() for a in accounts]
    if len(runs) == 1:
        runs[0].seconds = time.perf_counter() - clock
    return runs


def simulate(history: History, strategy, settings: BacktestSettings = BacktestSettings(),
             progress=None) -> StrategyRun:
    """Run ``strategy`` through ``history``; see the module docstring."""
    report = None if progress is None else (lambda _, done, total: progress(strategy.name, done, total))
    return simulate_many(history, [(strategy, settings)], report)[0]


def _step_returns(run: StrategyRun) -> tuple[np.ndarray, np.ndarray]:
    """From the second step on: the pre-tax value return and the after-tax wealth return of each step.

    Wealth ``W = value − accrued tax``: settling a tax moves it from accrued
    to paid and leaves W as it was; contributions are taken out of the return.
    """
    value = np.asarray(run.value)
    before = np.asarray(run.value_before)
    wealth = value - np.asarray(run.accrued_tax)
    contributions = np.asarray(run.contributions)
    return before[1:] / value[:-1] - 1, (wealth[1:] - contributions[1:]) / wealth[:-1] - 1


def _growth(returns: np.ndarray) -> float:
    return float(np.prod(1 + returns) - 1)


def _annualized(returns: np.ndarray, years: float) -> float:
    return float(np.prod(1 + returns) ** (1 / years) - 1) if years > 0 else 0.0


def _metrics(run: StrategyRun, base: StrategyRun, steps: np.ndarray, steps_per_year: float,
             years: float | None) -> dict:
    """Metrics over the steps ``steps`` (indices ≥ 1); annualized when ``years`` is given."""
    pre, after = _step_returns(run)
    base_pre, base_after = _step_returns(base)
    rows = steps - 1
    active = pre[rows] - np.asarray(run.index_return)[steps]
    value = np.asarray(run.value)
    traded = (np.asarray(run.bought)[steps].sum() + np.asarray(run.sold)[steps].sum()) / 2
    sells = [t for t in run.ledger.trades if t.side == SELL and _in(t.day, run, steps)]
    if years is None:
        alpha = _growth(after[rows]) - _growth(base_after[rows])
        excess = _growth(pre[rows]) - _growth(base_pre[rows])
        turnover = traded / value[steps].mean()
    else:
        alpha = _annualized(after[rows], years) - _annualized(base_after[rows], years)
        excess = _annualized(pre[rows], years) - _annualized(base_pre[rows], years)
        turnover = traded / value[steps].mean() / years
    return {
        "tax_alpha": alpha - excess, "after_tax_excess": alpha, "pretax_excess": excess,
        "tracking_error": float(active.std(ddof=1) * np.sqrt(steps_per_year)) if active.size > 1 else 0.0,
        "turnover_rate": float(turnover),
        "harvested_losses": float(sum(-t.gain for t in sells if t.gain < 0)),
        "disallowed_losses": float(sum(t.disallowed for t in sells)),
        "short_term_gains": float(sum(t.short_term for t in sells)),
        "long_term_gains": float(sum(t.long_term for t in sells)),
    }


def _in(day: int, run: StrategyRun, steps: np.ndarray) -> bool:
    first, last = run.dates[steps[0]], run.dates[steps[-1]]
    date = dt.date(1970, 1, 1) + dt.timedelta(days=int(day))
    return first <= date <= last


def summarize(runs: dict[str, StrategyRun], steps_per_year: float) -> dict:
    """Per year and overall metrics of every run, against ``runs["buy_and_hold"]`` (module docstring)."""
    base = runs["buy_and_hold"]
    calendar = np.asarray([d.year for d in base.dates])
    years = sorted(set(calendar.tolist()))
    span = (base.dates[-1] - base.dates[0]).days / 365.25
    out: dict = {"years": years, "span_years": span, "strategies": {}}
    everything = np.arange(1, len(base.dates))
    for name, run in runs.items():
        per_year = {}
        for y in years:
            steps = np.flatnonzero(calendar == y)
            steps = steps[steps >= 1]
            if steps.size:
                per_year[y] = {**_metrics(run, base, steps, steps_per_year, None),
                               "taxes": float(run.taxes.get(y, np.nan))}
        value = np.asarray(run.value)
        overall = _metrics(run, base, everything, steps_per_year, span)
        wealth = value[-1] - run.accrued_tax[-1]
        liquidated = wealth - run.liquidation_tax
        base_liquidated = base.value[-1] - base.accrued_tax[-1] - base.liquidation_tax
        contributed = float(np.sum(run.contributions))
        overall.update(
            taxes_paid=float(sum(run.taxes.values())), final_value=float(value[-1]),
            final_after_tax_wealth=float(wealth), final_liquidation_wealth=float(liquidated),
            # annualized after liquidating everything at the end (the deferral's tax paid)
            tax_alpha_liquidated=float(((liquidated - contributed) / value[0]) ** (1 / span)
                                       - ((base_liquidated - contributed) / base.value[0]) ** (1 / span)
                                       - overall["pretax_excess"]) if span > 0 else 0.0,
            seconds=run.seconds)
        out["strategies"][name] = {"per_year": per_year, "overall": overall}
    return out
