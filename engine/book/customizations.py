"""Saved customizations: the advisor portal's changes to accounts, kept in the book as a Delta Lake table.

The optional ``customizations/`` table of a book (docs/contract.md §1, contract version 2) holds
one row per save (:data:`engine.contract.schema.CUSTOMIZATIONS`): the account, its save number
``version`` (1, 2, ...), what was saved (``action``), who saved it and when, and the account's
customization before and after as JSON in the contract's names:

* ``change``: ``{"account": {field: value}, "restrictions": [...], "allocations": [...]}``, the
  account's preferences (:data:`PREFERENCES`) and its whole lists;
* ``create``: the same with the whole ``accounts`` row and ``"lots"``: an account the portal created;
* ``withdrawal``: ``{"withdrawal": USD}``, a request to raise cash; ``settle``:
  ``{"version": n}``, the rebalancing group closing request ``n``.

:func:`apply_saved` lays the saves over the book's own tables (:func:`apply_saved` says how); :func:`engine.book.storage.read_book` does this, so ``canopy validate``, ``canopy run``
and ``canopy check`` all follow a save with no other step.  The rows are also the audit log.

Why Delta Lake (the ``deltalake`` package, delta-rs): a save is one commit, a single new file
in ``_delta_log/`` written with put-if-absent (a temporary file renamed into place on a local
disk), so a commit is all there or not there: a ``kill -9`` during a save leaves the table as
it was before or after, never half.  A reader reads one snapshot (a log version), so a run that
starts during a save sees the book before or after it.  The same table works on a local disk
and on S3, where a book may live, which SQLite (one local file) cannot do; and it is a well-kept
library, not a home-made log.  Parquet files of a commit that never landed are ignored by
readers (``vacuum`` removes them).

One writer per book: :class:`CustomizationStore` serializes saves within its process (the
portal) and checks the account's version under that lock; run one portal per book.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from typing import Any, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.book.files import filesystem
from engine.contract import schema
from engine.contract.errors import BookError
from engine.contract.schema import Action, Col

__all__ = ["CUSTOMIZATIONS_DIR", "CustomizationStore", "StaleVersion", "apply_saved", "read_saved",
           "delta_location", "customization_of", "CHECKPOINT_EVERY"]

#: The table's folder inside the book.
CUSTOMIZATIONS_DIR = "customizations"
#: A Delta checkpoint every this many commits, so reading the log stays short.
CHECKPOINT_EVERY = 50
#: The tables a save replaces an account's rows of, and the JSON key of each.
PARTS = {"accounts": "account", "restrictions": "restrictions", "allocations": "allocations", "lots": "lots"}
#: The ``accounts`` fields a save may set (customization and tax preferences).
PREFERENCES = schema.ACCOUNT_PREFERENCES


class StaleVersion(BookError):
    """A save made against a version of the account that is no longer its newest."""

    def __init__(self, account_id: str, expected: int, current: int):
        super().__init__(f"account {account_id} was saved again since version {expected} (now version "
                         f"{current}); reload it and make the change again", table=CUSTOMIZATIONS_DIR)
        self.current = current


def delta_location(uri: str, storage_options: Mapping[str, Any] | None = None) -> tuple[str, dict[str, str]]:
    """Where the book's customizations table is for delta-rs, and its storage options.

    A local book gives a local path; an ``s3://`` book gives ``s3://`` with the fsspec
    (s3fs) options translated to delta-rs' (key, secret, token, endpoint, region).

    Raises
    ------
    BookError
        For a book on any other filesystem.
    """
    fs, root = filesystem(uri, storage_options)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    root = root.rstrip("/")
    if protocol in ("file", "local"):
        return os.path.join(os.path.abspath(root), CUSTOMIZATIONS_DIR), {}
    if protocol in ("s3", "s3a"):
        return f"s3://{root}/{CUSTOMIZATIONS_DIR}", _s3_options(storage_options or {})
    raise BookError(f"saved customizations are kept as a Delta Lake table, which needs a book on a local disk "
                    f"or s3://; {uri!r} is on {protocol}://", table=CUSTOMIZATIONS_DIR)


def _s3_options(options: Mapping[str, Any]) -> dict[str, str]:
    """delta-rs' options from s3fs': credentials, endpoint (http allowed when it is http), region."""
    client = dict(options.get("client_kwargs") or {})
    endpoint = options.get("endpoint_url") or client.get("endpoint_url")
    region = client.get("region_name") or options.get("region_name") or os.environ.get("AWS_REGION", "us-east-1")
    out = {"AWS_REGION": region,
           # one writer per book (the portal's lock): no external locking provider is needed
           "AWS_S3_ALLOW_UNSAFE_RENAME": "true"}
    for ours, theirs in ((Col.key, "AWS_ACCESS_KEY_ID"), ("secret", "AWS_SECRET_ACCESS_KEY"),
                         ("token", "AWS_SESSION_TOKEN")):      # s3fs' names (its "key" spelled as our Col)
        if options.get(ours):
            out[theirs] = str(options[ours])
    if endpoint:
        out["AWS_ENDPOINT_URL"] = str(endpoint)
        out["AWS_ALLOW_HTTP"] = "true" if str(endpoint).startswith("http://") else "false"
    return out


def read_saved(uri: str, storage_options: Mapping[str, Any] | None = None) -> tuple[pa.Table, int] | None:
    """The book's customizations rows (sorted by account and version) and the table's Delta
    version, read as one snapshot; None when the book has no ``customizations/`` table."""
    fs, root = filesystem(uri, storage_options)
    if not fs.isdir(f"{root.rstrip('/')}/{CUSTOMIZATIONS_DIR}/_delta_log"):
        return None
    from deltalake import DeltaTable

    location, options = delta_location(uri, storage_options)
    try:
        table = DeltaTable(location, storage_options=options or None)
        rows = table.to_pyarrow_table()
        version = table.version()
    except Exception as exc:                  # delta-rs raises its own and OSError kinds
        raise BookError(f"cannot read the customizations table at {location}: {type(exc).__name__}: {exc}",
                        table=CUSTOMIZATIONS_DIR) from None
    rows = schema.conform(rows, schema.CUSTOMIZATIONS, name=CUSTOMIZATIONS_DIR)
    if rows.num_rows:
        rows = rows.sort_by([(Col.account_id, "ascending"), (Col.version, "ascending"),
                             (Col.saved_at, "ascending")])
    return rows, version


def _decode(text: str | None, where: str) -> dict | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BookError(f"{where} is not valid JSON ({exc})", table=CUSTOMIZATIONS_DIR) from None
    if not isinstance(value, dict):
        raise BookError(f"{where} must be a JSON object", table=CUSTOMIZATIONS_DIR)
    return value


def _rows_table(name: str, account_id: str, rows: list[dict], where: str) -> pa.Table:
    """The ``name`` table's rows of one account from their JSON form, conformed to the contract."""
    target = schema.BOOK_TABLES[name]
    columns = {}
    for field in target:
        values = [account_id if field.name == Col.account_id else row.get(field.name) for row in rows]
        if pa.types.is_date(field.type):
            values = [dt.date.fromisoformat(v) if isinstance(v, str) else v for v in values]
        try:
            columns[field.name] = pa.array(values, field.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
            raise BookError(f"{where}: {name}.{field.name} cannot be {field.type} ({exc})",
                            table=CUSTOMIZATIONS_DIR, column=field.name) from None
    return schema.conform(pa.table(columns), target, name=name)


def _overlay(base: pa.Table, replaced: list[str], rows: list[pa.Table]) -> pa.Table:
    """``base`` less the rows of the ``replaced`` accounts, plus ``rows``: each account's new rows
    where its old ones were (the table's order kept), a new account's at the end."""
    if not replaced:
        return base
    ids = base.column(Col.account_id)
    gone = np.asarray(pc.is_in(ids, value_set=pa.array(replaced, pa.string())).fill_null(False))
    first: dict[str, int] = {}
    for i in np.flatnonzero(gone):
        first.setdefault(ids[int(i)].as_py(), int(i))
    kept = base.filter(pa.array(~gone))
    keys = [np.flatnonzero(~gone).astype(float)]
    for n, (account_id, part) in enumerate(zip(replaced, rows)):
        start = first.get(account_id, base.num_rows + n)
        keys.append(start + np.arange(part.num_rows) / (part.num_rows + 1))
    table = pa.concat_tables([kept, *[part.cast(base.schema) for part in rows]])
    return table.take(pa.array(np.argsort(np.concatenate(keys), kind="stable")))


def _fold(saved: pa.Table) -> dict[str, dict[str, Any]]:
    """Per account, its saves folded oldest to newest: ``account`` (the fields set), ``restrictions``
    and ``allocations`` (the newest lists), ``created`` (the row and lots of a ``create``) and
    ``pending`` (withdrawal requests not yet settled: version -> USD)."""
    state: dict[str, dict[str, Any]] = {}
    for account_id, version, action, text in zip(*(saved.column(n).to_pylist()
                                                   for n in (Col.account_id, Col.version, Col.action, Col.after))):
        where = f"customizations row {account_id} version {version}"
        after = _decode(text, where)
        mine = state.setdefault(account_id, {"account": {}, "pending": {}, "where": where})
        mine["where"] = where
        if action == Action.withdrawal:
            mine["pending"][version] = float(after[Col.withdrawal])
        elif action == Action.settle:
            mine["pending"].pop(int(after[Col.version]), None)
        else:
            if action == Action.create:
                mine["created"] = after
            mine["account"].update(after.get("account") or {})
            for key in ("restrictions", "allocations"):
                if key in after:
                    mine[key] = after[key]
    return state


def apply_saved(tables: Mapping[str, pa.Table], saved: pa.Table) -> dict[str, pa.Table]:
    """The book's tables with each account's saved customization laid over them.

    For an account of the book: the fields its saves set on its ``accounts`` row (customization
    and tax preferences, never the custodian's figures such as ``cash``), its pending withdrawal
    requests added to ``withdrawal``, and its newest ``restrictions`` and ``allocations`` lists.
    An account the portal created and the book's own tables do not have yet is added with the
    row and ``lots`` it was created with.
    """
    state = _fold(saved)
    accounts = tables["accounts"]
    in_book = dict(zip(accounts.column(Col.account_id).to_pylist(), range(accounts.num_rows)))
    rows: dict[str, list] = {name: [] for name in PARTS}
    ids: dict[str, list] = {name: [] for name in PARTS}
    for account_id, mine in state.items():
        created = account_id not in in_book and mine.get("created")
        if account_id not in in_book and not created:
            continue                          # an account that left the book: its saves stay in the log only
        row = dict(created["account"]) if created else accounts.slice(in_book[account_id], 1).to_pylist()[0]
        row.update({k: v for k, v in mine["account"].items() if created or k in PREFERENCES})
        row[Col.withdrawal] = float(row.get(Col.withdrawal) or 0.0) + sum(mine["pending"].values())
        parts = {"accounts": [row], "restrictions": mine.get("restrictions"), "allocations": mine.get("allocations"),
                 "lots": created["lots"] if created else None}
        for name, value in parts.items():
            if value is not None:
                ids[name].append(account_id)
                rows[name].append(_rows_table(name, account_id, value, mine["where"]))
    return {**tables, **{name: _overlay(tables[name], ids[name], rows[name]) for name in PARTS}}


def customization_of(tables: Mapping[str, pa.Table], account_id: str) -> dict[str, Any]:
    """The account's customization as a save writes it, from ``tables``: ``{"account": its
    :data:`PREFERENCES`, "restrictions": [...], "allocations": [...]}`` (None for an account not in them)."""
    out: dict[str, Any] = {}
    for name, key in list(PARTS.items())[:3]:
        table = tables[name]
        rows = table.filter(pc.equal(table.column(Col.account_id), account_id)).drop_columns([Col.account_id])
        if name == "accounts":
            if not rows.num_rows:
                return None
            out[key] = rows.select(list(PREFERENCES)).to_pylist()[0]
        else:
            out[key] = rows.to_pylist()
    return out


def _json(value: Any) -> str:
    return json.dumps(value, default=lambda v: v.isoformat() if isinstance(v, (dt.date, dt.datetime)) else str(v),
                      sort_keys=True)


class CustomizationStore:
    """The book's customizations table: saves (one Delta commit each) and the audit log.

    Parameters
    ----------
    uri
        The book (a local folder or ``s3://``).
    storage_options
        fsspec options of the book (translated for delta-rs).
    """

    def __init__(self, uri: str, storage_options: Mapping[str, Any] | None = None):
        self.uri = str(uri)
        self.storage_options = storage_options
        self.location, self.options = delta_location(uri, storage_options)
        self._lock = threading.Lock()

    def rows(self) -> pa.Table:
        """Every save, sorted by account and version (empty before the first)."""
        found = read_saved(self.uri, self.storage_options)
        return found[0] if found else schema.empty(schema.CUSTOMIZATIONS)

    def versions(self) -> dict[str, int]:
        """Each saved account's newest version (an account never saved has none: version 0)."""
        rows = self.rows()
        return {a: v for a, v in zip(rows.column(Col.account_id).to_pylist(), rows.column(Col.version).to_pylist())}

    def history(self, account_id: str) -> list[dict[str, Any]]:
        """The account's saves, newest first, with ``before`` and ``after`` decoded."""
        rows = self.rows()
        return self.decode(rows.filter(pc.equal(rows.column(Col.account_id), account_id)))[::-1]

    @staticmethod
    def decode(rows: pa.Table) -> list[dict[str, Any]]:
        """Rows of the table as dicts, ``before`` and ``after`` decoded from JSON."""
        out = rows.to_pylist()
        for row in out:
            where = f"customizations row {row[Col.account_id]} version {row[Col.version]}"
            row[Col.before] = _decode(row[Col.before], where)
            row[Col.after] = _decode(row[Col.after], where)
        return out

    def save(self, account_id: str, action: str, before: Mapping[str, Any] | None, after: Mapping[str, Any],
             saved_by: str, *, expected_version: int | None = None, note: str | None = None) -> int:
        """Append one save as one Delta commit; the account's new version.

        Raises
        ------
        StaleVersion
            ``expected_version`` is given and is not the account's newest version; nothing is saved.
        """
        if action not in Action.all:
            raise ValueError(f"action {action!r} is not one of {', '.join(Action.all)}")
        from deltalake import write_deltalake

        with self._lock:
            current = self.versions().get(account_id, 0)
            if expected_version is not None and expected_version != current:
                raise StaleVersion(account_id, expected_version, current)
            row = {Col.account_id: account_id, Col.version: current + 1, Col.action: action, Col.saved_by: saved_by,
                   Col.saved_at: dt.datetime.now(dt.timezone.utc), Col.note: note,
                   Col.before: None if before is None else _json(before), Col.after: _json(after)}
            table = pa.Table.from_pylist([row], schema=schema.CUSTOMIZATIONS)
            write_deltalake(self.location, table, mode="append", storage_options=self.options or None)
            self._checkpoint()
            return current + 1

    def _checkpoint(self) -> None:
        from deltalake import DeltaTable

        table = DeltaTable(self.location, storage_options=self.options or None)
        if table.version() and table.version() % CHECKPOINT_EVERY == 0:
            table.create_checkpoint()
