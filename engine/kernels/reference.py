"""Slow, obvious pure-Python versions of the kernels, for tests.

Each function here mirrors one kernel of :mod:`engine.kernels` (same
arguments, same outputs) the way ``osqppurepy`` mirrors OSQP: plain loops,
``datetime`` for the calendar, ``sorted`` with explicit keys, no Numba.  The
tests compare the kernels against these on Hypothesis-generated inputs.  They
are not used in production.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np

from engine.kernels import lots as L

EPOCH = dt.date(1970, 1, 1)


# --- holding period ---------------------------------------------------------

def first_long_day_reference(acquired: int) -> int:
    """Day after the one-year anniversary of ``acquired`` (29 Feb → 28 Feb)."""
    bought = EPOCH + dt.timedelta(days=int(acquired))
    try:
        anniversary = bought.replace(year=bought.year + 1)
    except ValueError:  # 29 February, and next year has none
        anniversary = dt.date(bought.year + 1, 2, 28)
    return (anniversary + dt.timedelta(days=1) - EPOCH).days


def long_term_reference(acquired, as_of) -> np.ndarray:
    return np.array([as_of >= first_long_day_reference(a) for a in acquired], dtype=bool)


# --- tax curves and relief --------------------------------------------------

def _valid(q, basis):
    return q > 0 and math.isfinite(q) and basis >= 0 and math.isfinite(basis)


def _position_lots(p, lot_offsets, quantity, cost_basis, acquired, price, st_rate, lt_rate, as_of):
    """One dict per lot of position ``p`` with everything the methods sort by."""
    px = float(price[p])
    price_ok = px > 0 and math.isfinite(px)
    lots = []
    for i in range(int(lot_offsets[p]), int(lot_offsets[p + 1])):
        q, basis = float(quantity[i]), float(cost_basis[i])
        valid = _valid(q, basis)
        is_long = as_of >= first_long_day_reference(int(acquired[i]))
        gpd = (q * px - basis) / (q * px) if (valid and price_ok) else 0.0
        rate = float(lt_rate[p]) if is_long else float(st_rate[p])
        lots.append(dict(index=i, shares=q, basis=basis, valid=valid, long=is_long,
                         gpd=gpd, slope=rate * gpd, rate=rate, start=int(acquired[i]),
                         width=q * px if (valid and price_ok) else 0.0))
    return lots, px, price_ok


def _sort_key(method, priority):
    def key(lot):
        i = lot["index"]
        if method == L.CURVE:
            return (lot["slope"], lot["gpd"], i)
        if method == L.FIFO:
            return (lot["start"], 0.0, i)
        if method == L.LIFO:
            return (-lot["start"], 0.0, i)
        if method == L.HIFO:
            per_share = lot["basis"] / lot["shares"] if lot["valid"] else 0.0
            return (-per_share, lot["start"], i)
        pr = priority[i]
        return (math.inf if math.isnan(pr) else pr, 0.0, i)
    return key


def tax_curves_reference(lot_offsets, quantity, cost_basis, acquired, price, st_rate, lt_rate,
                         as_of) -> L.TaxCurves:
    n = int(lot_offsets[-1])
    order, slope, width = np.zeros(n, np.int64), np.zeros(n), np.zeros(n)
    gpd, is_long = np.zeros(n), np.zeros(n, bool)
    status = np.zeros(len(lot_offsets) - 1, np.int64)
    for p in range(len(lot_offsets) - 1):
        lots, _, price_ok = _position_lots(p, lot_offsets, quantity, cost_basis, acquired,
                                           price, st_rate, lt_rate, as_of)
        status[p] = (0 if price_ok else L.BAD_PRICE) | (0 if all(x["valid"] for x in lots) else L.BAD_LOT)
        for k, lot in enumerate(sorted(lots, key=_sort_key(L.CURVE, None))):
            j = int(lot_offsets[p]) + k
            order[j], slope[j], width[j] = lot["index"], lot["slope"], lot["width"]
            gpd[j], is_long[j] = lot["gpd"], lot["long"]
    return L.TaxCurves(order, slope, width, gpd, is_long, status)


def curve_tax_reference(lot_offsets, slope, width, sell_dollars) -> np.ndarray:
    """Tax of selling ``y``: integrate the slope over the first ``y`` dollars."""
    out = np.zeros(len(lot_offsets) - 1)
    for p in range(len(out)):
        y, tax = float(sell_dollars[p]), 0.0
        for k in range(int(lot_offsets[p]), int(lot_offsets[p + 1])):
            piece = min(max(y, 0.0), width[k])
            tax += slope[k] * piece
            y -= piece
        out[p] = tax
    return out


def relieve_lots_reference(lot_offsets, quantity, cost_basis, acquired, price, st_rate, lt_rate,
                           as_of, *, sell_dollars=None, sell_shares=None, method=L.CURVE,
                           priority=None) -> L.Relief:
    n = int(lot_offsets[-1])
    shares, gain, is_long, tax = np.zeros(n), np.zeros(n), np.zeros(n, bool), np.zeros(n)
    status = np.zeros(len(lot_offsets) - 1, np.int64)
    in_dollars = sell_dollars is not None
    amounts = sell_dollars if in_dollars else sell_shares
    for p in range(len(lot_offsets) - 1):
        lots, px, price_ok = _position_lots(p, lot_offsets, quantity, cost_basis, acquired,
                                            price, st_rate, lt_rate, as_of)
        for lot in lots:
            is_long[lot["index"]] = lot["long"]
        st = (0 if price_ok else L.BAD_PRICE) | (0 if all(x["valid"] for x in lots) else L.BAD_LOT)
        if method not in (L.CURVE, L.FIFO, L.LIFO, L.HIFO, L.SPECIFIC):
            st |= L.BAD_METHOD
        amount = float(amounts[p])
        if not amount >= 0:
            st |= L.BAD_REQUEST
        if st & (L.BAD_PRICE | L.BAD_REQUEST | L.BAD_METHOD) or amount == 0:
            status[p] = st
            continue
        wanted = amount / px if in_dollars else amount
        remaining = wanted
        for lot in sorted(lots, key=_sort_key(method, priority)):
            if remaining <= 0:
                break
            i = lot["index"]
            if not lot["valid"] or (method == L.SPECIFIC and math.isnan(priority[i])):
                continue
            q = lot["shares"]
            if remaining >= q * (1 - L.DUST):  # the rest closes the lot whole
                take, g = q, q * px - lot["basis"]
            else:
                take = remaining
                g = take * px - lot["basis"] * take / q
            remaining -= take
            shares[i], gain[i], tax[i] = take, g, g * lot["rate"]
        if remaining > L.DUST * max(wanted, 1.0):
            st |= L.OVERSOLD
        status[p] = st
    return L.Relief(shares, gain, is_long, tax, status)


# --- wash-sale windows ------------------------------------------------------

def wash_sale_blocks_reference(household, wash_group, account, security, trade_day, side, quantity,
                               realized_gain, as_of, *, taxable=None, window=30):
    from engine.kernels import wash as W

    pairs, details = {}, {}
    for t in range(len(household)):
        key = (int(household[t]), int(wash_group[t]))
        pair = pairs.setdefault(key, dict(buy_blocked=False, loss_sale_blocked=False, shares=0.0,
                                          last_loss=W.NO_DAY, last_buy=W.NO_DAY, flags=0))
        day, q = int(trade_day[t]), float(quantity[t])
        is_taxable = True if taxable is None else bool(taxable[t])
        if day > as_of:
            pair["flags"] |= W.FUTURE_TRADE
        elif not q > 0 or side[t] not in (W.BUY, W.SELL):
            pair["flags"] |= W.BAD_TRADE
        elif not as_of - window <= day <= as_of:
            pass
        elif side[t] == W.BUY:
            pair["loss_sale_blocked"] = True
            pair["last_buy"] = max(pair["last_buy"], day)
            pair["shares"] += q
            dkey = key + (int(account[t]), int(security[t]))
            shares, last = details.get(dkey, (0.0, W.NO_DAY))
            details[dkey] = (shares + q, max(last, day))
        elif is_taxable:
            gain = float(realized_gain[t])
            if math.isnan(gain) or gain < 0:
                if math.isnan(gain):
                    pair["flags"] |= W.UNKNOWN_GAIN
                pair["buy_blocked"] = True
                pair["last_loss"] = max(pair["last_loss"], day)
    keys = sorted(pairs)
    index = {k: i for i, k in enumerate(keys)}
    dkeys = sorted(details, key=lambda d: (index[d[:2]], d[2], d[3]))
    col = lambda name, dtype: np.array([pairs[k][name] for k in keys], dtype=dtype)  # noqa: E731
    return W.WashBlocks(
        np.array([k[0] for k in keys], np.int64), np.array([k[1] for k in keys], np.int64),
        col("buy_blocked", bool), col("loss_sale_blocked", bool), col("shares", float),
        col("last_loss", np.int64), col("last_buy", np.int64), col("flags", np.int64),
        np.array([index[d[:2]] for d in dkeys], np.int64), np.array([d[2] for d in dkeys], np.int64),
        np.array([d[3] for d in dkeys], np.int64), np.array([details[d][0] for d in dkeys], float),
        np.array([details[d][1] for d in dkeys], np.int64))


# --- wash-sale accounting, one share at a time -------------------------------

def wash_sale_accounting_reference(trade_day, account, security, wash_group, side, quantity,
                                   price, account_taxable, window=30):
    """Publication 550 replayed share by share (whole-share quantities only).

    Returns per trade ``(shares_filled, realized_gain, disallowed_loss,
    realized_long)`` and the open shares at the end as a list of dicts.
    """
    from engine.kernels import wash as W

    shares = []  # every share ever bought, in purchase order
    loss_shares = []  # every taxable loss share sold, in sale order
    n = len(trade_day)
    filled, gain, disallowed, gain_long = [0.0] * n, [0.0] * n, [0.0] * n, [0.0] * n

    def replace(loss, new):
        """``new`` replaces ``loss``: disallow, adjust basis and holding period."""
        loss["pending"] = False
        new["used"] = True
        disallowed[loss["trade"]] += loss["loss"]
        if account_taxable[new["account"]]:
            new["basis"] += loss["loss"]
            new["start"] -= loss["day"] - loss["start"]

    for t in range(n):
        day, q, px, g = int(trade_day[t]), float(quantity[t]), float(price[t]), int(wash_group[t])
        if not (q > 0 and px > 0) or side[t] not in (W.BUY, W.SELL):
            continue
        if side[t] == W.BUY:
            for k in range(int(q)):
                new = dict(account=int(account[t]), security=int(security[t]), group=g,
                           basis=px, start=day, buy_day=day, purchase=t, used=False, open=True)
                shares.append(new)
                waiting = [s for s in loss_shares
                           if s["pending"] and s["group"] == g and s["day"] + window >= day]
                if waiting:
                    replace(waiting[0], new)
            filled[t] = q
            continue
        held = [s for s in shares if s["open"] and s["account"] == account[t]
                and s["security"] == security[t]]
        sold = held[: int(q)]
        sold_now = []
        for s in sold:
            s["open"] = False
            g_share = px - s["basis"]
            filled[t] += 1
            gain[t] += g_share
            if day >= first_long_day_reference(s["start"]):
                gain_long[t] += g_share
            if g_share < 0 and account_taxable[int(account[t])]:
                loss = dict(trade=t, loss=-g_share, day=day, start=s["start"], group=s["group"],
                            purchase=s["purchase"], pending=True)
                loss_shares.append(loss)
                sold_now.append(loss)
        for loss in sold_now:
            before = [s for s in shares if s["open"] and not s["used"] and s["group"] == loss["group"]
                      and day - window <= s["buy_day"] <= day and s["purchase"] != loss["purchase"]]
            if before:
                replace(loss, before[0])
    open_shares = [s for s in shares if s["open"]]
    return filled, gain, disallowed, gain_long, open_shares


# --- rounding -----------------------------------------------------------------

def round_trades_reference(account_offsets, side, price, fractional, dollars, lot_quantity, cash,
                           cash_floor, min_trade):
    from engine.kernels import rounding as R
    from engine.kernels.wash import BUY, SELL

    def ok(i):
        px, want, lot = float(price[i]), float(dollars[i]), float(lot_quantity[i])
        if not (px > 0 and math.isfinite(px) and want >= 0 and math.isfinite(want)):
            return False
        return (lot > 0 and math.isfinite(lot)) if side[i] == SELL else side[i] == BUY

    def whole_up(x):
        return math.ceil(x - 1e-9)

    shares = np.zeros(int(account_offsets[-1]))
    cash_after = np.zeros(len(account_offsets) - 1)
    status = np.zeros(len(account_offsets) - 1, np.int64)
    for a in range(len(account_offsets) - 1):
        lines = range(int(account_offsets[a]), int(account_offsets[a + 1]))
        smallest, floor, st = float(min_trade[a]), float(cash_floor[a]), 0
        for i in lines:
            if not ok(i):
                st |= R.BAD_LINE
                continue
            s = dollars[i] / price[i]
            if not fractional[i]:
                nearest = math.floor(s + 0.5)
            if side[i] == SELL:
                lot = lot_quantity[i]
                if s >= lot * (1 - 1e-9):
                    s = lot
                else:
                    s = s if fractional[i] else nearest
                    s = lot if s >= lot else (0.0 if s * price[i] < smallest else s)
            else:
                s = s if fractional[i] else nearest
                s = 0.0 if s * price[i] < smallest else s
            shares[i] = s

        def balance():
            sign = {BUY: -1.0, SELL: 1.0}
            return float(cash[a]) + sum(sign[side[i]] * shares[i] * price[i] for i in lines if ok(i))

        short = lambda: balance() < floor - R.CASH_TOLERANCE  # noqa: E731
        buys = sorted((i for i in lines if ok(i) and side[i] == BUY),
                      key=lambda i: (-shares[i] * price[i], i))
        for i in buys:
            if not short():
                break
            if shares[i] <= 0:
                continue
            cut = (floor - balance()) / price[i]
            cut = cut if fractional[i] else whole_up(cut)
            left = shares[i] - cut
            # A cut within float noise of the whole buy drops it (no dust trades).
            shares[i] = 0.0 if (left <= shares[i] * 1e-9 or left * price[i] < smallest) else left
        for i in lines:
            if not short():
                break
            if side[i] != SELL or not ok(i) or shares[i] >= lot_quantity[i]:
                continue
            new = shares[i] + (floor - balance()) / price[i]
            new = new if fractional[i] else whole_up(new)
            if new * price[i] < smallest:
                new = smallest / price[i] if fractional[i] else whole_up(smallest / price[i])
            shares[i] = lot_quantity[i] if new >= lot_quantity[i] * (1 - 1e-9) else new
        b = balance()
        st |= R.FLOOR_UNMET if b < floor - R.CASH_TOLERANCE else 0
        st |= R.NEGATIVE_CASH if b < -R.CASH_TOLERANCE else 0
        cash_after[a], status[a] = b, st
    return R.Rounded(shares, cash_after, status)
