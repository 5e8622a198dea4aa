"""Writing proposal runs (docs/contract.md §2) atomically through fsspec.

A run is written under ``OUT/_staging/<run_id>/`` first, one part file at a
time.  :meth:`RunWriter.commit` then writes ``manifest.json`` into the
staging folder, moves the folder to ``OUT/as_of=YYYY-MM-DD/`` and writes
``_SUCCESS`` there last.  Readers trust a run only once ``_SUCCESS`` exists,
so:

* a crash before the commit leaves the staging folder and nothing readers
  would trust, and a run already committed for that date stays as it was;
* a date already committed is not overwritten unless ``replace=True``; then
  the old ``_SUCCESS`` is removed first, so between the two runs readers see
  no trusted run at all, never a mix of old and new files.

Object stores have no atomic rename of a folder; the ``_SUCCESS`` marker is
what makes the switch atomic for readers, on a local disk and on ``s3://``
alike.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import uuid
from typing import Any, Mapping

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from engine.book.storage import filesystem
from engine.contract import schema
from engine.contract.errors import RunError

SUCCESS = "_SUCCESS"
MANIFEST = "manifest.json"
STAGING = "_staging"


def run_path(out: str, as_of: dt.date) -> str:
    """The folder of the run for ``as_of`` under ``out`` (as a path in its filesystem)."""
    return f"{out.rstrip('/')}/as_of={as_of.isoformat()}"


class RunWriter:
    """Write one run's tables to staging, then commit them in one step.

    Parameters
    ----------
    out
        Folder or fsspec URI that holds runs, one ``as_of=`` folder each.
    as_of
        The business date of the run.
    replace
        Replace a run already committed for ``as_of``.
    run_id
        Identifies the run in ``manifest.json`` and names its staging folder.

    Raises
    ------
    RunError
        When a run for ``as_of`` is already committed and ``replace`` is false;
        raised before anything is written.
    """

    def __init__(self, out: str, as_of: dt.date, *, replace: bool = False, run_id: str | None = None,
                 storage_options: Mapping[str, Any] | None = None):
        self.out, self.as_of, self.replace = str(out), as_of, replace
        self.run_id = run_id or uuid.uuid4().hex
        self.fs, root = filesystem(self.out, storage_options)
        self.root = root.rstrip("/")
        self.final = run_path(self.root, as_of)
        self.staging = f"{self.root}/{STAGING}/{self.run_id}"
        if self.fs.exists(f"{self.final}/{SUCCESS}") and not replace:
            raise RunError(f"a run for {as_of} is already committed at {self.out}; "
                           f"pass --replace to replace it, or write to another folder")
        self.rows: dict[str, int] = {name: 0 for name in schema.RUN_TABLES}
        self.files: dict[str, list[dict[str, Any]]] = {name: [] for name in schema.RUN_TABLES}
        self.committed = False

    def write(self, name: str, table: pa.Table) -> None:
        """Conform ``table`` to the run schema ``name`` and stage it as the next part file."""
        if self.committed:
            raise RunError(f"run {self.run_id} is already committed; start a new RunWriter")
        if name not in schema.RUN_TABLES:
            raise RunError(f"unknown run table {name!r}; expected one of {', '.join(schema.RUN_TABLES)}")
        table = schema.conform(table, schema.RUN_TABLES[name], name=name)
        part = f"{name}/part-{len(self.files[name]):05d}.parquet"
        self.fs.makedirs(f"{self.staging}/{name}", exist_ok=True)
        with self.fs.open(f"{self.staging}/{part}", "wb") as fh:
            pq.write_table(table, fh, compression="zstd")
        self.files[name].append({"path": part, "rows": table.num_rows})
        self.rows[name] += table.num_rows

    def commit(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Write the manifest, move the run into place, then write ``_SUCCESS``.

        ``manifest`` holds what the caller knows (input fingerprints, config,
        counts by status, timings); the run id, the date, the files and their
        row counts are added here.  Returns the manifest as written.
        """
        for name, schema_ in schema.RUN_TABLES.items():
            if not self.files[name]:
                self.write(name, schema.empty(schema_))
        written = {**manifest, "run_id": self.run_id, schema.Col.as_of: self.as_of.isoformat(),
                   "schema_version": schema.SCHEMA_VERSION,
                   "files": {name: files for name, files in self.files.items()},
                   "rows": dict(self.rows)}
        with self.fs.open(f"{self.staging}/{MANIFEST}", "wb") as fh:
            fh.write(json.dumps(written, indent=2, sort_keys=True, default=str).encode())
        _swap_in(self.fs, self.staging, self.final, self.run_id, replace=self.replace,
                 taken=f"a run for {self.as_of} was committed at {self.out} while this one "
                       f"ran; run {self.run_id} stays in {STAGING}/ uncommitted")
        self.committed = True
        return written

    def abort(self) -> None:
        """Remove the staging folder; nothing committed is touched."""
        if self.fs.exists(self.staging):
            self.fs.rm(self.staging, recursive=True)


def _move(fs, source: str, target: str) -> None:
    """Move a folder file by file: object stores have no folders to rename."""
    for path in sorted(fs.find(source)):
        destination = target + path[len(source):]
        fs.makedirs(destination.rsplit("/", 1)[0], exist_ok=True)
        fs.copy(path, destination)
    fs.rm(source, recursive=True)


def _swap_in(fs, staging: str, final: str, marker: str, *, replace: bool, taken: str) -> None:
    """Move the staged folder to ``final`` and write ``_SUCCESS`` there last.

    An older committed folder at ``final`` loses its ``_SUCCESS`` first (when
    ``replace``; otherwise :class:`RunError` with ``taken``), so readers never
    trust a mix of old and new files.
    """
    if fs.exists(f"{final}/{SUCCESS}"):
        if not replace:
            raise RunError(taken)
        fs.rm(f"{final}/{SUCCESS}")                  # readers stop trusting the old folder first
    if fs.exists(final):
        fs.rm(final, recursive=True)
    _move(fs, staging, final)
    with fs.open(f"{final}/{SUCCESS}", "wb") as fh:
        fh.write(marker.encode())


def committed(out: str, as_of: dt.date, storage_options: Mapping[str, Any] | None = None) -> bool:
    """Whether a run for ``as_of`` is committed under ``out``."""
    fs, root = filesystem(out, storage_options)
    return fs.exists(f"{run_path(root.rstrip('/'), as_of)}/{SUCCESS}")


def read_run(out: str, as_of: dt.date, storage_options: Mapping[str, Any] | None = None
             ) -> tuple[dict[str, pa.Table], dict[str, Any]]:
    """The committed run's tables and its manifest.

    Raises
    ------
    RunError
        When no run for ``as_of`` is committed under ``out``.
    """
    fs, root = filesystem(out, storage_options)
    final = run_path(root.rstrip("/"), as_of)
    if not fs.exists(f"{final}/{SUCCESS}"):
        raise RunError(f"no committed run for {as_of} under {out} (no {SUCCESS}); "
                       f"a run without it is incomplete and must not be read")
    with fs.open(f"{final}/{MANIFEST}", "rb") as fh:
        manifest = json.loads(fh.read())
    tables = {}
    for name, schema_ in schema.RUN_TABLES.items():
        files = [f"{final}/{entry['path']}" for entry in manifest["files"][name]]
        table = ds.dataset(files, format="parquet", filesystem=fs, schema=schema_).to_table()
        tables[name] = table
    return tables, manifest


# --------------------------------------------------------------------------
# Finding a run from one URI.

_RUN_FOLDER = re.compile(r"^as_of=(\d{4}-\d{2}-\d{2})$")


def committed_dates(out: str, storage_options: Mapping[str, Any] | None = None) -> list[dt.date]:
    """The dates with a committed run under ``out``, oldest first."""
    fs, root = filesystem(out, storage_options)
    root = root.rstrip("/")
    if not fs.isdir(root):
        return []
    dates = []
    for path in fs.ls(root, detail=False):
        match = _RUN_FOLDER.match(path.rstrip("/").rsplit("/", 1)[-1])
        if match and fs.exists(f"{path.rstrip('/')}/{SUCCESS}"):
            dates.append(dt.date.fromisoformat(match.group(1)))
    return sorted(dates)


def locate_run(uri: str, as_of: dt.date | None = None,
               storage_options: Mapping[str, Any] | None = None) -> tuple[str, dt.date]:
    """``(out, as_of)`` of the run ``uri`` names.

    ``uri`` is either one run's folder (``OUT/as_of=2026-11-20``) or the folder
    of runs ``OUT``; then ``as_of`` picks the date, or the latest committed
    run is taken.

    Raises
    ------
    RunError
        When no committed run matches.
    """
    uri = str(uri).rstrip("/")
    head, _, last = uri.rpartition("/")
    match = _RUN_FOLDER.match(last)
    if match:
        date = dt.date.fromisoformat(match.group(1))
        if as_of is not None and as_of != date:
            raise RunError(f"{uri} is the run for {date}, not {as_of}")
        out = head or "."
    else:
        out = uri
        if as_of is None:
            dates = committed_dates(out, storage_options)
            if not dates:
                raise RunError(f"no committed run under {uri} (no as_of=YYYY-MM-DD/ folder with {SUCCESS})")
            as_of = dates[-1]
        date = as_of
    if not committed(out, date, storage_options):
        raise RunError(f"no committed run for {date} under {out} (no {SUCCESS}); "
                       f"a run without it is incomplete and must not be read")
    return out, date


# --------------------------------------------------------------------------
# Folders written beside a run: the decision set of ``canopy approve``, reports.

#: The decision set's folder inside a run's folder, and its files.
APPROVAL = "approval"
DECISIONS_PART = "decisions/part-00000.parquet"
APPROVED_PARQUET = "approved_trades.parquet"
APPROVED_CSV = "approved_trades.csv"
#: A run's report folder (``canopy report`` without ``--out``) and its per-account tax figures.
REPORT = "report"
REPORT_TAXES = "taxes.parquet"          # as engine.review.report.REPORT_TAXES


class FolderWriter:
    """Files staged under ``OUT/_staging/<id>/``, then moved to ``final`` with ``_SUCCESS`` last.

    The same commit as :class:`RunWriter`: readers trust ``final`` only once its
    ``_SUCCESS`` exists; a committed folder is replaced only when ``replace``.

    Parameters
    ----------
    out
        The folder of runs (its ``_staging/`` is used), or any folder.
    final
        Path of the folder to commit, relative to ``out``.
    what
        What the folder is, in words, for error messages.
    """

    def __init__(self, out: str, final: str, *, replace: bool = False, what: str = "folder",
                 storage_options: Mapping[str, Any] | None = None):
        if not final.strip("/"):
            raise ValueError("FolderWriter needs a folder below out: staging lives in out/_staging/")
        self.id = uuid.uuid4().hex
        self.fs, root = filesystem(str(out), storage_options)
        self.root = root.rstrip("/")
        self.final = f"{self.root}/{final.strip('/')}"
        self.staging = f"{self.root}/{STAGING}/{self.id}"
        self.replace, self.what, self.uri = replace, what, f"{str(out).rstrip('/')}/{final}".rstrip("/")
        if self.fs.exists(f"{self.final}/{SUCCESS}") and not replace:
            raise RunError(f"{what} is already committed at {self.uri}; pass --replace to replace it")

    def put(self, relative: str, data: bytes) -> None:
        path = f"{self.staging}/{relative}"
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        with self.fs.open(path, "wb") as fh:
            fh.write(data)

    def put_parquet(self, relative: str, table: pa.Table) -> None:
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        self.put(relative, sink.getvalue())

    def put_csv(self, relative: str, table: pa.Table) -> None:
        sink = io.BytesIO()
        pacsv.write_csv(table, sink)
        self.put(relative, sink.getvalue())

    def put_json(self, relative: str, value: Mapping[str, Any]) -> None:
        self.put(relative, json.dumps(value, indent=2, sort_keys=True, default=str).encode())

    def commit(self) -> str:
        """Move the staged files into place, ``_SUCCESS`` last; returns the committed folder's URI."""
        if not self.fs.exists(self.staging):
            self.fs.makedirs(self.staging, exist_ok=True)
        try:
            _swap_in(self.fs, self.staging, self.final, self.id, replace=self.replace,
                     taken=f"{self.what} was committed at {self.uri} meanwhile; "
                           f"pass --replace to replace it")
        except BaseException:
            self.abort()
            raise
        return self.uri

    def abort(self) -> None:
        if self.fs.exists(self.staging):
            self.fs.rm(self.staging, recursive=True)


def write_decisions(out: str, as_of: dt.date, decisions: pa.Table, approved: pa.Table,
                    manifest: Mapping[str, Any], *, replace: bool = False,
                    storage_options: Mapping[str, Any] | None = None) -> str:
    """Commit a decision set beside the committed run of ``as_of``: one step, ``_SUCCESS`` last.

    Writes ``OUT/as_of=DATE/approval/``: ``decisions/part-00000.parquet``
    (:data:`schema.DECISIONS`), the approved trades as ``approved_trades.parquet``
    and ``approved_trades.csv`` (:data:`schema.APPROVED_TRADES`), ``manifest.json``,
    then ``_SUCCESS``.  Returns the folder's URI.

    Raises
    ------
    RunError
        No committed run for ``as_of``; or a decision set is committed already
        and ``replace`` is false (nothing is written then).
    """
    if not committed(out, as_of, storage_options):
        raise RunError(f"no committed run for {as_of} under {out}; decisions are written beside a run")
    decisions = schema.conform(decisions, schema.DECISIONS)
    approved = schema.conform(approved, schema.APPROVED_TRADES)
    folder = f"{run_path('', as_of).lstrip('/')}/{APPROVAL}"
    writer = FolderWriter(out, folder, replace=replace, what=f"a decision set for the run of {as_of}",
                          storage_options=storage_options)
    try:
        writer.put_parquet(DECISIONS_PART, decisions)
        writer.put_parquet(APPROVED_PARQUET, approved)
        writer.put_csv(APPROVED_CSV, approved)
        writer.put_json(MANIFEST, {**manifest, schema.Col.as_of: as_of.isoformat(),
                                   "rows": {"decisions": decisions.num_rows, "approved_trades": approved.num_rows},
                                   "files": [DECISIONS_PART, APPROVED_PARQUET, APPROVED_CSV]})
    except BaseException:
        writer.abort()
        raise
    return writer.commit()


def read_decisions(out: str, as_of: dt.date, storage_options: Mapping[str, Any] | None = None
                   ) -> tuple[pa.Table, pa.Table, dict[str, Any]] | None:
    """The committed decision set of the run of ``as_of``: (decisions, approved trades, manifest); None if none."""
    fs, root = filesystem(out, storage_options)
    folder = f"{run_path(root.rstrip('/'), as_of)}/{APPROVAL}"
    if not fs.exists(f"{folder}/{SUCCESS}"):
        return None
    with fs.open(f"{folder}/{MANIFEST}", "rb") as fh:
        manifest = json.loads(fh.read())
    with fs.open(f"{folder}/{DECISIONS_PART}", "rb") as fh:
        decisions = pq.read_table(fh)
    with fs.open(f"{folder}/{APPROVED_PARQUET}", "rb") as fh:
        approved = pq.read_table(fh)
    return (schema.conform(decisions, schema.DECISIONS), schema.conform(approved, schema.APPROVED_TRADES),
            manifest)


def write_report(out: str, folder: str, files: Mapping[str, bytes], *, replace: bool = False,
                 storage_options: Mapping[str, Any] | None = None) -> str:
    """Commit a report's files (``index.html``, PNGs, ...) to ``out/folder``, ``_SUCCESS`` last.

    With ``folder`` empty, ``out`` itself is the report's folder (staged beside it).
    """
    if not folder.strip("/"):
        parent, _, folder = str(out).rstrip("/").rpartition("/")
        out = parent or "."
    writer = FolderWriter(out, folder, replace=replace, what="a report", storage_options=storage_options)
    try:
        for relative, data in files.items():
            writer.put(relative, data)
    except BaseException:
        writer.abort()
        raise
    return writer.commit()


def report_folder(as_of: dt.date) -> str:
    """The report's folder relative to ``OUT``: ``as_of=DATE/report``."""
    return f"{run_path('', as_of).lstrip('/')}/{REPORT}"


def read_run_table(out: str, as_of: dt.date, name: str, columns: list[str] | None = None,
                   storage_options: Mapping[str, Any] | None = None) -> pa.Table:
    """One table of a committed run (some ``columns`` of it), without reading the others."""
    fs, root = filesystem(out, storage_options)
    final = run_path(root.rstrip("/"), as_of)
    if not fs.exists(f"{final}/{SUCCESS}"):
        raise RunError(f"no committed run for {as_of} under {out} (no {SUCCESS})")
    with fs.open(f"{final}/{MANIFEST}", "rb") as fh:
        manifest = json.loads(fh.read())
    files = [f"{final}/{entry['path']}" for entry in manifest["files"][name]]
    return ds.dataset(files, format="parquet", filesystem=fs, schema=schema.RUN_TABLES[name]).to_table(columns=columns)


def read_report_taxes(out: str, as_of: dt.date, storage_options: Mapping[str, Any] | None = None
                      ) -> pa.Table | None:
    """The per-account tax figures of the run's committed report (beside the run); None if none."""
    fs, root = filesystem(out, storage_options)
    folder = f"{root.rstrip('/')}/{report_folder(as_of)}"
    if not fs.exists(f"{folder}/{SUCCESS}") or not fs.exists(f"{folder}/{REPORT_TAXES}"):
        return None
    with fs.open(f"{folder}/{REPORT_TAXES}", "rb") as fh:
        return pq.read_table(fh)
