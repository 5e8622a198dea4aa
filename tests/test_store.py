"""Runs are committed atomically: staged, moved into place, then _SUCCESS last."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from engine import schema
from engine.errors import RunError, SchemaError
from engine.schema import Col
from engine.store import RunWriter, committed, read_run, run_path

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
