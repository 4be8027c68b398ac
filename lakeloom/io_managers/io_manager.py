"""Partition-aware Delta IO manager for polars frames, written on ``deltalake`` directly.

Why not ``dagster-deltalake-polars`` 0.29.27: with polars 2.1 and deltalake 1.6.6 it logs
``error while computing table stats`` on every write (no row count or size metadata), and an
unpartitioned asset loading a whole partitioned upstream fails with ``ValueError: Array partition
values are not yet supported``. It also records no Delta version or lineage.

A run overwrites exactly its partition(s) (delta-rs ``replaceWhere`` predicate), so one
single-run backfill of N partitions and N separate runs leave the same table. Each commit carries
the upstream tables and versions the step read (see :mod:`lakeloom.storage.lineage`).

Besides a step's inputs and output, the manager is the one way a step reaches the other tables
of its storage root: :meth:`DeltaIOManager.read_table` (an LLM step's own stored rows, for
re-runs of failed rows) and :meth:`DeltaIOManager.error_table` (``lakeloom_errors``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg
import polars as pl
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError, TableNotFoundError
from pydantic import Field, PrivateAttr

from lakeloom.io_managers.partitions import (
    Dimension,
    Selection,
    check_rows_in,
    column_dtypes,
    dimensions,
    with_partition_columns,
)
from lakeloom.storage.catalog import view_name
from lakeloom.storage.delta import scan_table, table_exists, write_table
from lakeloom.storage.errors import ErrorTable
from lakeloom.storage.lineage import CommitLineage, UpstreamRef
from lakeloom.storage.settings import Storage

STORAGE_KIND = "deltalake"


class MissingUpstreamError(dg.Failure):
    """An input's upstream table or partition does not exist."""


class DeltaIOManager(dg.ConfigurableIOManager):
    """Stores each asset as a Delta table at ``<root>/assets/<key path>`` and reads it back.

    Outputs may be polars DataFrames or LazyFrames; inputs are DataFrames, or LazyFrames when the
    input is annotated ``pl.LazyFrame``. Partition columns come from ``partition_expr`` metadata.

    Examples:
        >>> defs = dg.Definitions(assets=[], resources={"io_manager": DeltaIOManager()})
    """

    root: str | None = Field(
        default=None,
        description="Folder or s3:// URI; default LAKELOOM_STORAGE_ROOT, else <data>/delta.",
    )
    storage_options: dict[str, str] | None = Field(
        default=None,
        description="delta-rs storage options; default LAKELOOM_STORAGE_OPTIONS (use dg.EnvVar).",
    )
    _loaded: dict[tuple[str, str], list[UpstreamRef]] = PrivateAttr(default_factory=dict)

    @property
    def storage(self) -> Storage:
        """The storage root and options this manager writes to (env vars fill what is unset).

        Public: every table a step reaches besides its inputs and output lives under this root
        (see :meth:`read_table` and :meth:`error_table`).
        """
        return Storage.resolve(self.root, self.storage_options)

    def table_uri(self, asset_key: dg.AssetKey) -> str:
        """Return where an asset's Delta table lives."""
        return self.storage.table_uri("assets", *asset_key.path)

    # --- tables a step reaches besides its inputs and output ------------------------------

    def read_table(self, asset_key: dg.AssetKey) -> pl.LazyFrame | None:
        """The asset's stored table as written so far (lazily), or None if never written.

        The LLM steps read their *own* previous output here: an ``only_failed`` re-run keeps
        the stored ok/skipped rows and sends only the failed ones, and a full run keeps the
        ``_supersedes`` key of rows a re-run fixed (:mod:`lakeloom.assets.error_report`). Not an
        input: it is not recorded as an upstream in the commit's lineage.
        """
        storage = self.storage
        uri = storage.table_uri("assets", *asset_key.path)
        if not table_exists(uri, storage.storage_options):
            return None
        return scan_table(uri, storage_options=storage.storage_options)

    def error_table(self) -> ErrorTable:
        """The ``lakeloom_errors`` table of this root, where the LLM steps record failed rows.

        Each embedding/generated step replaces its run's failed rows there (one table for all
        assets, so ``lakeloom errors`` and the catalog view list every run's failures); see
        :mod:`lakeloom.storage.errors`.
        """
        return ErrorTable(self.storage)

    # --- writes ---------------------------------------------------------------------------

    def handle_output(
        self, context: dg.OutputContext, obj: pl.DataFrame | pl.LazyFrame | None
    ) -> None:
        """Overwrite the run's partition(s) of the asset's table with ``obj``."""
        if obj is None:
            return
        asset = context.asset_key.to_user_string()
        df = obj.collect() if isinstance(obj, pl.LazyFrame) else obj
        if not isinstance(df, pl.DataFrame):
            raise TypeError(
                f"asset {asset}: the Delta IO manager stores polars frames, got {type(obj)}"
            )
        storage, uri = self.storage, self.table_uri(context.asset_key)
        dims = dimensions(
            context.asset_partitions_def if context.has_asset_partitions else None,
            context.definition_metadata,
        )
        selection: Selection | None = None
        if dims:
            keys = tuple(sorted(str(k) for k in context.asset_partition_keys))
            df = with_partition_columns(df, dims, keys, asset)
            selection = Selection(dims, column_dtypes(dims, df.schema), keys)
        run_id, step = _step_identity(context)
        lineage = CommitLineage(
            asset_key=tuple(context.asset_key.path),
            run_id=run_id,
            partition_columns={d.name: d.column for d in dims},
            partitions=selection.bounds() if selection else None,
            upstream=tuple(self._loaded.get((run_id, step), ())),
        )
        predicate = selection.sql() if selection else None
        try:
            version = write_table(
                df,
                uri,
                mode="overwrite",
                predicate=predicate,
                partition_by=_physical_columns(dims, selection) if selection else None,
                storage_options=storage.storage_options,
                schema_mode="merge" if selection else "overwrite",
                commit_metadata=lineage.to_commit_metadata(),
            )
        except DeltaError as exc:
            # delta-rs refuses rows outside the predicate before committing, with an opaque
            # message; explain which rows (the happy path skips this extra pass over the frame)
            if selection is not None:
                check_rows_in(df, selection, asset, cause=exc)
            raise
        context.add_output_metadata(
            _output_metadata(
                df,
                uri,
                version,
                storage,
                predicate,
                lineage,
                partitioned=bool(dims),
                descriptions=_declared_descriptions(context.definition_metadata),
            )
        )

    # --- reads ----------------------------------------------------------------------------

    def load_input(self, context: dg.InputContext) -> pl.DataFrame | pl.LazyFrame:
        """Read the upstream partitions this step maps to (all of them for unpartitioned steps)."""
        key = context.asset_key
        asset = key.to_user_string()
        run_id, step = _step_identity(context)
        storage, uri = self.storage, self.table_uri(key)
        upstream_meta = (
            context.upstream_output.definition_metadata if context.upstream_output else {}
        )
        dims = dimensions(
            context.asset_partitions_def if context.has_asset_partitions else None, upstream_meta
        )
        keys = (
            tuple(sorted(str(k) for k in context.asset_partition_keys))
            if dims and _run_is_partitioned(context)
            else None
        )
        try:
            table = DeltaTable(uri, storage_options=storage.storage_options)
        except TableNotFoundError:
            wanted = f"partition(s) {list(keys)}" if keys else "its table"
            raise MissingUpstreamError(
                f"step {step!r} needs {wanted} of asset {asset}, but no Delta table exists at "
                f"{uri}; materialize {asset} first"
            ) from None
        lf = pl.scan_delta(table)
        selection = None
        if keys is not None:
            selection = Selection(dims, column_dtypes(dims, lf.collect_schema()), keys)
            values = _logged_partition_values(table, selection.columns)
            if values is None:  # partition columns are not Delta partition columns: scan them
                lf = lf.filter(selection.expr())
                values = lf.select(selection.columns).unique().collect()
            elif not values.is_empty() and values.select(selection.expr().all()).item():
                pass  # every live file is inside the selection: no row filter needed
            else:
                lf = lf.filter(selection.expr())
            self._check_present(context, selection, values, asset, step, uri, table.version())
        result = lf if _wants_lazy(context) else lf.collect()
        self._loaded.setdefault((run_id, step), []).append(
            UpstreamRef(
                asset_key=tuple(key.path),
                uri=uri,
                version=table.version(),
                partitions=selection.bounds() if selection else None,
            )
        )
        return result

    @staticmethod
    def _check_present(
        context: dg.InputContext,
        selection: Selection,
        values: pl.DataFrame,
        asset: str,
        step: str,
        uri: str,
        version: int,
    ) -> None:
        """Fail clearly when a mapped upstream partition has no rows and was never materialized."""
        missing = set(selection.keys) - selection.present_keys(values)
        if missing:  # an empty partition that Dagster materialized is legitimate
            missing -= _materialized_partitions(context)
        if missing:
            raise MissingUpstreamError(
                f"step {step!r} needs partition(s) {sorted(missing)} of asset {asset}, "
                f"which have no rows in {uri} (version {version}); materialize them first"
            )


def _step_identity(context: dg.InputContext | dg.OutputContext) -> tuple[str, str]:
    """(run id, step key) linking a step's inputs to its outputs; blank outside a run."""
    try:
        if isinstance(context, dg.OutputContext):
            return context.run_id, context.step_key
        return context.step_context.run_id, context.step_context.step.key
    except dg.DagsterInvariantViolationError:  # contexts built by build_*_context
        return "", ""


def _run_is_partitioned(context: dg.InputContext) -> bool:
    """Whether the reading step runs for partitions (else it reads the whole upstream)."""
    try:
        return context.step_context.has_partitions
    except dg.DagsterInvariantViolationError:
        return context.has_partition_key or context.has_asset_partitions


def _materialized_partitions(context: dg.InputContext) -> set[str]:
    try:
        return {str(k) for k in context.instance.get_materialized_partitions(context.asset_key)}
    except dg.DagsterInvariantViolationError:  # no instance outside a run
        return set()


def _logged_partition_values(table: DeltaTable, columns: list[str]) -> pl.DataFrame | None:
    """Distinct partition values of non-empty files, from the Delta log (no data read).

    ``None`` when some column is not a Delta partition column of the table.
    """
    if not set(columns) <= set(table.metadata().partition_columns):
        return None
    actions = pl.DataFrame(table.get_add_actions(flatten=True))
    if actions.is_empty():
        return pl.DataFrame(schema={c: pl.String for c in columns})
    return (
        actions.filter(pl.col("num_records").fill_null(1) > 0)  # no stats: assume rows
        .select(pl.col(f"partition.{c}").alias(c) for c in columns)
        .unique()
    )


def _physical_columns(dims: tuple[Dimension, ...], selection: Selection) -> list[str]:
    """Delta partition columns for a new table: string keys and Date windows (not timestamps)."""
    return [
        d.column for d in dims if d.time is None or isinstance(selection.dtypes[d.column], pl.Date)
    ]


def _wants_lazy(context: dg.InputContext) -> bool:
    try:
        return getattr(context.dagster_type, "typing_type", None) is pl.LazyFrame
    except dg.DagsterInvariantViolationError:  # no declared type: eager
        return False


def _output_metadata(
    df: pl.DataFrame,
    uri: str,
    version: int,
    storage: Storage,
    predicate: str | None,
    lineage: CommitLineage,
    *,
    partitioned: bool,
    descriptions: Mapping[str, str | None],
) -> dict[str, Any]:
    """Materialization metadata: where, which version, how big, what shape, read from what.

    The column schema is the written frame's, keeping the descriptions the asset declared
    (e.g. from Pydantic field descriptions), so the UI shows both real types and meanings.
    """
    table = DeltaTable(uri, version=version, storage_options=storage.storage_options)
    files = pl.DataFrame(table.get_add_actions(flatten=False)).select("size_bytes", "num_records")
    metadata: dict[str, Any] = {
        "table_uri": dg.MetadataValue.path(uri) if storage.is_local else dg.MetadataValue.url(uri),
        "delta_version": dg.MetadataValue.int(version),
        "dagster/row_count": dg.MetadataValue.int(int(files["num_records"].sum())),
        "size_bytes": dg.MetadataValue.int(int(files["size_bytes"].sum())),
        "dagster/column_schema": dg.TableSchema(
            columns=[
                dg.TableColumn(name, str(dtype), description=descriptions.get(name))
                for name, dtype in df.schema.items()
            ]
        ),
        "dagster/table_name": view_name(lineage.asset_key),
        "upstream": dg.MetadataValue.json([u.model_dump(mode="json") for u in lineage.upstream]),
    }
    if partitioned:
        metadata["dagster/partition_row_count"] = dg.MetadataValue.int(df.height)
        metadata["partition_predicate"] = dg.MetadataValue.text(predicate or "")
    return metadata


def _declared_descriptions(metadata: Mapping[str, Any] | None) -> dict[str, str | None]:
    """Column descriptions from the asset's declared ``dagster/column_schema``, by name."""
    schema = (metadata or {}).get("dagster/column_schema")
    schema = getattr(schema, "schema", schema)  # TableSchemaMetadataValue wraps a TableSchema
    if not isinstance(schema, dg.TableSchema):
        return {}
    return {c.name: c.description for c in schema.columns}
