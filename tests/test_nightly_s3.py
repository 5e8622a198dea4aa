"""The nightly job end to end on object storage: a book read from s3:// and a run written to s3://.

Two independent S3 servers on loopback (moto and ``rclone serve s3``, both in
conftest.py) and the session's one local Ray instance.  The same book run on a
local folder is the reference: object storage must change nothing but where
the bytes are.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from engine.book import synth
from engine.book.runs import committed, read_run, run_path
from engine.book.storage import read_book
from engine.contract.schema import Col
from engine.review.check import check_run

pytestmark = pytest.mark.s3

ACCOUNTS, SEED = 60, 17
SERVERS = ["s3_server", "rclone_s3_server"]


def _sorted(table: pa.Table, keys: list[str]) -> pa.Table:
    return table.sort_by([(key, "ascending") for key in keys])


def _trades(table: pa.Table) -> pa.Table:
    return _sorted(table, [Col.account_id, Col.security_id, Col.side, Col.lot_id])


def _run_nightly(book: str, out: str, storage_options=None) -> dict:
    from engine.actors.nightly import run_nightly  # the job under test

    return run_nightly(book, out, storage_options=storage_options)


@pytest.fixture(params=SERVERS)
def s3(request):
    """The ``storage_options`` of each S3 server in turn."""
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, ray_session):
    """The reference: the book and its run on a local folder."""
    root = tmp_path_factory.mktemp("nightly-local")
    synth.generate(str(root / "book"), ACCOUNTS, SEED)
    book = read_book(str(root / "book"))
    manifest = _run_nightly(str(root / "book"), str(root / "runs"))
    tables, _ = read_run(str(root / "runs"), book.as_of)
    return book, tables, manifest


def test_rclone_server_round_trips_a_book(rclone_s3_server):
    """The rclone fixture is a working S3: a generated book reads back table for table."""
    uri = "s3://canopy-test/fixture/book"
    rows = synth.generate(uri, 12, seed=3, storage_options=rclone_s3_server)
    book = read_book(uri, storage_options=rclone_s3_server)
    expected = synth.generate_tables(12, seed=3)
    for name, table in expected.items():
        assert book.table(name).num_rows == rows[name], name
        assert book.table(name).equals(table), name
    assert book.as_of == synth.AS_OF


def test_rclone_server_serves_ranged_reads(rclone_s3_server):
    """Parquet readers fetch byte ranges: a range reads back exactly (see the fixture's checksum note)."""
    s3fs = pytest.importorskip("s3fs")
    fs = s3fs.S3FileSystem(**rclone_s3_server, skip_instance_cache=True)
    data = bytes(range(256)) * 4096
    fs.pipe("canopy-test/fixture/ranged.bin", data)
    assert fs.cat_file("canopy-test/fixture/ranged.bin", start=1000, end=9000) == data[1000:9000]


def test_rclone_server_refuses_a_wrong_secret(rclone_s3_server):
    s3fs = pytest.importorskip("s3fs")
    wrong = {**rclone_s3_server, "secret": "not-the-secret", "skip_instance_cache": True}
    with pytest.raises(PermissionError):
        s3fs.S3FileSystem(**wrong).ls("canopy-test")


def test_nightly_on_s3_matches_local_run(s3, request, local_run):
    _, local_tables, _ = local_run
    prefix = f"s3://canopy-test/nightly-{request.node.callspec.id}"
    book_uri, out = f"{prefix}/book", f"{prefix}/runs"
    synth.generate(book_uri, ACCOUNTS, SEED, storage_options=s3)

    manifest = _run_nightly(book_uri, out, storage_options=s3)

    book = read_book(book_uri, storage_options=s3)
    assert committed(out, book.as_of, storage_options=s3)
    s3fs = pytest.importorskip("s3fs")
    final = run_path(out.removeprefix("s3://"), book.as_of)
    names = {path.rsplit("/", 1)[-1] for path in s3fs.S3FileSystem(**s3).ls(final, refresh=True)}
    assert {"_SUCCESS", "manifest.json", "trades", "accounts", "rejections"} <= names

    tables, written = read_run(out, book.as_of, storage_options=s3)
    assert written["run_id"] == manifest["run_id"]
    assert written["rows"] == {name: table.num_rows for name, table in tables.items()}

    accounts = tables["accounts"]
    book_ids = book.accounts.column(Col.account_id).to_pylist()
    assert sorted(accounts.column(Col.account_id).to_pylist()) == sorted(book_ids)  # one row each
    assert accounts.num_rows == len(set(book_ids)) == ACCOUNTS

    violations = check_run(book.tables, book.as_of, tables, book.rejected)
    assert violations.num_rows == 0, violations.to_pylist()[:10]

    assert tables["trades"].num_rows > 0
    assert _trades(tables["trades"]).equals(_trades(local_tables["trades"]))
    keys = [Col.account_id]
    assert _sorted(accounts, keys).equals(_sorted(local_tables["accounts"], keys))
    assert pc.all(pc.equal(accounts.column(Col.as_of), pa.scalar(book.as_of))).as_py()
