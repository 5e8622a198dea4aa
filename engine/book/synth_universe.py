"""The universe of a synthetic book: securities, risk model, price path, models and templates.

Everything of a book that does not belong to one account, built once from the seed (see
:mod:`engine.book.synth`): ten asset classes of ETFs and mutual funds, a US large-cap and an
international direct index with screen tags, legacy holdings in no model, a 23-factor risk
model, eight years of daily prices simulated from it, and 15 target templates.  The random
draws come in one fixed order, so a seed always gives the same universe.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pyarrow as pa

from engine.contract import schema
from engine.contract.schema import Col, Kind

AS_OF = dt.date(2026, 11, 20)
HISTORY_YEARS = 8
LEGACY_MISSING_PRICE = "LEG-NOPRICE"
LEGACY_STALE_PRICE = "LEG-STALE"

SECTORS = ("energy", "materials", "industrials", "consumer_discretionary", "consumer_staples",
           "health_care", "financials", "information_technology", "communication_services",
           "utilities", "real_estate")
_SECTOR_COUNTS = (23, 28, 70, 52, 36, 60, 66, 72, 25, 30, 38)           # ~GICS shares of 500
STYLES = ("size", "value", "momentum", "quality", "low_volatility")
FACTORS = ("market", *(f"sector_{s}" for s in SECTORS), *(f"style_{s}" for s in STYLES),
           "region_international", "region_emerging", "rates", "credit", "inflation", "real_estate")
_FACTOR_VOL = dict(market=0.16, region_international=0.08, region_emerging=0.12, rates=0.06,
                   credit=0.04, inflation=0.03, real_estate=0.12,
                   **{f"style_{s}": v for s, v in zip(STYLES, (0.04, 0.05, 0.06, 0.03, 0.04))})

# asset class -> (is equity, factor exposures of the index it tracks, annual drift, mutual fund)
_CLASSES: dict[str, tuple[bool, dict[str, float], float, bool]] = {
    "us_large_cap": (True, {}, 0.07, True),            # exposures: the direct index's
    "us_mid_cap": (True, {"market": 1.05, "style_size": -0.6}, 0.075, True),
    "us_small_cap": (True, {"market": 1.15, "style_size": -1.2, "style_value": 0.2}, 0.08, True),
    "intl_developed": (True, {}, 0.06, True),          # exposures: the international index's
    "emerging_markets": (True, {"market": 0.9, "region_international": 0.4,
                                "region_emerging": 1.0}, 0.07, False),
    "real_estate": (True, {"market": 0.7, "real_estate": 1.0,
                           "sector_real_estate": 0.5}, 0.06, False),
    "us_aggregate_bonds": (False, {"rates": 0.9, "credit": 0.2}, 0.035, True),
    "municipal_bonds": (False, {"rates": 0.8, "credit": 0.3}, 0.03, True),
    "high_yield_bonds": (False, {"market": 0.25, "credit": 1.2, "rates": 0.3}, 0.05, False),
    "inflation_bonds": (False, {"rates": 0.8, "inflation": 1.0}, 0.03, False),
}
_OPTIONAL_CLASSES = ("real_estate", "high_yield_bonds", "inflation_bonds", "emerging_markets")
_TAGS = {"energy": ("fossil_fuel",), "utilities": ("fossil_fuel",), "materials": ("fossil_fuel",),
         "consumer_staples": ("tobacco", "alcohol"), "consumer_discretionary": ("gambling",),
         "industrials": ("weapons",), "health_care": ("catholic_values",)}
_TAG_SHARE = {"fossil_fuel": 0.6, "tobacco": 0.08, "alcohol": 0.1, "gambling": 0.06,
              "weapons": 0.1, "catholic_values": 0.15}
SCREENS = (("fossil_fuel", 0.08), ("tobacco", 0.03), ("catholic_values", 0.03), ("weapons", 0.02))


@dataclass(frozen=True)
class Universe:
    """Everything of a book that does not belong to one account."""

    as_of: dt.date
    tables: Mapping[str, pa.Table]          # securities, risk model, models, templates
    security_ids: np.ndarray
    fractional: np.ndarray                  # per security
    prices: np.ndarray                      # (days, securities), the simulated path
    days: np.ndarray                        # the path's business days, datetime64[D]
    wash_group: np.ndarray                  # per security, own id where the book has null
    tags: list                              # per security, list of tags
    products: Mapping[str, np.ndarray]      # model_id -> security indices
    product_weights: Mapping[str, np.ndarray]
    templates: Mapping[str, list]           # template_id -> [(asset_class, weight, model, alternatives)]
    legacy: np.ndarray                      # indices of legacy holdings (in no model)


def _business_days(as_of: dt.date, years: int) -> np.ndarray:
    start = np.datetime64(as_of - dt.timedelta(days=365 * years + 2), "D")
    end = np.datetime64(as_of, "D") + 1
    days = np.arange(start, end)
    return days[np.is_busday(days)]


def _factor_covariance(rng: np.random.Generator) -> np.ndarray:
    vol = np.array([_FACTOR_VOL.get(f, rng.uniform(0.06, 0.12)) for f in FACTORS])
    loadings = rng.normal(0.0, 0.35, (len(FACTORS), 3))
    corr = loadings @ loadings.T + np.eye(len(FACTORS))
    corr /= np.sqrt(np.outer(np.diag(corr), np.diag(corr)))
    return corr * np.outer(vol, vol)


_FACTOR_INDEX = {f: i for i, f in enumerate(FACTORS)}


class _SecurityRows:
    """The universe's securities as they are added: the securities table's columns, each
    one's annual drift, and its factor exposures."""

    COLUMNS = (Col.security_id, Col.symbol, Col.kind, Col.asset_class, Col.sector, Col.fractional,
               Col.wash_group, Col.tags, Col.specific_variance, Col.spread_bps)

    def __init__(self) -> None:
        self.rows: dict[str, list] = {c: [] for c in (*self.COLUMNS, "drift")}
        self.exposures: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self.rows[Col.security_id])

    def add(self, sid, symbol, kind, cls, sector, frac, group, tags, spec_vol, spread, drift, expo) -> None:
        """Add one security: ``spec_vol`` its annual specific volatility, ``spread`` in bps,
        ``drift`` its annual log drift, ``expo`` its exposure to each of :data:`FACTORS`."""
        for key, value in zip(self.rows, (sid, symbol, kind, cls, sector, frac, group, tags,
                                          spec_vol ** 2, spread, drift)):
            self.rows[key].append(value)
        self.exposures.append(expo)


def build_universe(seed: int, as_of: dt.date = AS_OF) -> Universe:
    """The securities, risk model, price path, models and templates of a book."""
    rng = np.random.default_rng([seed, 0])
    securities = _SecurityRows()
    index_members, caps, index_expo = _add_index_stocks(securities, rng)
    products, class_products = _add_funds(securities, index_members, index_expo, rng)
    legacy = _add_legacy(securities, rng)

    rows = securities.rows
    X = np.array(securities.exposures)
    F = _factor_covariance(rng)
    days = _business_days(as_of, HISTORY_YEARS)
    prices = _price_path(X, F, np.array(rows[Col.specific_variance]), np.array(rows["drift"]),
                         np.array(rows[Col.kind]), days, rng)

    ids = np.array(rows[Col.security_id], dtype=object)
    weights = _product_weights(products, caps)
    templates = _templates(class_products)
    tables = {"securities": _securities_table(securities, prices, days, legacy),
              **_risk_model_tables(ids, X, F), "models": _models_table(ids, products, weights),
              "templates": _template_table(templates)}
    groups = np.array([g if g is not None else s for g, s in zip(rows[Col.wash_group], ids)], dtype=object)
    return Universe(as_of=as_of, tables={n: schema.conform(t, schema.BOOK_TABLES[n])
                                         for n, t in tables.items()},
                    security_ids=ids, fractional=np.array(rows[Col.fractional]), prices=prices, days=days,
                    wash_group=groups, tags=[t or [] for t in rows[Col.tags]],
                    products={m: np.array(v) for m, v in products.items()},
                    product_weights=weights, templates=templates, legacy=np.array(legacy))


def _add_index_stocks(securities: _SecurityRows, rng: np.random.Generator
                      ) -> tuple[dict[str, list[int]], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Add the direct indexes' stocks: ~500 US large caps by GICS shares, 150 international ADRs.

    Returns each index's member rows, their market caps (relative, lognormal) and the index's
    cap-weighted factor exposures, by asset class (``us_large_cap``, ``intl_developed``).
    """
    k, fidx = len(FACTORS), _FACTOR_INDEX
    index_members: dict[str, list[int]] = {"us_large_cap": [], "intl_developed": []}
    for cls, count, kind, region in (("us_large_cap", sum(_SECTOR_COUNTS), Kind.equity, None),
                                     ("intl_developed", 150, Kind.adr, "region_international")):
        sectors = np.repeat(np.arange(len(SECTORS)), _SECTOR_COUNTS) if region is None else \
            rng.choice(len(SECTORS), count, p=np.array(_SECTOR_COUNTS) / sum(_SECTOR_COUNTS))
        for n, s in enumerate(sectors):
            expo = np.zeros(k)
            expo[fidx["market"]] = rng.normal(1.0, 0.25) * (0.85 if region else 1.0)
            expo[fidx[f"sector_{SECTORS[s]}"]] = 1.0
            for style in STYLES:
                expo[fidx[f"style_{style}"]] = rng.normal(0.0, 0.6)
            if region:
                expo[fidx[region]] = 1.0
            tags = [t for t in _TAGS.get(SECTORS[s], ()) if rng.random() < _TAG_SHARE[t]]
            if SECTORS[s] == "industrials" and rng.random() < 0.05:
                tags.append("catholic_values")
            prefix = "US" if region is None else "IN"
            index_members[cls].append(len(securities))
            securities.add(f"{prefix}{n:04d}", f"{prefix[0]}{n:04d}", kind, cls, SECTORS[s], False, None,
                           tags or None, rng.uniform(0.15, 0.35), rng.uniform(2.0, 8.0), 0.05 + 0.03 * expo[0],
                           expo)
    caps = {cls: rng.lognormal(0.0, 0.9, len(members)) for cls, members in index_members.items()}
    index_expo = {cls: (caps[cls] / caps[cls].sum()) @ np.array([securities.exposures[i] for i in members])
                  for cls, members in index_members.items()}
    return index_members, caps, index_expo


def _add_funds(securities: _SecurityRows, index_members: Mapping[str, list[int]],
               index_expo: Mapping[str, np.ndarray], rng: np.random.Generator
               ) -> tuple[dict[str, list[int]], dict[str, list[str]]]:
    """Add the funds: per asset class two ETFs on one index (one wash group), a substitute and
    most with a mutual fund, each exposed like the index it tracks plus noise.

    Returns each product's (model_id's) member rows, the direct indexes included, and each asset
    class's products, the default first.
    """
    k, fidx = len(FACTORS), _FACTOR_INDEX
    products: dict[str, list[int]] = {}
    class_products: dict[str, list[str]] = {}
    for c, (cls, (equity, expo_spec, drift, fund)) in enumerate(_CLASSES.items()):
        base = index_expo.get(cls)
        if base is None:
            base = np.zeros(k)
            for f, v in expo_spec.items():
                base[fidx[f]] = v
        names = [(f"ETF{c:02d}A", f"wg_{cls}", 0.002, 0.002, Kind.etf, False),
                 (f"ETF{c:02d}B", f"wg_{cls}", 0.002, 0.002, Kind.etf, False),
                 (f"ETF{c:02d}S", None, 0.015, 0.05, Kind.etf, False)]
        if fund:
            names.append((f"MF{c:02d}", None, 0.02, 0.05, Kind.mutual_fund, True))
        class_products[cls] = []
        for sid, group, spec_vol, noise, kind, frac in names:
            expo = base + rng.normal(0.0, noise, k) * (base != 0)
            model = f"M-{sid}"
            products[model] = [len(securities)]
            class_products[cls].append(model)
            securities.add(sid, sid, kind, cls, None, frac, group, None, spec_vol,
                           rng.uniform(1.0, 3.0) if kind == Kind.etf else 0.0, drift, expo)
    for cls, model in (("us_large_cap", "DI-US-LARGE"), ("intl_developed", "DI-INTL")):
        products[model] = index_members[cls]
        class_products[cls].append(model)
    return products, class_products


def _add_legacy(securities: _SecurityRows, rng: np.random.Generator) -> list[int]:
    """Add 20 legacy holdings transferred in, in no model: the first unpriced, the second
    stale (see :func:`_securities_table`).  Returns their rows."""
    k, fidx = len(FACTORS), _FACTOR_INDEX
    legacy = []
    for n in range(20):
        expo = np.zeros(k)
        expo[fidx["market"]] = rng.normal(1.0, 0.3)
        s = rng.integers(len(SECTORS))
        expo[fidx[f"sector_{SECTORS[s]}"]] = 1.0
        sid = LEGACY_MISSING_PRICE if n == 0 else LEGACY_STALE_PRICE if n == 1 else f"LEG{n:03d}"
        legacy.append(len(securities))
        securities.add(sid, sid, Kind.equity, "us_large_cap", SECTORS[s], False, None, None,
                       rng.uniform(0.25, 0.45), rng.uniform(3.0, 10.0), 0.08, expo)
    return legacy


def _price_path(X: np.ndarray, F: np.ndarray, spec: np.ndarray, drift: np.ndarray, kinds: np.ndarray,
                days: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Daily closing prices (USD, rounded to cents, at least 0.50), shape (days, securities).

    Log returns from the factor model (exposures ``X``, annual factor covariance ``F``,
    annual specific variances ``spec``) plus each security's annual ``drift`` less half its
    variance; starting prices by kind (funds 10-60, ETFs 30-300, stocks 5-150 USD).
    """
    n_sec, k = len(spec), len(FACTORS)
    dt_year = 1.0 / 252.0
    chol = np.linalg.cholesky(F * dt_year)
    factor_returns = rng.standard_normal((len(days), k)) @ chol.T
    specific = rng.standard_normal((len(days), n_sec)) * np.sqrt(spec * dt_year)
    total_var = np.einsum("ij,jk,ik->i", X, F, X) + spec
    log_returns = factor_returns @ X.T + specific + (drift - total_var / 2) * dt_year
    start = np.where(kinds == Kind.mutual_fund, rng.uniform(10, 60, n_sec),
                     np.where(kinds == Kind.etf, rng.uniform(30, 300, n_sec),
                              np.exp(rng.uniform(np.log(5), np.log(150), n_sec))))
    prices = start * np.exp(np.cumsum(log_returns, axis=0) - log_returns[0])
    return np.round(prices, 2).clip(0.5)


def _securities_table(securities: _SecurityRows, prices: np.ndarray, days: np.ndarray,
                      legacy: list[int]) -> pa.Table:
    """The securities table, priced at the path's last day (USD); the first legacy holding has
    no price, the second one 30 business days old."""
    price_now = prices[-1].copy()
    price_date = np.full(len(securities), days[-1])
    price_now[legacy[0]] = np.nan
    price_date[legacy[1]] = days[-30]
    return pa.table({
        **{c: securities.rows[c] for c in securities.COLUMNS},
        Col.price: pa.array(price_now, pa.float64(), from_pandas=True),
        Col.price_date: pa.array(price_date.astype("datetime64[D]"), pa.date32())})


def _risk_model_tables(ids: np.ndarray, X: np.ndarray, F: np.ndarray) -> dict[str, pa.Table]:
    """``factor_exposures`` (the nonzero entries of ``X``) and ``factor_covariance`` (the upper
    triangle of ``F``, annual)."""
    k = len(FACTORS)
    nz = np.nonzero(np.abs(X) > 1e-12)
    factor_exposures = pa.table({Col.security_id: ids[nz[0]], Col.factor: np.array(FACTORS)[nz[1]],
                                 Col.exposure: X[nz]})
    iu = np.triu_indices(k)
    factor_covariance = pa.table({Col.factor_1: np.array(FACTORS)[iu[0]],
                                  Col.factor_2: np.array(FACTORS)[iu[1]], Col.covariance: F[iu]})
    return {"factor_exposures": factor_exposures, "factor_covariance": factor_covariance}


def _product_weights(products: Mapping[str, list[int]], caps: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each product's member weights (fractions summing to 1): a direct index's by market cap,
    a fund its one security."""
    weights = {m: (caps["us_large_cap"] if m == "DI-US-LARGE" else caps["intl_developed"]
                   if m == "DI-INTL" else np.ones(1)) for m in products}
    return {m: w / w.sum() for m, w in weights.items()}


def _models_table(ids: np.ndarray, products: Mapping[str, list[int]],
                  weights: Mapping[str, np.ndarray]) -> pa.Table:
    """The models table: a row per (product, member security) with its weight."""
    return pa.table({
        Col.model_id: [m for m, members in products.items() for _ in members],
        Col.security_id: [ids[i] for members in products.values() for i in members],
        Col.weight: np.concatenate([weights[m] for m in products])})


def _templates(class_products: Mapping[str, list[str]]) -> dict[str, list]:
    """15 templates, 20% to 100% equity, with the asset class's products as alternatives."""
    equity_split = {"us_large_cap": 0.45, "us_mid_cap": 0.1, "us_small_cap": 0.08,
                    "intl_developed": 0.22, "emerging_markets": 0.07, "real_estate": 0.08}
    bond_split = {"us_aggregate_bonds": 0.5, "municipal_bonds": 0.25, "high_yield_bonds": 0.1,
                  "inflation_bonds": 0.15}
    templates = {}
    for t, equity in enumerate(np.linspace(0.2, 1.0, 15)):
        rows = []
        for cls, split in (*equity_split.items(), *bond_split.items()):
            weight = round(split * (equity if cls in equity_split else 1.0 - equity), 6)
            if weight <= 0:
                continue
            default, *alternatives = class_products[cls]
            low = 0.0 if cls in _OPTIONAL_CLASSES else round(weight * 0.5, 6)
            rows.append([cls, weight, default, alternatives, low,
                         round(min(1.0, weight * 1.5 + 0.05), 6), 0.03 if weight < 0.2 else 0.05])
        total = sum(r[1] for r in rows)
        rows[0][1] = round(rows[0][1] + 1.0 - total, 12)
        templates[f"T{t + 1:02d}"] = rows
    return templates


def _template_table(templates: Mapping[str, list]) -> pa.Table:
    flat = [(t, *row) for t, rows in templates.items() for row in rows]
    names = (Col.template_id, Col.asset_class, Col.weight, Col.model_id, Col.alternatives,
             Col.min_weight, Col.max_weight, Col.band)
    return pa.table({name: [r[i] for r in flat] for i, name in enumerate(names)})

