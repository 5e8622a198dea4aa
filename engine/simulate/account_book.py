"""One simulated account as a book in memory (docs/contract.md §1), and the engine on it.

A simulation hands Canopy the same tables a firm uploads each night, built
from the simulation's state on the day:

* ``securities``: the history's stocks at today's price (fractional shares,
  no wash groups beyond each stock itself, the history's spreads and the
  risk model's specific variances); ``factor_exposures`` and
  ``factor_covariance``: the risk model of the day;
* ``models``: one direct index, the index's weights today; ``templates``:
  one template holding it at 100%;
* ``accounts``: one taxable account with the simulation's cash (negative
  when taxes are owed: an overdraft the engine cures), rates, year-to-date
  realized gains, harvesting on, ``max_cash`` a tenth of a percent of its
  value so that new cash is invested, and a ``min_trade`` of USD 1: no
  broker places a 20-cent trade, and a solver's dust sale at a loss would
  still block the household's purchases of its wash group for 30 days
  (with a 0 minimum the interior-point method's dust did exactly that, and
  the tiny test history harvested nothing);
* ``lots``: the ledger's open lots (adjusted basis and holding period), one
  lot id per kernel piece; ``transactions``: the ledger's trades of the last
  31 days with their realized gains (the wash-sale windows).

:func:`run_engine` then does what a shard of the nightly job does:
validation (a rejected account is a bug of the simulation and raises),
targets and :func:`engine.rebalance.pipeline.solve_households`.
Pure: no storage, no ray.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa

from engine.book.validate import validate
from engine.contract import schema
from engine.contract.config import Config
from engine.contract.errors import CanopyError
from engine.contract.schema import Col, Kind, Side, TaxStatus
from engine.kernels.dates import to_date
from engine.kernels.wash import BUY, SELL, WINDOW_DAYS
from engine.rebalance.pipeline import solve_households
from engine.rebalance.targets import build_targets

__all__ = ["Holder", "shared_book", "run_engine", "ACCOUNT_ID", "MODEL_ID", "TEMPLATE_ID"]

ACCOUNT_ID = "SIM-1"
MODEL_ID = "DI-SIM"
TEMPLATE_ID = "T-SIM"
#: ``max_cash`` as a fraction of the account's value.
MAX_CASH_FRACTION = 1e-3


def _risk_tables(step) -> tuple[pa.Table, pa.Table]:
    risk = step.risk
    ids = step.security_ids
    rows, cols = np.nonzero(np.abs(risk.exposures) > 0)
    names = np.asarray(risk.factors, dtype=object)
    exposures = pa.table({Col.security_id: pa.array(ids[rows], pa.string()),
                          Col.factor: pa.array(names[cols], pa.string()),
                          Col.exposure: risk.exposures[rows, cols]})
    upper = np.triu_indices(len(names))
    covariance = pa.table({Col.factor_1: pa.array(names[upper[0]], pa.string()),
                           Col.factor_2: pa.array(names[upper[1]], pa.string()),
                           Col.covariance: risk.factor_covariance[upper]})
    return exposures, covariance


@dataclass(frozen=True)
class Holder:
    """One simulated account of a shared book: its id, its day (cash, ledger, year-to-date gains) and settings.

    Attributes
    ----------
    account_id
        The account's id in the book (each is its own household).
    step
        The account's :class:`engine.simulate.strategies.Step`; every holder of one
        book shares the day, prices, index weights and risk model.
    tax_sensitivity
        ``θ``, the multiplier of the tax in the objective (0: tax-blind).
    tax_budget
        Most tax per calendar year, USD (``None``: no cap).
    """

    account_id: str
    step: object
    tax_sensitivity: float = 1.0
    tax_budget: float | None = None


def _market_risk(step, weights: np.ndarray) -> tuple[np.ndarray, pa.Table, pa.Table]:
    """A single-index risk model: the index as the one factor, the rest of each stock's variance its own.

    Each stock keeps its total variance and its covariance with the index (its beta),
    so the engine still sees what a hole in the portfolio costs and fills it with the
    market; but it sees no stock that stands in for another beyond that (no substitute
    for a wash-blocked name: neither its industry nor its style).  ``weights``: the index's.
    """
    risk = step.risk
    X, F, d = risk.exposures, risk.factor_covariance, risk.specific_variance
    total = np.einsum("ij,jk,ik->i", X, F, X) + d
    with_index = X @ (F @ (X.T @ weights)) + d * weights            # Σ w: each stock's covariance with the index
    index_variance = float(weights @ with_index)
    beta = with_index / index_variance
    specific = np.maximum(total - beta ** 2 * index_variance, 1e-3 * total)
    ids = np.asarray(step.security_ids, dtype=object)
    exposures = pa.table({Col.security_id: pa.array(ids, pa.string()), Col.factor: ["market"] * ids.size,
                          Col.exposure: beta})
    covariance = pa.table({Col.factor_1: ["market"], Col.factor_2: ["market"], Col.covariance: [index_variance]})
    return specific, exposures, covariance


def _shared_tables(step, substitutes: bool) -> dict[str, pa.Table]:
    """The securities, risk model, model and template of the day, the same for every account of the book."""
    ids = np.asarray(step.security_ids, dtype=object)
    N = ids.size
    date = step.date
    weights = np.maximum(step.weights, 0.0)
    weights = weights / weights.sum()
    if substitutes:
        specific = step.risk.specific_variance
        exposures, covariance = _risk_tables(step)
    else:
        specific, exposures, covariance = _market_risk(step, weights)
    securities = pa.table({
        Col.security_id: pa.array(ids, pa.string()), Col.symbol: pa.array(ids, pa.string()),
        Col.kind: [Kind.equity] * N, Col.asset_class: [step.asset_class] * N,
        Col.sector: pa.nulls(N, pa.string()), Col.price: step.prices.astype(float),
        Col.price_date: pa.array([date] * N, pa.date32()), Col.fractional: np.ones(N, bool),
        Col.wash_group: pa.nulls(N, pa.string()), Col.tags: pa.nulls(N, pa.list_(pa.string())),
        Col.specific_variance: specific, Col.spread_bps: step.spread * 1e4})
    held = weights > 0
    models = pa.table({Col.model_id: [MODEL_ID] * int(held.sum()),
                       Col.security_id: pa.array(ids[held], pa.string()), Col.weight: weights[held]})
    templates = pa.table({Col.template_id: [TEMPLATE_ID], Col.asset_class: [step.asset_class],
                          Col.weight: [1.0], Col.model_id: [MODEL_ID],
                          Col.alternatives: pa.nulls(1, pa.list_(pa.string())),
                          Col.min_weight: [1.0], Col.max_weight: [1.0], Col.band: [1.0]})
    return {"securities": securities, "factor_exposures": exposures, "factor_covariance": covariance,
            "models": models, "templates": templates}


def _account_tables(holder: Holder) -> tuple[dict[str, pa.Table], dict[str, int]]:
    """One holder's ``accounts`` row, open ``lots`` and last 31 days of ``transactions``; lot id → lot code."""
    step, account = holder.step, holder.account_id
    ids = np.asarray(step.security_ids, dtype=object)
    value = step.value
    accounts = pa.table({
        Col.account_id: [account], Col.household_id: pa.nulls(1, pa.string()),
        Col.template_id: [TEMPLATE_ID], Col.tax_status: [TaxStatus.taxable],
        Col.st_rate: [step.st_rate], Col.lt_rate: [step.lt_rate], Col.cash: [step.cash],
        Col.min_cash: [0.0], Col.max_cash: [MAX_CASH_FRACTION * max(value, 0.0)],
        Col.reserve_cash: [0.0], Col.withdrawal: [0.0], Col.min_trade: [1.0],
        Col.tax_budget: pa.array([holder.tax_budget], pa.float64()),
        Col.realized_st_ytd: [step.ytd_short], Col.realized_lt_ytd: [step.ytd_long],
        Col.harvest: [True], Col.tax_sensitivity: [float(holder.tax_sensitivity)],
        Col.turnover_limit: pa.nulls(1, pa.float64()), Col.suspended: [False]})
    code, security, quantity, basis, acquired = step.ledger.open_lots()
    lot_ids, seen = [], {}
    for c in code:
        piece = seen.get(int(c), 0)
        seen[int(c)] = piece + 1
        lot_ids.append(f"L{int(c)}" if piece == 0 else f"L{int(c)}.{piece}")
    lots = pa.table({Col.account_id: [account] * code.size, Col.lot_id: pa.array(lot_ids, pa.string()),
                     Col.security_id: pa.array(ids[security], pa.string()), Col.quantity: quantity,
                     Col.cost_basis: basis,
                     Col.acquired: pa.array([to_date(int(a)) for a in acquired], pa.date32())})
    recent = step.ledger.recent(step.day - WINDOW_DAYS - 1)
    transactions = pa.table({
        Col.account_id: [account] * len(recent),
        Col.security_id: pa.array([ids[r.security] for r in recent], pa.string()),
        Col.trade_date: pa.array([to_date(r.day) for r in recent], pa.date32()),
        Col.side: [Side.buy if r.side == BUY else Side.sell for r in recent],
        Col.quantity: pa.array([r.quantity for r in recent], pa.float64()),
        Col.price: pa.array([r.price for r in recent], pa.float64()),
        Col.realized_gain: pa.array([r.gain if r.side == SELL else None for r in recent], pa.float64())})
    raw = {"accounts": accounts, "lots": lots, "transactions": transactions}
    return ({name: schema.conform(t, schema.BOOK_TABLES[name]) for name, t in raw.items()},
            {lot_id: int(c) for lot_id, c in zip(lot_ids, code)})


def shared_book(holders: Sequence[Holder], *, substitutes: bool = True
                ) -> tuple[dict[str, pa.Table], dict[str, dict[str, int]]]:
    """One book of several simulated accounts on the same day; per account id, each lot id's ledger lot code.

    ``substitutes=False`` writes a single-index risk model (:func:`_market_risk`): the engine
    fills a hole with the market, never with a stock chosen because it resembles the one it
    cannot buy.
    """
    if not holders:
        raise ValueError("shared_book needs at least one account")
    raw = _shared_tables(holders[0].step, substitutes)
    tables = {name: schema.conform(t, schema.BOOK_TABLES[name]) for name, t in raw.items()}
    parts, lot_codes = [], {}
    for holder in holders:
        part, lot_codes[holder.account_id] = _account_tables(holder)
        parts.append(part)
    for name in ("accounts", "lots", "transactions"):
        tables[name] = pa.concat_tables([p[name] for p in parts])
    tables.update({name: schema.empty(schema.BOOK_TABLES[name]) for name in ("restrictions", "allocations")})
    return tables, lot_codes


def run_engine(tables: Mapping[str, pa.Table], as_of: dt.date, config: Config,
               account_ids=(ACCOUNT_ID,)) -> tuple[pa.Table, pa.Table]:
    """Validation, targets and :func:`engine.rebalance.pipeline.solve_households`: the run's trades and accounts rows.

    ``account_ids`` must be whole households; a rejected one raises (a
    simulation writes its own books, so a rejection is its bug).
    """
    rejections = validate(tables, as_of, config.policy)
    if rejections.num_rows:
        raise CanopyError(f"the simulated book was rejected: {rejections.to_pylist()[:3]}")
    targets = build_targets(tables, rejected=[], policy=config.policy, as_of=as_of)
    outputs = solve_households(tables, targets, list(account_ids), as_of, config)
    return pa.concat_tables([o.trades for o in outputs]), pa.concat_tables([o.accounts for o in outputs])
