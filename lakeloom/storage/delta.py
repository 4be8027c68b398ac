"""Small, safe Delta Lake primitives shared by the IO manager, cache, ledger and model store.

Writes go through ``write_deltalake`` with a bounded retry on ``CommitFailedError`` (two writers
overwriting the same partition: the loser retries from a fresh snapshot instead of losing its
commit). Reads go through ``DeltaTable`` so the transaction log, not a file glob, decides which
rows exist.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import polars as pl
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, TableNotFoundError

from lakeloom.storage.check import ensure_safe_storage
from lakeloom.storage.env import is_s3
from lakeloom.storage.objects import s3_store

WriteMode = Literal["append", "overwrite"]

_log = logging.getLogger(__name__)


class DeltaWriteConflict(RuntimeError):
    """Raised when a write still conflicts after its retries."""


def quote_ident(name: str) -> str:
    """Quote a column name for a Delta/DataFusion SQL predicate."""
    return '"' + name.replace('"', '""') + '"'


def sql_literal(value: Any) -> str:
    """Render a value as a SQL literal for a predicate (strings escaped, never f-string SQL)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dt.datetime):
        return f"'{value.isoformat(sep=' ')}'"
    if isinstance(value, dt.date):
        return f"'{value.isoformat()}'"
    return "'" + str(value).replace("'", "''") + "'"


def in_predicate(column: str, values: Iterable[Any]) -> str:
    """``"col" IN ('a', 'b')`` (or ``=`` for one value)."""
    literals = sorted({sql_literal(v) for v in values})
    if not literals:
        raise ValueError(f"empty value list for predicate on column {column!r}")
    if len(literals) == 1:
        return f"{quote_ident(column)} = {literals[0]}"
    return f"{quote_ident(column)} IN ({', '.join(literals)})"


def and_predicates(predicates: Sequence[str]) -> str | None:
    """Join predicates with AND; ``None`` when there are none."""
    parts = [p for p in predicates if p]
    return " AND ".join(f"({p})" for p in parts) if parts else None


def table_exists(uri: str, storage_options: dict[str, str] | None = None) -> bool:
    """True when a Delta table (a transaction log) exists at ``uri``."""
    try:
        DeltaTable(uri, storage_options=storage_options)
    except TableNotFoundError:
        return False
    return True


def table_version(uri: str, storage_options: dict[str, str] | None = None) -> int | None:
    """The latest committed version, or ``None`` when there is no table."""
    try:
        return DeltaTable(uri, storage_options=storage_options).version()
    except TableNotFoundError:
        return None


def write_table(
    df: pl.DataFrame,
    uri: str,
    *,
    mode: WriteMode = "append",
    predicate: str | None = None,
    partition_by: Sequence[str] | None = None,
    storage_options: dict[str, str] | None = None,
    schema_mode: Literal["merge", "overwrite"] | None = None,
    commit_metadata: Mapping[str, str] | None = None,
    max_attempts: int = 8,
) -> int:
    """Write ``df`` to the Delta table at ``uri`` and return the version of *this* commit.

    ``mode="overwrite"`` with a ``predicate`` replaces exactly the matching rows (replaceWhere),
    leaving every other partition intact. Commit conflicts are retried with jittered backoff.
    ``commit_metadata`` lands in the commit's ``commitInfo`` (read back with
    ``DeltaTable.history()``), so lineage can be read from the Delta log alone. The returned
    version is exact even when other writers commit concurrently.
    """
    ensure_safe_storage(uri, storage_options)  # once per process and S3 bucket: see storage.check
    write_id = uuid.uuid4().hex
    custom = {**(commit_metadata or {}), "lakeloom.write_id": write_id}
    for attempt in range(1, max_attempts + 1):
        try:
            try:
                target: str | DeltaTable = DeltaTable(uri, storage_options=storage_options)
            except TableNotFoundError:
                target = uri
            write_deltalake(
                target,
                df,  # the frame's Arrow C stream: zero-copy (string columns stay string_view)
                mode=mode,
                predicate=predicate,
                partition_by=list(partition_by) if partition_by else None,
                storage_options=storage_options,
                schema_mode=schema_mode,
                commit_properties=CommitProperties(
                    custom_metadata=custom,
                    # an overwrite must land on the snapshot it read: delta-rs's own rebase of a
                    # predicate overwrite onto a concurrent one can keep both writers' rows
                    max_commit_retries=0 if mode == "overwrite" else None,
                ),
            )
            break
        except CommitFailedError as exc:
            if attempt == max_attempts:
                raise DeltaWriteConflict(
                    f"write to {uri} still conflicted after {max_attempts} attempts "
                    f"(predicate={predicate!r}): {exc}"
                ) from exc
            _log.info(
                "commit conflict on %s (predicate=%r), attempt %d/%d: retrying from a fresh "
                "snapshot",
                uri,
                predicate,
                attempt,
                max_attempts,
            )
            time.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + random.random()))
    if isinstance(target, DeltaTable) and target.version() >= 0:
        # usually the writer's snapshot is advanced to its own commit: confirm by the write id
        # (a snapshot opened while another writer created the table stays at -1, and one whose
        # commit delta-rs rebased past a concurrent writer can lag behind)
        version = target.version()
        if _commit_write_id(uri, version, storage_options) == write_id:
            return version
    return _version_of_write(uri, write_id, storage_options)


def _version_of_write(uri: str, write_id: str, storage_options: dict[str, str] | None) -> int:
    """Find the commit stamped with ``write_id`` among the newest 100 versions.

    Reads the commit files themselves: ``DeltaTable.history()`` numbers entries down from the
    snapshot's version while listing commits up to the newest one in storage, so under
    concurrent writers (seen on S3 with delta-rs 1.6.6) its version labels can be off.
    """
    latest = DeltaTable(uri, storage_options=storage_options).version()
    for version in range(latest, max(-1, latest - 100), -1):
        if _commit_write_id(uri, version, storage_options) == write_id:
            return version
    raise DeltaWriteConflict(f"write {write_id} to {uri} reported success but is not in its log")


def _commit_write_id(uri: str, version: int, storage_options: dict[str, str] | None) -> str | None:
    """The ``lakeloom.write_id`` of commit ``version`` (None when absent or unreadable)."""
    name = f"_delta_log/{version:020d}.json"
    try:
        if is_s3(uri):
            import obstore

            store = s3_store(uri, storage_options or {})
            text = bytes(obstore.get(store, name).bytes()).decode()
        elif "://" not in uri or uri.startswith("file://"):
            text = (Path(uri.removeprefix("file://")) / name).read_text()
        else:  # other object stores: the history, exact when no writer raced this one
            table = DeltaTable(uri, version=version, storage_options=storage_options)
            return next(iter(table.history(limit=1)), {}).get("lakeloom.write_id")
    except (FileNotFoundError, OSError):
        return None
    except Exception as exc:  # obstore's NotFoundError and friends
        if type(exc).__name__ == "NotFoundError":
            return None
        raise
    for line in text.split("\n"):  # JSON Lines: not splitlines(), which also cuts at U+2028
        if '"commitInfo"' in line:
            info = json.loads(line).get("commitInfo") or {}
            return info.get("lakeloom.write_id")
    return None


def read_table(
    uri: str,
    *,
    predicate: str | None = None,
    columns: Sequence[str] | None = None,
    version: int | None = None,
    storage_options: dict[str, str] | None = None,
) -> pl.DataFrame:
    """Read a Delta table (optionally one version, some columns, rows matching a SQL predicate)."""
    lf = scan_table(uri, version=version, storage_options=storage_options)
    if columns is not None:
        lf = lf.select(columns)
    if predicate:
        lf = lf.filter(pl.sql_expr(predicate))
    return lf.collect()


def scan_table(
    uri: str, *, version: int | None = None, storage_options: dict[str, str] | None = None
) -> pl.LazyFrame:
    """A lazy polars scan of a Delta table; partition filters prune files."""
    return pl.scan_delta(uri, version=version, storage_options=storage_options)
