"""Approval rules: the expression language, the decisions, and their atomic commit beside a run."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from typer.testing import CliRunner

from engine.book.runs import read_decisions, read_run
from engine.cli import app
from engine.contract import schema
from engine.contract.errors import RulesError, RunError
from engine.contract.schema import Col, Decision, Status
from engine.review.approval import DEFAULT_RULE, approve, approved_trades, decide, load_rules, parse_rules, rule_inputs

AS_OF = dt.date(2026, 11, 20)
RULES = Path(__file__).resolve().parents[1] / "rules.toml"


def _accounts(rows: list[dict]) -> pa.Table:
    blank = {f.name: None for f in schema.RUN_ACCOUNTS}
    numbers = {f.name: 0.0 for f in schema.RUN_ACCOUNTS if f.type == pa.float64()}
    full = [{**blank, **numbers, Col.as_of: AS_OF, Col.household_id: r[Col.account_id], Col.mandated: False,
             Col.trade_count: 0, Col.iterations: 0, Col.status: Status.proposed, **r} for r in rows]
    return pa.Table.from_pylist(full, schema=schema.RUN_ACCOUNTS)


def _trade(account: str, side: str, value: float, reason: str, security: str = "S1") -> dict:
    return {Col.as_of: AS_OF, Col.account_id: account, Col.household_id: account, Col.security_id: security,
            Col.side: side, Col.lot_id: "L1" if side == "sell" else None, Col.quantity: 1.0, Col.price: value,
            Col.value: value, Col.realized_gain: 0.0 if side == "sell" else None,
            Col.term: "long" if side == "sell" else None, Col.est_tax: 0.0, Col.reason: reason}


@pytest.fixture
def run():
    accounts = _accounts([
        {Col.account_id: "A", Col.score: 0.01, Col.turnover: 0.05, Col.value: 1e5},
        {Col.account_id: "B", Col.score: 0.0001, Col.mandated: True, Col.value: 2e5},
        {Col.account_id: "C", Col.status: Status.rejected, Col.value: 3e5, Col.detail: "rejected: unknown"},
        {Col.account_id: "D", Col.score: 0.02, Col.turnover: 0.4, Col.value: 4e5},
        {Col.account_id: "E", Col.value: 5e5},
    ])
    trades = pa.Table.from_pylist([_trade("A", "sell", 500.0, "harvest"), _trade("A", "buy", 700.0, "replacement", "S2"),
                                   _trade("B", "sell", 900.0, "withdrawal"), _trade("D", "buy", 50_000.0, "rebalance")],
                                  schema=schema.TRADES)
    rejections = pa.Table.from_pylist([{Col.account_id: "C", Col.table: "lots", Col.key: "C/L9",
                                        Col.rule: "unknown_security", Col.message: "unknown"}],
                                      schema=schema.REJECTIONS)
    return {"accounts": accounts, "trades": trades, "rejections": rejections}


def _rules(*entries: tuple[str, str, str], default: str | None = None) -> str:
    head = f'default = "{default}"\n' if default else ""
    return head + "".join(f'[[rule]]\nname = "{n}"\nwhen = "{w}"\ndecision = "{d}"\n\n' for n, w, d in entries)


def _decisions(text: str, run) -> dict[str, tuple[str, str]]:
    table = decide(parse_rules(text), run)
    return {a: (d, r) for a, d, r in zip(*(table.column(c).to_pylist() for c in (Col.account_id, Col.decision,
                                                                              Col.rule)))}


def test_rule_inputs_sum_up_trades_and_rejections(run):
    inputs = rule_inputs(run).to_pylist()
    a, b, c = inputs[0], inputs[1], inputs[2]
    assert (a[Col.bought], a[Col.sold], a[Col.largest_trade]) == (700.0, 500.0, 700.0)
    assert a[Col.reasons] == ["harvest", "replacement"] and a[Col.traded_securities] == ["S1", "S2"]
    assert b[Col.reasons] == ["withdrawal"] and c[Col.rejection_rules] == ["unknown_security"]
    assert c[Col.bought] == 0.0 and c[Col.reasons] == []


def test_first_matching_rule_decides_and_the_rest_get_the_default(run):
    text = _rules(("bad", "status == 'rejected' or 'unknown_security' in rejection_rules", "suspend"),
                  ("mandated", "mandated", "approve"),
                  ("big", "turnover > 0.25 or value > 1e6", "review"),
                  ("good", "score > 0.005", "approve"))
    got = _decisions(text, run)
    assert got == {"A": ("approve", "good"), "B": ("approve", "mandated"), "C": ("suspend", "bad"),
                   "D": ("review", "big"), "E": ("review", DEFAULT_RULE)}
    # order matters: the same rules with "good" first approve D
    reordered = _rules(("good", "score > 0.005", "approve"), ("big", "turnover > 0.25", "review"))
    assert _decisions(reordered, run)["D"] == ("approve", "good")


def test_expressions(run):
    cases = {
        "0.001 < score <= 0.015": {"A"},
        "'harvest' in reasons": {"A"},
        "'harvest' not in reasons and status != 'rejected'": {"B", "D", "E"},
        "status in ('rejected', 'failed')": {"C"},
        "status not in ('rejected',)": {"A", "B", "D", "E"},
        "bought - sold > 100 and len(traded_securities) >= 2": {"A"},
        "largest_trade / value > 0.1": {"D"},
        "abs(-score) > 0.015": {"D"},
        "max(bought, sold) >= 900 and min(bought, sold) < 1": {"B", "D"},
        "is_null(detail)": {"A", "B", "D", "E"},
        "coalesce(detail, 'none') == 'none'": {"A", "B", "D", "E"},
        "not mandated and value >= 4e5": {"D", "E"},
        "mandated == true": {"B"},
        "-score < -0.015": {"D"},
    }
    for when, expected in cases.items():
        got = {a for a, (d, _) in _decisions(_rules(("x", when, "approve")), run).items() if d == "approve"}
        assert got == expected, when


def test_a_missing_value_never_matches(run):
    # E's detail is null: neither the test nor its negation matches it; C's is set
    for when in ("detail == 'x'", "not (detail == 'x')", "detail in ('x', 'y')", "detail not in ('x',)"):
        got = _decisions(_rules(("x", when, "approve")), run)
        assert got["E"] == ("review", DEFAULT_RULE), when
        assert got["C"][0] == (Decision.approve if "not" in when else Decision.review), when


BAD_EXPRESSIONS = [
    ("scroe > 0.01", ["unknown column 'scroe'", "did you mean 'score'", "known columns:", Col.turnover]),
    ("score >", ["not a valid expression"]),
    ("score", ["gives a number, not true/false"]),
    ("status == 'propsed'", ["'propsed' is not a value of status", "did you mean 'proposed'"]),
    ("'harvst' in reasons", ["'harvst' is not a value of reasons"]),
    ("status == 1", ["cannot compare a string with a number"]),
    ("score + status > 1", ["+ takes numbers, got a string"]),
    ("score > 1 and value", ["'and' takes true/false values"]),
    ("__import__('os').system('true')", ["is not allowed"]),
    ("open('x') == 1", ["unknown function 'open'"]),
    ("accounts.score > 1", ["attribute access"]),
    ("reasons[0] == 'harvest'", ["indexing"]),
    ("(lambda: 1)() == 1", ["calling lambda is not allowed"]),
    ("score ** 2 > 1", ["the operator ** is not allowed"]),
    ("abs(score, 1) > 0", ["abs() takes 1 argument(s), got 2"]),
    ("len(score) > 0", ["len() takes a list column"]),
    ("status in (1, 'a')", ["mixes"]),
    ("status in reasons", ["takes a string in quotes"]),
    ("status in status", ["'in' takes a list of literals"]),
    ("score is 3", ["the comparison 'is' is not allowed"]),
    ("mandated > false", ["booleans compare with == and != only"]),
    ("score > None", ["the literal None is not allowed"]),
    ("", ["'when' is missing or not a non-empty string"]),
]


@pytest.mark.parametrize("when,messages", BAD_EXPRESSIONS, ids=[w or "empty" for w, _ in BAD_EXPRESSIONS])
def test_bad_expressions_name_the_rule_and_what_is_wrong(when, messages):
    text = _rules(("fine", "score > 0", "approve"), ("broken_rule", when.replace('"', '\\"'), "approve"))
    with pytest.raises(RulesError) as error:
        parse_rules(text, source="team.toml")
    message = str(error.value)
    assert "team.toml, rule 2 'broken_rule'" in message
    if when:
        assert f"when = {when!r}" in message
    for part in messages:
        assert part in message


BAD_FILES = [
    ("[[rule]\nname = 'x'", "not valid TOML"),
    ("", "no rules"),
    ('default = "maybe"\n' + _rules(("x", "mandated", "approve")), "default = 'maybe' is not a decision"),
    ("threshold = 3\n" + _rules(("x", "mandated", "approve")), "unknown key(s) threshold"),
    ('[[rule]]\nname = "x"\nwhen = "mandated"\n', "rule 1 'x': 'decision' is missing"),
    ('[[rule]]\nwhen = "mandated"\ndecision = "approve"\n', "rule 1: 'name' is missing"),
    ('[[rule]]\nname = "x"\nwhen = "mandated"\ndecision = "approve"\nthen = 1\n', "unknown key(s) then"),
    (_rules(("x", "mandated", "approve"), ("x", "score > 0", "review")), "rule 2 'x': the name 'x' is already used by rule 1"),
    (_rules(("x", "mandated", "accept")), "decision 'accept' is not one of approve, review, suspend"),
    (_rules(("default", "mandated", "approve")), "reserved"),
    ('[[rule]]\nname = "x"\nwhen = 3\ndecision = "approve"\n', "'when' is missing or not a non-empty string"),
    ("rule = 3", "no rules"),
]


@pytest.mark.parametrize("text,message", BAD_FILES, ids=[m for _, m in BAD_FILES])
def test_bad_rules_files(text, message):
    with pytest.raises(RulesError, match="rules.toml") as error:
        parse_rules(text)
    assert message in str(error.value)


def test_missing_rules_file(tmp_path):
    with pytest.raises(RulesError, match="does not exist"):
        load_rules(tmp_path / "nope.toml")


def test_the_shipped_rules_file_parses():
    rules = load_rules(RULES)
    assert [r.decision for r in rules.rules][0] == Decision.suspend and rules.default == Decision.review


def test_approved_trades_are_the_trades_of_approved_accounts(run):
    decisions = decide(parse_rules(_rules(("mandated", "mandated", "approve"), ("a", "score > 0.005 and "
                                                                                  "turnover < 0.1", "approve"))), run)
    approved = approved_trades(run["trades"], decisions)
    assert approved.schema.equals(schema.APPROVED_TRADES, check_metadata=False)
    assert sorted(set(approved.column(Col.account_id).to_pylist())) == ["A", "B"]
    assert approved.num_rows == 3
    assert dict(zip(approved.column(Col.account_id).to_pylist(), approved.column(Col.rule).to_pylist())) == \
        {"A": "a", "B": "mandated"}


def test_approve_commits_beside_the_run_and_keeps_a_committed_set(small_run, tmp_path):
    _, out, as_of = small_run
    rules = load_rules(RULES)
    # a copy of the run, so the session's run stays without decisions for other tests
    import shutil
    copy = tmp_path / "runs"
    shutil.copytree(out, copy)
    summary = approve(str(copy), rules)
    run, manifest = read_run(str(copy), as_of)
    decisions, approved, written = read_decisions(str(copy), as_of)
    assert decisions.num_rows == run["accounts"].num_rows
    assert decisions.column(Col.account_id).to_pylist() == run["accounts"].column(Col.account_id).to_pylist()
    assert written["run_id"] == manifest["run_id"] and written["by_decision"] == summary["by_decision"]
    assert sum(summary["by_rule"].values()) == decisions.num_rows
    by_account = dict(zip(decisions.column(Col.account_id).to_pylist(), decisions.column(Col.decision).to_pylist()))
    status = dict(zip(run["accounts"].column(Col.account_id).to_pylist(), run["accounts"].column(Col.status).to_pylist()))
    assert all(by_account[a] == Decision.suspend for a, s in status.items() if s == Status.rejected)
    assert Decision.approve in by_account.values()
    expected = [t for t in run["trades"].to_pylist() if by_account[t[Col.account_id]] == Decision.approve]
    assert approved.drop_columns([Col.rule]).to_pylist() == expected and expected
    folder = copy / f"as_of={as_of.isoformat()}" / "approval"
    csv = pacsv.read_csv(folder / "approved_trades.csv",
                         convert_options=pacsv.ConvertOptions(column_types=schema.APPROVED_TRADES))
    assert csv.num_rows == approved.num_rows
    assert csv.column(Col.value).to_pylist() == approved.column(Col.value).to_pylist()
    assert (folder / "_SUCCESS").exists() and not any((copy / "_staging").iterdir())

    # a second decision set is refused without --replace, and the first stays as it was
    stricter = parse_rules(_rules(("none", "value < 0", "approve")))
    with pytest.raises(RunError, match="already committed.*--replace"):
        approve(str(copy), stricter)
    assert read_decisions(str(copy), as_of)[0].equals(decisions)
    approve(str(copy), stricter, replace=True)
    again = read_decisions(str(copy), as_of)
    assert set(again[0].column(Col.decision).to_pylist()) == {Decision.review} and again[1].num_rows == 0
    assert json.loads((folder / "manifest.json").read_text())["by_rule"]["none"] == 0


def test_cli_approve(small_run, tmp_path):
    _, out, as_of = small_run
    bad = tmp_path / "bad.toml"
    bad.write_text(_rules(("approve_big_scores", "scor > 1", "approve")))
    runner = CliRunner()
    result = runner.invoke(app, ["approve", "--run", out, "--rules", str(bad)])
    output = " ".join(result.output.split())
    assert result.exit_code == 2
    assert "rule 1 'approve_big_scores'" in output and "unknown column 'scor'" in output
    result = runner.invoke(app, ["approve", "--run", out, "--rules", str(RULES), "--check"])
    assert result.exit_code == 0 and "OK" in result.output
    result = runner.invoke(app, ["approve", "--run", str(tmp_path / "nowhere"), "--rules", str(RULES)])
    assert result.exit_code == 2 and "no committed run" in " ".join(result.output.split())
    with pytest.raises(RunError, match="not 2026-11-21"):
        from engine.book.runs import locate_run
        locate_run(f"{out}/as_of={as_of.isoformat()}", dt.date(2026, 11, 21))
