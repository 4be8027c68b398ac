"""Asset factories: one line declares an LLM column as a partitioned Dagster asset.

``embedding_asset`` and ``generated_asset`` turn a spec into an asset that reads its source's
partition(s) through the Delta IO manager, runs the functional core with the engine of an
``LLMResource``, and returns the kept key/partition columns + the new column + provenance for
the IO manager to write. Definition time does what can be done before any money is spent:
the prompt is checked against the source's declared columns, the output type against Delta, and
the code version is the spec's hash (prompt, output JSON schema, model, parameters), so editing
a prompt marks exactly that asset and its downstream stale.

Examples:
    >>> labels = generated_asset(  # doctest: +SKIP
    ...     "review_labels", source=reviews, prompt="Review: {text}", output=ReviewLabel,
    ...     key="review_id", model="gpt-4o-mini")

No ``from __future__ import annotations`` here: Dagster reads the asset function's annotations
at definition time and needs real types, not strings.
"""

import dataclasses
import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

import dagster as dg
import polars as pl
from dagster import AssetExecutionContext

from lakeloom.assets import checks
from lakeloom.assets.error_report import (
    LLMAssetConfig,
    prepare_rerun,
    record_errors,
    stored_supersedes,
)
from lakeloom.assets.partition_spend import partition_label, row_partitions
from lakeloom.assets.run_modes import (
    LLMColumn,
    attach,
    column_settings,
    dry_run_events,
    make_runner,
    run_options,
)
from lakeloom.assets.upstream import Source, resolve_source
from lakeloom.core.embed import run_embed
from lakeloom.core.generate import run_generate
from lakeloom.core.provenance import PROVENANCE_DESCRIPTIONS, PROVENANCE_SCHEMA, ColumnStats
from lakeloom.core.row_keys import check_unique_keys
from lakeloom.core.specs import EmbedSpec, GenerateSpec
from lakeloom.engine.batch.runner import BatchSettings
from lakeloom.engine.keys import canonical_json
from lakeloom.engine.modes import Mode, ModeRunner
from lakeloom.engine.types import RunContext
from lakeloom.io_managers.partitions import dimensions

DEFAULT_RETRY = dg.RetryPolicy(
    max_retries=2, delay=15, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)
"""Step retries for transient errors only: a rerun is cheap, the response cache answers
everything already paid for. Deterministic errors (bad input or config, a prompt over the
context window, a missing or wrong key) fail the step at once: see ``DETERMINISTIC``."""

DETERMINISTIC: tuple[type[BaseException], ...] = (ValueError, TypeError, LookupError)
"""Errors that a retry cannot fix (input, config, prompt/schema, context window, missing key,
unknown model): they fail the step with their own message and are not retried."""


def _declared_columns(metadata: Mapping) -> dict[str, str] | None:
    """``{column: type}`` from the source's ``dagster/column_schema`` metadata, if declared."""
    schema = metadata.get("dagster/column_schema")
    schema = getattr(schema, "schema", schema)  # TableSchemaMetadataValue wraps a TableSchema
    if isinstance(schema, dg.TableSchema):
        return {c.name: c.type for c in schema.columns}
    return None


def _keep(key: str | Sequence[str], partition_columns: Sequence[str]) -> list[str]:
    keys = [key] if isinstance(key, str) else list(key)
    if not keys:
        raise ValueError("key: name at least one column that identifies a row")
    return list(dict.fromkeys([*keys, *partition_columns]))


def _code_version(spec_version: str, keep: Sequence[str]) -> str:
    payload = canonical_json({"spec": spec_version, "keep": list(keep)})
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _column_schema(
    keep: Sequence[str],
    declared: Mapping[str, str] | None,
    value: tuple[str, str, str],
) -> dg.TableSchema:
    """Dagster column metadata: kept columns, the value column with its descriptions, provenance."""
    columns = [dg.TableColumn(name, (declared or {}).get(name, "inherited")) for name in keep]
    columns.append(dg.TableColumn(*value))
    columns += [
        dg.TableColumn(name, str(dtype).lower(), PROVENANCE_DESCRIPTIONS[name])
        for name, dtype in PROVENANCE_SCHEMA.items()
    ]
    return dg.TableSchema(columns=columns)


def _stats_metadata(stats: ColumnStats, extra: Mapping[str, Any]) -> dict[str, Any]:
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


def _build(
    *,
    name: str,
    source: Source,
    key_prefix: str | Sequence[str] | None,
    keep_key: str | Sequence[str],
    spec_version: str,
    resource_key: str,
    pool: str | None,
    partitions_def: dg.PartitionsDefinition | None,
    group_name: str | None,
    description: str,
    value_column: tuple[str, str, str],
    check_specs: Callable[[dg.AssetKey], list[dg.AssetCheckSpec]],
    compute: Callable[..., tuple[pl.DataFrame, ColumnStats, dict[str, Any]]],
    validate: Callable[[Mapping[str, Any], str], None],
    extra_checks: Callable[[pl.DataFrame], list[dg.AssetCheckResult]],
    min_ok_ratio: float,
    blocking: bool,
    retry_policy: dg.RetryPolicy | None,
    backfill_policy: dg.BackfillPolicy | None,
    io_manager_key: str,
    metadata: Mapping[str, Any] | None,
    kind: str,
    column: LLMColumn,
) -> dg.AssetsDefinition:
    source_key, source_partitions, source_meta = resolve_source(source)
    partitions = partitions_def if partitions_def is not None else source_partitions
    declared = _declared_columns(source_meta)
    if declared is not None:  # fail at definition time, naming the column
        validate(declared, f"source asset {source_key.to_user_string()}")
    dims = dimensions(partitions, source_meta) if partitions is not None else ()
    keep = _keep(keep_key, [d.column for d in dims])
    row_key = [keep_key] if isinstance(keep_key, str) else list(keep_key)
    partition_columns = [d.column for d in dims if d.column not in row_key]
    if declared is not None:
        missing = [c for c in keep if c not in declared and c not in {d.column for d in dims}]
        if missing:
            raise ValueError(
                f"asset {name!r}: key column(s) {missing} are not in source asset "
                f"{source_key.to_user_string()} (columns: {', '.join(declared)})"
            )
    asset_key = dg.AssetKey([*_prefix(key_prefix), name])
    pool_name = pool or f"llm-{resource_key}"
    asset_metadata: dict[str, Any] = {
        **(metadata or {}),
        "dagster/column_schema": _column_schema(keep, declared, value_column),
        "lakeloom/spec_version": spec_version,
        "lakeloom/resource_key": resource_key,
    }
    if "partition_expr" in source_meta:
        asset_metadata["partition_expr"] = source_meta["partition_expr"]

    @dg.asset(
        key=asset_key,
        ins={"upstream": dg.AssetIn(key=source_key)},
        partitions_def=partitions,
        required_resource_keys={resource_key},
        code_version=_code_version(spec_version, keep),
        metadata=asset_metadata,
        description=description,
        group_name=group_name,
        pool=pool_name,
        op_tags={"lakeloom/resource": resource_key, "lakeloom/kind": kind},
        retry_policy=retry_policy,
        backfill_policy=backfill_policy,
        io_manager_key=io_manager_key,
        check_specs=check_specs(asset_key),
        kinds={"polars", "deltalake"},
        output_required=False,  # a dry run (lakeloom/dry_run) materializes nothing
    )
    def _asset(
        context: AssetExecutionContext, upstream: pl.DataFrame, config: LLMAssetConfig
    ) -> Iterator[dg.Output | dg.AssetCheckResult]:
        resource = getattr(context.resources, resource_key)
        try:  # bad input or config: fail before any request, and do not retry the step
            where = f"upstream asset {source_key.to_user_string()}"
            validate(upstream.schema, where)
            check_unique_keys(upstream, row_key, where=where, unique_within=partition_columns)
            if hasattr(resource, "check_pool"):
                resource.check_pool(pool_name, asset=asset_key.to_user_string())
        except ValueError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
        run = RunContext(
            run_id=context.run_id,
            asset=asset_key.to_user_string(),
            partition=partition_label(context),
        )
        rerun = prepare_rerun(
            context,
            config,
            asset_key=asset_key,
            io_manager_key=io_manager_key,
            upstream=upstream,
            keep=keep,
        )
        run.row_partitions = row_partitions(context, rerun.to_send if rerun else upstream, dims)
        if run.row_partitions is not None:  # booked per row's partition, not to a range label
            run.partition = None
        supersedes = rerun.supersedes if rerun else None
        if rerun is None and kind == "generate":  # rows a re-run fixed stay fixed
            supersedes = stored_supersedes(
                context, asset_key, io_manager_key, upstream, keep, [d.column for d in dims]
            )
        mode, dry_run = run_options(context.run.tags, config, column)
        runners: list[ModeRunner] = []

        def runner_for(engine: Any) -> ModeRunner:
            runners.append(
                make_runner(engine, column, mode=mode, dry_run=dry_run, log=context.log.info)
            )
            return runners[-1]

        try:
            frame, stats, extra = compute(
                resource,
                rerun.to_send if rerun else upstream,
                keep,
                run,
                context.log.info,
                runner_for,
                supersedes=supersedes,
                label_columns=row_key,
            )
        except DETERMINISTIC as exc:  # a retry would fail the same way: say why, once
            raise dg.Failure(
                description=f"{asset_key.to_user_string()}: {exc}", allow_retries=False
            ) from exc
        if runners:
            extra = extra | runners[-1].metadata()
        if dry_run:  # forecast only: nothing was sent, nothing is materialized
            yield from dry_run_events(context, asset_key, runners[-1])
            return
        if rerun:
            frame = rerun.merge(frame, stats)
        extra = extra | record_errors(
            context,
            frame,
            asset_key=asset_key,
            io_manager_key=io_manager_key,
            keys=[k for k in keep if k not in {d.column for d in dims}] or keep,
            partition_columns=[d.column for d in dims],
            only_failed=config.only_failed,
        )
        yield from _output_events(
            context, asset_key, frame, stats, extra, min_ok_ratio, blocking, extra_checks
        )

    return attach(_asset, dataclasses.replace(column, source_key=source_key, keep=tuple(keep)))


def _output_events(
    context: AssetExecutionContext,
    asset_key: dg.AssetKey,
    frame: pl.DataFrame,
    stats: ColumnStats,
    extra: dict[str, Any],
    min_ok_ratio: float,
    blocking: bool,
    extra_checks: Callable[[pl.DataFrame], list[dg.AssetCheckResult]],
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """The summary line, the output and its checks, then the step's own failure.

    A failed blocking check fails the step naming the top reasons with counts (retried only
    when one of them is transient), not Dagster's bare "1 blocking asset check failed".
    """
    reasons = checks.top_reasons(frame, top=10)
    stats.reasons = {r.reason: r.rows for r in reasons}
    reasons = reasons[:5]
    context.log.info(
        f"{asset_key.to_user_string()}: {stats.rows_ok} ok, {stats.rows_error} error, "
        f"{stats.rows_skipped} skipped; {stats.requests} requests ({stats.cache_hits} "
        f"cached, {stats.repairs} repairs); ${stats.cost_usd:.4f}"
        + (f"; top reasons: {checks.reasons_text(reasons)}" if reasons else "")
    )
    yield dg.Output(frame, metadata=_stats_metadata(stats, extra))
    ok_ratio = checks.check_ok_ratio(frame, min_ok_ratio, reasons=reasons)
    yield ok_ratio
    yield from extra_checks(frame)
    if blocking and not ok_ratio.passed:  # name the cause in the step's own failure
        raise checks.blocking_failure(asset_key, ok_ratio, reasons)


def _prefix(key_prefix: str | Sequence[str] | None) -> list[str]:
    if key_prefix is None:
        return []
    return [key_prefix] if isinstance(key_prefix, str) else list(key_prefix)


def _ok_ratio_specs(
    min_ok_ratio: float, blocking: bool, more: Callable[[dg.AssetKey], list[dg.AssetCheckSpec]]
) -> Callable[[dg.AssetKey], list[dg.AssetCheckSpec]]:
    return lambda key: [checks.ok_ratio_spec(key, min_ok_ratio, blocking=blocking), *more(key)]


def embedding_asset(
    name: str,
    source: Source,
    column: str,
    *,
    key: str | Sequence[str],
    model: str,
    output_column: str = "embedding",
    dimensions: int | None = None,
    batch_size: int = 128,
    encoding_format: Literal["base64", "float"] = "base64",
    long_text: Literal["error", "truncate", "chunk_mean"] = "error",
    resource_key: str = "embedder",
    pool: str | None = None,
    partitions_def: dg.PartitionsDefinition | None = None,
    key_prefix: str | Sequence[str] | None = None,
    group_name: str | None = None,
    description: str | None = None,
    min_ok_ratio: float = 0.99,
    blocking: bool = True,
    retry_policy: dg.RetryPolicy | None = DEFAULT_RETRY,
    backfill_policy: dg.BackfillPolicy | None = None,
    io_manager_key: str = "io_manager",
    metadata: Mapping[str, Any] | None = None,
    mode: Mode = "online",
    batch_min_requests: int = 1_000,
    batch_max_wait_s: float | None = None,
    batch: BatchSettings | None = None,
) -> dg.AssetsDefinition:
    """Declare an asset with ``key`` columns + a ``list[f32]`` embedding of ``column`` per row.

    Partitions come from ``source`` (or ``partitions_def``); the pool defaults to
    ``llm-<resource_key>``; ``backfill_policy`` defaults to one run for any number of partitions.
    ``mode`` is ``online``, ``batch`` (OpenAI Batch API, half price, up to 24 h) or ``auto`` (batch
    when at least ``batch_min_requests`` requests miss the cache; needs ``batch_max_wait_s``);
    see :mod:`lakeloom.assets.run_modes` for run tags and dry runs. A text over the model's
    per-input token limit is that row's error unless ``long_text`` is ``truncate`` or
    ``chunk_mean``; embeddings are cached per text, so any regrouping is answered from the cache.

    Examples:
        >>> vectors = embedding_asset(  # doctest: +SKIP
        ...     "review_vectors", source=reviews, column="text", key="review_id",
        ...     model="all-MiniLM-L6-v2")
    """
    spec = EmbedSpec(
        column=column,
        model=model,
        output_column=output_column,
        dimensions=dimensions,
        batch_size=batch_size,
        encoding_format=encoding_format,
        long_text=long_text,
    )
    width = f"list<float32>[{dimensions}]" if dimensions else "list<float32>"
    column = column_settings(
        "embed",
        spec,
        resource_key,
        mode=mode,
        batch=batch,
        batch_min_requests=batch_min_requests,
        batch_max_wait_s=batch_max_wait_s,
    )

    def compute(
        resource: Any,
        upstream: pl.DataFrame,
        keep: list[str],
        run: RunContext,
        log: Any,
        runner_for: Callable[[Any], Any] = lambda engine: engine,
        supersedes: Sequence[str | None] | None = None,
        label_columns: Sequence[str] | None = None,
    ):
        engine = runner_for(resource.engine(progress=log))
        frame, stats = run_embed(upstream, spec, engine, keep=keep, context=run)
        widths = frame[output_column].list.len().drop_nulls().unique().to_list()
        return frame, stats, {"model": model, "spec_version": spec.version, "widths": widths}

    def validate(schema: Mapping[str, Any], where: str) -> None:
        spec.validate_input(schema, where=where)

    return _build(
        name=name,
        source=source,
        key_prefix=key_prefix,
        keep_key=key,
        spec_version=spec.version,
        resource_key=resource_key,
        pool=pool,
        partitions_def=partitions_def,
        group_name=group_name,
        description=description or f"Embeddings of {spec.column!r} with {model}.",
        value_column=(output_column, width, f"embedding of {spec.column!r} by {model}"),
        check_specs=_ok_ratio_specs(
            min_ok_ratio, blocking, lambda k: [checks.embedding_width_spec(k)]
        ),
        compute=compute,
        validate=validate,
        extra_checks=lambda df: [checks.check_embedding_width(df, output_column, dimensions)],
        min_ok_ratio=min_ok_ratio,
        blocking=blocking,
        retry_policy=retry_policy,
        backfill_policy=backfill_policy or dg.BackfillPolicy.single_run(),
        io_manager_key=io_manager_key,
        metadata=metadata,
        kind="embed",
        column=column,
    )


def generated_asset(
    name: str,
    source: Source,
    prompt: str,
    output: Any,
    *,
    key: str | Sequence[str],
    model: str,
    output_column: str = "output",
    system: str | None = None,
    temperature: float = 0.0,
    max_tokens: int = 512,
    max_repairs: int = 2,
    seed: int | None = None,
    resource_key: str = "llm",
    pool: str | None = None,
    partitions_def: dg.PartitionsDefinition | None = None,
    key_prefix: str | Sequence[str] | None = None,
    group_name: str | None = None,
    description: str | None = None,
    min_ok_ratio: float = 0.9,
    blocking: bool = True,
    retry_policy: dg.RetryPolicy | None = DEFAULT_RETRY,
    backfill_policy: dg.BackfillPolicy | None = None,
    io_manager_key: str = "io_manager",
    metadata: Mapping[str, Any] | None = None,
    mode: Mode = "online",
    batch_min_requests: int = 1_000,
    batch_max_wait_s: float | None = None,
    batch: BatchSettings | None = None,
) -> dg.AssetsDefinition:
    """Declare an asset with ``key`` columns + one typed LLM answer per row of ``source``.

    ``prompt`` is a ``str.format`` template over the source's columns (checked now against its
    declared column schema, and again against the real frame before any request); ``output`` is
    a Pydantic model, an Enum, a ``Literal[...]`` or ``str``. ``mode``, ``batch_min_requests``,
    ``batch_max_wait_s`` and ``batch`` choose online or Batch API runs, as in ``embedding_asset``
    (repair rounds after a batch always go online).

    Examples:
        >>> labels = generated_asset(  # doctest: +SKIP
        ...     "review_labels", source=reviews, prompt="Review: {text}", output=ReviewLabel,
        ...     key="review_id", model="gpt-4o-mini")
    """
    spec = GenerateSpec(
        prompt=prompt,
        output=output,
        model=model,
        system=system,
        output_column=output_column,
        temperature=temperature,
        max_tokens=max_tokens,
        max_repairs=max_repairs,
        seed=seed,
    )
    schema = spec.schema
    allowed = schema.allowed
    column = column_settings(
        "generate",
        spec,
        resource_key,
        mode=mode,
        batch=batch,
        batch_min_requests=batch_min_requests,
        batch_max_wait_s=batch_max_wait_s,
    )

    def compute(
        resource: Any,
        upstream: pl.DataFrame,
        keep: list[str],
        run: RunContext,
        log: Any,
        runner_for: Callable[[Any], Any] = lambda engine: engine,
        supersedes: Sequence[str | None] | None = None,
        label_columns: Sequence[str] | None = None,
    ):
        engine = runner_for(resource.engine(progress=log))
        mode = resource.structured_output
        frame, stats = run_generate(
            upstream,
            spec,
            engine,
            keep=keep,
            structured_output=mode,
            context=run,
            supersedes=supersedes,
            label_columns=label_columns,
        )
        return (
            frame,
            stats,
            {
                "model": model,
                "spec_version": spec.version,
                "prompt_hash": hashlib.sha256(prompt.encode()).hexdigest()[:16],
                "schema_hash": hashlib.sha256(schema.schema_json.encode()).hexdigest()[:16],
                "structured_output": mode,
            },
        )

    def validate(columns: Mapping[str, Any], where: str) -> None:
        spec.validate_input(_polars_only(columns), where=where)

    def extra(df: pl.DataFrame) -> list[dg.AssetCheckResult]:
        return [checks.check_enum_values(df, output_column, allowed)] if allowed else []

    more = (lambda k: [checks.enum_values_spec(k)]) if allowed else (lambda k: [])
    return _build(
        name=name,
        source=source,
        key_prefix=key_prefix,
        keep_key=key,
        spec_version=spec.version,
        resource_key=resource_key,
        pool=pool,
        partitions_def=partitions_def,
        group_name=group_name,
        description=description or f"{schema.name} per row from {model}: {prompt!r}",
        value_column=(output_column, _type_label(schema.dtype), schema.descriptions()),
        check_specs=_ok_ratio_specs(min_ok_ratio, blocking, more),
        compute=compute,
        validate=validate,
        extra_checks=extra,
        min_ok_ratio=min_ok_ratio,
        blocking=blocking,
        retry_policy=retry_policy,
        backfill_policy=backfill_policy or dg.BackfillPolicy.single_run(),
        io_manager_key=io_manager_key,
        metadata=metadata,
        kind="generate",
        column=column,
    )


def _polars_only(columns: Mapping[str, Any]) -> Mapping[str, Any]:
    """Keep column names only: declared Dagster types are strings (the frame's are checked)."""
    return {k: (v if isinstance(v, pl.DataType) else None) for k, v in columns.items()}


def _type_label(dtype: pl.DataType) -> str:
    return str(dtype).lower()
