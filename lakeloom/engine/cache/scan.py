"""Read only the cache rows a lookup needs, so memory follows the partition, not the cache.

A lookup used to collect every cached response of the models asked about and join afterwards.
Here the key filter runs inside the scan instead: the Delta log's per-file ``request_hash``
min/max statistics drop files that cannot hold any wanted key (and the ``model`` partition
drops other models), then each remaining Parquet file is read with ``request_hash IN keys``
pushed down (on the keys' first 64 bits as integers), so only matching rows are materialized.
Files are written sorted by ``request_hash``, which keeps the key ranges of their row groups
(and of files written from key-sorted data) narrow. :class:`ScanStats` counts files and rows
read, which tests assert on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import polars as pl
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

_PREFIX = 16  # compare key ranges on 16 hex chars: safe even if statistics were truncated
_PRUNE_KEYS_PER_FILE = 1024  # above this many keys per file, ranges are not worth checking


@dataclass(slots=True)
class ScanStats:
    """What lookups read from Delta: files considered, files opened, rows materialized."""

    lookups: int = 0
    files_total: int = 0
    files_read: int = 0
    rows_read: int = 0


def _file_table(table: DeltaTable) -> pl.DataFrame:
    """One row per live data file: uri, model partition (or null), request_hash min and max."""
    actions = pl.DataFrame(table.get_add_actions(flatten=True))
    uris = table.file_uris()
    if len(uris) != actions.height:  # cannot pair statistics with files: read them all
        return pl.DataFrame(
            {"uri": uris, "model": None, "low": None, "high": None},
            schema={"uri": pl.String, "model": pl.String, "low": pl.String, "high": pl.String},
        )

    def column(name: str) -> pl.Series:
        if name in actions.columns:
            return actions[name].cast(pl.String)
        return pl.Series(name, [None] * actions.height, dtype=pl.String)

    return pl.DataFrame(
        {
            "uri": uris,
            "model": column("partition.model"),
            "low": column("min.request_hash").str.slice(0, _PREFIX),
            "high": column("max.request_hash").str.slice(0, _PREFIX),
        }
    )


def _prune(
    files: pl.DataFrame, keys: pl.Series | None, models: Sequence[str] | None
) -> pl.DataFrame:
    """Keep the files that may hold one of ``keys`` (sorted distinct prefixes; None: any)."""
    if models:
        files = files.filter(pl.col("model").is_null() | pl.col("model").is_in(list(models)))
    if keys is None:
        return files
    if files.is_empty() or keys.is_empty():
        return files.clear() if keys.is_empty() else files
    # first wanted prefix >= the file's min; the file may hold a key iff that one <= its max
    at = keys.search_sorted(files["low"].fill_null(""), side="left")
    first = keys.gather(at.clip(0, keys.len() - 1))
    may_hold = (at < keys.len()) & (first <= files["high"].fill_null("~"))
    return files.filter(may_hold | files["low"].is_null() | files["high"].is_null())


def scan_keys(
    uri: str,
    storage_options: dict[str, str] | None,
    keys: pl.Series,
    schema: Mapping[str, pl.DataType],
    stats: ScanStats,
    *,
    models: Sequence[str] | None = None,
) -> pl.DataFrame | None:
    """Rows of the cache table whose ``request_hash`` is among ``keys`` (None: no table yet).

    The result has the columns of ``schema`` (``model`` is filled from the partition value
    when the files do not carry it).
    """
    try:
        table = DeltaTable(uri, storage_options=storage_options)
    except TableNotFoundError:
        return None
    wanted = keys.cast(pl.String).drop_nulls()
    files = _file_table(table)
    if wanted.len() <= _PRUNE_KEYS_PER_FILE * max(files.height, 1):
        kept = _prune(files, wanted.str.slice(0, _PREFIX).unique().sort(), models)
    else:  # so many keys that every file's range holds some: only the model partition prunes
        kept = _prune(files, None, models)
    stats.lookups += 1
    stats.files_total += files.height
    stats.files_read += kept.height
    columns = list(schema)
    if kept.is_empty():
        return pl.DataFrame(schema=dict(schema))
    wanted_rows = _key_filter(wanted)
    frames: list[pl.LazyFrame] = []
    for (model,), group in kept.group_by("model", maintain_order=True):
        read = [c for c in columns if c != "model" or model is None]
        lf = pl.scan_parquet(
            group["uri"].to_list(),
            storage_options=storage_options,
            hive_partitioning=False,
            missing_columns="insert",
        ).filter(wanted_rows)
        lf = lf.select(read)
        if model is not None and "model" in columns:
            lf = lf.with_columns(pl.lit(model, dtype=pl.String).alias("model"))
        frames.append(lf.select(columns).cast(dict(schema)))
    out = pl.concat(frames, how="vertical_relaxed").collect()
    stats.rows_read += out.height
    return out


def _key_filter(wanted: pl.Series) -> pl.Expr:
    """``request_hash IN wanted``, on the keys' first 64 bits as integers when they are hex.

    Probing a set of integers is about three times faster than one of strings; a 64-bit
    clash can only add a row the caller then drops by comparing the full key.
    """
    k64 = wanted.str.slice(0, _PREFIX).str.to_integer(base=16, dtype=pl.UInt64, strict=False)
    if k64.null_count():  # not hex keys (never produced by lakeloom): compare whole strings
        return pl.col("request_hash").is_in(wanted.implode())
    stored = pl.col("request_hash").str.slice(0, _PREFIX)
    return stored.str.to_integer(base=16, dtype=pl.UInt64, strict=False).is_in(k64.implode())
