"""Realistic, deterministic synthetic books of any size (CONTRACT §1).

The universe is built once from the seed:

* ten asset classes, each with two or three ETFs (two that track the same
  index share a ``wash_group``; the third tracks another index, a close
  substitute in a group of its own) and a mutual fund for most;
* a ~500-name US large-cap direct index and a 150-name international one,
  cap-weighted, with screen tags (``fossil_fuel``, ``tobacco``, ...);
* a factor risk model of 23 factors (market, 11 GICS sectors, 5 styles, two
  regions, rates, credit, inflation, real estate) with annual volatilities
  from 3% to 16%; a fund's exposures are those of the index it tracks, so an
  ETF and the direct index of the same asset class carry the same risk;
* a daily price path of eight years simulated from that model, so lots
  carry gains and losses, short- and long-term;
* 15 target templates from conservative (20% equity) to aggressive (100%).

Accounts come in households of one to four (taxable, IRA, Roth), about 40%
with a direct-index core of hundreds of lots, the rest ETF and fund
portfolios, with screens, never-buy/never-sell lists, custom allocations and
product choices, withdrawals, cash above the cap, small overdrafts, tax
budgets, recent trades for the wash-sale windows, suspended accounts, and a
small share of planted bad rows of every account-level kind that
:mod:`engine.book.validate` rejects.

:func:`generate` writes accounts in chunks of whole households, so a book of
100,000 accounts never sits in memory at once; the same ``(accounts, seed)``
always gives the same book.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.contract import schema
from engine.contract.schema import Col, Kind, Rule, TaxStatus

AS_OF = dt.date(2026, 11, 20)
CHUNK_ACCOUNTS = 2000
HISTORY_YEARS = 8
LEGACY_MISSING_PRICE = "LEG-NOPRICE"
LEGACY_STALE_PRICE = "LEG-STALE"
RETIRED_TEMPLATE = "T-RETIRED"

# ---------------------------------------------------------------------------
# The universe.

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


def build_universe(seed: int, as_of: dt.date = AS_OF) -> Universe:
    """The securities, risk model, price path, models and templates of a book."""
    rng = np.random.default_rng([seed, 0])
    k = len(FACTORS)
    fidx = {f: i for i, f in enumerate(FACTORS)}
    columns = (Col.security_id, Col.symbol, Col.kind, Col.asset_class, Col.sector, Col.fractional,
               Col.wash_group, Col.tags, Col.specific_variance, Col.spread_bps)
    rows: dict[str, list] = {c: [] for c in (*columns, "drift")}
    exposures: list[np.ndarray] = []

    def add(sid, symbol, kind, cls, sector, frac, group, tags, spec_vol, spread, drift, expo):
        for key, value in zip(rows, (sid, symbol, kind, cls, sector, frac, group, tags,
                                     spec_vol ** 2, spread, drift)):
            rows[key].append(value)
        exposures.append(expo)

    # direct-index stocks: US large cap and international (ADRs)
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
            index_members[cls].append(len(rows[Col.security_id]))
            add(f"{prefix}{n:04d}", f"{prefix[0]}{n:04d}", kind, cls, SECTORS[s], False, None,
                tags or None, rng.uniform(0.15, 0.35), rng.uniform(2.0, 8.0), 0.05 + 0.03 * expo[0],
                expo)
    caps = {cls: rng.lognormal(0.0, 0.9, len(members)) for cls, members in index_members.items()}
    index_expo = {cls: (caps[cls] / caps[cls].sum()) @ np.array([exposures[i] for i in members])
                  for cls, members in index_members.items()}

    # funds: per asset class two ETFs on one index (one wash group), a substitute, a mutual fund
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
            products[model] = [len(rows[Col.security_id])]
            class_products[cls].append(model)
            add(sid, sid, kind, cls, None, frac, group, None, spec_vol,
                rng.uniform(1.0, 3.0) if kind == Kind.etf else 0.0, drift, expo)
    for cls, model in (("us_large_cap", "DI-US-LARGE"), ("intl_developed", "DI-INTL")):
        products[model] = index_members[cls]
        class_products[cls].append(model)

    # legacy holdings transferred in: in no model; one unpriced, one stale
    legacy = []
    for n in range(20):
        expo = np.zeros(k)
        expo[fidx["market"]] = rng.normal(1.0, 0.3)
        s = rng.integers(len(SECTORS))
        expo[fidx[f"sector_{SECTORS[s]}"]] = 1.0
        sid = LEGACY_MISSING_PRICE if n == 0 else LEGACY_STALE_PRICE if n == 1 else f"LEG{n:03d}"
        legacy.append(len(rows[Col.security_id]))
        add(sid, sid, Kind.equity, "us_large_cap", SECTORS[s], False, None, None,
            rng.uniform(0.25, 0.45), rng.uniform(3.0, 10.0), 0.08, expo)

    n_sec = len(rows[Col.security_id])
    X = np.array(exposures)
    F = _factor_covariance(rng)
    days = _business_days(as_of, HISTORY_YEARS)
    dt_year = 1.0 / 252.0
    chol = np.linalg.cholesky(F * dt_year)
    factor_returns = rng.standard_normal((len(days), k)) @ chol.T
    spec = np.array(rows[Col.specific_variance])
    specific = rng.standard_normal((len(days), n_sec)) * np.sqrt(spec * dt_year)
    total_var = np.einsum("ij,jk,ik->i", X, F, X) + spec
    log_returns = factor_returns @ X.T + specific + (np.array(rows["drift"]) - total_var / 2) * dt_year
    kinds = np.array(rows[Col.kind])
    start = np.where(kinds == Kind.mutual_fund, rng.uniform(10, 60, n_sec),
                     np.where(kinds == Kind.etf, rng.uniform(30, 300, n_sec),
                              np.exp(rng.uniform(np.log(5), np.log(150), n_sec))))
    prices = start * np.exp(np.cumsum(log_returns, axis=0) - log_returns[0])
    prices = np.round(prices, 2).clip(0.5)

    ids = np.array(rows[Col.security_id], dtype=object)
    price_now = prices[-1].copy()
    price_date = np.full(n_sec, days[-1])
    price_now[legacy[0]] = np.nan
    price_date[legacy[1]] = days[-30]
    securities = pa.table({
        **{c: rows[c] for c in columns},
        Col.price: pa.array(price_now, pa.float64(), from_pandas=True),
        Col.price_date: pa.array(price_date.astype("datetime64[D]"), pa.date32())})
    nz = np.nonzero(np.abs(X) > 1e-12)
    factor_exposures = pa.table({Col.security_id: ids[nz[0]], Col.factor: np.array(FACTORS)[nz[1]],
                                 Col.exposure: X[nz]})
    iu = np.triu_indices(k)
    factor_covariance = pa.table({Col.factor_1: np.array(FACTORS)[iu[0]],
                                  Col.factor_2: np.array(FACTORS)[iu[1]], Col.covariance: F[iu]})
    weights = {m: (caps["us_large_cap"] if m == "DI-US-LARGE" else caps["intl_developed"]
                   if m == "DI-INTL" else np.ones(1)) for m in products}
    weights = {m: w / w.sum() for m, w in weights.items()}
    models = pa.table({
        Col.model_id: [m for m, members in products.items() for _ in members],
        Col.security_id: [ids[i] for members in products.values() for i in members],
        Col.weight: np.concatenate([weights[m] for m in products])})
    templates = _templates(class_products)
    tables = {"securities": securities, "factor_exposures": factor_exposures,
              "factor_covariance": factor_covariance, "models": models,
              "templates": _template_table(templates)}
    groups = np.array([g if g is not None else s for g, s in zip(rows[Col.wash_group], ids)], dtype=object)
    return Universe(as_of=as_of, tables={n: schema.conform(t, schema.BOOK_TABLES[n])
                                         for n, t in tables.items()},
                    security_ids=ids, fractional=np.array(rows[Col.fractional]), prices=prices, days=days,
                    wash_group=groups, tags=[t or [] for t in rows[Col.tags]],
                    products={m: np.array(v) for m, v in products.items()},
                    product_weights=weights, templates=templates, legacy=np.array(legacy))


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


# ---------------------------------------------------------------------------
# Accounts, a chunk of whole households at a time.

_BAD_KINDS = ("unknown_security", "missing_price", "stale_price", "bad_quantity", "bad_cost_basis",
              "future_acquired", "unknown_template", "allocation_out_of_bounds",
              "product_not_allowed", "unknown_restriction_security")


def household_sizes(accounts: int, seed: int) -> np.ndarray:
    """Households of one to four accounts whose sizes add up to ``accounts``."""
    rng = np.random.default_rng([seed, 1])
    sizes = rng.choice([1, 2, 3, 4], size=accounts, p=[0.5, 0.3, 0.15, 0.05])
    total = np.cumsum(sizes)
    last = int(np.searchsorted(total, accounts))
    sizes = sizes[:last + 1].copy()
    sizes[-1] -= int(total[last] - accounts)
    return sizes[sizes > 0]


def _ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    digits = pc.utf8_lpad(pc.cast(pa.array(numbers, pa.int64()), pa.string()), width, "0")
    return pc.binary_join_element_wise(pa.scalar(prefix), digits, "")


class _Chunk:
    """Builds the account-level tables of one chunk of households."""

    def __init__(self, u: Universe, sizes: np.ndarray, first_account: int, first_household: int,
                 rng: np.random.Generator, bad_fraction: float):
        self.u, self.rng = u, rng
        n = int(sizes.sum())
        self.n = n
        self.household = np.repeat(np.arange(len(sizes)), sizes)
        self.rank = np.arange(n) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        self.account_ids = _ids("A", first_account + np.arange(n), 7)
        household_ids = _ids("H", first_household + self.household, 7)
        alone = (sizes[self.household] == 1) & (rng.random(n) < 0.5)
        self.household_ids = pc.if_else(pa.array(alone), pa.scalar(None, pa.string()), household_ids)
        self.template_names = np.array(sorted(u.templates))
        self.template = self.template_names[rng.integers(len(self.template_names), size=len(sizes))][self.household]
        first = self.rank == 0
        self.status = np.where(first, np.where(rng.random(n) < 0.85, TaxStatus.taxable, TaxStatus.tax_deferred),
                               rng.choice([TaxStatus.tax_deferred, TaxStatus.tax_exempt, TaxStatus.taxable],
                                          size=n, p=[0.45, 0.35, 0.2]))
        self.taxable = self.status == TaxStatus.taxable
        self.value = np.clip(rng.lognormal(np.log(300_000), 0.9, n), 10_000, 20_000_000).round(2)
        self.direct = (self.value >= 150_000) & (rng.random(n) < np.where(self.taxable, 0.7, 0.3))
        self.bad = self._plant(bad_fraction)

    # -- planted bad rows: each kind on its own accounts ----------------------
    def _plant(self, fraction: float) -> dict[str, np.ndarray]:
        if fraction <= 0:
            return {kind: np.zeros(0, int) for kind in _BAD_KINDS}
        per_kind = max(1, int(round(fraction * self.n)))
        chosen = self.rng.permutation(self.n)[:per_kind * len(_BAD_KINDS)]
        return {kind: chosen[i::len(_BAD_KINDS)] for i, kind in enumerate(_BAD_KINDS)}

    def tables(self) -> dict[str, pa.Table]:
        allocations, classes = self._allocations()
        restrictions, excluded = self._restrictions()
        lots, positions = self._lots(classes, excluded)
        accounts = self._accounts(positions)
        transactions = self._transactions(lots)
        return {"accounts": accounts, "allocations": allocations, "restrictions": restrictions,
                "lots": lots["arrow"], "transactions": transactions}

    # -- customizations -------------------------------------------------------
    def _allocations(self):
        """Custom weights and product choices; per account its (class, weight, model) list."""
        rng, u = self.rng, self.u
        rows: dict[str, list] = {Col.account_id: [], Col.asset_class: [], Col.weight: [], Col.model_id: []}
        classes = []
        for a in range(self.n):
            template = u.templates[self.template[a]]
            weights = {row[0]: row[1] for row in template}
            models = {row[0]: row[2] for row in template}
            custom: dict[str, list] = {}
            draw = rng.random()
            if draw < 0.08:                              # remove an optional class and rescale
                optional = [row[0] for row in template if row[4] == 0.0]
                if optional:
                    cls = optional[rng.integers(len(optional))]
                    custom[cls] = [0.0, None]
            elif draw < 0.12:                            # tilt within the template's bounds
                row = template[rng.integers(len(template))]
                low = max(row[4], 1e-3)
                custom[row[0]] = [float(np.clip(round(rng.uniform(low, row[5]), 4), low, row[5])), None]
            if self.direct[a]:
                custom.setdefault("us_large_cap", [None, None])[1] = "DI-US-LARGE"
                if "intl_developed" in weights and rng.random() < 0.5:
                    custom.setdefault("intl_developed", [None, None])[1] = "DI-INTL"
            elif rng.random() < 0.12:
                row = template[rng.integers(len(template))]
                funds = [m for m in row[3] if not m.startswith("DI-")]
                custom.setdefault(row[0], [None, None])[1] = funds[rng.integers(len(funds))]
            if a in self.bad["allocation_out_of_bounds"]:
                row = next((r for r in template if r[4] > 0), template[0])
                custom[row[0]] = [round(row[5] + 0.1, 4), custom.get(row[0], [None, None])[1]]
            if a in self.bad["product_not_allowed"]:
                row = template[0]
                other = next(r for t in u.templates.values() for r in t if r[0] != row[0])
                custom.setdefault(row[0], [None, None])[1] = other[2]
            for cls, (weight, model) in custom.items():
                rows[Col.account_id].append(a)
                rows[Col.asset_class].append(cls)
                rows[Col.weight].append(weight)
                rows[Col.model_id].append(model)
                if weight is not None:
                    weights[cls] = weight
                if model is not None and model in u.products:
                    models[cls] = model
            total = sum(weights.values())
            classes.append([(models[c], w / total) for c, w in weights.items() if w > 0])
        rows[Col.account_id] = self.account_ids.take(pa.array(rows[Col.account_id], pa.int64()))
        return pa.table(rows), classes

    def _restrictions(self):
        """Screens and never-buy/never-sell lists; per account the tags screened out of holdings."""
        rng, u = self.rng, self.u
        rows: dict[str, list] = {Col.account_id: [], Col.rule: [], Col.security_id: [], Col.tag: []}

        def add(a, rule, security=None, tag=None):
            for key, value in zip(rows, (a, rule, security, tag)):
                rows[key].append(value)

        excluded = [set() for _ in range(self.n)]
        for tag, share in SCREENS:
            for a in np.flatnonzero(rng.random(self.n) < share):
                add(a, Rule.exclude, tag=tag)
                if rng.random() < 0.7:                   # an old screen: nothing of it is held
                    excluded[a].add(tag)
        members = u.products["DI-US-LARGE"]
        for a in np.flatnonzero(rng.random(self.n) < 0.03):
            add(a, Rule.never_buy, security=u.security_ids[members[rng.integers(len(members))]])
        for a in np.flatnonzero(rng.random(self.n) < 0.02):
            add(a, Rule.exclude, security=u.security_ids[members[rng.integers(len(members))]])
        self.never_sell = np.flatnonzero(rng.random(self.n) < 0.04)
        for a in self.bad["unknown_restriction_security"]:
            add(a, Rule.never_buy, security=f"DELISTED-{a:04d}")
        rows[Col.account_id] = self.account_ids.take(pa.array(rows[Col.account_id], pa.int64()))
        return pa.table(rows, schema=schema.RESTRICTIONS), excluded

    # -- holdings -------------------------------------------------------------
    def _lots(self, classes, excluded):
        rng, u = self.rng, self.u
        tagged = {tag: np.array([tag in t for t in u.tags]) for tag, _ in SCREENS}
        legacy = u.legacy[2:]
        pos_account, pos_security, pos_dollars = [], [], []
        self.cash_share = np.where(rng.random(self.n) < 0.05, rng.uniform(0.05, 0.2, self.n),
                                   rng.uniform(0.002, 0.02, self.n))
        for a in range(self.n):
            invested = self.value[a] * (1.0 - self.cash_share[a])
            for model, weight in classes[a]:
                members, mw = u.products[model], u.product_weights[model]
                keep = np.ones(len(members), bool)
                for tag in excluded[a]:
                    keep &= ~tagged[tag][members]
                if len(members) > 1:
                    keep &= rng.random(len(members)) < 0.9
                drift = rng.lognormal(0.0, 0.15 if len(members) > 1 else 0.1, keep.sum())
                pos_account.append(np.full(keep.sum(), a))
                pos_security.append(members[keep])
                pos_dollars.append(invested * weight * mw[keep] * drift)
            extra = [legacy[rng.integers(len(legacy))]] if rng.random() < 0.03 else []
            extra += [u.legacy[0]] if a in self.bad["missing_price"] else []
            extra += [u.legacy[1]] if a in self.bad["stale_price"] else []
            if extra:
                pos_account.append(np.full(len(extra), a))
                pos_security.append(np.array(extra))
                pos_dollars.append(self.value[a] * rng.uniform(0.01, 0.05, len(extra)))
        account = np.concatenate(pos_account)
        security = np.concatenate(pos_security)
        dollars = np.concatenate(pos_dollars)
        fund = np.array([len(u.products.get(f"M-{s}", ())) == 1 for s in u.security_ids])[security]
        count = 1 + np.minimum(rng.poisson(np.where(fund, 5.0, 0.5)), 29)

        # lots: the first at the account's inception, the others since; a few in the last 30 days
        lot_pos = np.repeat(np.arange(len(account)), count)
        first = np.cumsum(count) - count
        n_days = len(u.days)
        inception = rng.integers(0, n_days - 260, self.n)
        start = inception[account][lot_pos]
        day = start + (rng.random(len(lot_pos)) * (n_days - 1 - start)).astype(int)
        day[first] = start[first]
        recent = np.flatnonzero(rng.random(len(account)) < 0.02)
        last = first[recent] + count[recent] - 1
        day[last] = n_days - 1 - rng.integers(0, 22, len(last))
        share = rng.exponential(1.0, len(lot_pos))
        share /= np.add.reduceat(share, first)[lot_pos]
        price_now = u.prices[-1]
        quantity = share * dollars[lot_pos] / price_now[security][lot_pos]
        whole = ~u.fractional[security][lot_pos]
        quantity = np.where(whole, np.round(quantity), np.round(quantity, 4))
        held = quantity > 0
        lot_pos, day, quantity = lot_pos[held], day[held], quantity[held]
        lot_account, lot_security = account[lot_pos], security[lot_pos]
        basis_price = u.prices[day, lot_security] * (1 + rng.normal(0.0, 0.001, len(day)))
        cost_basis = np.round(quantity * basis_price, 2)
        acquired = u.days[day]
        # the lot's number within its account, for lot ids
        order = np.argsort(lot_account, kind="stable")
        counts = np.bincount(lot_account, minlength=self.n)
        number = np.empty(len(order), np.int64)
        number[order] = np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)
        security_ids = u.security_ids[lot_security].astype(object)
        self._plant_lots(lot_account, security_ids, quantity, cost_basis, acquired)
        table = pa.table({
            Col.account_id: self.account_ids.take(pa.array(lot_account)),
            Col.lot_id: _ids("L", number + 1, 6),
            Col.security_id: pa.array(security_ids, pa.string()),
            Col.quantity: quantity, Col.cost_basis: cost_basis,
            Col.acquired: pa.array(acquired.astype("datetime64[D]"), pa.date32())})
        market = np.bincount(lot_account, quantity * np.nan_to_num(price_now[lot_security]), self.n)
        lots = dict(arrow=table, account=lot_account, security=lot_security, day=day, shares=quantity)
        return lots, market

    def _plant_lots(self, account, security_ids, quantity, cost_basis, acquired):
        """Overwrite one lot of each chosen account with a bad value of its kind."""
        first_lot = {}
        for i, a in enumerate(account):
            first_lot.setdefault(a, i)
        for kind, change in (("unknown_security", lambda i: security_ids.__setitem__(i, f"UNKNOWN-{i}")),
                             ("bad_quantity", lambda i: quantity.__setitem__(i, 0.0)),
                             ("bad_cost_basis", lambda i: cost_basis.__setitem__(i, -100.0)),
                             ("future_acquired", lambda i: acquired.__setitem__(
                                 i, np.datetime64(self.u.as_of, "D") + 3))):
            for a in self.bad[kind]:
                if a in first_lot:
                    change(first_lot[a])

    # -- account rows and recent trades ---------------------------------------
    def _accounts(self, market: np.ndarray) -> pa.Table:
        rng, n = self.rng, self.n
        value = market / (1.0 - self.cash_share)
        cash = np.round(value * self.cash_share, 2)
        overdraft = rng.random(n) < 0.01
        cash[overdraft] = -np.round(rng.uniform(50, 5000, overdraft.sum()), 2)
        st = rng.choice([0.24, 0.32, 0.35, 0.37], n) + 0.038
        lt = np.where(st > 0.35, 0.238, 0.188)
        max_cash = np.round(value * 0.03, 2)
        withdrawal = np.where(rng.random(n) < 0.03, np.round(value * rng.uniform(0.01, 0.1, n), 2), 0.0)
        realized_st = np.where(self.taxable, np.round(rng.normal(0, 0.01, n) * value, 2), 0.0)
        realized_lt = np.where(self.taxable, np.round(rng.normal(0.005, 0.01, n) * value, 2), 0.0)
        ytd_tax = np.maximum(realized_st * st + realized_lt * lt, 0.0)
        budget = self.taxable & (rng.random(n) < 0.2)
        template = self.template.astype(object)
        template[self.bad["unknown_template"]] = RETIRED_TEMPLATE
        return pa.table({
            Col.account_id: self.account_ids, Col.household_id: self.household_ids,
            Col.template_id: template, Col.tax_status: self.status,
            Col.st_rate: np.where(self.taxable, st, 0.0), Col.lt_rate: np.where(self.taxable, lt, 0.0),
            Col.cash: cash, Col.min_cash: np.round(np.maximum(100.0, value * 0.005), 2),
            Col.max_cash: pa.array(max_cash, mask=rng.random(n) < 0.2),
            Col.reserve_cash: np.where(rng.random(n) < 0.08, np.round(value * rng.uniform(0.01, 0.03, n), 2), 0.0),
            Col.withdrawal: withdrawal, Col.min_trade: rng.choice([25.0, 50.0, 100.0], n),
            Col.tax_budget: pa.array(np.round(ytd_tax + value * rng.uniform(0.0, 0.005, n), 2), mask=~budget),
            Col.realized_st_ytd: realized_st, Col.realized_lt_ytd: realized_lt,
            Col.harvest: self.taxable & (rng.random(n) < 0.75),
            Col.tax_sensitivity: rng.choice([1.0, 0.5, 2.0], n, p=[0.8, 0.1, 0.1]),
            Col.turnover_limit: pa.array(np.round(rng.uniform(0.05, 0.2, n), 3), mask=rng.random(n) >= 0.05),
            Col.suspended: rng.random(n) < 0.01})

    def _transactions(self, lots) -> pa.Table:
        """Buys of the lots opened in the last 40 days, and recent sales, many at a loss."""
        rng, u = self.rng, self.u
        window = np.datetime64(u.as_of, "D") - 40
        recent = np.flatnonzero(u.days[lots["day"]] >= window)
        sells = np.flatnonzero(rng.random(len(lots["account"])) < 0.002)
        sell_day = len(u.days) - 1 - rng.integers(1, 28, len(sells))
        sec = np.concatenate([lots["security"][recent], lots["security"][sells]])
        day = np.concatenate([lots["day"][recent], sell_day])
        quantity = np.concatenate([lots["shares"][recent],
                                   np.maximum(1.0, np.round(lots["shares"][sells] * rng.uniform(0.2, 1.0, len(sells))))])
        price = u.prices[day, sec]
        loss = rng.random(len(sells)) < 0.7
        gain = np.round(quantity[len(recent):] * price[len(recent):]
                        * np.where(loss, -rng.uniform(0.03, 0.25, len(sells)), rng.uniform(0.02, 0.4, len(sells))), 2)
        account = np.concatenate([lots["account"][recent], lots["account"][sells]])
        return pa.table({
            Col.account_id: self.account_ids.take(pa.array(account, pa.int64())),
            Col.security_id: pa.array(u.security_ids[sec].astype(object), pa.string()),
            Col.trade_date: pa.array(u.days[day].astype("datetime64[D]"), pa.date32()),
            Col.side: np.where(np.arange(len(sec)) < len(recent), "buy", "sell"),
            Col.quantity: quantity, Col.price: price,
            Col.realized_gain: pa.array(np.concatenate([np.full(len(recent), np.nan), gain]),
                                        mask=np.arange(len(sec)) < len(recent))})


def _chunk_tables(u: Universe, sizes: np.ndarray, first_account: int, first_household: int,
                  seed: int, index: int, bad_fraction: float) -> dict[str, pa.Table]:
    chunk = _Chunk(u, sizes, first_account, first_household,
                   np.random.default_rng([seed, 2, index]), bad_fraction)
    tables = chunk.tables()
    return {name: schema.conform(t, schema.BOOK_TABLES[name]) for name, t in tables.items()}


def iter_tables(accounts: int, seed: int = 0, as_of: dt.date = AS_OF, *,
                bad_fraction: float = 0.002, chunk_accounts: int = CHUNK_ACCOUNTS
                ) -> Iterator[dict[str, pa.Table]]:
    """The book as a stream: first the universe's tables, then chunks of households."""
    if accounts < 1:
        raise ValueError(f"a book needs at least one account, got {accounts}")
    u = build_universe(seed, as_of)
    yield dict(u.tables)
    sizes = household_sizes(accounts, seed)
    bounds = np.searchsorted(np.cumsum(sizes), np.arange(chunk_accounts, accounts, chunk_accounts),
                             side="left") + 1
    first_account = 0
    for index, part in enumerate(np.split(np.arange(len(sizes)), bounds)):
        if len(part) == 0:
            continue
        yield _chunk_tables(u, sizes[part], first_account, int(part[0]), seed, index, bad_fraction)
        first_account += int(sizes[part].sum())


def generate_tables(accounts: int, seed: int = 0, as_of: dt.date = AS_OF, *,
                    bad_fraction: float = 0.002) -> dict[str, pa.Table]:
    """A whole book in memory (small books: tests, examples)."""
    parts: dict[str, list[pa.Table]] = {name: [] for name in schema.BOOK_TABLES}
    for tables in iter_tables(accounts, seed, as_of, bad_fraction=bad_fraction):
        for name, table in tables.items():
            parts[name].append(table)
    return {name: pa.concat_tables(p) if p else schema.empty(schema.BOOK_TABLES[name])
            for name, p in parts.items()}


def generate(uri: str, accounts: int, seed: int = 0, as_of: dt.date = AS_OF, *,
             bad_fraction: float = 0.002, chunk_accounts: int = CHUNK_ACCOUNTS,
             storage_options: Mapping[str, Any] | None = None, overwrite: bool = False) -> dict[str, int]:
    """Write a book of ``accounts`` accounts to ``uri``; returns rows per table."""
    from engine.book.storage import BookWriter

    with BookWriter(uri, as_of, storage_options=storage_options, overwrite=overwrite) as writer:
        for tables in iter_tables(accounts, seed, as_of, bad_fraction=bad_fraction,
                                  chunk_accounts=chunk_accounts):
            for name, table in tables.items():
                writer.write(name, table)
    return dict(writer.rows)
