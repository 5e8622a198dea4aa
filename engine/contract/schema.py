"""The data contract (``docs/contract.md``, version 2) in code.

This module is the one place that spells out column names and Arrow types.
Every other module refers to columns through :class:`Col` and to tables
through the schemas below, so a change of the contract is a change here.

Each field carries metadata: ``unit`` (``USD``, ``shares``, ``fraction``,
``bps``, ``date``, ...) and ``doc`` (its meaning).  Schemas carry
``schema_version``.

Units: money in USD (float64); quantities in shares (float64); rates and
weights as fractions (0.238, not 23.8); dates as ``date32``; variances
annualized.
"""

from __future__ import annotations

import pyarrow as pa

from engine.contract.errors import SchemaError

SCHEMA_VERSION = 2
#: The ``book.json`` versions a book may have: a version-1 book reads as before, without
#: the tables a later version added (:data:`TABLE_SINCE`).
SUPPORTED_VERSIONS = (1, 2)


class Col:
    """Column names of the contract.  Use these, never bare strings."""

    # securities
    security_id = "security_id"
    symbol = "symbol"
    kind = "kind"
    asset_class = "asset_class"
    sector = "sector"
    price = "price"
    price_date = "price_date"
    fractional = "fractional"
    wash_group = "wash_group"
    tags = "tags"
    specific_variance = "specific_variance"
    spread_bps = "spread_bps"
    # risk model
    factor = "factor"
    exposure = "exposure"
    factor_1 = "factor_1"
    factor_2 = "factor_2"
    covariance = "covariance"
    # models, templates
    model_id = "model_id"
    weight = "weight"
    template_id = "template_id"
    alternatives = "alternatives"
    min_weight = "min_weight"
    max_weight = "max_weight"
    band = "band"
    # accounts
    account_id = "account_id"
    household_id = "household_id"
    tax_status = "tax_status"
    st_rate = "st_rate"
    lt_rate = "lt_rate"
    cash = "cash"
    min_cash = "min_cash"
    max_cash = "max_cash"
    reserve_cash = "reserve_cash"
    withdrawal = "withdrawal"
    min_trade = "min_trade"
    tax_budget = "tax_budget"
    realized_st_ytd = "realized_st_ytd"
    realized_lt_ytd = "realized_lt_ytd"
    harvest = "harvest"
    tax_sensitivity = "tax_sensitivity"
    turnover_limit = "turnover_limit"
    suspended = "suspended"
    # substitutes (contract version 2)
    substitute_id = "substitute_id"
    # restrictions
    rule = "rule"
    tag = "tag"
    # lots, transactions
    lot_id = "lot_id"
    quantity = "quantity"
    cost_basis = "cost_basis"
    acquired = "acquired"
    trade_date = "trade_date"
    side = "side"
    realized_gain = "realized_gain"
    # shards (engine.rebalance.shards): the household-mate, not solved, whose trade a transactions row is
    traded_by = "traded_by"
    # run: trades
    as_of = "as_of"
    value = "value"
    term = "term"
    est_tax = "est_tax"
    reason = "reason"
    # run: accounts
    status = "status"
    detail = "detail"
    mandated = "mandated"
    cash_before = "cash_before"
    cash_after = "cash_after"
    tracking_error_before = "tracking_error_before"
    tracking_error_after = "tracking_error_after"
    drift_before = "drift_before"
    drift_after = "drift_after"
    turnover = "turnover"
    realized_st = "realized_st"
    realized_lt = "realized_lt"
    harvested_loss = "harvested_loss"
    tax_saved = "tax_saved"
    trade_cost = "trade_cost"
    score = "score"
    trade_count = "trade_count"
    iterations = "iterations"
    residual = "residual"
    # run: rejections
    table = "table"
    key = "key"
    message = "message"
    # approvals (engine.review.approval): decisions, and the per-account trade facts rules may name
    decision = "decision"
    bought = "bought"
    sold = "sold"
    largest_trade = "largest_trade"
    reasons = "reasons"
    traded_securities = "traded_securities"
    rejection_rules = "rejection_rules"
    # reports (engine.review.taxes): taxes saved or deferred against a plain rebalance, year to date
    plain_sold = "plain_sold"
    plain_realized = "plain_realized"
    plain_gain_tax = "plain_gain_tax"
    gain_tax = "gain_tax"
    tax_deferred = "tax_deferred"
    ytd_realized_st_before = "ytd_realized_st_before"
    ytd_realized_lt_before = "ytd_realized_lt_before"
    ytd_tax_before = "ytd_tax_before"
    ytd_realized_st_after = "ytd_realized_st_after"
    ytd_realized_lt_after = "ytd_realized_lt_after"
    ytd_tax_after = "ytd_tax_after"
    # customizations (engine.book.customizations): the advisor portal's saved changes, its audit log
    version = "version"
    action = "action"
    saved_by = "saved_by"
    saved_at = "saved_at"
    note = "note"
    before = "before"
    after = "after"


# --------------------------------------------------------------------------
# Enumerations of the contract's string columns.

class Kind:
    equity = "equity"
    etf = "etf"
    mutual_fund = "mutual_fund"
    adr = "adr"
    bond = "bond"
    cash_equivalent = "cash_equivalent"
    all = (equity, etf, mutual_fund, adr, bond, cash_equivalent)


class TaxStatus:
    taxable = "taxable"
    tax_deferred = "tax_deferred"
    tax_exempt = "tax_exempt"
    all = (taxable, tax_deferred, tax_exempt)


class Rule:
    """Restriction rules (docs/contract.md §1, restrictions)."""
    never_buy = "never_buy"
    never_sell = "never_sell"
    exclude = "exclude"
    all = (never_buy, never_sell, exclude)


class Side:
    buy = "buy"
    sell = "sell"
    all = (buy, sell)


class Term:
    short = "short"
    long = "long"


class Reason:
    """Why a trade is proposed (docs/contract.md §2, trades.reason)."""
    withdrawal = "withdrawal"
    overdraft = "overdraft"
    cash_floor = "cash_floor"
    cash_invest = "cash_invest"
    exclude = "exclude"
    harvest = "harvest"
    rebalance = "rebalance"
    model_change = "model_change"
    replacement = "replacement"
    all = (withdrawal, overdraft, cash_floor, cash_invest, exclude, harvest,
           rebalance, model_change, replacement)


class Status:
    """Account status in a run (docs/contract.md §2, accounts.status)."""
    proposed = "proposed"
    no_trade = "no_trade"
    suspended = "suspended"
    rejected = "rejected"
    infeasible = "infeasible"
    failed = "failed"
    all = (proposed, no_trade, suspended, rejected, infeasible, failed)


class Reject:
    """Rules of the ``rejections`` table: what was wrong with an account."""
    unknown_security = "unknown_security"
    missing_price = "missing_price"
    stale_price = "stale_price"
    bad_quantity = "bad_quantity"
    bad_cost_basis = "bad_cost_basis"
    future_acquired = "future_acquired"
    unknown_template = "unknown_template"
    allocation_out_of_bounds = "allocation_out_of_bounds"
    product_not_allowed = "product_not_allowed"
    unknown_asset_class = "unknown_asset_class"
    allocation_sum = "allocation_sum"
    unknown_restriction_security = "unknown_restriction_security"
    bad_account = "bad_account"
    screen_empties_product = "screen_empties_product"
    conflicting_allocation = "conflicting_allocation"
    unknown_product = "unknown_product"
    bad_security = "bad_security"              # a held or targeted security breaks a field rule
    bad_transaction = "bad_transaction"        # a recent trade of the account breaks a field rule


class Decision:
    """What the rebalancing group's rules decide for an account (``decisions.decision``)."""
    approve = "approve"      # its trades go to the trade management system
    review = "review"        # held for a person to look at
    suspend = "suspend"      # no trades today
    all = (approve, review, suspend)


# --------------------------------------------------------------------------
# Field and schema constructors.

def field(name: str, type_: pa.DataType, nullable: bool = False, *,
          unit: str = "", doc: str = "") -> pa.Field:
    """An Arrow field with the contract's ``unit`` and ``doc`` metadata."""
    meta = {}
    if unit:
        meta["unit"] = unit
    if doc:
        meta["doc"] = doc
    return pa.field(name, type_, nullable=nullable, metadata=meta or None)


def _schema(name: str, fields: list[pa.Field]) -> pa.Schema:
    return pa.schema(fields, metadata={"schema_version": str(SCHEMA_VERSION),
                                       "table": name})


_str, _f64, _date, _bool, _i32 = pa.string(), pa.float64(), pa.date32(), pa.bool_(), pa.int32()
_strs = pa.list_(pa.string())
C = Col

# §1 The book -------------------------------------------------------------

SECURITIES = _schema("securities", [
    field(C.security_id, _str, doc="key"),
    field(C.symbol, _str, True, doc="display only"),
    field(C.kind, _str, doc="equity, etf, mutual_fund, adr, bond, cash_equivalent"),
    field(C.asset_class, _str, doc="asset class a holding counts toward"),
    field(C.sector, _str, True, doc="GICS sector; null for funds"),
    field(C.price, _f64, True, unit="USD", doc="closing price on price_date; null = no price"),
    field(C.price_date, _date, True, unit="date"),
    field(C.fractional, _bool, doc="fractional shares may be traded"),
    field(C.wash_group, _str, True, doc="substantially identical securities share it"),
    field(C.tags, _strs, True, doc="screen tags"),
    field(C.specific_variance, _f64, unit="1/year", doc="annualized specific variance"),
    field(C.spread_bps, _f64, unit="bps", doc="one-way trading cost"),
])

FACTOR_EXPOSURES = _schema("factor_exposures", [
    field(C.security_id, _str),
    field(C.factor, _str),
    field(C.exposure, _f64, unit="fraction"),
])

FACTOR_COVARIANCE = _schema("factor_covariance", [
    field(C.factor_1, _str),
    field(C.factor_2, _str),
    field(C.covariance, _f64, unit="1/year", doc="annualized"),
])

MODELS = _schema("models", [
    field(C.model_id, _str),
    field(C.security_id, _str),
    field(C.weight, _f64, unit="fraction", doc="positive; a model's weights sum to 1"),
])

TEMPLATES = _schema("templates", [
    field(C.template_id, _str),
    field(C.asset_class, _str),
    field(C.weight, _f64, unit="fraction", doc="default weight; sums to 1 per template"),
    field(C.model_id, _str, doc="default product"),
    field(C.alternatives, _strs, True, doc="other products an account may choose"),
    field(C.min_weight, _f64, unit="fraction"),
    field(C.max_weight, _f64, unit="fraction"),
    field(C.band, _f64, unit="fraction", doc="allowed absolute drift of the asset class"),
])

ACCOUNTS = _schema("accounts", [
    field(C.account_id, _str, doc="key"),
    field(C.household_id, _str, True, doc="null = its own household"),
    field(C.template_id, _str),
    field(C.tax_status, _str, doc="taxable, tax_deferred, tax_exempt"),
    field(C.st_rate, _f64, unit="fraction"),
    field(C.lt_rate, _f64, unit="fraction"),
    field(C.cash, _f64, unit="USD", doc="negative is an overdraft"),
    field(C.min_cash, _f64, unit="USD"),
    field(C.max_cash, _f64, True, unit="USD", doc="null = no cap"),
    field(C.reserve_cash, _f64, unit="USD"),
    field(C.withdrawal, _f64, unit="USD"),
    field(C.min_trade, _f64, unit="USD"),
    field(C.tax_budget, _f64, True, unit="USD", doc="tax of the calendar year; null = no cap"),
    field(C.realized_st_ytd, _f64, unit="USD"),
    field(C.realized_lt_ytd, _f64, unit="USD"),
    field(C.harvest, _bool),
    field(C.tax_sensitivity, _f64, unit="multiplier"),
    field(C.turnover_limit, _f64, True, unit="fraction", doc="null = no cap"),
    field(C.suspended, _bool),
])

RESTRICTIONS = _schema("restrictions", [
    field(C.account_id, _str),
    field(C.rule, _str, doc="never_buy, never_sell, exclude"),
    field(C.security_id, _str, True),
    field(C.tag, _str, True),
])

ALLOCATIONS = _schema("allocations", [
    field(C.account_id, _str),
    field(C.asset_class, _str),
    field(C.weight, _f64, True, unit="fraction", doc="replaces the template weight; 0 removes"),
    field(C.model_id, _str, True, doc="replaces the product"),
])

LOTS = _schema("lots", [
    field(C.account_id, _str),
    field(C.lot_id, _str, doc="unique within its account"),
    field(C.security_id, _str),
    field(C.quantity, _f64, unit="shares", doc="> 0"),
    field(C.cost_basis, _f64, unit="USD", doc="total adjusted basis of the lot"),
    field(C.acquired, _date, unit="date", doc="holding period start"),
])

TRANSACTIONS = _schema("transactions", [
    field(C.account_id, _str),
    field(C.security_id, _str),
    field(C.trade_date, _date, unit="date"),
    field(C.side, _str, doc="buy or sell"),
    field(C.quantity, _f64, unit="shares"),
    field(C.price, _f64, unit="USD"),
    field(C.realized_gain, _f64, True, unit="USD", doc="set on sells; negative for a loss"),
])

SUBSTITUTES = _schema("substitutes", [
    field(C.security_id, _str, doc="a security an account may target"),
    field(C.substitute_id, _str, doc="a security the firm allows as its stand-in"),
])

BOOK_TABLES: dict[str, pa.Schema] = {
    "securities": SECURITIES,
    "factor_exposures": FACTOR_EXPOSURES,
    "factor_covariance": FACTOR_COVARIANCE,
    "models": MODELS,
    "templates": TEMPLATES,
    "accounts": ACCOUNTS,
    "restrictions": RESTRICTIONS,
    "allocations": ALLOCATIONS,
    "lots": LOTS,
    "transactions": TRANSACTIONS,
    "substitutes": SUBSTITUTES,
}

#: Book tables a later contract version added, with that version: a book of an earlier
#: ``schema_version`` has no such folder and reads the table empty.
TABLE_SINCE: dict[str, int] = {"substitutes": 2}

#: The book tables whose rows each belong to one account (``account_id``); the others are shared.
ACCOUNT_TABLES = ("accounts", "restrictions", "allocations", "lots", "transactions")

# §2 A proposal run -------------------------------------------------------

TRADES = _schema("trades", [
    field(C.as_of, _date, unit="date"),
    field(C.account_id, _str),
    field(C.household_id, _str),
    field(C.security_id, _str),
    field(C.side, _str, doc="buy or sell"),
    field(C.lot_id, _str, True, doc="the lot a sell relieves; null for buys"),
    field(C.quantity, _f64, unit="shares", doc="> 0"),
    field(C.price, _f64, unit="USD"),
    field(C.value, _f64, unit="USD", doc="quantity x price"),
    field(C.realized_gain, _f64, True, unit="USD", doc="sells: proceeds - relieved basis"),
    field(C.term, _str, True, doc="sells: short or long"),
    field(C.est_tax, _f64, unit="USD", doc="negative for a loss; 0 when not taxable"),
    field(C.reason, _str),
])

RUN_ACCOUNTS = _schema("accounts", [
    field(C.as_of, _date, unit="date"),
    field(C.account_id, _str),
    field(C.household_id, _str),
    field(C.status, _str),
    field(C.detail, _str, True),
    field(C.mandated, _bool),
    field(C.value, _f64, unit="USD", doc="market value incl. cash before trading"),
    field(C.cash_before, _f64, unit="USD"),
    field(C.cash_after, _f64, unit="USD"),
    field(C.tracking_error_before, _f64, unit="fraction/year^0.5"),
    field(C.tracking_error_after, _f64, unit="fraction/year^0.5"),
    field(C.drift_before, _f64, unit="fraction"),
    field(C.drift_after, _f64, unit="fraction"),
    field(C.turnover, _f64, unit="fraction"),
    field(C.realized_st, _f64, unit="USD"),
    field(C.realized_lt, _f64, unit="USD"),
    field(C.est_tax, _f64, unit="USD"),
    field(C.harvested_loss, _f64, unit="USD", doc="positive"),
    field(C.tax_saved, _f64, unit="USD"),
    field(C.trade_cost, _f64, unit="USD"),
    field(C.score, _f64, unit="fraction", doc="net benefit per unit of account value"),
    field(C.trade_count, _i32),
    field(C.iterations, _i32),
    field(C.residual, _f64),
])

REJECTIONS = _schema("rejections", [
    field(C.account_id, _str, True),
    field(C.table, _str),
    field(C.key, _str, True),
    field(C.rule, _str),
    field(C.message, _str),
])

RUN_TABLES: dict[str, pa.Schema] = {
    "trades": TRADES,
    "accounts": RUN_ACCOUNTS,
    "rejections": REJECTIONS,
}

# Approvals (engine.review.approval) -----------------------------------------------
# Not part of the contract's version 1: written beside a committed run by ``canopy approve``.

DECISIONS = _schema("decisions", [
    field(C.as_of, _date, unit="date"),
    field(C.account_id, _str),
    field(C.household_id, _str),
    field(C.status, _str, doc="the account's status in the run"),
    field(C.decision, _str, doc="approve, review, suspend"),
    field(C.rule, _str, doc="name of the first rule that matched; 'default' when none did"),
])

#: The trade file for the trade management system: the run's trades of approved accounts.
APPROVED_TRADES = _schema("approved_trades", [
    *TRADES, field(C.rule, _str, doc="the rule that approved the account"),
])

#: What approval rules may name: the run's accounts row plus facts of the account's trades
#: and rejections (engine.review.approval.rule_inputs computes them).
RULE_INPUTS = _schema("rule_inputs", [
    *RUN_ACCOUNTS,
    field(C.bought, _f64, unit="USD", doc="value of the account's buys"),
    field(C.sold, _f64, unit="USD", doc="value of the account's sells"),
    field(C.largest_trade, _f64, unit="USD", doc="value of its largest trade (0 without trades)"),
    field(C.reasons, _strs, doc="reasons of its trades (trades.reason), each once"),
    field(C.traded_securities, _strs, doc="securities it trades, each once"),
    field(C.rejection_rules, _strs, doc="rules of its rows in the run's rejections table, each once"),
])

#: Per account, what a report says it saves or defers (engine.review.taxes.tax_report; the report's taxes.parquet).
TAX_REPORT = _schema("tax_report", [
    field(C.account_id, _str),
    field(C.harvested_loss, _f64, unit="USD", doc="losses the proposal harvests (positive)"),
    field(C.tax_saved, _f64, unit="USD", doc="tax those losses save at the account's rates"),
    field(C.tax_budget, _f64, True, unit="USD"),
    field(C.plain_sold, _f64, unit="USD", doc="value a plain FIFO rebalance to target would sell"),
    field(C.plain_realized, _f64, unit="USD", doc="net gain it would realize"),
    field(C.plain_gain_tax, _f64, unit="USD", doc="tax of its lots sold at a gain"),
    field(C.gain_tax, _f64, unit="USD", doc="tax of the proposal's lots sold at a gain"),
    field(C.tax_deferred, _f64, unit="USD", doc="plain_gain_tax - gain_tax"),
    field(C.ytd_realized_st_before, _f64, unit="USD"),
    field(C.ytd_realized_lt_before, _f64, unit="USD"),
    field(C.ytd_tax_before, _f64, unit="USD"),
    field(C.ytd_realized_st_after, _f64, unit="USD"),
    field(C.ytd_realized_lt_after, _f64, unit="USD"),
    field(C.ytd_tax_after, _f64, unit="USD"),
])

# Optional book table (contract version 2): the advisor portal's saved changes --------------------------
# Kept as a Delta Lake table in the book's ``customizations/`` folder (engine.book.customizations);
# read_book applies each account's newest row over the tables above.

class Action:
    """What a ``customizations`` row records."""
    change = "change"            # the account's customization (fields, restrictions, allocations) replaced
    withdrawal = "withdrawal"    # a withdrawal request: ``withdrawal`` raised by the amount
    create = "create"            # a new account, with its lots
    settle = "settle"            # the rebalancing group closes a withdrawal request
    all = (change, withdrawal, create, settle)


#: The ``accounts`` fields a saved customization may set: the account's customization and tax
#: preferences.  Not its identity and household, nor the custodian's figures (``cash``, the
#: year's realized gains), which the book's own table keeps current; a withdrawal is a request.
ACCOUNT_PREFERENCES = tuple(name for name in ACCOUNTS.names
                            if name not in (C.account_id, C.household_id, C.cash, C.withdrawal,
                                            C.realized_st_ytd, C.realized_lt_ytd))

CUSTOMIZATIONS = _schema("customizations", [
    field(C.account_id, _str),
    field(C.version, pa.int64(), doc="the account's save number, 1, 2, ...; the newest applies"),
    field(C.action, _str, doc="change, withdrawal, create, settle"),
    field(C.saved_by, _str, doc="who saved it (the portal's user)"),
    field(C.saved_at, pa.timestamp("us", tz="UTC"), unit="UTC", doc="when"),
    field(C.note, _str, True, doc="the user's words (a withdrawal's reason)"),
    field(C.before, _str, True, doc="JSON {account, restrictions, allocations} before; null for a new account"),
    field(C.after, _str, doc="JSON {account, restrictions, allocations[, lots]} after"),
])

# Keys that must be unique within a table of the book.
BOOK_KEYS: dict[str, tuple[str, ...]] = {
    "securities": (C.security_id,),
    "accounts": (C.account_id,),
    "lots": (C.account_id, C.lot_id),
    "models": (C.model_id, C.security_id),
    "templates": (C.template_id, C.asset_class),
    "factor_exposures": (C.security_id, C.factor),
    "substitutes": (C.security_id, C.substitute_id),
}


# --------------------------------------------------------------------------
# Casting.

def conform(table: pa.Table, schema: pa.Schema, *, name: str | None = None) -> pa.Table:
    """Select, order and safely cast ``table``'s columns to ``schema``.

    Extra columns are dropped; a missing column, a type that cannot be cast
    without loss, or a null in a non-nullable column raises
    :class:`SchemaError` naming the table and column and showing both types.
    """
    name = name or schema.metadata.get(b"table", b"?").decode()
    columns = []
    for target in schema:
        if target.name not in table.column_names:
            raise SchemaError(
                f"missing column; expected {target.name} ({target.type}). "
                f"Columns present: {', '.join(table.column_names) or 'none'}",
                table=name, column=target.name)
        column = table.column(target.name)
        if column.type != target.type:
            try:
                column = column.cast(target.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SchemaError(
                    f"cannot cast {column.type} to {target.type} safely ({exc}); "
                    f"expected schema field {target}, got {table.schema.field(target.name)}",
                    table=name, column=target.name) from None
        if not target.nullable and column.null_count:
            raise SchemaError(
                f"{column.null_count} null value(s) in a column that may not be null",
                table=name, column=target.name)
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)


def empty(schema: pa.Schema) -> pa.Table:
    """A table of ``schema`` with no rows."""
    return schema.empty_table()
