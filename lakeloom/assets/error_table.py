"""Error reports: which rows of a run failed and why, a markdown summary, re-runs of them.

Every LLM column transformation keeps its failed rows (``_status = 'error'``) in its own table;
:func:`failed_rows` shapes them, per run and asset, as rows of the ``lakeloom_errors`` table
(stored through :class:`lakeloom.storage.errors.ErrorTable`, the one storage API for it), with
the row's key, partition, error, its stable reason class ``_reason`` (see
:mod:`lakeloom.core.reasons`; the summary groups by it), the error's text before the first ``:``
(``reason``), request hash and run id.

Re-running just the failed rows: :func:`split_for_rerun` picks the rows of a partition whose
stored ``_status`` is ``error`` (or that were never processed), :func:`superseded_hashes` names
the failed rows whose invalid answer came from the provider (and is cached: they must be asked
again, not replayed), and :func:`merge_rerun` puts the new answers back beside the stored
ok/skipped rows, in input order. The input's key must identify its rows (checked here too:
one row per key, no nulls), or a re-run would write one answer onto several rows.
No Dagster import and no Delta I/O: the assets call this through
:mod:`lakeloom.assets.error_report`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from lakeloom.core.reasons import ANSWERED, reason_expr
from lakeloom.core.row_keys import check_unique_keys
from lakeloom.storage.errors import ERRORS_SCHEMA, ERRORS_TABLE, ErrorTable

KEEP_STATUSES = ("ok", "skipped")


def reason_of(error: pl.Expr) -> pl.Expr:
    """The reason of an error message: its text before the first ``:``, at most 80 characters."""
    return error.fill_null("unknown error").str.split(":").list.first().str.slice(0, 80)


def failed_rows(
    frame: pl.DataFrame,
    *,
    asset: str,
    run_id: str,
    keys: Sequence[str],
    partition_columns: Sequence[str] = (),
) -> pl.DataFrame:
    """The error rows of an asset's output frame, shaped as rows of the report table."""
    errors = frame.filter(pl.col("_status") == "error")
    key = pl.struct([pl.col(k).cast(pl.String) for k in keys]).map_elements(
        lambda row: json.dumps(row, sort_keys=True), return_dtype=pl.String
    )
    partition = (
        pl.concat_str([pl.col(c).cast(pl.String) for c in partition_columns], separator="|")
        if partition_columns
        else pl.lit(None, pl.String)
    )
    now = dt.datetime.now(dt.UTC)
    if "_reason" not in errors.columns:
        errors = errors.with_columns(reason_expr())
    return errors.select(
        pl.lit(run_id).alias("run_id"),
        pl.lit(asset).alias("asset"),
        partition.alias("partition"),
        key.alias("key"),
        reason_of(pl.col("_error")).alias("reason"),
        pl.col("_reason").fill_null("other"),
        "_error",
        "_request_hash",
        "_model",
        "_attempts",
        pl.lit(now).alias("recorded_at"),
    ).cast(ERRORS_SCHEMA)


def summary_markdown(
    failed: pl.DataFrame, *, asset: str, run_id: str, total_rows: int | None, top: int = 10
) -> str:
    """Markdown: how many rows failed, the top reasons with counts, how to see and re-run them.

    Reasons are the stable classes (``_reason``), each with one row's ``_error`` as example.
    """
    if failed.is_empty():
        return f"**No failed rows** in `{asset}` ({total_rows} rows)."
    by = pl.col("reason")
    if "_reason" in failed.columns:  # rows recorded before _reason existed keep their old label
        by = pl.coalesce("_reason", "reason") if "reason" in failed.columns else pl.col("_reason")
    reasons = (
        failed.group_by(by.alias("reason"))
        .agg(pl.len().alias("rows"), pl.col("_error").first().alias("example"))
        .sort(["rows", "reason"], descending=[True, False])
    )
    parts = sorted(p for p in failed["partition"].unique().to_list() if p is not None)
    where = f" (partitions: {', '.join(parts[:10])}{' …' if len(parts) > 10 else ''})"
    counted = f"{failed.height} of {total_rows}" if total_rows is not None else str(failed.height)
    lines = [
        f"**{counted} rows failed** in `{asset}`{where if parts else ''}.",
        "",
        "| reason | rows | example |",
        "|---|---:|---|",
    ]
    for reason, rows, example in reasons.head(top).iter_rows():
        lines.append(f"| {_cell(reason)} | {rows} | {_cell((example or '')[:160])} |")
    if reasons.height > top:
        lines.append(f"| … {reasons.height - top} more reasons | | |")
    lines += [
        "",
        f"Rows: `SELECT * FROM {ERRORS_TABLE} WHERE run_id = '{run_id}'` (by cause: "
        "`GROUP BY _reason`).",
        "Re-run only them: launch this asset and partition(s) again with run config "
        "`only_failed: true`.",
    ]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


@dataclass(frozen=True)
class ErrorReport:
    """What was recorded for one asset in one run."""

    rows: int
    uri: str | None
    version: int | None
    markdown: str


def write_error_report(
    frame: pl.DataFrame,
    *,
    asset: str,
    run_id: str,
    keys: Sequence[str],
    partition_columns: Sequence[str],
    errors: ErrorTable,
) -> ErrorReport:
    """Record the failed rows of ``frame`` in ``errors`` and summarize them.

    Writes only when there are failed rows or when an earlier attempt of the same run recorded
    some (a successful retry then clears them): see :meth:`ErrorTable.replace`.
    """
    failed = failed_rows(
        frame, asset=asset, run_id=run_id, keys=keys, partition_columns=partition_columns
    )
    markdown = summary_markdown(failed, asset=asset, run_id=run_id, total_rows=frame.height)
    version = errors.replace(failed, run_id=run_id, asset=asset)
    if version is None:
        return ErrorReport(rows=0, uri=None, version=None, markdown=markdown)
    return ErrorReport(rows=failed.height, uri=errors.uri, version=version, markdown=markdown)


# --- re-running only the failed rows ----------------------------------------------------------


def split_for_rerun(
    upstream: pl.DataFrame, previous: pl.DataFrame | None, keep: Sequence[str]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split a partition's input into (rows to send again, stored rows to keep as they are).

    Rows to send: those whose stored ``_status`` is ``error`` and those with no stored row.
    Rows kept: stored ``ok``/``skipped`` rows whose key is still in the input.
    """
    keys = list(keep)
    check_unique_keys(upstream, keys, where="the input of a re-run of failed rows")
    if previous is None or previous.is_empty():
        return upstream, pl.DataFrame()
    done = previous.filter(pl.col("_status").is_in(KEEP_STATUSES))
    done = done.unique(subset=keys, keep="last")
    probe = upstream.select(keys).unique()
    aligned = done.with_columns(pl.col(k).cast(upstream.schema[k]) for k in keys)
    kept = aligned.join(probe, on=keys, how="semi", nulls_equal=True)
    to_send = upstream.join(kept.select(keys), on=keys, how="anti", nulls_equal=True)
    return to_send, kept


def superseded_hashes(
    to_send: pl.DataFrame, previous: pl.DataFrame | None, keep: Sequence[str]
) -> list[str | None]:
    """Per row to send: the stored ``_request_hash`` whose cached answer the re-run supersedes.

    Set for rows whose stored answer was received but invalid (``_reason`` in ``ANSWERED``:
    the cache holds it and would replay it); null for rows that failed in transit (nothing
    cached, the normal key is asked) and for rows never processed (their answers, if paid
    for, are in the cache under the normal key and must be reused).
    """
    keys = list(keep)
    if previous is None or previous.is_empty() or to_send.is_empty():
        return [None] * to_send.height
    stored = previous.filter(pl.col("_status") == "error")
    if "_reason" not in stored.columns:
        stored = stored.with_columns(reason_expr())
    stored = (
        stored.filter(pl.col("_reason").is_in(sorted(ANSWERED)))
        .unique(subset=keys, keep="last")
        .select(*(pl.col(k).cast(to_send.schema[k]) for k in keys), "_request_hash")
    )
    joined = to_send.select(keys).join(
        stored, on=keys, how="left", nulls_equal=True, maintain_order="left"
    )
    return joined["_request_hash"].to_list()


def _align(kept: pl.DataFrame, schema: pl.Schema) -> pl.DataFrame:
    """Stored rows in the computed frame's columns; provenance columns added since are filled."""
    if "_reason" in schema and "_reason" not in kept.columns and "_status" in kept.columns:
        kept = kept.with_columns(reason_expr())
    missing = [c for c in schema if c not in kept.columns]
    if missing:
        kept = kept.with_columns(pl.lit(None, schema[c]).alias(c) for c in missing)
    return kept.select(list(schema)).cast(dict(schema))


def merge_rerun(
    computed: pl.DataFrame, kept: pl.DataFrame, upstream: pl.DataFrame, keep: Sequence[str]
) -> pl.DataFrame:
    """The whole partition again: new answers + kept rows, in the input's row order."""
    if kept.is_empty():
        return computed
    keys = list(keep)
    stored = _align(kept, computed.schema)
    merged = pl.concat([computed, stored], how="vertical")
    order = upstream.select(keys).with_row_index("__order")
    return (
        merged.join(order, on=keys, how="left", nulls_equal=True)
        .sort("__order", nulls_last=True)
        .drop("__order")
    )
