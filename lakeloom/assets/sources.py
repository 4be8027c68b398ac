"""A factory for raw source assets: files -> typed, checked, partitioned Delta table.

Two ways to find a partition's rows:

* ``path`` contains ``{partition}`` (``"data/reviews/{partition}/*.csv"``): each partition key
  names its own files; the factory adds the partition column.
* otherwise every file is read and the rows whose ``partition_column`` falls in the run's
  partitions are kept (the column must be in the declared schema).

The whole run is loaded and validated before the asset returns, and the Delta IO manager writes
it in one commit, so malformed input leaves the table untouched.
"""

import glob
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from lakeloom.assets.define import define_asset
from lakeloom.assets.options import LLM_ONLY, AssetOptions, resolve_options
from lakeloom.core.readers import Format, SchemaLike, load_files, polars_schema, resolve_files
from lakeloom.io_managers.partitions import (
    DEFAULT_COLUMN,
    Selection,
    column_dtypes,
    dimensions,
)

PLACEHOLDER = "{partition}"


def file_source_asset(
    name: str,
    path: str | Path,
    schema: SchemaLike,
    key: str | Sequence[str],
    *,
    partitions_def: dg.PartitionsDefinition | None = None,
    partition_column: str | None = None,
    format: Format | None = None,
    key_prefix: str | Sequence[str] | None = None,
    group_name: str | None = None,
    description: str | None = None,
    io_manager_key: str = "io_manager",
    options: AssetOptions | None = None,
) -> dg.AssetsDefinition:
    """Build a (partitioned) asset whose output is the validated rows of source files.

    Args:
        name: Asset name.
        path: File, folder or glob; may contain ``{partition}`` (one partition per match).
        schema: Column -> polars dtype, or a pydantic model.
        key: Key column(s): non-null and unique within a partition.
        partitions_def: Static, dynamic or time-window partitions (one dimension).
        partition_column: Column holding the partition (default ``partition``).
        format: ``csv``/``jsonl``/``parquet``; by default from file suffixes.
        key_prefix: Asset key prefix (e.g. ``"raw"``).
        group_name: Dagster asset group.
        description: Asset description (default: the source path).
        io_manager_key: Resource key of the Delta IO manager.
        options: The same Dagster options as a typed ``AssetOptions`` (the keywords above build
            one); its LLM-only fields (mode, batch, checks) are refused.

    Examples:
        >>> reviews = file_source_asset(
        ...     "reviews", "examples/reviews/{partition}.csv",
        ...     {"id": pl.Int64, "text": pl.String}, key="id",
        ...     partitions_def=dg.StaticPartitionsDefinition(["2024-01", "2024-02"]),
        ... )
    """
    opts = resolve_options(
        options,
        "file_source_asset",
        partitions_def=partitions_def,
        key_prefix=key_prefix,
        group_name=group_name,
        description=description,
        io_manager_key=io_manager_key,
    )
    opts.refuse(LLM_ONLY, "file_source_asset")
    partitions_def = opts.partitions_def
    metadata = _definition_metadata(name, path, schema, partitions_def, partition_column)
    column = partition_column or DEFAULT_COLUMN

    @define_asset(
        key=dg.AssetKey(opts.key_path(name)),
        group_name=opts.group_name,
        description=opts.description or f"Raw rows of {path}",
        partitions_def=partitions_def,
        metadata=metadata,
        io_manager_key=opts.io_manager_key,
        pool=opts.pool,
        retry_policy=opts.retries(None),
        backfill_policy=opts.backfill_policy
        or (dg.BackfillPolicy.single_run() if partitions_def is not None else None),
        kinds={"delta", "polars"},
    )
    def _source(context: dg.AssetExecutionContext) -> pl.DataFrame:
        keys = list(context.partition_keys) if partitions_def is not None else []
        df, files = _load(path, schema, key, format, partitions_def, column, keys)
        context.add_output_metadata({"source_files": files, "rows_loaded": df.height})
        return df

    return _source


def _definition_metadata(
    name: str,
    path: str | Path,
    schema: SchemaLike,
    partitions_def: dg.PartitionsDefinition | None,
    partition_column: str | None,
) -> dict[str, Any]:
    """Check the path/partition combination and describe the source's columns."""
    if isinstance(partitions_def, dg.MultiPartitionsDefinition):
        raise ValueError(f"file_source_asset {name!r}: multi-dimensional partitions unsupported")
    dtypes = polars_schema(schema)
    templated = PLACEHOLDER in str(path)
    column = partition_column or DEFAULT_COLUMN
    if partitions_def is not None and not templated and column not in dtypes:
        raise ValueError(
            f"file_source_asset {name!r}: {path!s} has no {PLACEHOLDER} placeholder, so partition "
            f"column {column!r} must be in the declared schema {list(dtypes)}"
        )
    if partitions_def is None and templated:
        raise ValueError(f"file_source_asset {name!r}: {PLACEHOLDER} in path needs partitions_def")
    metadata: dict[str, Any] = {
        "source_path": str(path),
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(c, str(t)) for c, t in dtypes.items()]
        ),
    }
    if partitions_def is not None:
        metadata["partition_expr"] = column
    return metadata


def _load(
    path: str | Path,
    schema: SchemaLike,
    key: str | Sequence[str],
    fmt: Format | None,
    partitions_def: dg.PartitionsDefinition | None,
    column: str,
    keys: list[str],
) -> tuple[pl.DataFrame, int]:
    """The run's rows and how many files they came from: all, per partition, or filtered."""
    if partitions_def is None:
        return load_files(path, schema, key, format=fmt), len(resolve_files(path))
    if PLACEHOLDER in str(path):
        return _load_templated(str(path), schema, key, fmt, partitions_def, column, keys)
    files = len(resolve_files(path))
    df = load_files(path, schema, key, format=fmt, partition_column=column)
    dims = dimensions(partitions_def, {"partition_expr": column})
    selection = Selection(dims, column_dtypes(dims, df.schema), tuple(sorted(keys)))
    return df.filter(selection.expr()), files


def _load_templated(
    path: str,
    schema: SchemaLike,
    key: str | Sequence[str],
    fmt: Format | None,
    partitions_def: dg.PartitionsDefinition,
    column: str,
    keys: list[str],
) -> tuple[pl.DataFrame, int]:
    """Load each partition's own files, tagging rows with the partition value; check all first."""
    [dim] = dimensions(partitions_def, {"partition_expr": column})
    frames, files = [], 0
    for partition in sorted(keys):
        matched = resolve_files(path.replace(PLACEHOLDER, partition))
        files += len(matched)
        frames.append(
            load_files(
                matched,
                schema,
                key,
                format=fmt,
                constants={column: dim.fill_value(partition)},
            )
        )
    return pl.concat(frames, how="vertical"), files


def discover_partitions(path: str | Path) -> list[str]:
    """List the partition keys a ``{partition}`` path template matches on disk (sorted).

    Useful to register dynamic partitions: ``instance.add_dynamic_partitions(name, keys)``.
    """
    text = str(path)
    if PLACEHOLDER not in text:
        raise ValueError(f"{text!r} has no {PLACEHOLDER} placeholder")
    head, tail = text.split(PLACEHOLDER, 1)
    pattern = re.compile(re.escape(head) + r"(?P<key>[^/]+)" + _glob_to_regex(tail) + r"$")
    matches = glob.glob(text.replace(PLACEHOLDER, "*"), recursive=True)
    return sorted({m.group("key") for p in matches if (m := pattern.match(p))})


def _glob_to_regex(glob_tail: str) -> str:
    out = []
    for ch in glob_tail:
        out.append({"*": r"[^/]*", "?": r"[^/]"}.get(ch, re.escape(ch)))
    return "".join(out)
