"""Asset checks for LLM columns, evaluated on the frame an asset just produced.

* ``ok_ratio``: the share of attempted (non-skipped) rows that are ``ok`` is at least a
  threshold; blocking by default, so a provider outage that turned a partition into error rows
  stops the downstream assets of the run instead of feeding them nulls.
* ``embedding_width``: every ``ok`` vector has the expected width and only finite values.
* ``enum_values``: every enum/literal leaf of a generated value is one the schema allows.

The factories declare the specs and yield the results from the asset body, so the checks see
exactly the rows written, without reading the table back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
import polars as pl

OK_RATIO = "ok_ratio"
EMBEDDING_WIDTH = "embedding_width"
ENUM_VALUES = "enum_values"


def ok_ratio_spec(
    asset_key: dg.AssetKey, min_ok_ratio: float, *, blocking: bool
) -> dg.AssetCheckSpec:
    """Declare the ok-share check of an asset."""
    return dg.AssetCheckSpec(
        OK_RATIO,
        asset=asset_key,
        blocking=blocking,
        description=f"At least {min_ok_ratio:.0%} of the non-skipped rows have _status = 'ok'.",
    )


def embedding_width_spec(asset_key: dg.AssetKey) -> dg.AssetCheckSpec:
    """Declare the vector width/finiteness check of an embedding asset."""
    return dg.AssetCheckSpec(
        EMBEDDING_WIDTH,
        asset=asset_key,
        description="Every ok vector has the expected width and no NaN/inf values.",
    )


def enum_values_spec(asset_key: dg.AssetKey) -> dg.AssetCheckSpec:
    """Declare the allowed-values check of a generated asset with enum/literal fields."""
    return dg.AssetCheckSpec(
        ENUM_VALUES,
        asset=asset_key,
        description="Every enum/literal field holds a value the output schema allows.",
    )


def check_ok_ratio(df: pl.DataFrame, min_ok_ratio: float) -> dg.AssetCheckResult:
    """Pass when ok / (ok + error) >= ``min_ok_ratio`` (an all-skipped frame passes)."""
    counts = dict(df.group_by("_status").len().iter_rows()) if df.height else {}
    ok, error = counts.get("ok", 0), counts.get("error", 0)
    attempted = ok + error
    ratio = ok / attempted if attempted else 1.0
    return dg.AssetCheckResult(
        check_name=OK_RATIO,
        passed=ratio >= min_ok_ratio,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "ok_ratio": dg.MetadataValue.float(round(ratio, 6)),
            "min_ok_ratio": dg.MetadataValue.float(min_ok_ratio),
            "rows_ok": ok,
            "rows_error": error,
            "rows_skipped": counts.get("skipped", 0),
        },
    )


def check_embedding_width(df: pl.DataFrame, column: str, width: int | None) -> dg.AssetCheckResult:
    """Pass when every ok vector has ``width`` finite values (width: the spec's, else the mode)."""
    ok = df.filter(pl.col("_status") == "ok").select(pl.col(column))
    lengths = ok.select(pl.col(column).list.len().alias("n"))["n"]
    expected = width if width is not None else (int(lengths.mode()[0]) if lengths.len() else None)
    wrong = int((lengths != expected).sum()) if expected is not None else 0
    values = ok.select(pl.col(column).explode())[column]
    non_finite = int((~values.is_finite()).fill_null(True).sum()) if values.len() else 0
    null_vectors = int(ok[column].is_null().sum())
    return dg.AssetCheckResult(
        check_name=EMBEDDING_WIDTH,
        passed=wrong == 0 and non_finite == 0 and null_vectors == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "expected_width": expected if expected is not None else -1,
            "vectors_checked": ok.height,
            "wrong_width": wrong,
            "non_finite_values": non_finite,
            "null_vectors_marked_ok": null_vectors,
        },
    )


def leaf_values(series: pl.Series, path: str) -> pl.Series:
    """Collect the non-null values at a dotted path below a column (``[]``: every list item).

    Examples:
        >>> s = pl.Series([{"tags": ["a", "b"]}, {"tags": ["c"]}])
        >>> leaf_values(s, "tags[]").to_list()
        ['a', 'b', 'c']
    """
    frame = series.to_frame("v")
    for part in path.split(".") if path else []:
        lists = 0
        while part.endswith("[]"):
            part, lists = part[:-2], lists + 1
        frame = frame.select(pl.col("v").struct.field(part).alias("v"))
        for _ in range(lists):
            frame = frame.select(pl.col("v").explode().alias("v"))
    return frame["v"].drop_nulls()


def check_enum_values(
    df: pl.DataFrame, column: str, allowed: Mapping[str, Sequence[Any]]
) -> dg.AssetCheckResult:
    """Pass when every enum/literal leaf of ``column`` is allowed by the schema."""
    ok = df.filter(pl.col("_status") == "ok")[column]
    bad: dict[str, list[Any]] = {}
    checked = 0
    for path, values in allowed.items():
        leaves = leaf_values(ok, path)
        checked += leaves.len()
        outside = leaves.filter(~leaves.is_in(list(values))).unique().sort().head(5).to_list()
        if outside:
            bad[path or column] = outside
    return dg.AssetCheckResult(
        check_name=ENUM_VALUES,
        passed=not bad,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "values_checked": checked,
            "fields": dg.MetadataValue.json({p or column: list(v) for p, v in allowed.items()}),
            "unexpected": dg.MetadataValue.json(bad),
        },
    )
