"""Trades in words, from their ``reason`` (docs/contract.md §2), for clients and advisors.

One sentence per trade: what is bought or sold, why (the reason, as
:mod:`engine.rebalance.proposals` assigns it), and for sells the gain or loss realized
and its estimated tax.  Used by the per-account reports and the what-ifs.
"""

from __future__ import annotations

from typing import Mapping

from engine.contract.schema import Col, Reason, Side, Term

#: Why, per reason and side.
WHY: dict[tuple[str, str], str] = {
    (Reason.withdrawal, Side.sell): "to raise the cash of the client's withdrawal",
    (Reason.overdraft, Side.sell): "to cure an overdraft (cash below zero)",
    (Reason.cash_floor, Side.sell): "to bring cash back up to the account's minimum and reserve",
    (Reason.cash_invest, Side.buy): "to invest cash above the account's cash cap",
    (Reason.exclude, Side.sell): "because one of the account's screens excludes it",
    (Reason.harvest, Side.sell): "to harvest a loss, which lowers this year's taxes",
    (Reason.replacement, Side.buy): ("to keep the market exposure of a position sold at a loss today, with a "
                                     "similar security that is not substantially identical (no wash sale)"),
    (Reason.model_change, Side.sell): "because the account's target no longer holds it (a product or model change)",
    (Reason.model_change, Side.buy): "because the account's target now holds it (a product or model change)",
    (Reason.rebalance, Side.sell): "to bring the account back toward its target",
    (Reason.rebalance, Side.buy): "to bring the account back toward its target",
}


def _money(amount: float) -> str:
    return f"${abs(amount):,.2f}"


def explain(trade: Mapping) -> str:
    """One trade (a ``trades`` row as a dict) in a sentence.

    >>> print(explain({"side": "sell", "quantity": 10.0, "security_id": "ABC", "lot_id": "L1", "value": 900.0,
    ...                "reason": "harvest", "realized_gain": -300.0, "term": "short", "est_tax": -111.0}))
    Sell 10 shares of ABC (lot L1) for $900.00 to harvest a loss, which lowers this year's taxes: a short-term loss of $300.00, saving an estimated $111.00 of tax.
    """
    side, reason = trade[Col.side], trade[Col.reason]
    quantity = trade[Col.quantity]
    shares = f"{quantity:,.0f}" if float(quantity).is_integer() else f"{quantity:,.4f}"
    what = f"{'Sell' if side == Side.sell else 'Buy'} {shares} shares of {trade[Col.security_id]}"
    if side == Side.sell and trade.get(Col.lot_id):
        what += f" (lot {trade[Col.lot_id]})"
    why = WHY.get((reason, side), f"({reason})")
    sentence = f"{what} for {_money(trade[Col.value])} {why}"
    if side == Side.sell and trade.get(Col.realized_gain) is not None:
        gain, tax = trade[Col.realized_gain], trade.get(Col.est_tax) or 0.0
        term = "long-term" if trade.get(Col.term) == Term.long else "short-term"
        if gain < 0:
            sentence += f": a {term} loss of {_money(gain)}"
            sentence += f", saving an estimated {_money(tax)} of tax" if tax < 0 else " (no tax effect in this account)"
        elif gain > 0:
            sentence += f": a {term} gain of {_money(gain)}"
            sentence += f", an estimated {_money(tax)} of tax" if tax > 0 else " (no tax in this account)"
        else:
            sentence += ", at no gain or loss"
    return sentence + "."


__all__ = ["explain", "WHY"]
