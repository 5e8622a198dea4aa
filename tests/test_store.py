"""Runs are committed atomically: staged, moved into place, then _SUCCESS last."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from engine.book.runs import (RunWriter, committed, committed_dates, locate_run, read_decisions, read_run, run_path,
                              write_decisions, write_report)
from engine.contract import schema
from engine.contract.errors import RunError, SchemaError
from engine.contract.schema import Col

AS_OF = dt.date(2026, 11, 20)


def account_rows(status: str, n: int = 3) -> pa.Table:
    row = {f.name: None for f in schema.RUN_ACCOUNTS}
    numbers = {f.name: 0.0 for f in schema.RUN_ACCOUNTS if f.type == pa.float64()}
    rows = [{**row, **numbers, Col.as_of: AS_OF, Col.account_id: f"A{i}", Col.household_id: f"H{i}",
             Col.status: status, Col.mandated: False, Col.trade_count: 0, Col.iterations: 0}
            for i in range(n)]
    return pa.Table.from_pylist(rows, schema=schema.RUN_ACCOUNTS)


def write_run(out: str, status: str = "no_trade", replace: bool = False, **options) -> dict:
    writer = RunWriter(out, AS_OF, replace=replace, **options)
    writer.write("accounts", account_rows(status))
    return writer.commit({"counts": {status: 3}})


@pytest.mark.parametrize("scheme", ["local", "memory"])
def test_commit_layout_and_read_back(tmp_path, scheme):
    out = str(tmp_path / "runs") if scheme == "local" else "memory://canopy-store/runs"
    manifest = write_run(out)
    assert committed(out, AS_OF)
    tables, read_manifest = read_run(out, AS_OF)
    assert read_manifest == manifest
    assert tables["accounts"].equals(account_rows("no_trade"))
    assert tables["trades"].num_rows == 0 and tables["trades"].schema == schema.TRADES
    assert manifest["rows"] == {"trades": 0, "accounts": 3, "rejections": 0}
    assert manifest["files"]["accounts"] == [{"path": "accounts/part-00000.parquet", "rows": 3}]
    if scheme == "local":
        final = tmp_path / "runs" / "as_of=2026-11-20"
        assert sorted(p.name for p in final.iterdir()) == sorted(
            ["_SUCCESS", "manifest.json", "trades", "accounts", "rejections"])
        assert not any((tmp_path / "runs" / "_staging").iterdir())


def test_committed_date_is_not_overwritten(tmp_path):
    out = str(tmp_path / "runs")
    write_run(out, "no_trade")
    with pytest.raises(RunError, match="already committed.*--replace"):
        RunWriter(out, AS_OF)
    assert read_run(out, AS_OF)[0]["accounts"].column(Col.status)[0].as_py() == "no_trade"


def test_replace_swaps_the_whole_run(tmp_path):
    out = str(tmp_path / "runs")
    write_run(out, "no_trade")
    writer = RunWriter(out, AS_OF, replace=True)
    writer.write("accounts", account_rows("proposed"))
    # until the commit, readers still see the old run, whole
    assert read_run(out, AS_OF)[0]["accounts"].column(Col.status).to_pylist() == ["no_trade"] * 3
    writer.commit({})
    assert read_run(out, AS_OF)[0]["accounts"].column(Col.status).to_pylist() == ["proposed"] * 3


def test_crash_before_commit_leaves_nothing_trusted(tmp_path):
    out = str(tmp_path / "runs")
    writer = RunWriter(out, AS_OF)
    writer.write("accounts", account_rows("proposed"))
    del writer                                              # the process dies here
    assert not committed(out, AS_OF)
    assert not (tmp_path / "runs" / "as_of=2026-11-20").exists()
    with pytest.raises(RunError, match="no committed run"):
        read_run(out, AS_OF)
    write_run(out, "no_trade")                              # the next try commits normally
    assert committed(out, AS_OF)


def test_a_half_written_final_folder_without_success_is_replaced(tmp_path):
    out = tmp_path / "runs"
    leftover = out / "as_of=2026-11-20" / "trades"
    leftover.mkdir(parents=True)
    (leftover / "part-00099.parquet").write_bytes(b"half")
    write_run(str(out))
    assert not (leftover / "part-00099.parquet").exists()
    assert read_run(str(out), AS_OF)[1]["files"]["trades"] == [{"path": "trades/part-00000.parquet", "rows": 0}]


def test_abort_removes_staging_only(tmp_path):
    out = str(tmp_path / "runs")
    write_run(out)
    writer = RunWriter(out, AS_OF, replace=True)
    writer.write("accounts", account_rows("failed"))
    writer.abort()
    assert read_run(out, AS_OF)[0]["accounts"].column(Col.status)[0].as_py() == "no_trade"
    assert not any((tmp_path / "runs" / "_staging").iterdir())


def test_wrong_table_is_refused_before_anything_is_staged(tmp_path):
    writer = RunWriter(str(tmp_path / "runs"), AS_OF)
    with pytest.raises(SchemaError, match="column 'status'"):
        writer.write("accounts", account_rows("x").drop_columns([Col.status]))
    with pytest.raises(RunError, match="unknown run table"):
        writer.write("decisions", account_rows("x"))
    assert writer.rows["accounts"] == 0


def test_run_path():
    assert run_path("s3://b/runs/", AS_OF) == "s3://b/runs/as_of=2026-11-20"


@pytest.mark.s3
def test_commit_on_s3(s3_server):
    out = "s3://canopy-test/runs"
    write_run(out, storage_options=s3_server)
    tables, manifest = read_run(out, AS_OF, storage_options=s3_server)
    assert tables["accounts"].num_rows == 3 and manifest["rows"]["accounts"] == 3
    write_run(out, "proposed", replace=True, storage_options=s3_server)
    tables, _ = read_run(out, AS_OF, storage_options=s3_server)
    assert tables["accounts"].column(Col.status).to_pylist() == ["proposed"] * 3
    import s3fs
    fs = s3fs.S3FileSystem(**s3_server)
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls("canopy-test/runs/as_of=2026-11-20")) == sorted(
        ["_SUCCESS", "manifest.json", "trades", "accounts", "rejections"])


# --------------------------------------------------------------------------
# Folders beside a run: decision sets and reports.

def _decisions(decision: str = "approve") -> tuple[pa.Table, pa.Table]:
    rows = [{Col.as_of: AS_OF, Col.account_id: f"A{i}", Col.household_id: f"H{i}", Col.status: "proposed",
             Col.decision: decision, Col.rule: "r"} for i in range(3)]
    return pa.Table.from_pylist(rows, schema=schema.DECISIONS), schema.empty(schema.APPROVED_TRADES)


@pytest.mark.parametrize("scheme", ["local", "memory"])
def test_decisions_commit_beside_the_run(tmp_path, scheme):
    out = str(tmp_path / "runs") if scheme == "local" else "memory://canopy-store/decisions"
    with pytest.raises(RunError, match="no committed run"):
        write_decisions(out, AS_OF, *_decisions(), {})
    write_run(out)
    assert read_decisions(out, AS_OF) is None
    write_decisions(out, AS_OF, *_decisions(), {"run_id": "x"})
    decisions, approved, manifest = read_decisions(out, AS_OF)
    assert decisions.equals(_decisions()[0]) and approved.num_rows == 0 and manifest["run_id"] == "x"
    assert manifest["rows"] == {"decisions": 3, "approved_trades": 0}
    with pytest.raises(RunError, match="already committed.*--replace"):
        write_decisions(out, AS_OF, *_decisions("review"), {})
    assert read_decisions(out, AS_OF)[0].column(Col.decision)[0].as_py() == "approve"
    write_decisions(out, AS_OF, *_decisions("review"), {}, replace=True)
    assert read_decisions(out, AS_OF)[0].column(Col.decision)[0].as_py() == "review"
    # the run itself is untouched, and a new run for the date takes its old decisions away
    assert read_run(out, AS_OF)[0]["accounts"].num_rows == 3
    write_run(out, "proposed", replace=True)
    assert read_decisions(out, AS_OF) is None


def test_a_decision_set_that_fails_midway_leaves_the_committed_one(tmp_path, monkeypatch):
    from engine.book import runs

    out = str(tmp_path / "runs")
    write_run(out)
    write_decisions(out, AS_OF, *_decisions(), {})

    def broken(self, relative, table):
        raise OSError("disk full")
    monkeypatch.setattr(runs.FolderWriter, "put_csv", broken)
    with pytest.raises(OSError, match="disk full"):
        write_decisions(out, AS_OF, *_decisions("suspend"), {}, replace=True)
    assert read_decisions(out, AS_OF)[0].column(Col.decision)[0].as_py() == "approve"
    assert not any((tmp_path / "runs" / "_staging").iterdir())


def test_locate_run(tmp_path):
    out = str(tmp_path / "runs")
    with pytest.raises(RunError, match="no committed run"):
        locate_run(out)
    write_run(out)
    later = AS_OF + dt.timedelta(days=3)
    writer = RunWriter(out, later)
    writer.commit({})
    (tmp_path / "runs" / "as_of=2026-11-30").mkdir()          # not committed: ignored
    assert committed_dates(out) == [AS_OF, later]
    assert locate_run(out) == (out, later)
    assert locate_run(out, AS_OF) == (out, AS_OF)
    assert locate_run(f"{out}/as_of=2026-11-20/") == (out, AS_OF)
    with pytest.raises(RunError, match="no committed run for 2026-11-30"):
        locate_run(f"{out}/as_of=2026-11-30")


def test_a_report_folder_is_committed_and_kept(tmp_path):
    where = write_report(str(tmp_path / "reports"), "night", {"index.html": b"<html></html>", "a/b.png": b"png"})
    assert where.endswith("reports/night") and (tmp_path / "reports" / "night" / "_SUCCESS").exists()
    assert (tmp_path / "reports" / "night" / "a" / "b.png").read_bytes() == b"png"
    with pytest.raises(RunError, match="already committed"):
        write_report(str(tmp_path / "reports" / "night"), "", {"index.html": b"x"})
    write_report(str(tmp_path / "reports" / "night"), "", {"index.html": b"new"}, replace=True)
    assert (tmp_path / "reports" / "night" / "index.html").read_bytes() == b"new"
    assert not (tmp_path / "reports" / "night" / "a").exists()
