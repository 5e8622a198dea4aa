"""Hostile books (issue 29): every damaged book ends in a clear BookError or a clean committed run.

First one test per kind of damage that once ended in a traceback, through the ``canopy``
command as a user meets it; then a property-based fuzz test (Hypothesis) that damages a
small valid book anywhere and asserts the outcome.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from engine.book import storage, synth
from engine.book.runs import read_run
from engine.book.storage import read_book
from engine.cli import app
from engine.contract import schema
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
    # a substitutes table (contract version 2) with rows, for the fuzz test to damage
    pq.write_table(pa.Table.from_pylist([{Col.security_id: "ETF00A", Col.substitute_id: "ETF00S"},
                                         {Col.security_id: "ETF03A", Col.substitute_id: "ETF03S"}],
                                        schema=schema.SUBSTITUTES), path / "substitutes" / "part-00000.parquet")
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


META = {"schema_version": schema.SCHEMA_VERSION, "as_of": "2026-11-20"}

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


def test_a_cash_cap_below_the_cash_floor_rejects_the_account(clean_book, tmp_path):
    """max_cash < min_cash: rules 4 and 5 cannot both hold (found by the fuzz test)."""
    book = copy_of(clean_book, tmp_path)
    accounts = pq.read_table(sorted((book / "accounts").glob("*.parquet"))[0])
    min_cash = accounts.column(Col.min_cash).to_pylist()
    row = next(i for i, v in enumerate(min_cash) if v)
    max_cash = accounts.column(Col.max_cash).to_pylist()
    max_cash[row] = min_cash[row] / 2
    set_column(book, "accounts", Col.max_cash, max_cash)
    source = read_book(str(book))
    account_id = accounts.column(Col.account_id)[row].as_py()
    assert source.rejected == {account_id}
    assert "below min_cash" in source.rejections.column(Col.message)[0].as_py()


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



# --------------------------------------------------------------------------
# The fuzz test (issue 29 item 4): Hypothesis damages the clean book anywhere

#: Mutations of one value of a column, by the column's type.
VALUE_MUTATIONS = {
    "float": ("null", "nan", "+inf", "-inf", "negate", "times 1e300", "zero"),
    "int": ("null", "negate", "zero"),
    "string": ("null", "empty string"),
    "date": ("null", "far past", "far future"),
    "list": ("null", "null element", "empty string element"),
    "bool": ("null", "flip"),
}
#: Mutations of a whole column or table.
COLUMN_MUTATIONS = ("drop column", "extra column", "to string")
TABLE_MUTATIONS = ("duplicate a row", "drop all rows", "drop the table", "extra part file", "garbage part file")
#: Damages of book.json.
META_MUTATIONS = ("missing schema_version", "missing as_of", "schema_version a string", "as_of a number",
                  "as_of far past", "as_of far future", "not JSON", "not an object", "extra key",
                  "schema_version 1 with a substitutes table")

FAR_PAST, FAR_FUTURE = dt.date(1000, 1, 1), dt.date(2900, 1, 1)

#: Per kind of damage (its mutation), how the fuzz tests' cases ended: {(mutation, outcome): count}.
OUTCOMES: collections.Counter = collections.Counter()


def _kind(type_: pa.DataType) -> str:
    for kind, test in (("float", pa.types.is_floating), ("int", pa.types.is_integer), ("string", pa.types.is_string),
                       ("date", pa.types.is_date), ("list", pa.types.is_list), ("bool", pa.types.is_boolean)):
        if test(type_):
            return kind
    raise AssertionError(type_)


def all_damages() -> list[tuple[str, str | None, str]]:
    """Every (table, column, mutation) the fuzz test may choose; book.json's column is its key."""
    damages = []
    for name, table_schema in schema.BOOK_TABLES.items():
        for field in table_schema:
            damages += [(name, field.name, m) for m in VALUE_MUTATIONS[_kind(field.type)] + COLUMN_MUTATIONS]
        damages += [(name, None, m) for m in TABLE_MUTATIONS]
    return damages + [("book.json", None, m) for m in META_MUTATIONS]


DAMAGES = all_damages()


def _mutate_value(value, mutation: str):
    return {"null": lambda v: None, "nan": lambda v: float("nan"), "+inf": lambda v: float("inf"),
            "-inf": lambda v: float("-inf"), "negate": lambda v: None if v is None else -v,
            "times 1e300": lambda v: None if v is None else v * 1e300, "zero": lambda v: 0,
            "empty string": lambda v: "", "far past": lambda v: FAR_PAST, "far future": lambda v: FAR_FUTURE,
            "null element": lambda v: (v or []) + [None], "empty string element": lambda v: (v or []) + [""],
            "flip": lambda v: None if v is None else not v}[mutation](value)


def damage_table(table: pa.Table, column: str | None, mutation: str, row: int) -> pa.Table | None:
    """``table`` damaged; None to remove the table's folder."""
    if mutation == "duplicate a row":
        return pa.concat_tables([table, table.slice(row, 1)]) if table.num_rows else table
    if mutation == "drop all rows":
        return table.slice(0, 0)
    if mutation == "drop the table":
        return None
    if mutation == "drop column":
        return table.drop_columns([column])
    if mutation == "extra column":
        return table.append_column(f"{column}_extra", table.column(column))
    index = table.schema.get_field_index(column)
    if mutation == "to string":
        values = [None if v is None else str(v) for v in table.column(column).to_pylist()]
        return table.set_column(index, pa.field(column, pa.string()), pa.array(values, pa.string()))
    if not table.num_rows:
        return table
    values = table.column(column).to_pylist()
    values[row] = _mutate_value(values[row], mutation)
    return table.set_column(index, pa.field(column, table.schema.field(column).type),
                            pa.array(values, table.schema.field(column).type))


def damaged_book(clean: Path, tables: dict[str, pa.Table], folder: Path, damage: tuple, row_draw: int) -> Path:
    """A copy of the clean book with ``damage`` (table, column, mutation) done to row ``row_draw`` (mod rows)."""
    name, column, mutation = damage
    book = folder / "book"
    shutil.copytree(clean, book)
    if name == "book.json":
        meta = {"schema_version": schema.SCHEMA_VERSION, "as_of": synth.AS_OF.isoformat(), "base_currency": "USD"}
        text = {"missing schema_version": lambda: json.dumps({k: v for k, v in meta.items() if k != "schema_version"}),
                "missing as_of": lambda: json.dumps({k: v for k, v in meta.items() if k != "as_of"}),
                "schema_version a string": lambda: json.dumps({**meta, "schema_version": "1"}),
                "schema_version 1 with a substitutes table": lambda: json.dumps({**meta, "schema_version": 1}),
                "as_of a number": lambda: json.dumps({**meta, "as_of": 20261120}),
                "as_of far past": lambda: json.dumps({**meta, "as_of": "1900-01-02"}),
                "as_of far future": lambda: json.dumps({**meta, "as_of": "2199-12-30"}),
                "not JSON": lambda: "{\"schema_version\": 1,",
                "not an object": lambda: json.dumps([meta]),
                "extra key": lambda: json.dumps({**meta, "comment": {"nested": [1, 2]}})}[mutation]()
        (book / "book.json").write_text(text)
        return book
    folder_of_table = book / name
    parts = sorted(folder_of_table.glob("*.parquet"))
    if mutation == "extra part file":
        shutil.copy(parts[0], folder_of_table / "part-99999.parquet")
        return book
    if mutation == "garbage part file":
        (folder_of_table / "part-99999.parquet").write_bytes(b"PAR1 but not really")
        return book
    table = tables[name]
    damaged = damage_table(table, column, mutation, row_draw % max(table.num_rows, 1))
    shutil.rmtree(folder_of_table)
    if damaged is not None:
        folder_of_table.mkdir()
        pq.write_table(damaged, folder_of_table / "part-00000.parquet")
    return book


def fuzz_outcome(clean: Path, tables: dict[str, pa.Table], shape, damage: tuple, row_draw: int) -> str:
    """Damage a copy of the book, read it and, unless that is a BookError, run it and check the run.

    Returns ``"BookError"`` or ``"clean run"``; any other ending fails the test.
    """
    with tempfile.TemporaryDirectory() as folder:
        book = damaged_book(clean, tables, Path(folder), damage, row_draw)
        try:
            source = read_book(str(book))
        except BookError as exc:
            assert str(exc).strip(), damage
            assert exc.table is not None or "book.json" in str(exc), (damage, str(exc))
            return "BookError"
        out = Path(folder) / "runs"
        try:
            solve_locally(str(book), str(out), **shape)
        except BookError as exc:      # targets may find a whole-book problem the rules leave to them
            assert exc.table is not None, (damage, str(exc))
            return "BookError"
        runs, _ = read_run(str(out), source.as_of)
        assert runs["accounts"].num_rows == source.accounts.num_rows, damage
        violations = check_run(source.tables, source.as_of, runs, source.rejected)
        assert violations.num_rows == 0, (damage, violations.slice(0, 5).to_pylist())
        return "clean run"


@pytest.fixture(scope="module")
def fuzz_setup(clean_book):
    """The clean book's tables as stored, and the padding every fuzz case solves at (one compile)."""
    from engine.rebalance.shards import household_ids, household_transactions, plan_shards
    from engine.rebalance.targets import build_targets

    source = read_book(str(clean_book))
    tables = {name: pq.read_table(sorted((clean_book / name).glob("*.parquet"))[0]) for name in schema.BOOK_TABLES}
    targets = build_targets(source)
    usable = targets.account_ids[targets.usable]
    plan = plan_shards(household_transactions(source.tables, usable), targets, usable)
    shape = tuple(int(max(s.shape[k] for s in plan)) for k in range(3))
    household_of = dict(zip(source.accounts.column(Col.account_id).to_pylist(),
                            household_ids(source.accounts, source.accounts.column(Col.account_id).to_pylist())))
    lots = max(collections.Counter(household_of.get(a) for a in source.lots.column(Col.account_id).to_pylist())
               .values())                # P: the most lots of a household
    return tables, dict(shape=shape, households=sum(s.households for s in plan), lots=lots)


def run_fuzz(clean_book: Path, fuzz_setup, examples: int, derandomize: bool) -> collections.Counter:
    tables, shape = fuzz_setup
    seen: collections.Counter = collections.Counter()

    @settings(max_examples=examples, deadline=None, database=None, derandomize=derandomize,
              suppress_health_check=list(HealthCheck))
    @given(damage=st.sampled_from(DAMAGES), row_draw=st.integers(0, 10_000))
    @example(damage=("accounts", "max_cash", "zero"), row_draw=9)       # found: a cap below the floor
    @example(damage=("accounts", None, "drop all rows"), row_draw=0)    # found: a book without accounts
    def one_case(damage, row_draw):
        outcome = fuzz_outcome(clean_book, tables, shape, damage, row_draw)
        seen[(damage[2], outcome)] += 1
        OUTCOMES[(damage[2], outcome)] += 1

    one_case()
    return seen


def _print_outcomes(seen: collections.Counter) -> None:
    by_outcome = collections.Counter()
    for (_, outcome), count in seen.items():
        by_outcome[outcome] += count
    print(f"\nfuzz: {sum(seen.values())} cases: {dict(by_outcome)}")
    for mutation in sorted({m for m, _ in seen}):
        print(f"  {mutation:24s} " + ", ".join(f"{o} {seen[(mutation, o)]}" for o in ("BookError", "clean run")
                                                if seen[(mutation, o)]))


def test_fuzz_damaged_books_end_in_a_book_error_or_a_clean_run(clean_book, fuzz_setup):
    """A small, reproducible budget for ``make test``."""
    _print_outcomes(run_fuzz(clean_book, fuzz_setup, examples=25, derandomize=True))


@pytest.mark.slow
def test_fuzz_damaged_books_long(clean_book, fuzz_setup):
    """The long budget, run on purpose: ``pytest -m slow tests/test_hostile.py -s``."""
    _print_outcomes(run_fuzz(clean_book, fuzz_setup, examples=400, derandomize=False))


def _household_rows(book, members: list[str]) -> dict[str, pa.Table]:
    value_set = pa.array(members, pa.string())
    return {name: book.table(name).filter(pc.is_in(book.table(name).column(Col.account_id), value_set=value_set))
            for name in schema.ACCOUNT_TABLES}


def test_fuzz_a_household_read_of_a_damaged_book_is_the_whole_reads_household_or_a_book_error(clean_book,
                                                                                             fuzz_setup):
    """``read_book(households_of=)`` (what ``canopy whatif`` reads) on generated damage: where the whole book
    reads, the household read gives the whole read's rows and rejections of the household; where the whole
    book is a BookError, the household read is one too, or reads a household the damage is not in."""
    tables, _ = fuzz_setup
    ids = tables["accounts"].column(Col.account_id).to_pylist()
    seen: collections.Counter = collections.Counter()

    @settings(max_examples=40, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(damage=st.sampled_from(DAMAGES), row_draw=st.integers(0, 10_000), asked=st.sampled_from(ids))
    def one_case(damage, row_draw, asked):
        with tempfile.TemporaryDirectory() as folder:
            book = damaged_book(clean_book, tables, Path(folder), damage, row_draw)
            try:
                whole = read_book(str(book))
            except BookError:
                whole = None
            try:
                scoped = read_book(str(book), households_of=[asked])
            except BookError as exc:
                assert whole is None, (damage, str(exc))
                seen["both a BookError"] += 1
                return
            if whole is None:
                seen["the household read, the whole book a BookError"] += 1
                return
            accounts = whole.accounts.column(Col.account_id).to_pylist()
            household_ids = whole.accounts.column(Col.household_id).to_pylist()
            households = [a if h is None else h for a, h in zip(accounts, household_ids)]
            mine = {h for a, h in zip(accounts, households) if a == asked}
            members = [a for a, h in zip(accounts, households) if h in mine]
            assert sorted(scoped.accounts.column(Col.account_id).to_pylist()) == sorted(members), damage
            expected = _household_rows(whole, members)
            for name in schema.ACCOUNT_TABLES:
                assert scoped.table(name).equals(expected[name]), (damage, name)
            rejections = whole.rejections.filter(pc.is_in(whole.rejections.column(Col.account_id),
                                                          value_set=pa.array(members, pa.string())))
            assert scoped.rejections.equals(rejections), damage
            seen["equal"] += 1

    one_case()
    print(f"\nhousehold reads of damaged books: {dict(seen)}")
    assert seen["equal"] > 0
