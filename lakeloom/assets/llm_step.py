"""The step of an LLM column asset: check input, plan the rerun, run the core, emit events.

``ColumnLayout`` is what the definition fixed (keys, partition dimensions, pool, kind);
:func:`run_step` is the body of every embedding and generated asset.

No ``from __future__ import annotations``: Dagster objects are built from real types here.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg
import polars as pl
from dagster import AssetExecutionContext

from lakeloom.assets import checks
from lakeloom.assets.column_kinds import ColumnKind
from lakeloom.assets.error_report import (
    LLMAssetConfig,
    prepare_rerun,
    record_errors,
    stored_supersedes,
)
from lakeloom.assets.partition_spend import partition_label, row_partitions
from lakeloom.assets.run_modes import LLMColumn, dry_run_events, make_runner, run_options
from lakeloom.core.provenance import ColumnStats
from lakeloom.core.row_keys import check_unique_keys
from lakeloom.engine.modes import ModeRunner
from lakeloom.engine.types import RunContext

DETERMINISTIC: tuple[type[BaseException], ...] = (ValueError, TypeError, LookupError)
"""Errors that a retry cannot fix (input, config, prompt/schema, context window, missing key,
unknown model): they fail the step with their own message and are not retried."""


@dataclass(frozen=True)
class ColumnLayout:
    """What the asset definition fixed, as the step needs it."""

    asset_key: dg.AssetKey
    source_key: dg.AssetKey
    keep: list[str]
    row_key: list[str]
    dims: Sequence[Any]
    resource_key: str
    pool: str
    io_manager_key: str
    blocking: bool
    kind: ColumnKind
    column: LLMColumn

    @property
    def partition_columns(self) -> list[str]:
        """Partition columns that are not part of the row key (keys are unique within them)."""
        return [d.column for d in self.dims if d.column not in self.row_key]

    @property
    def dim_columns(self) -> list[str]:
        """Every partition dimension's column."""
        return [d.column for d in self.dims]


def _check_input(layout: ColumnLayout, resource: Any, upstream: pl.DataFrame) -> None:
    """Bad input or config fails before any request, and the step is not retried."""
    try:
        where = f"upstream asset {layout.source_key.to_user_string()}"
        layout.kind.validate(upstream.schema, where)
        check_unique_keys(
            upstream, layout.row_key, where=where, unique_within=layout.partition_columns
        )
        if hasattr(resource, "check_pool"):
            resource.check_pool(layout.pool, asset=layout.asset_key.to_user_string())
    except ValueError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc


def _run_context(
    layout: ColumnLayout, context: AssetExecutionContext, frame: pl.DataFrame
) -> RunContext:
    run = RunContext(
        run_id=context.run_id,
        asset=layout.asset_key.to_user_string(),
        partition=partition_label(context),
    )
    run.row_partitions = row_partitions(context, frame, layout.dims)
    if run.row_partitions is not None:  # booked per row's partition, not to a range label
        run.partition = None
    return run


def run_step(
    layout: ColumnLayout,
    context: AssetExecutionContext,
    upstream: pl.DataFrame,
    config: LLMAssetConfig,
) -> Iterator[dg.Output | dg.AssetCheckResult | dg.AssetObservation]:
    """The body of an LLM column asset: one pass from the upstream frame to its events."""
    resource = getattr(context.resources, layout.resource_key)
    _check_input(layout, resource, upstream)
    rerun = prepare_rerun(
        context,
        config,
        asset_key=layout.asset_key,
        io_manager_key=layout.io_manager_key,
        upstream=upstream,
        keep=layout.keep,
    )
    to_send = rerun.to_send if rerun else upstream
    run = _run_context(layout, context, to_send)
    supersedes = rerun.supersedes if rerun else None
    if rerun is None and layout.kind.kind == "generate":  # rows a re-run fixed stay fixed
        supersedes = stored_supersedes(
            context,
            layout.asset_key,
            layout.io_manager_key,
            upstream,
            layout.keep,
            layout.dim_columns,
        )
    mode, dry_run = run_options(context.run.tags, config, layout.column)
    runners: list[ModeRunner] = []

    def runner_for(engine: Any) -> ModeRunner:
        runners.append(
            make_runner(engine, layout.column, mode=mode, dry_run=dry_run, log=context.log.info)
        )
        return runners[-1]

    try:
        frame, stats, extra = layout.kind.compute(
            resource,
            to_send,
            layout.keep,
            run,
            context.log.info,
            runner_for,
            supersedes=supersedes,
            label_columns=layout.row_key,
        )
    except DETERMINISTIC as exc:  # a retry would fail the same way: say why, once
        raise dg.Failure(
            description=f"{layout.asset_key.to_user_string()}: {exc}", allow_retries=False
        ) from exc
    if runners:
        extra = extra | runners[-1].metadata()
    if dry_run:  # forecast only: nothing was sent, nothing is materialized
        yield from dry_run_events(context, layout.asset_key, runners[-1])
        return
    if rerun:
        frame = rerun.merge(frame, stats)
    extra = extra | _record_errors(layout, context, frame, config)
    yield from _output_events(context, layout, frame, stats, extra)


def _record_errors(
    layout: ColumnLayout, context: AssetExecutionContext, frame: pl.DataFrame, config: Any
) -> dict[str, Any]:
    dims = set(layout.dim_columns)
    return record_errors(
        context,
        frame,
        asset_key=layout.asset_key,
        io_manager_key=layout.io_manager_key,
        keys=[k for k in layout.keep if k not in dims] or layout.keep,
        partition_columns=layout.dim_columns,
        only_failed=config.only_failed,
    )


def _output_events(
    context: AssetExecutionContext,
    layout: ColumnLayout,
    frame: pl.DataFrame,
    stats: ColumnStats,
    extra: dict[str, Any],
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """The summary line, the output and its checks, then the step's own failure.

    A failed blocking check fails the step naming the top reasons with counts (retried only
    when one of them is transient), not Dagster's bare "1 blocking asset check failed".
    """
    asset_key, min_ok_ratio = layout.asset_key, layout.kind.min_ok_ratio
    reasons = checks.top_reasons(frame, top=10)
    stats.reasons = {r.reason: r.rows for r in reasons}
    reasons = reasons[:5]
    context.log.info(
        f"{asset_key.to_user_string()}: {stats.rows_ok} ok, {stats.rows_error} error, "
        f"{stats.rows_skipped} skipped; {stats.requests} requests ({stats.cache_hits} "
        f"cached, {stats.repairs} repairs); ${stats.cost_usd:.4f}"
        + (f"; top reasons: {checks.reasons_text(reasons)}" if reasons else "")
    )
    yield dg.Output(frame, metadata=stats_metadata(stats, extra))
    ok_ratio = checks.check_ok_ratio(frame, min_ok_ratio, reasons=reasons)
    yield ok_ratio
    yield from layout.kind.extra_checks(frame)
    if layout.blocking and not ok_ratio.passed:  # name the cause in the step's own failure
        raise checks.blocking_failure(asset_key, ok_ratio, reasons)


def stats_metadata(stats: ColumnStats, extra: dict[str, Any]) -> dict[str, Any]:
    """The materialization metadata of one run: counters, tokens, cost, latency, reasons."""
    md: dict[str, Any] = {
        "rows_ok": stats.rows_ok,
        "rows_error": stats.rows_error,
        "rows_skipped": stats.rows_skipped,
        "ok_ratio": dg.MetadataValue.float(round(stats.ok_ratio, 6)),
        "requests": stats.requests,
        "cache_hits": stats.cache_hits,
        "repairs": stats.repairs,
        "retries": stats.retries,
        "rate_limited_429": stats.rate_limited,
        "input_tokens": stats.input_tokens,
        "output_tokens": stats.output_tokens,
        "cost_usd": dg.MetadataValue.float(round(stats.cost_usd, 6)),
        "latency_p50_s": dg.MetadataValue.float(stats.latency_p50_s or 0.0),
        "latency_p95_s": dg.MetadataValue.float(stats.latency_p95_s or 0.0),
        "budget_exceeded": stats.budget_exceeded,
        "top_errors": dg.MetadataValue.json(stats.errors),
        "top_reasons": dg.MetadataValue.json(stats.reasons),
    }
    md.update(extra)
    return md
