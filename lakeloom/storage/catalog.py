"""The DuckDB catalog: one view per asset table, so every output is queryable with SQL.

Tables are discovered under ``<storage root>/assets/``: every folder holding a ``_delta_log`` is
an asset table, and its view is named after the asset key path joined with ``__``
(``assets/raw/reviews`` -> ``raw__reviews``). Views are rebuilt from the Delta log each time the
catalog registers them, so they read the latest committed version (or the versions pinned by
``as_of``).

How a view reads its table (DuckDB 2.0.1 has no offline ``delta`` extension): for local tables,
DuckDB's own Parquet reader over the exact file list of the Delta snapshot (``file_uris()``, never
a glob), with partition values decoded from the Hive-style paths and typed from the Delta schema.
It measured fastest and prunes partitions (``bench/catalog.py``). A polars ``scan_delta``
LazyFrame is the fallback for object stores (no ``httpfs`` offline) and empty tables: slower, but
it prunes too. ``DeltaTable.to_pyarrow_dataset()`` is not used: DuckDB's string filters fail on
files whose strings were written as ``string_view``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
from deltalake import DeltaTable

from lakeloom.storage.delta import quote_ident
from lakeloom.storage.settings import Storage, data_dir

DEFAULT_DATABASE = "catalog.duckdb"
VIEW_COMMENT = "lakeloom view of "
DUCKDB_CONFIG = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}

_OPEN_WITH_SCANS: weakref.WeakSet[duckdb.DuckDBPyConnection] = weakref.WeakSet()
_PRIMITIVES = {
    "string": "VARCHAR",
    "long": "BIGINT",
    "integer": "INTEGER",
    "short": "SMALLINT",
    "byte": "TINYINT",
    "double": "DOUBLE",
    "float": "FLOAT",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "timestamp": "TIMESTAMPTZ",
    "timestamp_ntz": "TIMESTAMP",
    "binary": "BLOB",
}


@dataclass(frozen=True)
class CatalogTable:
    """An asset table the catalog exposes as a view."""

    name: str
    asset_key: tuple[str, ...]
    uri: str


def view_name(asset_key: tuple[str, ...]) -> str:
    """Name an asset's view: the key path joined with ``__``."""
    return "__".join(asset_key)


def default_database() -> str:
    """Return the catalog file under the project's data folder."""
    return str(data_dir() / DEFAULT_DATABASE)


class Catalog:
    """Registers a view per asset table on DuckDB connections.

    Examples:
        >>> con = Catalog(database=":memory:").connect()
        >>> con.sql("SELECT count(*) FROM raw__reviews").fetchall()  # doctest: +SKIP
    """

    def __init__(self, storage: Storage | None = None, database: str | Path | None = None) -> None:
        self.storage = storage or Storage.from_env()
        self.database = str(database) if database is not None else default_database()

    def tables(self) -> list[CatalogTable]:
        """Discover every asset table below ``<root>/assets/``, sorted by name."""
        base = self.storage.root.rstrip("/") + "/assets"
        keys = _local_tables(base) if self.storage.is_local else _remote_tables(base, self.storage)
        return sorted(
            (CatalogTable(view_name(k), k, base + "/" + "/".join(k)) for k in keys),
            key=lambda t: t.name,
        )

    def connect(
        self, *, as_of: Mapping[str, int] | None = None, read_only: bool = False
    ) -> duckdb.DuckDBPyConnection:
        """Open the catalog database with fresh views (temporary ones when ``read_only``)."""
        if self.database != ":memory:":
            Path(self.database).parent.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(self.database, read_only=read_only, config=DUCKDB_CONFIG)
        self.register(con, as_of=as_of, temporary=read_only)
        return con

    def register(
        self,
        con: duckdb.DuckDBPyConnection,
        *,
        as_of: Mapping[str, int] | None = None,
        temporary: bool = False,
    ) -> list[CatalogTable]:
        """Create or replace one view per table on ``con``; drop views of vanished tables."""
        con.execute("SET autoinstall_known_extensions = false")
        tables = self.tables()
        pins = _resolve_pins(tables, as_of or {})
        if not temporary:
            _drop_stale_views(con, {t.name for t in tables})
        for table in tables:
            self._register_one(con, table, pins.get(table.name), temporary)
        return tables

    def _register_one(
        self, con: duckdb.DuckDBPyConnection, table: CatalogTable, version: int | None, temp: bool
    ) -> None:
        options = self.storage.storage_options
        delta = DeltaTable(table.uri, version=version, storage_options=options or None)
        scan = parquet_scan_sql(delta, local=self.storage.is_local, storage_options=options)
        if scan is None:
            _drop_view(con, table.name)
            register_frame(con, table.name, table.uri, delta.version(), options)
            return
        if _is_registered(con, table.name):
            con.unregister(table.name)
        kind = "TEMP VIEW" if temp else "VIEW"
        con.execute(f"CREATE OR REPLACE {kind} {quote_ident(table.name)} AS {scan}")
        if not temp:
            comment = f"{VIEW_COMMENT}{table.uri}@{delta.version()}".replace("'", "''")
            con.execute(f"COMMENT ON VIEW {quote_ident(table.name)} IS '{comment}'")


def register_frame(
    con: duckdb.DuckDBPyConnection,
    name: str,
    uri: str,
    version: int,
    storage_options: dict[str, str] | None = None,
) -> None:
    """Register a snapshot as a polars ``scan_delta`` LazyFrame (the object-store path).

    DuckDB pushes projections and filters into the scan, so partitions are still pruned; unlike
    ``DeltaTable.to_pyarrow_dataset()``, string filters also work on files whose strings were
    written as ``string_view`` (polars' Arrow stream). The connection is closed at interpreter
    exit: one holding a queried Arrow scan when Python exits can abort the process.
    """
    con.register(name, pl.scan_delta(uri, version=version, storage_options=storage_options or None))
    _OPEN_WITH_SCANS.add(con)


@atexit.register
def _close_connections_with_scans() -> None:
    for con in list(_OPEN_WITH_SCANS):
        with contextlib.suppress(Exception):
            con.close()


def parquet_scan_sql(
    delta: DeltaTable, *, local: bool, storage_options: dict[str, str] | None = None
) -> str | None:
    """Build a ``SELECT`` of one Delta snapshot with DuckDB's Parquet reader.

    The file list comes from the snapshot (never a glob); partition values are decoded from the
    Hive-style paths and typed from the Delta schema. ``None`` when DuckDB cannot read the files
    itself (object stores without ``httpfs``) or there are none (an empty table).
    """
    files = delta.file_uris()
    if not local or not files:
        return None
    schema = delta.schema()
    partitions = set(delta.metadata().partition_columns)
    hive_types = {
        f.name: _PRIMITIVES.get(str(getattr(f.type, "type", f.type)), "VARCHAR")
        for f in schema.fields
        if f.name in partitions
    }
    listing = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    # union_by_name reads every file footer at bind time: only pay it once the schema evolved
    evolved = _schema_evolved(delta.table_uri, schema, storage_options or {})
    options_sql = f"union_by_name = {str(evolved).lower()}"
    if partitions:
        types = ", ".join(f"'{c}': '{t}'" for c, t in hive_types.items())
        options_sql += f", hive_partitioning = true, hive_types = {{{types}}}"
    else:
        options_sql += ", hive_partitioning = false"
    columns = ", ".join(quote_ident(f.name) for f in schema.fields)
    return f"SELECT {columns} FROM read_parquet([{listing}], {options_sql})"


def _schema_evolved(uri: str, schema: object, options: dict[str, str]) -> bool:
    """Tell whether files may differ in columns: the first version's schema is not today's."""
    try:
        first = DeltaTable(uri, version=0, storage_options=options or None).schema()
    except Exception:  # the first commit was cleaned up: assume the worst
        return True
    return first != schema


def _resolve_pins(tables: list[CatalogTable], as_of: Mapping[str, int]) -> dict[str, int]:
    """Map ``as_of`` keys (view names or ``a/b`` asset keys) to view names."""
    by_key = {t.name: t.name for t in tables} | {"/".join(t.asset_key): t.name for t in tables}
    unknown = sorted(set(as_of) - set(by_key))
    if unknown:
        raise ValueError(f"--as-of names unknown tables {unknown}; known: {sorted(by_key)}")
    return {by_key[k]: int(v) for k, v in as_of.items()}


def _local_tables(base: str) -> list[tuple[str, ...]]:
    root = Path(base.removeprefix("file://"))
    found = []
    for dirpath, dirnames, _ in os.walk(root):
        if "_delta_log" in dirnames:
            found.append(Path(dirpath).relative_to(root).parts)
            dirnames.clear()
    return found


def _remote_tables(base: str, storage: Storage) -> list[tuple[str, ...]]:
    """List ``_delta_log`` folders on an S3-compatible store (pyarrow's S3 filesystem)."""
    from pyarrow import fs

    opts = storage.storage_options
    endpoint = opts.get("AWS_ENDPOINT_URL", "")
    s3 = fs.S3FileSystem(
        access_key=opts.get("AWS_ACCESS_KEY_ID"),
        secret_key=opts.get("AWS_SECRET_ACCESS_KEY"),
        region=opts.get("AWS_REGION", "us-east-1"),
        endpoint_override=endpoint.split("://", 1)[-1] or None,
        scheme="http" if endpoint.startswith("http://") else "https",
    )
    prefix = base.split("://", 1)[1]
    infos = s3.get_file_info(fs.FileSelector(prefix, recursive=True, allow_not_found=True))
    found = set()
    for info in infos:
        head, sep, _ = info.path.partition("/_delta_log")
        if sep:
            found.add(tuple(Path(head).relative_to(prefix).parts))
    return sorted(found)


def _is_registered(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    rows = con.execute(
        "SELECT 1 FROM duckdb_views() WHERE view_name = ? AND temporary", [name]
    ).fetchall()
    return bool(rows)


def _drop_view(con: duckdb.DuckDBPyConnection, name: str) -> None:
    if _is_registered(con, name):
        con.unregister(name)
    con.execute(f"DROP VIEW IF EXISTS {quote_ident(name)}")


def _drop_stale_views(con: duckdb.DuckDBPyConnection, keep: set[str]) -> None:
    rows = con.execute(
        "SELECT view_name FROM duckdb_views() WHERE NOT temporary AND starts_with(comment, ?)",
        [VIEW_COMMENT],
    ).fetchall()
    for (name,) in rows:
        if name not in keep:
            con.execute(f"DROP VIEW {quote_ident(name)}")
