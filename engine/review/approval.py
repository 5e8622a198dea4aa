"""The rebalancing group's approvals: ordered, named rules over a run's accounts.

A rules file (TOML) lists rules in order; the first rule whose ``when``
expression is true for an account decides it (``approve``, ``review``,
``suspend``: :class:`engine.contract.schema.Decision`); an account no rule matches gets
``default`` (``review`` unless the file says otherwise)::

    default = "review"

    [[rule]]
    name = "suspend_problems"
    when = "status in ('rejected', 'failed') or 'unknown_security' in rejection_rules"
    decision = "suspend"

    [[rule]]
    name = "approve_mandated"
    when = "mandated and status == 'proposed'"
    decision = "approve"

    [[rule]]
    name = "review_large"
    when = "turnover > 0.25 or value > 5e6"
    decision = "review"

    [[rule]]
    name = "approve_good_score"
    when = "status == 'proposed' and score > 0.0005"
    decision = "approve"

The expressions name columns of :data:`engine.contract.schema.RULE_INPUTS`: the run's
``accounts`` row and facts of the account's trades and rejections
(``bought``, ``sold``, ``largest_trade``, ``reasons``, ``traded_securities``,
``rejection_rules``; :func:`rule_inputs`).  The language is a small, safe
subset of Python's expression syntax, parsed with :mod:`ast` and evaluated
column-wise with :mod:`pyarrow.compute`; nothing is ever passed to ``eval``:

* literals: numbers, strings in quotes, ``true``/``false`` (or ``True``/``False``);
* arithmetic ``+ - * /`` and unary ``-`` on numbers;
* comparisons ``== != < <= > >=`` (chains like ``0 < score <= 0.01`` too);
* ``x in ('a', 'b')`` and ``not in``; ``'harvest' in reasons`` for the list columns;
* ``and``, ``or``, ``not``;
* functions ``abs(x)``, ``min(x, y, ...)``, ``max(x, y, ...)``, ``len(list)``,
  ``is_null(x)``, ``coalesce(x, y)``.

Strings compared with ``status``, ``reasons`` or ``rejection_rules`` must be
values those columns can take, so a typo (``'propsed'``) fails instead of
silently matching nothing.  An expression that a missing value leaves
undecided (``score > 0.01`` where ``score`` is null) does not match.  Every
problem, from TOML syntax to an unknown column, raises :class:`RulesError`
naming the rule, its expression and what is wrong.

Decisions are per account.  Approving some accounts of a household and not
others is safe for the rules of docs/contract.md §3 (dropping an account's trades
never creates a wash sale or an overdraft elsewhere: each account's cash is
its own), but the household then drifts from its joint target until the
next night.
"""

from __future__ import annotations

import ast
import difflib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.contract import arrow, schema
from engine.contract.errors import RulesError
from engine.contract.schema import Col, Decision, Reason, Reject, Side, Status

__all__ = ["ApprovalRule", "Rules", "parse_rules", "load_rules", "rule_inputs", "decide", "approved_trades",
           "approve", "DEFAULT_RULE"]

#: ``decisions.rule`` of an account that no rule matched.
DEFAULT_RULE = "default"

NUMBER, STRING, BOOL, LIST = "number", "string", "boolean", "list of strings"
#: Values the string columns rules compare with may take.
ENUMS: dict[str, tuple[str, ...]] = {
    Col.status: Status.all,
    Col.reasons: Reason.all,
    Col.rejection_rules: tuple(v for k, v in vars(Reject).items() if not k.startswith("_")),
}
_RULE_KEYS = ("name", "when", Col.decision)
_FUNCTIONS = ("abs", "min", "max", "len", "is_null", "coalesce")


def _kind(type_: pa.DataType) -> str | None:
    if pa.types.is_floating(type_) or pa.types.is_integer(type_):
        return NUMBER
    if pa.types.is_string(type_):
        return STRING
    if pa.types.is_boolean(type_):
        return BOOL
    if pa.types.is_list(type_) and pa.types.is_string(type_.value_type):
        return LIST
    return None


#: Column → kind, for every column a rule may name.
COLUMNS: dict[str, str] = {f.name: k for f in schema.RULE_INPUTS if (k := _kind(f.type)) is not None}


class _Problem(Exception):
    """What is wrong with an expression; :func:`compile_expression` adds where."""


@dataclass(frozen=True)
class _Node:
    kind: str
    evaluate: Callable[[pa.Table], Any]       # an Arrow array (one value per account) or a scalar
    literal: Any = None                        # the Python value, for literals
    column: str | None = None                  # the column's name, for a bare column


def _array(value, rows: int) -> pa.Array:
    if isinstance(value, pa.ChunkedArray):
        return value.combine_chunks()
    if isinstance(value, pa.Array):
        return value
    return pa.array([value] * rows)


def _check_enum(column: _Node, literal: _Node) -> None:
    values = ENUMS.get(column.column or "")
    if values and literal.literal is not None and isinstance(literal.literal, str) and literal.literal not in values:
        hint = difflib.get_close_matches(literal.literal, values, n=1)
        raise _Problem(f"{literal.literal!r} is not a value of {column.column}"
                       f"{f' (did you mean {hint[0]!r}?)' if hint else ''}; its values are {', '.join(values)}")


class _Compiler:
    def __init__(self, columns: Mapping[str, str]):
        self.columns = columns

    def compile(self, node: ast.AST) -> _Node:
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            raise _Problem(f"{_describe(node)} is not allowed; rules use columns, literals, arithmetic, "
                           f"comparisons, in, and/or/not and the functions {', '.join(_FUNCTIONS)}")
        return method(node)

    def _Expression(self, node: ast.Expression) -> _Node:
        return self.compile(node.body)

    def _Constant(self, node: ast.Constant) -> _Node:
        value = node.value
        if isinstance(value, bool):
            return _Node(BOOL, lambda t, v=value: v, value)
        if isinstance(value, (int, float)):
            return _Node(NUMBER, lambda t, v=float(value): v, float(value))
        if isinstance(value, str):
            return _Node(STRING, lambda t, v=value: v, value)
        raise _Problem(f"the literal {value!r} is not allowed (numbers, strings, true, false)")

    def _Name(self, node: ast.Name) -> _Node:
        name = node.id
        if name in ("true", "True", "false", "False"):
            value = name.lower() == "true"
            return _Node(BOOL, lambda t, v=value: v, value)
        if name not in self.columns:
            hint = difflib.get_close_matches(name, self.columns, n=1)
            raise _Problem(f"unknown column {name!r}{f' (did you mean {hint[0]!r}?)' if hint else ''}; "
                           f"known columns: {', '.join(self.columns)}")
        return _Node(self.columns[name], lambda t, n=name: t.column(n), column=name)

    def _Tuple(self, node: ast.Tuple | ast.List) -> _Node:
        items = [self.compile(e) for e in node.elts]
        if not items or any(i.literal is None for i in items):
            raise _Problem("a list after 'in' holds literals only, at least one, e.g. ('rejected', 'failed')")
        kinds = {i.kind for i in items}
        if len(kinds) > 1:
            raise _Problem(f"a list after 'in' mixes {' and '.join(sorted(kinds))} values")
        return _Node("tuple:" + kinds.pop(), lambda t: None, tuple(i.literal for i in items))

    _List = _Tuple

    def _BoolOp(self, node: ast.BoolOp) -> _Node:
        parts = [self._boolean(self.compile(v), "and" if isinstance(node.op, ast.And) else "or")
                 for v in node.values]
        join = pc.and_kleene if isinstance(node.op, ast.And) else pc.or_kleene

        def evaluate(table):
            value = _array(parts[0].evaluate(table), table.num_rows)
            for part in parts[1:]:
                value = join(value, _array(part.evaluate(table), table.num_rows))
            return value
        return _Node(BOOL, evaluate)

    def _UnaryOp(self, node: ast.UnaryOp) -> _Node:
        operand = self.compile(node.operand)
        if isinstance(node.op, ast.Not):
            self._boolean(operand, "not")
            return _Node(BOOL, lambda t: pc.invert(_array(operand.evaluate(t), t.num_rows)))
        if isinstance(node.op, (ast.USub, ast.UAdd)):
            self._number(operand, "-" if isinstance(node.op, ast.USub) else "+")
            if isinstance(node.op, ast.UAdd):
                return operand
            if operand.literal is not None:
                return _Node(NUMBER, lambda t, v=-operand.literal: v, -operand.literal)
            return _Node(NUMBER, lambda t: pc.negate(operand.evaluate(t)))
        raise _Problem(f"the operator {_describe(node.op)} is not allowed")

    def _BinOp(self, node: ast.BinOp) -> _Node:
        functions = {ast.Add: pc.add, ast.Sub: pc.subtract, ast.Mult: pc.multiply, ast.Div: pc.divide}
        symbol = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}.get(type(node.op))
        if symbol is None:
            raise _Problem(f"the operator {_describe(node.op)} is not allowed (use + - * /)")
        left, right = (self._number(self.compile(s), symbol) for s in (node.left, node.right))
        function = functions[type(node.op)]
        return _Node(NUMBER, lambda t: function(pc.cast(_array(left.evaluate(t), t.num_rows), pa.float64()),
                                                pc.cast(_array(right.evaluate(t), t.num_rows), pa.float64())))

    def _Compare(self, node: ast.Compare) -> _Node:
        operands = [self.compile(node.left)] + [self.compile(c) for c in node.comparators]
        tests = [self._comparison(op, a, b) for op, a, b in zip(node.ops, operands, operands[1:])]

        def evaluate(table):
            value = _array(tests[0](table), table.num_rows)
            for test in tests[1:]:
                value = pc.and_kleene(value, _array(test(table), table.num_rows))
            return value
        return _Node(BOOL, evaluate)

    def _comparison(self, op: ast.cmpop, left: _Node, right: _Node) -> Callable[[pa.Table], Any]:
        if isinstance(op, (ast.In, ast.NotIn)):
            negate = isinstance(op, ast.NotIn)
            if right.kind.startswith("tuple:"):
                kind = right.kind.split(":", 1)[1]
                if left.kind != kind:
                    raise _Problem(f"'in' compares a {left.kind} with a list of {kind} values")
                for value in right.literal:
                    _check_enum(left, _Node(kind, lambda t: None, value))
                values = pa.array(list(right.literal))

                def member(table):
                    found = pc.is_in(_array(left.evaluate(table), table.num_rows), value_set=values)
                    # a null is in no list (is_in would say false; keep it undecided)
                    found = pc.if_else(pc.is_null(_array(left.evaluate(table), table.num_rows)),
                                       pa.scalar(None, pa.bool_()), found)
                    return pc.invert(found) if negate else found
                return member
            if right.kind == LIST:
                if left.kind != STRING or left.literal is None:
                    raise _Problem(f"'in {right.column}' takes a string in quotes on its left, e.g. "
                                   f"'harvest' in reasons")
                _check_enum(right, left)

                def contains(table):
                    lists = _array(right.evaluate(table), table.num_rows)
                    hit = np.zeros(table.num_rows, bool)
                    flat = pc.list_flatten(lists)
                    if len(flat):
                        parents = np.asarray(pc.list_parent_indices(lists))
                        hit[parents[np.asarray(pc.equal(flat, left.literal).fill_null(False))]] = True
                    found = pa.array(~hit if negate else hit)
                    return pc.if_else(pc.is_null(lists), pa.scalar(None, pa.bool_()), found)
                return contains
            raise _Problem("'in' takes a list of literals, e.g. status in ('rejected', 'failed'), "
                           "or one of the list columns (reasons, traded_securities, rejection_rules)")
        functions = {ast.Eq: pc.equal, ast.NotEq: pc.not_equal, ast.Lt: pc.less, ast.LtE: pc.less_equal,
                     ast.Gt: pc.greater, ast.GtE: pc.greater_equal}
        function = functions.get(type(op))
        if function is None:
            raise _Problem(f"the comparison '{_describe(op)}' is not allowed (use == != < <= > >= in)")
        if left.kind != right.kind or left.kind.startswith("tuple:") or left.kind == LIST:
            raise _Problem(f"cannot compare a {left.kind.replace('tuple:', 'list of ')} with a "
                           f"{right.kind.replace('tuple:', 'list of ')}")
        if left.kind == BOOL and not isinstance(op, (ast.Eq, ast.NotEq)):
            raise _Problem("booleans compare with == and != only")
        _check_enum(left, right)
        _check_enum(right, left)
        return lambda t: function(_array(left.evaluate(t), t.num_rows), _array(right.evaluate(t), t.num_rows))

    def _Call(self, node: ast.Call) -> _Node:
        if not isinstance(node.func, ast.Name):
            raise _Problem(f"calling {_describe(node.func)} is not allowed; functions: {', '.join(_FUNCTIONS)}")
        name = node.func.id
        if name not in _FUNCTIONS:
            raise _Problem(f"unknown function {name!r}; functions: {', '.join(_FUNCTIONS)}")
        if node.keywords:
            raise _Problem(f"{name}() takes no keyword arguments")
        args = [self.compile(a) for a in node.args]
        counts = {"abs": (1, 1), "len": (1, 1), "is_null": (1, 1), "coalesce": (2, 2), "min": (2, 99),
                  "max": (2, 99)}
        low, high = counts[name]
        if not low <= len(args) <= high:
            raise _Problem(f"{name}() takes {low if low == high else f'at least {low}'} argument(s), "
                           f"got {len(args)}")
        if name == "is_null":
            return _Node(BOOL, lambda t: pc.is_null(_array(args[0].evaluate(t), t.num_rows)))
        if name == "len":
            if args[0].kind != LIST:
                raise _Problem(f"len() takes a list column (reasons, traded_securities, rejection_rules), "
                               f"got a {args[0].kind}")
            return _Node(NUMBER, lambda t: pc.cast(pc.list_value_length(args[0].evaluate(t)), pa.float64()))
        if name == "coalesce":
            if args[0].kind != args[1].kind:
                raise _Problem(f"coalesce() takes two values of one kind, got a {args[0].kind} "
                               f"and a {args[1].kind}")
            return _Node(args[0].kind, lambda t: pc.coalesce(_array(args[0].evaluate(t), t.num_rows),
                                                             _array(args[1].evaluate(t), t.num_rows)))
        for arg in args:
            self._number(arg, f"{name}()")
        if name == "abs":
            return _Node(NUMBER, lambda t: pc.abs(pc.cast(_array(args[0].evaluate(t), t.num_rows), pa.float64())))
        function = pc.min_element_wise if name == "min" else pc.max_element_wise
        return _Node(NUMBER, lambda t: function(*[pc.cast(_array(a.evaluate(t), t.num_rows), pa.float64())
                                                  for a in args]))

    @staticmethod
    def _number(node: _Node, where: str) -> _Node:
        if node.kind != NUMBER:
            raise _Problem(f"{where} takes numbers, got a {node.kind.replace('tuple:', 'list of ')}")
        return node

    @staticmethod
    def _boolean(node: _Node, where: str) -> _Node:
        if node.kind != BOOL:
            raise _Problem(f"'{where}' takes true/false values (a comparison, a boolean column), "
                           f"got a {node.kind.replace('tuple:', 'list of ')}")
        return node


def _describe(node: ast.AST) -> str:
    names = {"Attribute": "attribute access (x.y)", "Subscript": "indexing (x[...])", "Lambda": "lambda",
             "IfExp": "if/else", "Mod": "%", "Pow": "**", "FloorDiv": "//", "Is": "is", "IsNot": "is not",
             "Dict": "a dict", "Set": "a set", "ListComp": "a comprehension", "GeneratorExp": "a generator",
             "JoinedStr": "an f-string", "NamedExpr": ":=", "Starred": "*args"}
    name = type(node).__name__
    return names.get(name, name)


def compile_expression(text: str, columns: Mapping[str, str] = COLUMNS) -> _Node:
    """Parse and type-check a rule expression; raises ``_Problem`` with what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise _Problem("the expression is empty")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise _Problem(f"not a valid expression: {exc.msg} at character {exc.offset or 0}") from None
    node = _Compiler(columns).compile(tree)
    if node.kind != BOOL:
        raise _Problem(f"the expression gives a {node.kind.replace('tuple:', 'list of ')}, not true/false; "
                       f"compare it, e.g. score > 0.001")
    return node


@dataclass(frozen=True)
class ApprovalRule:
    """One named rule: where ``when`` holds, ``decision``.

    Attributes
    ----------
    name, when, decision
        As in the rules file; ``position`` counts rules from 1.
    """

    name: str
    when: str
    decision: str
    position: int
    expression: _Node

    def matches(self, inputs: pa.Table) -> np.ndarray:
        """Per row of ``inputs`` (:data:`schema.RULE_INPUTS`), whether the rule holds (null: no)."""
        value = _array(self.expression.evaluate(inputs), inputs.num_rows)
        return np.asarray(value.fill_null(False), dtype=bool)


@dataclass(frozen=True)
class Rules:
    """The rules of a file, in order, and the decision of accounts none matches."""

    rules: tuple[ApprovalRule, ...]
    default: str
    source: str
    text: str


def parse_rules(text: str, source: str = "rules.toml") -> Rules:
    """Rules from the text of a rules file (see the module docstring).

    Raises
    ------
    RulesError
        Naming the file, the rule (position and name), its expression and what is wrong.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{source}: not valid TOML: {exc}") from None
    # the file's keys are the decisions table's: a [[rule]]'s name is decisions.rule, its decision decisions.decision
    unknown = sorted(set(data) - {"default", Col.rule})
    if unknown:
        raise RulesError(f"{source}: unknown key(s) {', '.join(unknown)}; a rules file has 'default' and "
                         f"[[rule]] tables")
    default = data.get("default", Decision.review)
    if default not in Decision.all:
        raise RulesError(f"{source}: default = {default!r} is not a decision; decisions: {', '.join(Decision.all)}")
    entries = data.get(Col.rule, [])
    if not isinstance(entries, list) or not entries:
        raise RulesError(f"{source}: no rules; write each as a [[rule]] table with name, when and decision")
    rules, seen = [], {}
    for position, entry in enumerate(entries, start=1):
        where = f"{source}, rule {position}"
        if not isinstance(entry, dict):
            raise RulesError(f"{where}: must be a [[rule]] table")
        if isinstance(entry.get("name"), str):
            where += f" {entry['name']!r}"
        extra = sorted(set(entry) - set(_RULE_KEYS))
        if extra:
            raise RulesError(f"{where}: unknown key(s) {', '.join(extra)}; a rule has name, when and decision")
        for key in _RULE_KEYS:
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                raise RulesError(f"{where}: '{key}' is missing or not a non-empty string")
        name, when, decision = entry["name"].strip(), entry["when"], entry[Col.decision].strip()
        if name == DEFAULT_RULE:
            raise RulesError(f"{where}: the name {DEFAULT_RULE!r} is reserved for accounts no rule matches")
        if name in seen:
            raise RulesError(f"{where}: the name {name!r} is already used by rule {seen[name]}")
        seen[name] = position
        if decision not in Decision.all:
            raise RulesError(f"{where}: decision {decision!r} is not one of {', '.join(Decision.all)}")
        try:
            expression = compile_expression(when)
        except _Problem as exc:
            raise RulesError(f"{where}: when = {when!r}: {exc}") from None
        rules.append(ApprovalRule(name, when, decision, position, expression))
    return Rules(tuple(rules), default, source, text)


def load_rules(path: str | Path) -> Rules:
    """Rules from a TOML file (local path)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise RulesError(f"rules file {path} does not exist") from None
    return parse_rules(text, source=str(path))


# --------------------------------------------------------------------------
# Inputs, decisions and the approved trades.

def _distinct(rows: np.ndarray, values: list, n: int) -> list[list[str]]:
    """Per account (``rows`` index 0..n-1, -1 = none), its distinct non-null ``values``, sorted."""
    found: list[set[str]] = [set() for _ in range(n)]
    for r, v in zip(rows.tolist(), values):
        if r >= 0 and v is not None:
            found[r].add(v)
    return [sorted(s) for s in found]


def _per_account(trades: pa.Table, rejections: pa.Table, account_ids: list[str]) -> dict[str, Any]:
    """Facts of each account's trades and rejections, in ``account_ids`` order."""
    n = len(account_ids)
    row = arrow.index_in(trades.column(Col.account_id), account_ids)
    known = row >= 0
    value = np.asarray(trades.column(Col.value).to_numpy(zero_copy_only=False), float)
    buy = np.asarray(pc.equal(trades.column(Col.side), Side.buy).to_numpy(zero_copy_only=False), bool)
    bought = np.bincount(row[known], np.where(buy, value, 0.0)[known], n)
    sold = np.bincount(row[known], np.where(buy, 0.0, value)[known], n)
    largest = np.zeros(n)
    np.maximum.at(largest, row[known], value[known])
    rejected = arrow.index_in(rejections.column(Col.account_id), account_ids)
    return {Col.bought: bought, Col.sold: sold, Col.largest_trade: largest,
            Col.reasons: _distinct(row, trades.column(Col.reason).to_pylist(), n),
            Col.traded_securities: _distinct(row, trades.column(Col.security_id).to_pylist(), n),
            Col.rejection_rules: _distinct(rejected, rejections.column(Col.rule).to_pylist(), n)}


def rule_inputs(run: Mapping[str, pa.Table]) -> pa.Table:
    """The table rules are evaluated on (:data:`schema.RULE_INPUTS`): one row per account of the run."""
    accounts = run["accounts"]
    ids = accounts.column(Col.account_id).to_pylist()
    facts = _per_account(run["trades"], run["rejections"], ids)
    table = accounts
    for name, values in facts.items():
        table = table.append_column(schema.RULE_INPUTS.field(name), pa.array(values, schema.RULE_INPUTS.field(name).type))
    return schema.conform(table, schema.RULE_INPUTS)


def decide(rules: Rules, run: Mapping[str, pa.Table]) -> pa.Table:
    """The decision of every account of a run: the first rule that matches, else the default.

    Returns
    -------
    pa.Table of :data:`schema.DECISIONS`, in the run's account order.
    """
    inputs = rule_inputs(run)
    n = inputs.num_rows
    decision = np.full(n, rules.default, dtype=object)
    rule = np.full(n, DEFAULT_RULE, dtype=object)
    open_ = np.ones(n, bool)
    for item in rules.rules:
        try:
            hit = item.matches(inputs) & open_
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise RulesError(f"{rules.source}, rule {item.position} {item.name!r}: when = {item.when!r}: "
                             f"cannot be evaluated: {exc}") from None
        decision[hit], rule[hit] = item.decision, item.name
        open_ &= ~hit
    table = pa.table({Col.as_of: inputs.column(Col.as_of), Col.account_id: inputs.column(Col.account_id),
                      Col.household_id: inputs.column(Col.household_id), Col.status: inputs.column(Col.status),
                      Col.decision: pa.array(decision.tolist(), pa.string()),
                      Col.rule: pa.array(rule.tolist(), pa.string())})
    return schema.conform(table, schema.DECISIONS)


def approved_trades(trades: pa.Table, decisions: pa.Table) -> pa.Table:
    """The trades of the approved accounts, each with the rule that approved it (:data:`schema.APPROVED_TRADES`)."""
    approved = decisions.filter(pc.equal(decisions.column(Col.decision), Decision.approve))
    position = arrow.index_in(trades.column(Col.account_id), approved.column(Col.account_id))
    keep = position >= 0
    picked = trades.filter(pa.array(keep))
    rules = approved.column(Col.rule).take(pa.array(position[keep], pa.int64()))
    return schema.conform(picked.append_column(schema.APPROVED_TRADES.field(Col.rule), rules),
                          schema.APPROVED_TRADES)


def approve(run_uri: str, rules: Rules, *, as_of=None, replace: bool = False,
            storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Decide every account of a committed run and commit the decision set beside it.

    Returns the decision set's manifest (counts by decision and rule, the
    approved trades and their value, where it was written).

    Raises
    ------
    RulesError
        A rule cannot be evaluated; nothing is written.
    RunError
        No committed run, or a decision set already committed (without ``replace``).
    """
    from engine.book.runs import locate_run, read_run, write_decisions

    out, date = locate_run(run_uri, as_of, storage_options)
    run, manifest = read_run(out, date, storage_options)
    decisions = decide(rules, run)
    approved = approved_trades(run["trades"], decisions)
    by_decision = {d: int(pc.sum(pc.equal(decisions.column(Col.decision), d)).as_py() or 0) for d in Decision.all}
    names = [DEFAULT_RULE, *(r.name for r in rules.rules)]
    rule_column = decisions.column(Col.rule)
    by_rule = {name: int(pc.sum(pc.equal(rule_column, name)).as_py() or 0) for name in names}
    summary = {"run_id": manifest["run_id"], "rules_file": rules.source, "rules": rules.text,
               "default": rules.default, "by_decision": by_decision, "by_rule": by_rule,
               "approved_trades": approved.num_rows,
               "approved_value": float(pc.sum(approved.column(Col.value)).as_py() or 0.0)}
    summary["folder"] = write_decisions(out, date, decisions, approved, summary, replace=replace,
                                        storage_options=storage_options)
    return summary
