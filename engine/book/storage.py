"""Reading and writing books (docs/contract.md §1) through fsspec.

A book is a folder on any fsspec URI (a plain path, ``file://``,
``memory://``, ``s3://``) holding ``book.json`` and one Parquet dataset per
table, and optionally ``customizations/``, the advisor portal's saved changes
(a Delta Lake table, :mod:`engine.book.customizations`), which :func:`read_book`
lays over the tables it reads.  :func:`read_book` reads every table with :mod:`pyarrow.dataset`,
casts it safely to the contract's schema and validates it
(:mod:`engine.book.validate`): whole-book problems raise :class:`BookError`,
account-level problems become rows of the ``rejections`` table.

:class:`BookWriter` writes a book one part file at a time, so a generator
never holds a large book in memory.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Collection, Mapping

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from engine.book.customizations import apply_saved, read_saved
from engine.book.files import filesystem
from engine.contract import schema
from engine.contract.config import PolicyConfig
from engine.contract.errors import BookError, ConfigError
from engine.contract.schema import Col

BOOK_JSON = "book.json"


@dataclass(frozen=True)
class Book:
    """A validated book.

    Every table is conformed to its schema in :data:`engine.contract.schema.BOOK_TABLES`.
    ``rejections`` lists what was wrong with single accounts; ``rejected`` is
    the set of those of the book's accounts: they get no trades, the others are usable.
    """

    uri: str
    as_of: dt.date
    base_currency: str
    securities: pa.Table
    factor_exposures: pa.Table
    factor_covariance: pa.Table
    models: pa.Table
    templates: pa.Table
    accounts: pa.Table
    restrictions: pa.Table
    allocations: pa.Table
    lots: pa.Table
    transactions: pa.Table
    substitutes: pa.Table
    rejections: pa.Table
    rejected: frozenset[str] = frozenset()
    fingerprints: Mapping[str, str] = field(default_factory=dict)

    def table(self, name: str) -> pa.Table:
        """The book table called ``name`` (a key of ``schema.BOOK_TABLES``)."""
        return getattr(self, name)

    @property
    def tables(self) -> dict[str, pa.Table]:
        return {name: self.table(name) for name in schema.BOOK_TABLES}


#: The business dates a book may have (``as_of``): date arithmetic of the engine (price staleness,
#: wash-sale windows, holding periods) stays within Python's dates for these years.
AS_OF_YEARS = (1900, 2199)


def _read_meta(fs, root: str, uri: str) -> dict:
    """``book.json``, checked: a JSON object with ``schema_version`` an integer of
    :data:`~engine.contract.schema.SUPPORTED_VERSIONS`, ``as_of`` a ``YYYY-MM-DD`` string
    (parsed to a date within :data:`AS_OF_YEARS`) and ``base_currency`` USD (default)."""
    path = f"{root.rstrip('/')}/{BOOK_JSON}"
    try:
        with fs.open(path, "rb") as fh:
            meta = json.loads(fh.read())
    except FileNotFoundError:
        raise BookError(f"no {BOOK_JSON} in {uri!r}; a book is a folder with {BOOK_JSON} "
                        f"and one Parquet dataset per table") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BookError(f"{BOOK_JSON} in {uri!r} is not valid JSON: {exc}") from None
    except RecursionError:
        raise BookError(f"{BOOK_JSON} in {uri!r} is nested too deeply to read; it must be a flat JSON object "
                        f"like {{\"schema_version\": {schema.SCHEMA_VERSION}, \"as_of\": \"2026-11-20\"}}") from None
    except OSError as exc:
        raise BookError(f"cannot read {BOOK_JSON} in {uri!r} ({type(exc).__name__}: {exc}); it must be a "
                        f"file holding a JSON object") from None
    if not isinstance(meta, dict):
        raise BookError(f"{BOOK_JSON} in {uri!r} must be a JSON object, got {type(meta).__name__}")
    version = meta.get("schema_version")
    if type(version) is not int or version not in schema.SUPPORTED_VERSIONS:
        raise BookError(f"{BOOK_JSON}: schema_version {version!r} is not supported; expected "
                        f"{' or '.join(map(str, schema.SUPPORTED_VERSIONS))} (an integer)")
    meta[Col.as_of] = _as_of(meta.get(Col.as_of))
    currency = meta.get("base_currency", "USD")
    if currency != "USD":
        raise BookError(f"{BOOK_JSON}: base_currency {currency!r} is not supported; expected USD")
    return meta


def _as_of(value: Any) -> dt.date:
    """The book's business date from ``book.json``'s ``as_of``: a string ``YYYY-MM-DD`` within
    :data:`AS_OF_YEARS`; anything else raises :class:`BookError`."""
    try:
        if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            raise ValueError(value)
        date = dt.date.fromisoformat(value)
    except ValueError:
        raise BookError(f"{BOOK_JSON}: as_of must be a date like \"2026-11-20\", got {value!r}") from None
    first, last = AS_OF_YEARS
    if not first <= date.year <= last:
        raise BookError(f"{BOOK_JSON}: as_of {value} is outside the years {first} to {last} a book may have")
    return date


def _read_optional(fs, root: str, name: str, uri: str, version: int) -> tuple[pa.Table, str]:
    """A table a later contract version added (:data:`~engine.contract.schema.TABLE_SINCE`):
    empty where its folder is absent, refused in a book of an earlier ``schema_version``."""
    since = schema.TABLE_SINCE[name]
    present = fs.isdir(f"{root.rstrip('/')}/{name}")
    if present and version < since:
        raise BookError(f"table folder {name}/ belongs to contract version {since}, but {BOOK_JSON} says "
                        f"schema_version {version}; set schema_version to {since} or remove the folder", table=name)
    if not present:
        return schema.empty(schema.BOOK_TABLES[name]), ""
    return _read_table(fs, root, name, uri)


def _read_table(fs, root: str, name: str, uri: str, where: ds.Expression | None = None) -> tuple[pa.Table, str]:
    """One table of the book, conformed to its schema, and its fingerprint (of all its files).

    ``where`` filters the rows as they are read, where the files' columns have the types it
    names (else the table is read whole, for :func:`~engine.contract.schema.conform` to say
    what is wrong with it, and the caller filters).

    Any unexpected error in reading it (short of running out of memory or an interrupt) becomes a
    :class:`BookError` naming the table and its files, the original as its ``__cause__``.
    """
    path = f"{root.rstrip('/')}/{name}"
    files: list[str] = []
    try:
        if not fs.isdir(path):
            raise BookError(f"missing table folder {name}/ in {uri!r}", table=name)
        files = sorted(info["name"] for info in fs.find(path, detail=True).values()
                       if info["name"].endswith(".parquet"))
        if not files:
            raise BookError(f"table folder {name}/ holds no .parquet files", table=name)
        try:
            dataset = ds.dataset(files, format="parquet", filesystem=fs)
            table = dataset.to_table(filter=where if _filterable(dataset.schema) else None)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OSError) as exc:
            raise BookError(f"unreadable Parquet dataset in {_files_in_words(files)}: {exc}; every part file "
                            f"of a table must be Parquet with the table's columns and types", table=name) from None
        digest = hashlib.sha256()
        for file in files:
            info = fs.info(file)
            digest.update(f"{file.rsplit('/', 1)[-1]}:{info.get('size')}:"
                          f"{info.get('ETag') or info.get('etag') or info.get('mtime') or ''}".encode())
        return schema.conform(table, schema.BOOK_TABLES[name], name=name), digest.hexdigest()[:16]
    except (BookError, MemoryError):
        raise
    except Exception as exc:
        raise BookError(f"unexpected {type(exc).__name__} reading {_files_in_words(files) if files else path}: "
                        f"{exc}", table=name) from exc


def _filterable(found: pa.Schema) -> bool:
    """Whether a dataset of schema ``found`` can be filtered by ``account_id`` as it is read."""
    index = found.get_field_index(Col.account_id)
    return index >= 0 and pa.types.is_string(found.field(index).type)


def _files_in_words(files: list[str], show: int = 3) -> str:
    """The part files ``files`` named for a message: the first ``show`` and how many more."""
    names = ", ".join(files[:show])
    return f"{names} (and {len(files) - show} more)" if len(files) > show else names


def read_book(uri: str, policy: PolicyConfig | None = None,
              storage_options: Mapping[str, Any] | None = None, *, saved: bool = True,
              households_of: Collection[str] | None = None) -> Book:
    """Read and validate the book at ``uri``.

    With ``saved`` (the default) the book's saved customizations (``customizations/``) are laid
    over its tables first; the advisor portal reads without them to lay them itself.

    With ``households_of``, only the households of those accounts are read: the shared tables
    whole, the ``accounts`` table's member rows, and of the other account tables only the rows
    of those members (a filter on ``account_id`` that skips the part files and row groups whose
    statistics rule them out).  This is what a question about one account needs: on the
    100,000-account book it reads in well under a second what the whole book reads in about
    20.  Validation then sees those rows only: a problem in another account's rows, which
    would refuse the whole book at night, goes unseen (``canopy validate`` checks the whole
    book).  An account not in the book reads no account rows.

    Raises
    ------
    BookError
        For a problem with the whole book; nothing is usable then.
    """
    policy = policy or PolicyConfig()
    fs, root = filesystem(uri, storage_options)
    meta = _read_meta(fs, root, uri)
    found = read_saved(uri, storage_options) if saved else None
    tables, fingerprints, members = {}, {}, None
    for name in schema.BOOK_TABLES:
        where = None
        if members is not None and name in schema.ACCOUNT_TABLES:
            where = pc.field(Col.account_id).isin(members)
        tables[name], fingerprints[name] = (
            _read_optional(fs, root, name, uri, meta["schema_version"]) if name in schema.TABLE_SINCE
            else _read_table(fs, root, name, uri, where))
        if name == "accounts" and households_of is not None:
            members = pa.array(sorted(_household_members(tables["accounts"], found, households_of)), pa.string())
    if found is not None:
        fingerprints["customizations"] = f"delta-v{found[1]}"
        tables = apply_saved(tables, found[0])
    if members is not None:
        tables.update({name: tables[name].filter(pc.is_in(tables[name].column(Col.account_id), value_set=members))
                       for name in schema.ACCOUNT_TABLES})
    return book_from_tables(uri, meta[Col.as_of], tables, policy, fingerprints,
                            base_currency=meta.get("base_currency", "USD"))


def _household_members(accounts: pa.Table, found: tuple[pa.Table, int] | None,
                       account_ids: Collection[str]) -> set[str]:
    """The accounts of the households of ``account_ids``, those the portal created among them
    (in the saved customizations ``found``) included."""
    if found is not None:
        empty = {name: schema.empty(schema.BOOK_TABLES[name]) for name in schema.ACCOUNT_TABLES}
        accounts = apply_saved({**empty, "accounts": accounts}, found[0])["accounts"]
    ids = accounts.column(Col.account_id).to_pylist()
    households = pc.coalesce(accounts.column(Col.household_id), accounts.column(Col.account_id)).to_pylist()
    asked = set(account_ids)
    wanted = {h for a, h in zip(ids, households) if a in asked}
    return {a for a, h in zip(ids, households) if h in wanted}


def book_from_tables(uri: str, as_of: dt.date, tables: Mapping[str, pa.Table], policy: PolicyConfig,
                     fingerprints: Mapping[str, str] | None = None, *, base_currency: str = "USD") -> Book:
    """A :class:`Book` of conformed ``tables``, validated: its rejections and rejected accounts.

    Raises
    ------
    BookError
        For a whole-book problem.
    """
    from engine.book.validate import validate  # validate imports Book's tables only

    rejections = validate(tables, as_of, policy)
    # the book's own accounts: a lot or a recent trade of an account not in the book names no account to reject
    in_book = set(tables["accounts"].column(Col.account_id).to_pylist())
    rejected = frozenset(a for a in rejections.column(Col.account_id).to_pylist() if a in in_book)
    return Book(uri=str(uri), as_of=as_of, base_currency=base_currency, rejections=rejections, rejected=rejected,
                fingerprints=dict(fingerprints or {}), **tables)


class BookWriter:
    """Write a book one part file at a time.

    >>> with BookWriter("memory://book", as_of=dt.date(2026, 11, 20)) as writer:
    ...     writer.write("securities", securities_table)   # doctest: +SKIP

    Each :meth:`write` conforms the table to its schema and writes it as the
    next ``part-NNNNN.parquet`` of the table's folder.  ``book.json`` is
    written last, on a clean exit, so a book is never read half-written.
    Tables that received no rows are written empty.
    """

    def __init__(self, uri: str, as_of: dt.date, *, storage_options: Mapping[str, Any] | None = None,
                 overwrite: bool = False):
        self.uri = str(uri)
        self.as_of = as_of
        self.fs, self.root = filesystem(self.uri, storage_options)
        self.root = self.root.rstrip("/")
        if self.fs.exists(f"{self.root}/{BOOK_JSON}") and not overwrite:
            raise BookError(f"a book already exists at {self.uri!r}; choose another folder "
                            f"or remove it first")
        if overwrite and self.fs.exists(self.root):
            self.fs.rm(self.root, recursive=True)
        self._parts = {name: 0 for name in schema.BOOK_TABLES}
        self.rows = {name: 0 for name in schema.BOOK_TABLES}

    def write(self, name: str, table: pa.Table) -> None:
        if name not in schema.BOOK_TABLES:
            raise BookError(f"unknown table {name!r}; expected one of {', '.join(schema.BOOK_TABLES)}")
        table = schema.conform(table, schema.BOOK_TABLES[name], name=name)
        path = f"{self.root}/{name}/part-{self._parts[name]:05d}.parquet"
        self.fs.makedirs(f"{self.root}/{name}", exist_ok=True)
        with self.fs.open(path, "wb") as fh:
            pq.write_table(table, fh, compression="zstd")
        self._parts[name] += 1
        self.rows[name] += table.num_rows

    def close(self) -> None:
        for name, parts in self._parts.items():
            if parts == 0:
                self.write(name, schema.empty(schema.BOOK_TABLES[name]))
        meta = {"schema_version": schema.SCHEMA_VERSION, Col.as_of: self.as_of.isoformat(),
                "base_currency": "USD"}
        with self.fs.open(f"{self.root}/{BOOK_JSON}", "wb") as fh:
            fh.write(json.dumps(meta, indent=2).encode())

    def __enter__(self) -> "BookWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()


def write_book(uri: str, as_of: dt.date, tables: Mapping[str, pa.Table], *,
               storage_options: Mapping[str, Any] | None = None, overwrite: bool = False) -> None:
    """Write a whole book from in-memory tables (small books, tests)."""
    with BookWriter(uri, as_of, storage_options=storage_options, overwrite=overwrite) as writer:
        for name, table in tables.items():
            writer.write(name, table)


def storage_options_from(text: str | None) -> dict[str, Any] | None:
    """fsspec options from the JSON text of a ``--storage-options`` option (None: none)."""
    if not text:
        return None
    try:
        options = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--storage-options is not valid JSON ({exc}); "
                          f"expected an object like {{\"key\": \"...\"}}") from None
    if not isinstance(options, dict):
        raise ConfigError("--storage-options must be a JSON object")
    return options


__all__ = ["Book", "BookWriter", "read_book", "book_from_tables", "write_book", "filesystem", "storage_options_from", "fsspec"]
