"""Hostile books (issue 29): every damaged book ends in a clear BookError or a clean committed run.

First one test per kind of damage that once ended in a traceback, through the ``canopy``
command as a user meets it; then a property-based fuzz test (Hypothesis) that damages a
small valid book anywhere and asserts the outcome.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from engine.book import storage, synth
from engine.book.runs import read_run
from engine.book.storage import read_book
from engine.cli import app
from engine.contract.errors import BookError
from engine.contract.schema import Col, Status
from engine.review.check import check_run
from tests.conftest import solve_locally

runner = CliRunner()

ACCOUNTS = 12


@pytest.fixture(scope="module")
def clean_book(tmp_path_factory) -> Path:
    """A small valid book with no planted problems (copy it before damaging it)."""
    path = tmp_path_factory.mktemp("hostile") / "book"
    synth.generate(str(path), ACCOUNTS, seed=1, bad_fraction=0.0)
    return path


def copy_of(book: Path, tmp_path: Path, name: str = "damaged") -> Path:
    target = tmp_path / name
    shutil.copytree(book, target)
    return target


def set_column(book: Path, table: str, column: str, values, part: int = 0) -> None:
    """Replace ``column`` of one part file of ``table`` by ``values`` (a list or an Arrow array)."""
    path = sorted((book / table).glob("*.parquet"))[part]
    data = pq.read_table(path)
    index = data.schema.get_field_index(column)
    array = values if isinstance(values, pa.Array) else pa.array(values, data.schema.field(column).type)
    pq.write_table(data.set_column(index, pa.field(column, array.type), array), path)


def validate_cli(book: Path):
    return runner.invoke(app, ["validate", "--book", str(book)])


def assert_book_error(result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "BookError" in result.output or "SchemaError" in result.output, result.output
    assert_says(result, *words)


def assert_says(result, *words: str) -> None:
    """Each of ``words`` is in the command's output (rich wraps lines: whitespace is ignored)."""
    printed = "".join(result.output.split())
    for word in words:
        assert "".join(word.split()) in printed, (word, result.output)


# --------------------------------------------------------------------------
# book.json

def _write_meta(text: str):
    return lambda book: (book / "book.json").write_text(text)


def _directory(book: Path) -> None:
    (book / "book.json").unlink()
    (book / "book.json").mkdir()


META = {"schema_version": 1, "as_of": "2026-11-20"}

BOOK_JSON_DAMAGE = {
    "a directory": (_directory, "cannot read book.json"),
    "nested arrays": (_write_meta("[" * 100_000 + "]" * 100_000), "nested too deeply"),
    "nested objects": (_write_meta('{"a":' * 100_000 + "1" + "}" * 100_000), "nested too deeply"),
    "not an object": (_write_meta("[1, 2]"), "must be a JSON object"),
    "not JSON": (_write_meta("{schema_version: 1"), "not valid JSON"),
    "a string schema_version": (_write_meta(json.dumps({**META, "schema_version": "1"})), "schema_version"),
    "a boolean schema_version": (_write_meta(json.dumps({**META, "schema_version": True})), "schema_version"),
    "a float schema_version": (_write_meta(json.dumps({**META, "schema_version": 1.0})), "schema_version"),
    "a numeric as_of": (_write_meta(json.dumps({**META, "as_of": 20261120})), "as_of must be a date"),
    "a compact as_of": (_write_meta(json.dumps({**META, "as_of": "20261120"})), "as_of must be a date"),
    "a null as_of": (_write_meta(json.dumps({**META, "as_of": None})), "as_of must be a date"),
    "the first as_of": (_write_meta(json.dumps({**META, "as_of": "0001-01-01"})), "outside the years"),
    "the last as_of": (_write_meta(json.dumps({**META, "as_of": "9999-12-31"})), "outside the years"),
}


@pytest.mark.parametrize("kind", sorted(BOOK_JSON_DAMAGE))
def test_damaged_book_json_is_a_book_error(clean_book, tmp_path, kind):
    damage, words = BOOK_JSON_DAMAGE[kind]
    book = copy_of(clean_book, tmp_path)
    damage(book)
    assert_book_error(validate_cli(book), "book.json", words)


# --------------------------------------------------------------------------
# Tables

def _split(book: Path, table: str, rows: int = 3) -> None:
    """Split ``table``'s one part file in two: its first ``rows`` rows, and the rest."""
    path = sorted((book / table).glob("*.parquet"))[0]
    data = pq.read_table(path)
    path.unlink()
    pq.write_table(data.slice(0, rows), book / table / "part-00000.parquet")
    pq.write_table(data.slice(rows), book / table / "part-00001.parquet")


@pytest.mark.parametrize("column, values", [
    ("price", lambda n: pa.array(["x"] * n)),
    ("price", lambda n: pa.array([[1.0]] * n)),
    ("tags", lambda n: pa.array(["tag"] * n)),
    ("price_date", lambda n: pa.array(["yesterday"] * n)),
])
def test_part_files_of_incompatible_types_are_a_book_error(clean_book, tmp_path, column, values):
    book = copy_of(clean_book, tmp_path)
    _split(book, "securities")
    rows = pq.read_metadata(book / "securities" / "part-00001.parquet").num_rows
    set_column(book, "securities", column, values(rows), part=1)
    assert_book_error(validate_cli(book), "securities", "part-00000.parquet", "part-00001.parquet")


@pytest.mark.parametrize("table, column", [("securities", "tags"), ("templates", "alternatives")])
def test_a_null_inside_a_list_column_is_a_book_error(clean_book, tmp_path, table, column):
    book = copy_of(clean_book, tmp_path)
    values = pq.read_table(sorted((book / table).glob("*.parquet"))[0]).column(column).to_pylist()
    values[0] = (values[0] or []) + [None]
    set_column(book, table, column, values)
    assert_book_error(validate_cli(book), f"table '{table}'", f"column '{column}'", "null element")


def test_an_unexpected_error_reading_a_table_is_a_book_error_that_says_where(clean_book, monkeypatch):
    def broken(table, schema, *, name=None):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(storage.schema, "conform", broken)
    with pytest.raises(BookError, match="securities.*unexpected RuntimeError.*part-00000.parquet.*disk on fire") as info:
        read_book(str(clean_book))
    assert isinstance(info.value.__cause__, RuntimeError)
    for fatal in (MemoryError, KeyboardInterrupt):
        def out_of(table, schema, *, name=None, fatal=fatal):
            raise fatal()
        monkeypatch.setattr(storage.schema, "conform", out_of)
        with pytest.raises(fatal):
            read_book(str(clean_book))


def test_a_garbage_part_file_is_a_book_error(clean_book, tmp_path):
    book = copy_of(clean_book, tmp_path)
    sorted((book / "lots").glob("*.parquet"))[0].write_bytes(b"not parquet")
    assert_book_error(validate_cli(book), "lots", "part-00000.parquet")


# --------------------------------------------------------------------------
# Every account rejected: the run commits, every account rejected

def _null_price_dates(book: Path) -> None:
    set_column(book, "securities", "price_date", [None] * pq.read_metadata(
        sorted((book / "securities").glob("*.parquet"))[0]).num_rows)


EVERY_ACCOUNT_REJECTED = {
    "as_of far in the past": _write_meta(json.dumps({**META, "as_of": "1900-01-01"})),
    "as_of far in the future": _write_meta(json.dumps({**META, "as_of": "2199-12-31"})),
    "no price dates": _null_price_dates,
}


@pytest.mark.parametrize("kind", sorted(EVERY_ACCOUNT_REJECTED))
def test_a_book_of_rejected_accounts_commits_a_run_of_rejections(clean_book, tmp_path, kind):
    book = copy_of(clean_book, tmp_path)
    EVERY_ACCOUNT_REJECTED[kind](book)
    result = validate_cli(book)
    assert result.exit_code == 0, result.output
    assert_says(result, f"0 of {ACCOUNTS} accounts usable; {ACCOUNTS} rejected")
    out = tmp_path / "runs"
    solve_locally(str(book), str(out))
    source = read_book(str(book))
    tables, _ = read_run(str(out), source.as_of)
    assert tables["trades"].num_rows == 0
    assert set(tables["accounts"].column(Col.status).to_pylist()) == {Status.rejected}
    assert check_run(source.tables, source.as_of, tables, source.rejected).num_rows == 0
    result = runner.invoke(app, ["check", "--book", str(book), "--run", str(out)])
    assert result.exit_code == 0, result.output


class _NoActors:
    """A dispatcher for a night with nothing to solve: it must be given no work."""

    size = started = 0

    def run(self, work, on_result):
        assert not list(work), "an all-rejected book gave the actors work"
        return []

    def shutdown(self) -> None:
        pass


def test_the_nightly_job_commits_a_book_of_rejected_accounts(clean_book, tmp_path):
    """The job's own stages after read (targets, plan, write, manifest) on zero shards, without Ray's actors."""
    from engine.actors import nightly
    from engine.book.runs import RunWriter
    from engine.contract.config import Config

    book = copy_of(clean_book, tmp_path)
    _null_price_dates(book)
    loaded = read_book(str(book))
    out = str(tmp_path / "runs")
    manifest = nightly._solve_and_write(loaded, RunWriter(out, loaded.as_of), Config(), {}, False, None,
                                        _NoActors())
    assert manifest["counts"][Status.rejected] == ACCOUNTS and manifest["shards"]["count"] == 0
    tables, _ = read_run(out, loaded.as_of)
    assert tables["trades"].num_rows == 0
    assert check_run(loaded.tables, loaded.as_of, tables, loaded.rejected).num_rows == 0


# --------------------------------------------------------------------------
# The other commands answer a damaged book with the same one line

def test_check_and_whatif_answer_a_damaged_book_with_a_book_error(clean_book, tmp_path):
    book = copy_of(clean_book, tmp_path)
    _directory(book)
    result = runner.invoke(app, ["check", "--book", str(book), "--run", str(tmp_path / "runs")])
    assert_book_error(result, "book.json")
    result = runner.invoke(app, ["whatif", "--book", str(book), "--account", "A000000"])
    assert_book_error(result, "book.json")
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------
# canopy validate's summary

def test_validate_counts_rejected_accounts_of_the_book_only(clean_book, tmp_path):
    book = copy_of(clean_book, tmp_path)
    lots = pq.read_table(sorted((book / "lots").glob("*.parquet"))[0])
    ghost = lots.slice(0, 1).set_column(lots.schema.get_field_index(Col.account_id), lots.schema.field(Col.account_id),
                                        pa.array(["GHOST"], pa.string()))
    pq.write_table(ghost, book / "lots" / "part-09999.parquet")
    result = validate_cli(book)
    assert result.exit_code == 0, result.output
    assert_says(result, f"{ACCOUNTS} of {ACCOUNTS} accounts usable; 0 rejected with 1 rejection(s)")


def test_validate_of_a_book_without_accounts_counts_no_rejected_account(clean_book, tmp_path):
    book = copy_of(clean_book, tmp_path)
    accounts = pq.read_table(sorted((book / "accounts").glob("*.parquet"))[0])
    for path in (book / "accounts").glob("*.parquet"):
        path.unlink()
    pq.write_table(accounts.slice(0, 0), book / "accounts" / "part-00000.parquet")
    result = validate_cli(book)
    assert result.exit_code == 0, result.output
    assert_says(result, "0 of 0 accounts usable; 0 rejected")

