"""Map Dagster partitions onto Delta columns.

Each partition dimension lives in one column: named by the asset's ``partition_expr`` metadata
(a string, or a dict dimension -> column for multi-partitions), else ``partition`` for a
one-dimensional definition and the dimension's name for a multi-dimensional one. Static and
dynamic keys are strings; a time window is a range on a Date (daily or coarser) or Datetime
column. From a set of keys this module derives the SQL predicate for delta-rs ``replaceWhere``,
the polars filter for reads, and the per-key :class:`~lakeloom.storage.lineage.Bound` s kept in
lineage.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import reduce
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import polars as pl

from lakeloom.storage.delta import in_predicate
from lakeloom.storage.lineage import Bound, bounds_expr, bounds_sql

DEFAULT_COLUMN = "partition"


class PartitionColumnError(ValueError):
    """The frame's partition column is missing, mistyped, or holds rows outside the run."""


@dataclass(frozen=True)
class Dimension:
    """One partition dimension and the column that stores it."""

    name: str
    column: str
    time: dg.TimeWindowPartitionsDefinition | None = None

    @property
    def default_dtype(self) -> pl.DataType:
        """Return the dtype the IO manager writes when it adds the column itself."""
        if self.time is None:
            return pl.String()
        if any(code in self.time.fmt for code in ("%H", "%M", "%S")):
            return pl.Datetime("us", self.time.timezone or "UTC")
        return pl.Date()

    def bounds(self, key: str, dtype: pl.DataType) -> tuple[Bound, ...]:
        """Return the filters selecting ``key`` in a column of ``dtype``."""
        if self.time is None:
            return (Bound.of(self.column, "=", key),)
        window = self.time.time_window_for_partition_key(key)
        return (
            Bound.of(self.column, ">=", _time_value(window.start, dtype, self.column)),
            Bound.of(self.column, "<", _time_value(window.end, dtype, self.column)),
        )

    def fill_value(self, key: str) -> str | dt.date | dt.datetime:
        """Return the value written for ``key`` when the frame lacks the column (window start)."""
        if self.time is None:
            return key
        start = self.time.time_window_for_partition_key(key).start
        return _time_value(start, self.default_dtype, self.column)


def _time_value(moment: dt.datetime, dtype: pl.DataType, column: str) -> dt.date | dt.datetime:
    """Convert a window boundary to the column's type (Date takes midnight boundaries only)."""
    if isinstance(dtype, pl.Date):
        if moment.time() != dt.time(0):
            raise PartitionColumnError(
                f"column {column!r} is a Date but the partition window starts at {moment}; "
                "use a Datetime column for sub-daily partitions"
            )
        return moment.date()
    if isinstance(dtype, pl.Datetime):
        return (
            moment.astimezone(ZoneInfo(dtype.time_zone))
            if dtype.time_zone
            else moment.replace(tzinfo=None)
        )
    raise PartitionColumnError(
        f"column {column!r} holds time-window partitions and must be Date or Datetime, not {dtype}"
    )


def dimensions(
    partitions_def: dg.PartitionsDefinition | None, metadata: Mapping[str, Any] | None
) -> tuple[Dimension, ...]:
    """Return the partition dimensions of an asset (empty when unpartitioned)."""
    if partitions_def is None:
        return ()
    expr = (metadata or {}).get("partition_expr")
    if isinstance(partitions_def, dg.MultiPartitionsDefinition):
        names = {d.name: d.partitions_def for d in partitions_def.partitions_defs}
        columns = dict(expr) if isinstance(expr, Mapping) else {}
        unknown = set(columns) - set(names)
        if unknown:
            raise PartitionColumnError(
                f"partition_expr names unknown dimensions {sorted(unknown)}; known: {sorted(names)}"
            )
        return tuple(
            Dimension(name, columns.get(name, name), _time_def(pdef))
            for name, pdef in names.items()
        )
    if expr is not None and not isinstance(expr, str):
        raise PartitionColumnError(f"partition_expr must be a column name, got {expr!r}")
    return (Dimension("", expr or DEFAULT_COLUMN, _time_def(partitions_def)),)


def _time_def(pdef: dg.PartitionsDefinition) -> dg.TimeWindowPartitionsDefinition | None:
    return pdef if isinstance(pdef, dg.TimeWindowPartitionsDefinition) else None


def split_key(dims: Sequence[Dimension], key: str | dg.MultiPartitionKey) -> dict[str, str]:
    """Split a partition key into its per-dimension parts."""
    if len(dims) == 1:
        return {dims[0].name: str(key)}
    if isinstance(key, dg.MultiPartitionKey):
        return dict(key.keys_by_dimension)
    parts = str(key).split("|")  # Dagster orders multi-key parts by dimension name
    return dict(zip(sorted(d.name for d in dims), parts, strict=True))


def column_dtypes(
    dims: Sequence[Dimension], schema: Mapping[str, pl.DataType]
) -> dict[str, pl.DataType]:
    """Check and return the dtype of each partition column (its default when absent)."""
    dtypes: dict[str, pl.DataType] = {}
    for dim in dims:
        dtype = schema.get(dim.column, dim.default_dtype)
        if dim.time is None and not isinstance(dtype, pl.String | pl.Categorical | pl.Enum):
            raise PartitionColumnError(
                f"partition column {dim.column!r} must hold partition keys as strings, not {dtype}"
            )
        if dim.time is not None and not isinstance(dtype, pl.Date | pl.Datetime):
            raise PartitionColumnError(
                f"time-window partition column {dim.column!r} must be Date or Datetime, not {dtype}"
            )
        dtypes[dim.column] = dtype
    return dtypes


def key_bounds(
    dims: Sequence[Dimension], dtypes: Mapping[str, pl.DataType], key: str
) -> tuple[Bound, ...]:
    """Return all filters selecting one (possibly multi-dimensional) partition key."""
    parts = split_key(dims, key)
    return tuple(b for d in dims for b in d.bounds(parts[d.name], dtypes[d.column]))


@dataclass(frozen=True)
class Selection:
    """A set of partition keys of one asset, resolved against its column types."""

    dims: tuple[Dimension, ...]
    dtypes: dict[str, pl.DataType]
    keys: tuple[str, ...]

    @property
    def columns(self) -> list[str]:
        """Return the partition columns."""
        return [d.column for d in self.dims]

    def bounds(self) -> dict[str, tuple[Bound, ...]]:
        """Return per-key bounds, as stored in lineage."""
        return {key: key_bounds(self.dims, self.dtypes, key) for key in self.keys}

    def _per_dim(self) -> list[list[tuple[Bound, ...]]] | None:
        """Return distinct per-dimension bounds if the keys are a full cross product, else None."""
        per_dim: list[dict[tuple[Bound, ...], None]] = [{} for _ in self.dims]
        for key in self.keys:
            parts = split_key(self.dims, key)
            for i, dim in enumerate(self.dims):
                per_dim[i][dim.bounds(parts[dim.name], self.dtypes[dim.column])] = None
        if len(self.keys) != reduce(lambda n, d: n * len(d), per_dim, 1):
            return None
        return [_merge_ranges(list(d)) for d in per_dim]

    def sql(self) -> str:
        """Return the delta-rs predicate covering exactly these keys."""
        per_dim = self._per_dim()
        if per_dim is None:
            return " OR ".join(f"({bounds_sql(b)})" for b in self.bounds().values())
        return " AND ".join(_or_sql(alternatives) for alternatives in per_dim)

    def expr(self) -> pl.Expr:
        """Return the polars filter covering exactly these keys."""
        per_dim = self._per_dim()
        if per_dim is None:
            return pl.any_horizontal([bounds_expr(b) for b in self.bounds().values()])
        return pl.all_horizontal([_or_expr(alternatives) for alternatives in per_dim])

    def present_keys(self, values: pl.DataFrame) -> set[str]:
        """Return the keys with at least one row in ``values`` (distinct partition values)."""
        if values.is_empty():
            return set()
        bounds = self.bounds()
        hits = values.select(
            [bounds_expr(b).any().alias(f"k{i}") for i, b in enumerate(bounds.values())]
        ).row(0)
        return {key for key, hit in zip(bounds, hits, strict=True) if hit}


def _merge_ranges(alternatives: list[tuple[Bound, ...]]) -> list[tuple[Bound, ...]]:
    """Join adjacent time windows (a backfill range becomes one ``>= AND <`` pair)."""
    if not alternatives or alternatives[0][0].op == "=":
        return alternatives
    spans = sorted((lo.typed(), hi.typed(), lo, hi) for lo, hi in alternatives)
    merged: list[list[Any]] = []
    for start, end, lo, hi in spans:
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1][1], merged[-1][3] = end, hi
        else:
            merged.append([start, end, lo, hi])
    return [(lo, hi) for _, _, lo, hi in merged]


def _or_sql(alternatives: list[tuple[Bound, ...]]) -> str:
    if all(len(a) == 1 and a[0].op == "=" for a in alternatives):
        return in_predicate(alternatives[0][0].column, [a[0].typed() for a in alternatives])
    parts = [bounds_sql(a) for a in alternatives]
    return parts[0] if len(parts) == 1 else "(" + " OR ".join(f"({p})" for p in parts) + ")"


def _or_expr(alternatives: list[tuple[Bound, ...]]) -> pl.Expr:
    if all(len(a) == 1 and a[0].op == "=" for a in alternatives):
        return pl.col(alternatives[0][0].column).is_in([a[0].typed() for a in alternatives])
    return pl.any_horizontal([bounds_expr(a) for a in alternatives])


def with_partition_columns(
    df: pl.DataFrame, dims: Sequence[Dimension], keys: Sequence[str], asset: str
) -> pl.DataFrame:
    """Add missing partition columns (only possible for a single key)."""
    missing = [d for d in dims if d.column not in df.columns]
    if not missing:
        return df
    if len(keys) != 1:
        raise PartitionColumnError(
            f"asset {asset}: output for {len(keys)} partitions lacks partition column(s) "
            f"{[d.column for d in missing]}; the IO manager can only fill them for one partition, "
            "so add them to the frame"
        )
    parts = split_key(dims, keys[0])
    return df.with_columns(
        pl.lit(d.fill_value(parts[d.name]), dtype=d.default_dtype).alias(d.column) for d in missing
    )


def check_rows_in(
    df: pl.DataFrame, selection: Selection, asset: str, cause: BaseException | None = None
) -> None:
    """Refuse rows outside the run's partitions: they would survive no overwrite and duplicate."""
    outside = df.filter(~selection.expr().fill_null(False))
    if outside.height:
        sample = outside.select(selection.columns).unique().head(3).rows()
        raise PartitionColumnError(
            f"asset {asset}: {outside.height} row(s) have partition values outside this run's "
            f"partitions {list(selection.keys)[:5]}{'...' if len(selection.keys) > 5 else ''} "
            f"(columns {selection.columns}, e.g. {sample})"
        ) from cause
