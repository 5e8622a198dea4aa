"""Loss sales inside a wash-sale window: rule 6's exception for a screen or a harvest, or the sale waits.

(docs/contract.md §3, rules 3 and 6.)

A screen (``exclude``) forces the sale of a holding (rule 3).  Where the
holding is at a loss and its household bought the wash group in the 30 days
before ``as_of``, that sale is a wash sale (rule 6) unless every share bought
then is sold today too.  :func:`screen_in_window` decides it for one
(household, wash group) whose loss sales the window blocks, when a screen
forces a loss sale of the group in an account that trades today:

* every account that bought in the window can sell what it still holds of
  it (the account is solved today, not suspended, and the security is not
  ``never_sell`` there): the exception is taken
  (:func:`sell_window_purchases`), whatever the buyers' tax budgets say,
  since the screen forces it;
* otherwise the wash-sale rule wins and the screen waits
  (:func:`hold_back`): the screened accounts keep their loss lots of the
  group today (their gain lots of it are still sold) and are ``infeasible``
  with a :class:`HeldBack` detail: the security, the shares and dollars
  kept, who bought and why they cannot sell, and the first day the sale is
  no wash sale.  The rule is tax law: a loss sold against a purchase that
  stays (an IRA's, say) is lost for good, while the screen waits at most 30
  days.

Either way nothing of the group is bought in the household today: a purchase
would be a wash sale with the exception's loss sale, or would reopen the
window the screen waits for.

Without a screen, :func:`harvest_in_window` takes the same exception by choice,
to harvest: where every buyer can sell and has no tax budget or turnover limit,
and selling the window's purchases costs at most ``window_harvest_ratio`` times
what the group's other losses are worth (docs/tax-policy.md).

The window (:mod:`engine.kernels.wash`): a purchase on day ``t`` blocks a loss
sale on ``as_of`` when ``as_of − 30 ≤ t``, so the sale is clear of it from
``t + 31`` on.  A household-mate that is not solved (rejected) is known only
by its trades (:func:`engine.rebalance.shards.household_transactions`), not by its
lots, so its window purchases count as still held.

Pure: NumPy, no storage, no ray.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from engine.contract.schema import Rule, Status
from engine.kernels.dates import to_date
from engine.kernels.wash import WINDOW_DAYS, WashBlocks

__all__ = ["Purchases", "Buyer", "HeldBack", "screen_in_window", "blocked_buyers", "window_lots",
           "sell_window_purchases", "harvest_in_window", "hold_back", "by_account"]


@dataclass(frozen=True)
class Purchases:
    """The window purchases of a batch's households, and what their accounts may sell today.

    Attributes
    ----------
    blocks : WashBlocks
        Of the batch's transactions; ``detail_account`` is a row of ``account_ids``.
    account_ids : (A + R,) object
        The batch's accounts, then the household-mates that are not solved (rejected).
    member, slot : (A,) int64
        Household and account slot of each of the batch's accounts.
    local : (S,) int64
        Universe column of each security of the book's ``securities`` table; -1 outside.
    security_ids : (S,) object
        Ids of the book's securities.
    universe : (n,) object
        Ids of the universe's securities (``None`` on padding).
    account_grid : (B, m) object
        Account id of each slot (``None`` on padding).
    lot_row : (B, m, n, L) int64
        Row of the ``lots`` table of each lot variable; -1 on padding.
    lot_quantity : float64, per row of the ``lots`` table
        Shares.
    lot_acquired : int64, per row of the ``lots`` table
        Days since 1970-01-01.
    trading : (B, m) bool
        The slot holds an account that trades today (not suspended).
    never_sell : (B, m, n) bool
    price : (n,) float64
        USD per share.
    """

    blocks: WashBlocks
    account_ids: np.ndarray
    member: np.ndarray
    slot: np.ndarray
    local: np.ndarray
    security_ids: np.ndarray
    universe: np.ndarray
    account_grid: np.ndarray
    lot_row: np.ndarray
    lot_quantity: np.ndarray
    lot_acquired: np.ndarray
    trading: np.ndarray
    never_sell: np.ndarray
    price: np.ndarray

    def held(self, household: int, account: int, column: int) -> float:
        """Shares of universe column ``column`` the account in slot (household, account) holds."""
        if column < 0:
            return 0.0
        rows = self.lot_row[household, account, column]
        return float(self.lot_quantity[rows[rows >= 0]].sum())


class Buyer(NamedTuple):
    """A purchase in the window that its account cannot sell today.

    ``shares`` were bought in the window, the latest on ``last_bought``; ``why``
    is ``suspended``, ``rejected`` or ``never_sell``.
    """

    account_id: str
    security_id: str
    shares: float
    last_bought: dt.date
    why: str


class HeldBack(NamedTuple):
    """A screened account's loss lots of one wash group, kept today because their sale would be a wash sale.

    Attributes
    ----------
    household, account : int
        The account's slots in the batch.
    account_id : str
    columns : tuple of int
        Universe columns of the screened securities whose loss lots are kept.
    shares : tuple of (str, float)
        Per security id, the shares kept.
    value : float
        USD: the lots kept at today's price.
    sale_from : datetime.date
        The first day their sale is clear of every purchase in ``buyers``: the
        latest of them + 31 days.
    buyers : tuple of Buyer
    """

    household: int
    account: int
    account_id: str
    columns: tuple
    shares: tuple
    value: float
    sale_from: dt.date
    buyers: tuple

    def detail(self) -> str:
        """The account's ``detail``, in words: what is kept, why, by how much and until when."""
        kept = " and ".join(f"{_shares(q)} of {s}" for s, q in self.shares)
        against = " and ".join(
            f"{_shares(b.shares)} of {b.security_id} that "
            f"{'this account' if b.account_id == self.account_id else 'household-mate ' + b.account_id} "
            f"bought in the last {WINDOW_DAYS} days (the latest on {b.last_bought}) and cannot sell today ({b.why})"
            for b in self.buyers)
        return (f"exclude waits for a wash-sale window: {kept} (USD {self.value:,.2f}) held at a loss are not "
                f"sold today, because selling them would be a wash sale (rule 6) against {against}; "
                f"they may be sold from {self.sale_from}")


def _shares(quantity: float) -> str:
    """``1 share``, ``1,200 shares``, ``2.5 shares``."""
    if quantity == 1.0:
        return "1 share"
    return (f"{quantity:,.0f}" if quantity == round(quantity) else f"{quantity:,.6f}".rstrip("0")) + " shares"


def _details(blocks: WashBlocks, pair: int) -> range:
    """The detail rows of wash block ``pair`` (the details are sorted by pair)."""
    return range(int(np.searchsorted(blocks.detail_pair, pair, "left")),
                 int(np.searchsorted(blocks.detail_pair, pair, "right")))


def blocked_buyers(purchases: Purchases, pair: int) -> list[Buyer]:
    """The purchases of wash block ``pair`` in the window that their accounts cannot sell today.

    A purchase its account no longer holds anything of (sold since) is owed by
    no one and blocks nothing; a rejected mate's always blocks (its lots are unknown here).
    """
    blocks = purchases.blocks
    found = []
    for d in _details(blocks, pair):
        code, security = int(blocks.detail_account[d]), int(blocks.detail_security[d])
        if code >= purchases.member.size:
            why = Status.rejected
        else:
            household, account = purchases.member[code], purchases.slot[code]
            column = purchases.local[security]
            if purchases.held(household, account, column) <= 0.0:
                continue
            if not purchases.trading[household, account]:
                why = Status.suspended
            elif purchases.never_sell[household, account, column]:
                why = Rule.never_sell
            else:
                continue
        found.append(Buyer(str(purchases.account_ids[code]), str(purchases.security_ids[security]),
                           float(blocks.detail_shares_bought[d]), to_date(int(blocks.detail_last_buy_day[d])),
                           why))
    return found


def window_lots(purchases: Purchases, pair: int) -> list[tuple[int, int, int, np.ndarray]]:
    """The lots that hold every share the household bought in the window of ``pair``.

    Each account that bought holds, of each security it bought, the shares it
    bought in its latest lots: those lots, whole, until they cover them (all it
    holds where it holds fewer).  One ``(household, account, column, lot slots)``
    per purchase the batch knows the lots of.
    """
    blocks = purchases.blocks
    found = []
    for d in _details(blocks, pair):
        code = int(blocks.detail_account[d])
        column = purchases.local[blocks.detail_security[d]] if code < purchases.member.size else -1
        if column < 0:
            continue
        household, account = purchases.member[code], purchases.slot[code]
        rows_of = purchases.lot_row[household, account, column]
        held = np.flatnonzero(rows_of >= 0)
        if not held.size:
            continue
        rows = rows_of[held]
        latest = held[np.lexsort((-rows, -purchases.lot_acquired[rows]))]
        covered = np.cumsum(purchases.lot_quantity[rows_of[latest]])
        take = latest[:int(np.searchsorted(covered, blocks.detail_shares_bought[d] - 1e-9)) + 1]
        found.append((int(household), int(account), int(column), take))
    return found


def sell_window_purchases(purchases: Purchases, pair: int, width: np.ndarray, sell_lower: np.ndarray) -> None:
    """Rule 6's exception: force out every share the household bought in the window of ``pair``, in place.

    The lots of :func:`window_lots`, whole.  ``width`` and ``sell_lower``: (B, m, n, L), units of V.
    """
    _sell_whole(window_lots(purchases, pair), width, sell_lower)


def _sell_whole(lots: list, width: np.ndarray, sell_lower: np.ndarray) -> None:
    """Force :func:`window_lots`' lots out whole, in place."""
    for household, account, column, take in lots:
        sell_lower[household, account, column, take] = width[household, account, column, take]


def harvest_in_window(purchases: Purchases, pair: int, household: int, in_group: np.ndarray, width: np.ndarray,
                      cost: np.ndarray, loss: np.ndarray, sell_upper: np.ndarray, sell_lower: np.ndarray,
                      spread: np.ndarray, limited: np.ndarray, ratio: float) -> list[tuple[int, int, int]]:
    """Rule 6's exception taken to harvest: sell the window's purchases so that the group's losses may be sold.

    A purchase in the window blocks every loss sale of its wash group, for up
    to 30 days, unless every share bought then is sold today too.  A monthly
    account that bought a little of a stock last month (a substitute, a
    rebalance) would otherwise let that stock's older losses wait a month, and
    they may be gone by then.  The exception is taken when every buyer can
    sell today (:func:`blocked_buyers` finds none) and selling the window's
    lots costs at most ``ratio`` times what the group's other loss lots are
    worth to the objective: per unit sold, their ``cost`` (negative for a loss
    worth harvesting) plus the spread.  The window's lots are then forced out
    (``sell_lower``, in place); whether the older losses are sold is left to the
    solver.  The caller keeps the group's loss lots open and blocks its purchases
    today (a purchase would be a wash sale with the loss sales).

    Not where a buyer has a tax budget or a turnover limit (``limited``, (B, m)):
    the proposals keep those limits exact by trimming sells after rounding, and a
    trimmed window sale would leave the older loss sale a wash sale.

    ``width``, ``cost``, ``loss``, ``sell_upper``, ``sell_lower``: (B, m, n, L);
    ``spread``: (n,).  Returns the (household, account, column) of each sale forced
    out, or nothing where the exception is not taken.
    """
    if ratio <= 0 or blocked_buyers(purchases, pair):
        return []
    forced = window_lots(purchases, pair)
    if not forced or any(limited[h, account] for h, account, _, _ in forced) or _washes_itself(purchases, forced, loss):
        return []
    group_lots = np.s_[:, in_group]                                          # of the household: (m, k, L)
    per_unit = cost[household][group_lots] + spread[in_group][None, :, None]
    open_ = (loss[household][group_lots] & (sell_upper[household][group_lots] > sell_lower[household][group_lots])
             & (per_unit < 0))
    in_window = np.zeros_like(open_)
    selling = 0.0
    position = {int(c): i for i, c in enumerate(in_group)}
    for h, account, column, take in forced:
        in_window[account, position[column], take] = True
        selling += float(((cost[h, account, column, take] + spread[column]) * width[h, account, column, take]).sum())
    worth = -float((per_unit * width[household][group_lots])[open_ & ~in_window].sum())
    if worth <= 0 or selling > ratio * worth:
        return []
    _sell_whole(forced, width, sell_lower)
    return [(h, account, column) for h, account, column, _ in forced]


def _washes_itself(purchases: Purchases, forced: list, loss: np.ndarray) -> bool:
    """Whether selling the window's lots together would wash one of them against another.

    Rule 6 allows the sale, but Publication 550 matches a window lot sold at a loss with
    any other window lot still held at that moment, so the loss is disallowed and moved
    into that lot's basis (to be recognized when it is sold, the same day).  Only the
    oldest window lot, sold last, has no other window lot to match: the exception is
    taken only where no newer one is at a loss.
    """
    acquired, at_loss = [], []
    for h, account, column, take in forced:
        acquired.append(purchases.lot_acquired[purchases.lot_row[h, account, column, take]])
        at_loss.append(loss[h, account, column, take])
    acquired, at_loss = np.concatenate(acquired), np.concatenate(at_loss)
    oldest = acquired == acquired.min()
    return bool(at_loss[~oldest].any() or (oldest.sum() > 1 and at_loss[oldest].any()))


def hold_back(purchases: Purchases, household: int, in_group: np.ndarray, screened: np.ndarray,
              sell_lower: np.ndarray, buyers: list[Buyer]) -> list[HeldBack]:
    """The screen waits: the ``screened`` loss lots are no longer forced out, in place.

    ``screened``: (m, len(in_group), L) bool, the loss lots of ``household`` a
    screen forces out, over the group's universe columns ``in_group``.  Returns one
    :class:`HeldBack` per screened account.
    """
    sale_from = max(b.last_bought for b in buyers) + dt.timedelta(days=WINDOW_DAYS + 1)
    held = []
    for account in np.flatnonzero(screened.any(axis=(1, 2))):
        lots = screened[account]
        lower = sell_lower[household, account, in_group]
        lower[lots] = 0.0
        sell_lower[household, account, in_group] = lower
        rows = purchases.lot_row[household, account, in_group]
        shares = np.where(lots, purchases.lot_quantity[np.maximum(rows, 0)], 0.0).sum(axis=1)
        kept = np.flatnonzero(shares > 0)
        columns = in_group[kept]
        held.append(HeldBack(
            int(household), int(account), str(purchases.account_grid[household, account]),
            tuple(int(c) for c in columns),
            tuple((str(purchases.universe[c]), float(q)) for c, q in zip(columns, shares[kept])),
            float((shares[kept] * purchases.price[columns]).sum()), sale_from, tuple(buyers)))
    return held


def screen_in_window(purchases: Purchases, pair: int, household: int, in_group: np.ndarray,
                     screened: np.ndarray, width: np.ndarray, sell_lower: np.ndarray) -> list[HeldBack]:
    """Rule 6's exception where every buyer can sell, else the screen waits (see the module docstring).

    Parameters
    ----------
    purchases
        The batch's window purchases.
    pair
        The wash block (household, wash group) whose loss sales the window blocks.
    household
        Its household slot.
    in_group
        The group's universe columns.
    screened
        (m, len(in_group), L) bool: the group's loss lots a screen forces out, in accounts that trade.
    width, sell_lower
        (B, m, n, L), units of V; ``sell_lower`` is changed in place.

    Returns
    -------
    list of HeldBack
        Empty where the exception is taken.
    """
    buyers = blocked_buyers(purchases, pair)
    if not buyers:
        sell_window_purchases(purchases, pair, width, sell_lower)
        return []
    return hold_back(purchases, household, in_group, screened, sell_lower, buyers)


def by_account(held_back, household: np.ndarray, account: np.ndarray, securities: int):
    """The held-back records of a batch per account: what waits and the words for it.

    Parameters
    ----------
    held_back
        ``BatchIndex.held_back``.
    household, account : (A,) int64
        The slots of the accounts to report on.
    securities
        ``n``, the universe's size.

    Returns
    -------
    waits : (A, n) bool
        The screened securities whose loss lots wait: the screen does not mandate a sale of them today.
    details : (A,) object
        The accounts' held-back details, ``"; "``-joined, or ``None``.
    """
    row_of = {(int(h), int(a)): i for i, (h, a) in enumerate(zip(household, account))}
    waits = np.zeros((len(row_of), securities), bool)
    details = np.full(len(row_of), None, dtype=object)
    for record in held_back:
        i = row_of.get((record.household, record.account))
        if i is None:
            continue
        waits[i, list(record.columns)] = True
        details[i] = "; ".join(filter(None, (details[i], record.detail())))
    return waits, details
