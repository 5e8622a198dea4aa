"""The accounts of a synthetic book, a chunk of whole households at a time.

Households of one to four accounts (taxable, IRA, Roth) following a template, with custom
allocations and product choices, screens and never-buy/never-sell lists, lots of their
products bought since the account's inception, account rows (cash, rates, limits, tax
budgets) and recent trades; and a small share of planted bad rows of every account-level
kind that :mod:`engine.book.validate` rejects.  Each chunk draws from its own seed, so a
book can be written chunk by chunk (see :mod:`engine.book.synth`).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.book.synth_universe import SCREENS, Universe
from engine.contract import schema
from engine.contract.schema import Col, Rule, TaxStatus

RETIRED_TEMPLATE = "T-RETIRED"

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


def chunk_tables(u: Universe, sizes: np.ndarray, first_account: int, first_household: int,
                 seed: int, index: int, bad_fraction: float) -> dict[str, pa.Table]:
    """The account-level tables (conformed) of chunk ``index``: households of ``sizes``
    accounts, numbered from ``first_account`` and ``first_household``, drawn from the chunk's
    own seed."""
    chunk = _Chunk(u, sizes, first_account, first_household,
                   np.random.default_rng([seed, 2, index]), bad_fraction)
    tables = chunk.tables()
    return {name: schema.conform(t, schema.BOOK_TABLES[name]) for name, t in tables.items()}
