"""Load CSV, JSON lines and Parquet files into one typed polars frame, or fail naming the cell.

Everything is read and checked before anything is returned, so a caller that writes the result
(the Delta IO manager) never writes half a source: a wrong type, a missing or null key, or a
duplicate key within a partition raises :class:`SourceError` naming the file, row and column.
Rows are numbered from 1 in data order; for CSV the error also gives the line (header = line 1;
exact unless quoted fields span lines).
"""

from __future__ import annotations

import datetime as dt
import glob
import json
import types
import typing
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Literal

import polars as pl
from pydantic import BaseModel

Format = Literal["csv", "jsonl", "parquet"]
SchemaLike = Mapping[str, pl.DataType | type[pl.DataType]] | type[BaseModel]

SUFFIXES: dict[str, Format] = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
MAX_REPORTED = 5
_FILE, _ROW = "__lakeloom_file", "__lakeloom_row"
_PY_TYPES: dict[type, pl.DataType] = {
    int: pl.Int64(),
    float: pl.Float64(),
    str: pl.String(),
    bool: pl.Boolean(),
    dt.date: pl.Date(),
    dt.datetime: pl.Datetime("us"),
    Decimal: pl.Decimal(38, 9),
}
_TRUE, _FALSE = {"true", "t", "yes", "y", "1"}, {"false", "f", "no", "n", "0"}


class SourceError(ValueError):
    """Malformed input: the message names the file, row and column."""


def polars_schema(schema: SchemaLike) -> dict[str, pl.DataType]:
    """Normalize a declared schema (column -> polars dtype, or a pydantic model) to dtypes."""
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return {name: _dtype_of(name, f.annotation) for name, f in schema.model_fields.items()}
    return {name: dtype() if isinstance(dtype, type) else dtype for name, dtype in schema.items()}


def _dtype_of(name: str, annotation: object) -> pl.DataType:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    is_union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    if is_union and len(args) == 1:  # Optional[X]
        return _dtype_of(name, args[0])
    if annotation in _PY_TYPES:
        return _PY_TYPES[annotation]  # type: ignore[index]
    if typing.get_origin(annotation) is list and len(args) == 1:
        return pl.List(_dtype_of(name, args[0]))
    raise SourceError(f"schema field {name!r}: no polars type for annotation {annotation!r}")


def resolve_files(path: str | Path) -> list[Path]:
    """Expand a file, a folder (its data files) or a glob into a sorted file list."""
    text = str(path)
    if any(ch in text for ch in "*?["):
        files = [Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file()]
    elif Path(text).is_dir():
        files = [p for p in Path(text).iterdir() if p.suffix.lower() in SUFFIXES and p.is_file()]
    else:
        files = [Path(text)] if Path(text).is_file() else []
    if not files:
        raise SourceError(f"no input files match {text!r}")
    return sorted(files)


def load_files(
    path: str | Path | Sequence[Path],
    schema: SchemaLike,
    key: str | Sequence[str],
    *,
    format: Format | None = None,
    partition_column: str | None = None,
    constants: Mapping[str, object] | None = None,
) -> pl.DataFrame:
    """Read, type-check and concatenate source files into the declared schema.

    Args:
        path: A file, a folder or a glob (or an explicit list of files).
        schema: Column -> polars dtype, or a pydantic model whose field types are used.
        key: Key column(s): never null, unique within a partition.
        format: ``csv``, ``jsonl`` or ``parquet``; by default from each file's suffix.
        partition_column: Column whose values delimit partitions for the uniqueness check.
        constants: Columns to add to every row before checks (e.g. the partition key).

    Returns:
        One frame with exactly the declared columns, in declared order (plus ``constants``).
    """
    dtypes = polars_schema(schema)
    keys = [key] if isinstance(key, str) else list(key)
    unknown = [k for k in keys if k not in dtypes and k not in (constants or {})]
    if unknown:
        raise SourceError(f"key column(s) {unknown} are not in the declared schema {list(dtypes)}")
    files = list(path) if isinstance(path, list | tuple) else resolve_files(path)
    frames = [_load_one(Path(f), dtypes, keys, format, constants or {}) for f in files]
    df = pl.concat(frames, how="vertical") if len(frames) > 1 else frames[0]
    group = keys if partition_column is None else [partition_column, *keys]
    _check_unique(df, group, keys)
    return df.drop(_FILE, _ROW)


def _load_one(
    path: Path,
    dtypes: Mapping[str, pl.DataType],
    keys: list[str],
    fmt: Format | None,
    constants: Mapping[str, object],
) -> pl.DataFrame:
    kind = fmt or SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise SourceError(f"{path}: unknown format (suffix {path.suffix!r}); pass format=")
    raw = _read(path, kind)
    for column in [*keys, *dtypes]:
        if column not in raw.columns and column not in constants:
            what = "key column" if column in keys else "column"
            raise SourceError(f"{path}: missing {what} {column!r} (has {raw.columns})")
    errors: list[str] = []
    columns = []
    for name, dtype in dtypes.items():
        if name in constants:
            continue
        converted, bad = _convert(raw[name], dtype)
        for row in bad.arg_true().head(MAX_REPORTED).to_list():
            errors.append(
                f"{_where(path, kind, row)} column {name!r}: {raw[name][row]!r} is not {dtype}"
            )
        columns.append(converted.alias(name))
    df = pl.DataFrame(columns, height=raw.height).with_columns(
        pl.lit(v, dtype=dtypes.get(c)).alias(c) for c, v in constants.items()
    )
    df = df.select([*dtypes, *(c for c in constants if c not in dtypes)])
    for name in keys:
        for row in df[name].is_null().arg_true().head(MAX_REPORTED).to_list():
            errors.append(f"{_where(path, kind, row)} key column {name!r} is empty")
    if errors:
        more = " (first errors shown)" if len(errors) >= MAX_REPORTED else ""
        raise SourceError(
            "malformed input" + more + ":\n  " + "\n  ".join(errors[: MAX_REPORTED * 2])
        )
    return df.with_columns(pl.lit(str(path)).alias(_FILE), pl.int_range(pl.len()).alias(_ROW))


def _read(path: Path, kind: Format) -> pl.DataFrame:
    try:
        if kind == "csv":
            return pl.read_csv(path, infer_schema=False)
        if kind == "parquet":
            return pl.read_parquet(path)
        return pl.read_ndjson(path, infer_schema_length=None)
    except Exception as exc:  # polars raises several types; name the file (and line for JSON)
        line = _bad_json_line(path) if kind == "jsonl" else None
        where = f"{path} line {line}" if line else str(path)
        raise SourceError(f"{where}: cannot read as {kind}: {exc}") from exc


def _bad_json_line(path: Path) -> int | None:
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    json.loads(line)
                except json.JSONDecodeError:
                    return number
    return None


def _convert(raw: pl.Series, dtype: pl.DataType) -> tuple[pl.Series, pl.Series]:
    """Cast leniently, then flag cells that had a value and lost it (or lost a fraction)."""
    source = raw.dtype
    if isinstance(source, pl.String) and not isinstance(dtype, pl.String):
        text = raw.str.strip_chars()
        if isinstance(dtype, pl.Date):
            out = text.str.to_date(strict=False)
        elif isinstance(dtype, pl.Datetime):
            out = text.str.to_datetime(
                time_unit=dtype.time_unit, time_zone=dtype.time_zone, strict=False
            )
        elif isinstance(dtype, pl.Boolean):
            lowered = text.str.to_lowercase()
            out = (
                pl.when(lowered.is_in(list(_TRUE)))
                .then(True)
                .when(lowered.is_in(list(_FALSE)))
                .then(False)
                .otherwise(None)
            )
            out = pl.select(out.alias(raw.name)).to_series()
        else:
            out = text.cast(dtype, strict=False)
        bad = raw.is_not_null() & (text != "") & out.is_null()
        return out, bad
    out = raw.cast(dtype, strict=False)
    bad = raw.is_not_null() & out.is_null()
    if source.is_float() and dtype.is_integer():
        bad = bad | (raw.is_not_null() & (raw != raw.floor()))
    return out, bad.fill_null(False)


def _where(path: Path, kind: Format, row: int) -> str:
    line = f", line {row + 2}" if kind == "csv" else ""
    return f"{path} row {row + 1}{line}"


def _check_unique(df: pl.DataFrame, group: list[str], keys: list[str]) -> None:
    """Fail on duplicate keys within a partition, naming both occurrences."""
    dup = df.filter(pl.struct(group).is_duplicated())
    if dup.is_empty():
        return
    lines = []
    for _, rows in dup.group_by(group, maintain_order=True):
        places = [f"{f} row {r + 1}" for f, r in rows.select(_FILE, _ROW).head(3).iter_rows()]
        values = rows.select(group).row(0, named=True)
        lines.append(f"key {values} appears {rows.height} times: " + ", ".join(places))
        if len(lines) >= MAX_REPORTED:
            break
    scope = " within a partition" if len(group) > len(keys) else ""
    raise SourceError(f"duplicate keys{scope}:\n  " + "\n  ".join(lines))
