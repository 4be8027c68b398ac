"""Asset checks for LLM columns, evaluated on the frame an asset just produced.

* ``ok_ratio``: the share of attempted (non-skipped) rows that are ``ok`` is at least a
  threshold; blocking by default, so a provider outage that turned a partition into error rows
  stops the downstream assets of the run instead of feeding them nulls. Its description, its
  metadata and the step's failure name the top error reasons (``_reason``) with counts and an
  example, so ``HTTP 401: Incorrect API key`` is on the run page, not only in the rows.
* ``embedding_width``: every ``ok`` vector has the expected width and only finite values.
* ``enum_values``: every enum/literal leaf of a generated value is one the schema allows.

The factories declare the specs and yield the results from the asset body, so the checks see
exactly the rows written, without reading the table back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg
import polars as pl

from lakeloom.core.reasons import is_transient, reason_expr

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


@dataclass(frozen=True)
class Reason:
    """One reason class of a frame's error rows: how many rows, and one row's detail."""

    reason: str
    rows: int
    example: str


def top_reasons(df: pl.DataFrame, top: int = 5) -> list[Reason]:
    """The error rows' reason classes, most rows first, each with an example ``_error``."""
    if df.is_empty() or "_status" not in df.columns:
        return []
    errors = df.filter(pl.col("_status") == "error")
    if errors.is_empty():
        return []
    reason = pl.col("_reason") if "_reason" in errors.columns else reason_expr()
    grouped = (
        errors.select(reason.fill_null("other").alias("reason"), pl.col("_error"))
        .group_by("reason")
        .agg(pl.len().alias("rows"), pl.col("_error").drop_nulls().first().alias("example"))
        .sort(["rows", "reason"], descending=[True, False])
    )
    return [Reason(r, n, e or "") for r, n, e in grouped.head(top).iter_rows()]


def reasons_text(reasons: Sequence[Reason], *, examples: bool = False) -> str:
    """``http_401 40, invalid_output 2`` (with ``examples``: each followed by its detail)."""
    if examples:
        return "; ".join(f"{r.reason} x{r.rows} ({r.example[:200]})" for r in reasons)
    return ", ".join(f"{r.reason} {r.rows}" for r in reasons)


def check_ok_ratio(
    df: pl.DataFrame, min_ok_ratio: float, *, reasons: Sequence[Reason] | None = None
) -> dg.AssetCheckResult:
    """Pass when ok / (ok + error) >= ``min_ok_ratio`` (an all-skipped frame passes)."""
    counts = dict(df.group_by("_status").len().iter_rows()) if df.height else {}
    ok, error = counts.get("ok", 0), counts.get("error", 0)
    attempted = ok + error
    ratio = ok / attempted if attempted else 1.0
    reasons = top_reasons(df) if reasons is None else reasons
    description = f"ok_ratio {ratio:.2f} (min {min_ok_ratio:.2f}): {ok} ok, {error} error"
    if reasons:
        description += f"; top reasons: {reasons_text(reasons, examples=True)}"
    return dg.AssetCheckResult(
        check_name=OK_RATIO,
        passed=ratio >= min_ok_ratio,
        severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata={
            "ok_ratio": dg.MetadataValue.float(round(ratio, 6)),
            "min_ok_ratio": dg.MetadataValue.float(min_ok_ratio),
            "rows_ok": ok,
            "rows_error": error,
            "rows_skipped": counts.get("skipped", 0),
            "top_reasons": dg.MetadataValue.json({r.reason: r.rows for r in reasons}),
        },
    )


def blocking_failure(
    asset_key: dg.AssetKey, result: dg.AssetCheckResult, reasons: Sequence[Reason]
) -> dg.Failure:
    """The step failure of a failed blocking ``ok_ratio`` check, naming the top reasons.

    Retried (by the asset's retry policy) only when a reason is transient (5xx, 429,
    timeouts, an unreachable provider): a wrong key or invalid answers would fail again.
    """
    md = result.metadata
    ratio, floor = md["ok_ratio"].value, md["min_ok_ratio"].value  # type: ignore[union-attr]
    errors = md["rows_error"].value  # type: ignore[union-attr]
    text = (
        f"{asset_key.to_user_string()}: blocking check ok_ratio failed: {ratio:.2f} < "
        f"{floor:.2f} ({errors} error rows)"
    )
    if reasons:
        text += f"; top reasons: {reasons_text(reasons, examples=True)}"
    return dg.Failure(
        description=text + ". Rows: SELECT * FROM lakeloom_errors (or GROUP BY _reason).",
        metadata={"top_reasons": dg.MetadataValue.json({r.reason: r.rows for r in reasons})},
        allow_retries=is_transient(r.reason for r in reasons),
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
