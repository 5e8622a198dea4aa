"""Writing proposal runs (CONTRACT §2) atomically through fsspec.

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
import json
import uuid
from typing import Any, Mapping

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from engine import schema
from engine.book import filesystem
from engine.errors import RunError

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
        if self.fs.exists(f"{self.final}/{SUCCESS}"):
            if not self.replace:
                raise RunError(f"a run for {self.as_of} was committed at {self.out} while this one "
                               f"ran; run {self.run_id} stays in {STAGING}/ uncommitted")
            self.fs.rm(f"{self.final}/{SUCCESS}")        # readers stop trusting the old run first
        if self.fs.exists(self.final):
            self.fs.rm(self.final, recursive=True)
        self._move(self.staging, self.final)
        with self.fs.open(f"{self.final}/{SUCCESS}", "wb") as fh:
            fh.write(self.run_id.encode())
        self.committed = True
        return written

    def _move(self, source: str, target: str) -> None:
        """Move a folder file by file: object stores have no folders to rename."""
        for path in sorted(self.fs.find(source)):
            destination = target + path[len(source):]
            self.fs.makedirs(destination.rsplit("/", 1)[0], exist_ok=True)
            self.fs.copy(path, destination)
        self.fs.rm(source, recursive=True)

    def abort(self) -> None:
        """Remove the staging folder; nothing committed is touched."""
        if self.fs.exists(self.staging):
            self.fs.rm(self.staging, recursive=True)


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
