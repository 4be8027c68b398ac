"""Build one LLM column asset from a column kind and its options: definition-time work only.

What can be checked before any money is spent is checked here: the spec against the source's
declared columns, the key columns against them too, and the code version is the spec's digest
with the kept columns. The step itself is :func:`lakeloom.assets.llm_step.run_step`.

No ``from __future__ import annotations`` here: Dagster reads the asset function's annotations
at definition time and needs real types, not strings.
"""

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import dagster as dg
import polars as pl
from dagster import AssetExecutionContext

from lakeloom.assets import checks
from lakeloom.assets.column_kinds import ColumnKind
from lakeloom.assets.define import define_asset
from lakeloom.assets.error_report import LLMAssetConfig
from lakeloom.assets.llm_step import ColumnLayout, run_step
from lakeloom.assets.options import DEFAULT_RETRY, AssetOptions
from lakeloom.assets.run_modes import attach, column_settings
from lakeloom.assets.upstream import Source, resolve_source
from lakeloom.core.provenance import PROVENANCE_DESCRIPTIONS, PROVENANCE_SCHEMA
from lakeloom.core.specs import digest
from lakeloom.io_managers.partitions import dimensions

SPEC_VERSION = "lakeloom/spec_version"
"""The one metadata name of a spec's digest, on every asset built from a spec."""


def declared_columns(metadata: Mapping) -> dict[str, str] | None:
    """``{column: type}`` from the source's ``dagster/column_schema`` metadata, if declared."""
    schema = metadata.get("dagster/column_schema")
    schema = getattr(schema, "schema", schema)  # TableSchemaMetadataValue wraps a TableSchema
    if isinstance(schema, dg.TableSchema):
        return {c.name: c.type for c in schema.columns}
    return None


def _keep(row_key: Sequence[str], partition_columns: Sequence[str]) -> list[str]:
    if not row_key:
        raise ValueError("key: name at least one column that identifies a row")
    return list(dict.fromkeys([*row_key, *partition_columns]))


def code_version(spec_version: str, keep: Sequence[str]) -> str:
    """The asset's code version: the spec's digest with the kept columns."""
    return digest({"spec": spec_version, "keep": list(keep)})


def _column_schema(
    keep: Sequence[str], declared: Mapping[str, str] | None, value: tuple[str, str, str]
) -> dg.TableSchema:
    """Dagster column metadata: kept columns, the value column with its descriptions, provenance."""
    columns = [dg.TableColumn(name, (declared or {}).get(name, "inherited")) for name in keep]
    columns.append(dg.TableColumn(*value))
    columns += [
        dg.TableColumn(name, str(dtype).lower(), PROVENANCE_DESCRIPTIONS[name])
        for name, dtype in PROVENANCE_SCHEMA.items()
    ]
    return dg.TableSchema(columns=columns)


def _layout(
    name: str,
    source: Source,
    key: str | Sequence[str],
    kind: ColumnKind,
    options: AssetOptions,
    resource_key: str,
) -> tuple[ColumnLayout, dg.PartitionsDefinition | None, dict[str, Any]]:
    """Resolve source, partitions and kept columns, checking them against declared columns."""
    source_key, source_partitions, source_meta = resolve_source(source)
    partitions = options.partitions_def
    if partitions is None:
        partitions = source_partitions
    declared = declared_columns(source_meta)
    if declared is not None:  # fail at definition time, naming the column
        kind.validate(declared, f"source asset {source_key.to_user_string()}")
    dims = dimensions(partitions, source_meta) if partitions is not None else ()
    row_key = [key] if isinstance(key, str) else list(key)
    keep = _keep(row_key, [d.column for d in dims])
    if declared is not None:
        missing = [c for c in keep if c not in declared and c not in {d.column for d in dims}]
        if missing:
            raise ValueError(
                f"asset {name!r}: key column(s) {missing} are not in source asset "
                f"{source_key.to_user_string()} (columns: {', '.join(declared)})"
            )
    metadata: dict[str, Any] = {
        **options.metadata,
        "dagster/column_schema": _column_schema(keep, declared, kind.value_column),
        SPEC_VERSION: kind.spec.version,
        "lakeloom/resource_key": resource_key,
    }
    if "partition_expr" in source_meta:
        metadata["partition_expr"] = source_meta["partition_expr"]
    column = column_settings(
        kind.kind,
        kind.spec,
        resource_key,
        mode=options.mode,
        batch=options.batch,
        batch_min_requests=options.batch_min_requests,
        batch_max_wait_s=options.batch_max_wait_s,
    )
    layout = ColumnLayout(
        asset_key=dg.AssetKey(options.key_path(name)),
        source_key=source_key,
        keep=keep,
        row_key=row_key,
        dims=dims,
        resource_key=resource_key,
        pool=options.pool or f"llm-{resource_key}",
        io_manager_key=options.io_manager_key,
        blocking=options.blocking,
        kind=kind,
        column=dataclasses.replace(column, source_key=source_key, keep=tuple(keep)),
    )
    return layout, partitions, metadata


def build_llm_asset(
    name: str,
    source: Source,
    key: str | Sequence[str],
    kind: ColumnKind,
    options: AssetOptions,
    resource_key: str,
) -> dg.AssetsDefinition:
    """The asset of one LLM column: ``key`` columns + the kind's value column + provenance."""
    layout, partitions, metadata = _layout(name, source, key, kind, options, resource_key)
    asset_key = layout.asset_key

    @define_asset(
        key=asset_key,
        ins={"upstream": dg.AssetIn(key=layout.source_key)},
        partitions_def=partitions,
        required_resource_keys={resource_key},
        code_version=code_version(kind.spec.version, layout.keep),
        metadata=metadata,
        description=options.description or kind.description,
        group_name=options.group_name,
        pool=layout.pool,
        op_tags={"lakeloom/resource": resource_key, "lakeloom/kind": kind.kind},
        retry_policy=options.retries(DEFAULT_RETRY),
        backfill_policy=options.backfill_policy or dg.BackfillPolicy.single_run(),
        io_manager_key=options.io_manager_key,
        check_specs=[
            checks.ok_ratio_spec(asset_key, kind.min_ok_ratio, blocking=options.blocking),
            *kind.more_check_specs(asset_key),
        ],
        kinds={"polars", "deltalake"},
        output_required=False,  # a dry run (lakeloom/dry_run) materializes nothing
    )
    def _asset(
        context: AssetExecutionContext, upstream: pl.DataFrame, config: LLMAssetConfig
    ) -> Iterator[dg.Output | dg.AssetCheckResult]:
        yield from run_step(layout, context, upstream, config)

    return attach(_asset, layout.column)
