"""The contract's rules that several stages compute: defined once, here.

* :func:`cash_floor`: the cash an account keeps after trading (rule 4), ``min_cash +
  reserve_cash + withdrawal`` in USD.
* :data:`FIELD_RULES`: what each number, date and checked string of the book may be
  (finite, bounds, nullability from the schema) and what breaking it does: stop the book
  or reject the accounts the row touches.  ``engine.book.validate`` applies them;
  :func:`covariance_problem` is the risk model's matrix rule.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.contract.arrow import index_in, numbers, strings, unique_sorted
from engine.contract.schema import BOOK_KEYS, BOOK_TABLES, Col, Reject

__all__ = ["CASH_FLOOR_COLUMNS", "cash_floor", "Breaks", "FieldRule", "FIELD_RULES", "COVARIANCE_TOLERANCE",
           "ROW_KEYS", "field_rules", "row_key", "covariance_problem", "render_field_rules"]

#: The accounts columns whose sum is the cash floor, USD.
CASH_FLOOR_COLUMNS = (Col.min_cash, Col.reserve_cash, Col.withdrawal)


def cash_floor(accounts: pa.Table, rows=None) -> np.ndarray:
    """``min_cash + reserve_cash + withdrawal`` of each account (at ``rows``), USD; nulls count 0.

    Cash after trading is at least this wherever selling what may be sold reaches it
    (rule 4); what is above it may be invested, up to ``max_cash`` on top of it (rule 5).
    """
    return sum(numbers(accounts, name, rows, fill=0.0, dtype=float) for name in CASH_FLOOR_COLUMNS)


# --------------------------------------------------------------------------
# Field rules: what each number and date of the book may be, and what breaking it does.

class Breaks:
    """What breaking a :class:`FieldRule` does."""

    book = "book"          # stops the book: a BookError naming table, column and an example row
    account = "account"    # rejects the accounts the row touches (a rejections row each)


#: Relative tolerance of the risk model's covariance: |F_ab - F_ba| and -min eigenvalue, each at most
#: this times the largest factor variance.  Far above rounding (1e-16), far below any real error.
COVARIANCE_TOLERANCE = 1e-8

#: The key that names a row of each book table in messages (an example row of a broken rule).
ROW_KEYS: dict[str, tuple[str, ...]] = {
    **BOOK_KEYS,
    "factor_covariance": (Col.factor_1, Col.factor_2),
    "transactions": (Col.account_id, Col.security_id, Col.trade_date),
}


@dataclass(frozen=True)
class FieldRule:
    """One column's rule: a finite number within bounds, a date on or before ``as_of``, or a non-empty text.

    Attributes
    ----------
    table, column
        The book table and its column.
    kind
        ``number``, ``date`` (on or before ``as_of``) or ``text`` (not empty).
    lower, upper
        A number's bounds, in the column's unit (``lower_open``/``upper_open``: strict).
    breaks
        :class:`Breaks`: ``book`` or ``account``.
    reject
        The ``rejections.rule`` code of an ``account`` rule.
    why
        One line: why these bounds.
    """

    table: str
    column: str
    kind: str
    lower: float | None
    upper: float | None
    lower_open: bool
    upper_open: bool
    breaks: str
    reject: str | None
    why: str

    @property
    def nullable(self) -> bool:
        """Whether the schema allows a null here (a null breaks no rule; ``conform`` refuses it elsewhere)."""
        return BOOK_TABLES[self.table].field(self.column).nullable

    def bounds(self, as_of: dt.date | None = None) -> str:
        """What a value must be, in words: ``> 0 and <= 1e+07``, ``on or before as_of (DATE)``, ``not empty``."""
        if self.kind == "date":
            return "on or before as_of" + (f" ({as_of})" if as_of is not None else "")
        if self.kind == "text":
            return "not empty or blank (null when there is none)"
        return (f"{'>' if self.lower_open else '>='} {_shown(self.lower)} and "
                f"{'<' if self.upper_open else '<='} {_shown(self.upper)}")

    def broken(self, table: pa.Table, as_of: dt.date) -> np.ndarray:
        """Per row of ``table``, whether its value breaks the rule (NaN and ±inf break a number rule)."""
        column = table.column(self.column)
        null = np.asarray(column.is_null()) if self.nullable else np.zeros(table.num_rows, bool)
        if self.kind == "date":
            late = pc.fill_null(pc.greater(column, pa.scalar(as_of, pa.date32())), not self.nullable)
            return np.asarray(late) & ~null
        if self.kind == "text":
            return np.asarray(pc.fill_null(pc.equal(pc.utf8_trim_whitespace(column), ""), False))
        values = numbers(table, self.column, fill=np.nan, dtype=float)
        above = values > self.lower if self.lower_open else values >= self.lower
        below = values < self.upper if self.upper_open else values <= self.upper
        return ~(np.isfinite(values) & above & below) & ~null


def _shown(bound: float) -> str:
    """A bound as a person writes it: ``0``, ``10000``, ``1e7``, ``-1e12``, ``1e-8``."""
    if bound == 0 or 1e-3 <= abs(bound) < 1e5:
        return f"{bound:g}"
    mantissa, exponent = f"{bound:e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


def _number(table, column, lower, upper, breaks, why, reject=None, lower_open=False, upper_open=False):
    return FieldRule(table, column, "number", lower, upper, lower_open, upper_open, breaks, reject, why)


def _date(table, column, breaks, why, reject=None):
    return FieldRule(table, column, "date", None, None, False, False, breaks, reject, why)


_B, _A, R = Breaks.book, Breaks.account, Reject
_MONEY = 1e12     # USD: no account, lot or trade of a real book reaches a trillion dollars
_PRICE = 1e7      # USD per share: no listed share or fund unit trades above ten million dollars

#: Every rule of the book's numbers, dates and checked strings, in table order.
FIELD_RULES: tuple[FieldRule, ...] = (
    _number("securities", Col.price, 0.0, _PRICE, _A, "a usable closing price is positive; none trades "
            "above $10 million (null, or breaking this: no usable price)", R.missing_price, lower_open=True),
    _date("securities", Col.price_date, _A, "a price from after the book's date is a data error",
          R.bad_security),
    _number("securities", Col.spread_bps, 0.0, 1e4, _A, "a negative spread would reward trading; 10,000 bps "
            "is the whole price", R.bad_security),
    _number("securities", Col.specific_variance, 0.0, 100.0, _B, "part of the risk model: a variance; 100 is a "
            "volatility of 1,000% a year"),
    FieldRule("securities", Col.wash_group, "text", None, None, False, False, _B, None,
              "an empty group would join unrelated securities in one wash group; leave it null"),
    _number("factor_exposures", Col.exposure, -100.0, 100.0, _B, "real exposures are a few units at most"),
    _number("factor_covariance", Col.covariance, -100.0, 100.0, _B, "variances at most 100 (1,000% volatility) "
            "bound every covariance"),
    _number("models", Col.weight, 0.0, 1.0, _B, "a product's weights are positive fractions summing to 1",
            lower_open=True),
    _number("templates", Col.weight, 0.0, 1.0, _B, "an asset class's weight is a fraction"),
    _number("templates", Col.min_weight, 0.0, 1.0, _B, "a fraction"),
    _number("templates", Col.max_weight, 0.0, 1.0, _B, "a fraction"),
    _number("templates", Col.band, 0.0, 1.0, _B, "an allowed absolute drift: a fraction"),
    _number("accounts", Col.st_rate, 0.0, 1.0, _A, "a tax rate is a fraction", R.bad_account),
    _number("accounts", Col.lt_rate, 0.0, 1.0, _A, "a tax rate is a fraction", R.bad_account),
    _number("accounts", Col.cash, -_MONEY, _MONEY, _A, "negative is an overdraft; no account holds "
            "a trillion dollars", R.bad_account),
    _number("accounts", Col.min_cash, 0.0, _MONEY, _A, "an amount kept: not negative", R.bad_account),
    _number("accounts", Col.max_cash, 0.0, _MONEY, _A, "a cap on cash: not negative (null: no cap)",
            R.bad_account),
    _number("accounts", Col.reserve_cash, 0.0, _MONEY, _A, "an amount kept: not negative", R.bad_account),
    _number("accounts", Col.withdrawal, 0.0, _MONEY, _A, "an amount paid out: not negative", R.bad_account),
    _number("accounts", Col.min_trade, 0.0, _MONEY, _A, "a trade size: not negative", R.bad_account),
    _number("accounts", Col.tax_budget, 0.0, _MONEY, _A, "tax allowed in the year: not negative (null: no "
            "cap)", R.bad_account),
    _number("accounts", Col.realized_st_ytd, -_MONEY, _MONEY, _A, "a net gain; negative is a loss",
            R.bad_account),
    _number("accounts", Col.realized_lt_ytd, -_MONEY, _MONEY, _A, "a net gain; negative is a loss",
            R.bad_account),
    _number("accounts", Col.tax_sensitivity, 0.0, 100.0, _A, "a multiplier of the tax cost; negative would "
            "reward taxes", R.bad_account),
    _number("accounts", Col.turnover_limit, 0.0, 2.0, _A, "buys plus sells over value; 2 sells and rebuys "
            "everything (null: no cap)", R.bad_account),
    _number("lots", Col.quantity, 0.0, _MONEY, _A, "a lot holds shares; no issuer has a trillion",
            R.bad_quantity, lower_open=True),
    _number("lots", Col.cost_basis, 0.0, _MONEY, _A, "a total basis in USD: not negative",
            R.bad_cost_basis),
    _date("lots", Col.acquired, _A, "a lot cannot be bought after the book's date", R.future_acquired),
    _date("transactions", Col.trade_date, _A, "a recent trade cannot be after the book's date",
          R.bad_transaction),
    _number("transactions", Col.quantity, 0.0, _MONEY, _A, "shares traded: positive", R.bad_transaction,
            lower_open=True),
    _number("transactions", Col.price, 0.0, _PRICE, _A, "a trade's price per share: positive",
            R.bad_transaction, lower_open=True),
    _number("transactions", Col.realized_gain, -_MONEY, _MONEY, _A, "a gain in USD; negative is a loss "
            "(null on buys)", R.bad_transaction),
    FieldRule("substitutes", Col.security_id, "text", None, None, False, False, _B, None,
              "names a security of the securities table"),
    FieldRule("substitutes", Col.substitute_id, "text", None, None, False, False, _B, None,
              "names a security of the securities table"),
)


def field_rules(table: str, breaks: str | None = None) -> tuple[FieldRule, ...]:
    """The :data:`FIELD_RULES` of ``table`` (that ``breaks`` so, where given), in order."""
    return tuple(r for r in FIELD_RULES if r.table == table and (breaks is None or r.breaks == breaks))


def row_key(table: pa.Table, name: str, row: int) -> str:
    """The key of ``row`` of book table ``name`` in words (:data:`ROW_KEYS`, joined by ``/``)."""
    return "/".join(str(table.column(k)[row].as_py()) for k in ROW_KEYS.get(name, ()))


def covariance_problem(covariance: pa.Table) -> tuple[str, int] | None:
    """What is wrong with the factor covariance as a matrix, and an example row; None when nothing is.

    The matrix is assembled as the engine does (both triangles from each row); it must be
    symmetric (two rows of one unordered pair agree), have no negative variance, and be
    positive semi-definite, each within :data:`COVARIANCE_TOLERANCE` of the largest variance.
    """
    first, second = covariance.column(Col.factor_1), covariance.column(Col.factor_2)
    factors = unique_sorted(np.concatenate([strings(covariance, Col.factor_1), strings(covariance, Col.factor_2)]))
    i, j = index_in(first, factors), index_in(second, factors)
    values = numbers(covariance, Col.covariance, dtype=float)
    matrix = np.zeros((factors.size, factors.size))
    matrix[i, j] = values
    matrix[j, i] = values
    diagonal = np.diag(matrix)
    scale = max(float(np.abs(diagonal).max(initial=0.0)), 1e-300)
    off = np.abs(values - matrix[i, j]) > COVARIANCE_TOLERANCE * scale
    if off.any():
        row = int(np.argmax(off))
        return (f"covariance of {first[row].as_py()}/{second[row].as_py()} is given twice, {values[row]:g} and "
                f"{matrix[i[row], j[row]]:g}: the matrix must be symmetric (within {_shown(COVARIANCE_TOLERANCE)} of the "
                f"largest variance)", row)
    negative = (i == j) & (values < 0)
    if negative.any():
        row = int(np.argmax(negative))
        return f"the variance of factor {first[row].as_py()} is {values[row]:g}; a variance is >= 0", row
    smallest = float(np.linalg.eigvalsh(matrix).min(initial=0.0))
    if smallest < -COVARIANCE_TOLERANCE * scale:
        return (f"the factor covariance is not positive semi-definite: its smallest eigenvalue is {smallest:.4g} "
                f"(allowed: -{_shown(COVARIANCE_TOLERANCE)} x the largest variance {scale:.4g})", 0)
    return None


# --------------------------------------------------------------------------
# The rules in words, for docs/contract.md (a test keeps the document equal to this).

_WHAT_BREAKING_DOES = {
    "securities": "rejects the accounts that hold or target the security",
    "accounts": "rejects the account",
    "lots": "rejects the lot's account",
    "transactions": "rejects the trade's account",
}


def render_field_rules() -> str:
    """:data:`FIELD_RULES` and the covariance rule as the Markdown of docs/contract.md's "Field rules"."""
    lines = ["| table | column | must be | null allowed | breaking it | why |", "|---|---|---|---|---|---|"]
    for rule in FIELD_RULES:
        if rule.breaks == Breaks.book:
            outcome = "stops the book"
        else:
            outcome = f"{_WHAT_BREAKING_DOES[rule.table]} (`{rule.reject}`)"
        must = ("finite, " if rule.kind == "number" else "") + rule.bounds()
        lines.append(f"| `{rule.table}` | `{rule.column}` | {must} | {'yes' if rule.nullable else 'no'} | "
                     f"{outcome} | {rule.why} |")
    lines += ["", f"The factor covariance, assembled as a matrix (each row sets both `factor_1, factor_2` and "
              f"`factor_2, factor_1`), must be symmetric (two rows of one pair agree), have no negative "
              f"variance, and be positive semi-definite, each within {_shown(COVARIANCE_TOLERANCE)} times the largest "
              f"variance; otherwise it stops the book. Recent trades of accounts not in `accounts` are not checked."]
    return "\n".join(lines) + "\n"
