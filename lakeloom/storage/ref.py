"""Remote dataframe references: (asset key, partition, Delta URI, version), opened lazily.

A :class:`Ref` is what lakeloom ships to remote workers (Modal functions) instead of data: a small
frozen JSON object. Anywhere the storage is reachable it opens as a polars LazyFrame or a DuckDB
relation of exactly that partition at exactly that version, and lists the references it was
computed from by reading the lineage stored in the Delta commits (:mod:`lakeloom.storage.lineage`),
with
no Dagster instance needed. Storage options travel by *name* only; their values come from the
environment of whoever opens the reference (``LAKELOOM_STORAGE_OPTIONS``), never from the JSON.

Examples:
    >>> r = ref("raw/reviews", partition="2024-01-02")  # doctest: +SKIP
    >>> r.lazy().select("id", "text").collect()  # doctest: +SKIP
    >>> Ref.from_json(r.to_json()) == r  # doctest: +SKIP
    True
"""

from __future__ import annotations

import itertools
import sys
import types
from collections.abc import Mapping, Sequence
from typing import Any

import duckdb
import polars as pl
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError
from pydantic import BaseModel, ConfigDict, Field

from lakeloom.storage.catalog import DUCKDB_CONFIG, parquet_scan_sql, register_frame
from lakeloom.storage.lineage import (
    Bound,
    CommitLineage,
    UpstreamRef,
    bounds_expr,
    bounds_sql,
    lineage_history,
)
from lakeloom.storage.settings import Storage

_names = itertools.count()


class RefError(LookupError):
    """A reference cannot be resolved or opened (no table, no such partition, missing options)."""


class Ref(BaseModel):
    """A frozen, JSON-serializable pointer to one partition (or all) of an asset table version."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    asset_key: tuple[str, ...]
    partition: str | None = None
    uri: str
    version: int
    bounds: tuple[Bound, ...] = Field(default=(), description="Filters selecting the partition.")
    storage_option_names: tuple[str, ...] = Field(
        default=(), description="Names of the storage options needed to open the table (no values)."
    )

    def to_json(self) -> str:
        """Serialize to JSON (no secrets: option names only)."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str | bytes) -> Ref:
        """Rebuild a reference from :meth:`to_json` output."""
        return cls.model_validate_json(text)

    def storage_options(self, given: Mapping[str, str] | None = None) -> dict[str, str]:
        """Resolve option values (``given``, else the environment), checking every name is set."""
        values = dict(given) if given is not None else Storage.from_env().storage_options
        missing = [n for n in self.storage_option_names if n not in values]
        if missing:
            raise RefError(
                f"opening {self.describe()} needs storage options {missing}; set them in "
                "LAKELOOM_STORAGE_OPTIONS or pass storage_options="
            )
        return values

    def describe(self) -> str:
        """Return a one-line human description."""
        part = f" partition {self.partition}" if self.partition is not None else ""
        return f"{'/'.join(self.asset_key)}{part} @ v{self.version} ({self.uri})"

    def lazy(self, storage_options: Mapping[str, str] | None = None) -> pl.LazyFrame:
        """Open as a polars LazyFrame filtered to the partition (files pruned on scan)."""
        options = self.storage_options(storage_options)
        lf = pl.scan_delta(self.uri, version=self.version, storage_options=options or None)
        return lf.filter(bounds_expr(self.bounds)) if self.bounds else lf

    def duckdb(
        self,
        con: duckdb.DuckDBPyConnection | None = None,
        storage_options: Mapping[str, str] | None = None,
    ) -> duckdb.DuckDBPyRelation:
        """Open as a DuckDB relation on ``con`` (a new in-memory connection by default)."""
        con = con if con is not None else duckdb.connect(config=DUCKDB_CONFIG)
        options = self.storage_options(storage_options)
        delta = DeltaTable(self.uri, version=self.version, storage_options=options or None)
        local = "://" not in self.uri or self.uri.startswith("file://")
        scan = parquet_scan_sql(delta, local=local, storage_options=options)
        if scan is None:
            name = f"lakeloom_ref_{next(_names)}"
            register_frame(con, name, self.uri, self.version, options)
            scan = f'SELECT * FROM "{name}"'
        where = f" WHERE {bounds_sql(self.bounds)}" if self.bounds else ""
        return con.sql(f"SELECT * FROM ({scan}) AS t{where}")

    def upstream(self, storage_options: Mapping[str, str] | None = None) -> list[Ref]:
        """List the references this partition (or whole table) was computed from."""
        options = self.storage_options(storage_options)
        entries = _lineage(self.uri, self.version, options)
        if self.partition is not None:
            writer = _writer_of(entries, self.partition)
            sources = writer.upstream if writer is not None else ()
        else:
            sources = tuple(u for lineage in _live_writers(entries) for u in lineage.upstream)
        refs = [r for u in sources for r in _refs_from(u, self.storage_option_names)]
        return list(dict.fromkeys(refs))  # keep order, drop duplicates


def ref(
    asset_key: str | Sequence[str] | Any,
    partition: str | None = None,
    version: int | None = None,
    *,
    storage: Storage | None = None,
) -> Ref:
    """Resolve a reference to an asset table (latest version unless ``version`` is given).

    ``asset_key`` is ``"a/b"``, a sequence of parts, or a Dagster ``AssetKey``. A partition is
    resolved to the filters the Delta IO manager recorded when it wrote that partition.
    """
    key = _key_parts(asset_key)
    storage = storage or Storage.from_env()
    uri = storage.table_uri("assets", *key)
    options = storage.storage_options
    try:
        table = DeltaTable(uri, version=version, storage_options=options or None)
    except TableNotFoundError:
        raise RefError(f"asset {'/'.join(key)} has no Delta table at {uri}") from None
    resolved = table.version()
    bounds: tuple[Bound, ...] = ()
    if partition is not None:
        bounds = _partition_bounds(table, uri, resolved, str(partition), options, key)
    return Ref(
        asset_key=key,
        partition=None if partition is None else str(partition),
        uri=uri,
        version=resolved,
        bounds=bounds,
        storage_option_names=tuple(sorted(options)),
    )


def _key_parts(asset_key: str | Sequence[str] | Any) -> tuple[str, ...]:
    if hasattr(asset_key, "path"):
        return tuple(asset_key.path)
    if isinstance(asset_key, str):
        return tuple(p for p in asset_key.split("/") if p)
    return tuple(asset_key)


def _lineage(uri: str, version: int, options: dict[str, str]) -> list[tuple[int, CommitLineage]]:
    """Lineage of the commits up to ``version``, newest first.

    ``history()`` numbers its entries down from the snapshot's version but lists the log as it
    is when called, so a commit landing in between shifts every label: read again until no
    writer raced the read.
    """
    for _ in range(10):
        table = DeltaTable(uri, storage_options=options or None)
        history = table.history()
        if DeltaTable(uri, storage_options=options or None).version() == table.version():
            return lineage_history(history, upto=version)
    raise RefError(f"{uri} kept changing while its history was read; try again")


def _writer_of(entries: list[tuple[int, CommitLineage]], partition: str) -> CommitLineage | None:
    """Find the newest commit that wrote ``partition`` (a whole-table overwrite ends the search)."""
    for _, lineage in entries:
        if lineage.partitions is None:
            return None
        if partition in lineage.partitions:
            return lineage
    return None


def _live_writers(entries: list[tuple[int, CommitLineage]]) -> list[CommitLineage]:
    """Find the commits whose rows are still live: the newest writer of each partition."""
    seen: set[str] = set()
    live = []
    for _, lineage in entries:
        if lineage.partitions is None:
            live.append(lineage)
            break
        fresh = set(lineage.partitions) - seen
        if fresh:
            live.append(lineage)
            seen |= fresh
    return live


def _partition_bounds(
    table: DeltaTable,
    uri: str,
    version: int,
    partition: str,
    options: dict[str, str],
    key: tuple[str, ...],
) -> tuple[Bound, ...]:
    entries = _lineage(uri, version, options)
    writer = _writer_of(entries, partition)
    if writer is not None and writer.partitions is not None:
        return tuple(writer.partitions[partition])
    columns = table.metadata().partition_columns
    if not entries and len(columns) == 1:  # written without lineage: one key column
        return (Bound.of(columns[0], "=", partition),)
    raise RefError(f"asset {'/'.join(key)} has no partition {partition!r} at version {version}")


def _refs_from(upstream: UpstreamRef, option_names: tuple[str, ...]) -> list[Ref]:
    if upstream.partitions is None:
        return [
            Ref(
                asset_key=upstream.asset_key,
                uri=upstream.uri,
                version=upstream.version,
                storage_option_names=option_names,
            )
        ]
    return [
        Ref(
            asset_key=upstream.asset_key,
            partition=key,
            uri=upstream.uri,
            version=upstream.version,
            bounds=bounds,
            storage_option_names=option_names,
        )
        for key, bounds in upstream.partitions.items()
    ]


class _CallableModule(types.ModuleType):
    """``lakeloom.ref`` names both this module and its function: calling the module calls it."""

    def __call__(
        self,
        asset_key: str | Sequence[str] | Any,
        partition: str | None = None,
        version: int | None = None,
        *,
        storage: Storage | None = None,
    ) -> Ref:
        return ref(asset_key, partition, version, storage=storage)


sys.modules[__name__].__class__ = _CallableModule
