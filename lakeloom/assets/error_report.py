"""What the LLM asset factories do about failed rows: report them, and re-run only them.

``LLMAssetConfig`` is the run config of every embedding/generated asset. With
``only_failed: true`` a run sends requests only for the rows of its partition(s) whose stored
``_status`` is ``error`` (or that were never processed) and writes them back beside the stored
ok/skipped rows, so the partition is whole again. Rows whose stored answer was received but
invalid (``_reason`` invalid_output, cut_off, refusal) are asked again rather than replayed from
the cache: their requests get a key that supersedes the cached answer (recorded in the row's
``_supersedes``), and later full runs keep using it, so a fixed row stays fixed. Only the
run's own partitions must have been written by the current code version.

From the UI: Materialize → "Open launchpad",
``ops: {review_labels: {config: {only_failed: true}}}``; from a shell, naming your own code
location as for ``dagster`` (``-m my_project.definitions`` or ``-f defs.py``; see
:mod:`lakeloom.assets.location`): ``dagster asset materialize -m my_project.definitions --select
review_labels --partition books --config-json '{"ops": {"review_labels": {"config":
{"only_failed": true}}}}'``. ``lakeloom errors`` prints this command with the location flags it is
given, else the one the failed run was launched from.

Which tables the step reaches besides its input and output, all through the asset's
:class:`~lakeloom.io_managers.DeltaIOManager` (an IO manager of another kind: one on the
environment's storage root):

* it **reads its own stored table** (:meth:`DeltaIOManager.read_table`): an ``only_failed`` run
  keeps the stored ok/skipped rows and asks again only for the others, and a full generate run
  keeps the superseding key of rows such a re-run fixed (:func:`stored_supersedes`);
* it **writes the run's failed rows** to the ``lakeloom_errors`` table of the same root
  (:meth:`DeltaIOManager.error_table`, :mod:`lakeloom.storage.errors`), replacing what an earlier
  attempt of the same run recorded, and puts a markdown summary of their reasons in the
  materialization's ``error_report`` metadata.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from lakeloom.assets.error_table import (
    merge_rerun,
    split_for_rerun,
    superseded_hashes,
    write_error_report,
)
from lakeloom.core.provenance import ColumnStats
from lakeloom.io_managers import DeltaIOManager


class LLMAssetConfig(dg.Config):
    """Run config of an embedding/generated asset."""

    only_failed: bool = Field(
        default=False,
        description="Send requests only for rows whose stored _status is 'error' (or that were "
        "never processed); stored ok/skipped rows are kept as they are.",
    )


def _io_manager(context: dg.AssetExecutionContext, io_manager_key: str) -> DeltaIOManager:
    """The Delta IO manager that stores the asset: the step's way to its other tables.

    For an IO manager of another kind, a Delta IO manager on the environment's storage root.
    """
    resource = context.resources.original_resource_dict.get(io_manager_key)
    return resource if isinstance(resource, DeltaIOManager) else DeltaIOManager()


@dataclass(frozen=True)
class Rerun:
    """The rows a run sends again and the stored rows it keeps.

    ``supersedes`` (one per row of ``to_send``) is the stored ``_request_hash`` of a row whose
    invalid answer is cached: the core asks again for it instead of replaying that answer.
    """

    to_send: pl.DataFrame
    kept: pl.DataFrame
    upstream: pl.DataFrame
    keep: tuple[str, ...]
    supersedes: list[str | None]

    def merge(self, computed: pl.DataFrame, stats: ColumnStats) -> pl.DataFrame:
        """Whole partition(s) again; row counts in ``stats`` then describe the whole output."""
        merged = merge_rerun(computed, self.kept, self.upstream, self.keep)
        counts = dict(merged.group_by("_status").len().iter_rows()) if merged.height else {}
        stats.rows = merged.height
        stats.rows_ok = counts.get("ok", 0)
        stats.rows_error = counts.get("error", 0)
        stats.rows_skipped = counts.get("skipped", 0)
        return merged


def prepare_rerun(
    context: dg.AssetExecutionContext,
    config: LLMAssetConfig,
    *,
    asset_key: dg.AssetKey,
    io_manager_key: str,
    upstream: pl.DataFrame,
    keep: Sequence[str],
) -> Rerun | None:
    """With ``only_failed``, split the input into rows to send and stored rows to keep."""
    if not config.only_failed:
        return None
    _check_same_code_version(context, asset_key)
    stored = _io_manager(context, io_manager_key).read_table(asset_key)
    previous = None
    if stored is not None:
        probe = upstream.select(list(keep)).unique().lazy()
        previous = stored.join(probe, on=list(keep), how="semi", nulls_equal=True).collect()
    to_send, kept = split_for_rerun(upstream, previous, keep)
    supersedes = superseded_hashes(to_send, previous, keep)
    asked = sum(h is not None for h in supersedes)
    context.log.info(
        f"only_failed: sending {to_send.height} of {upstream.height} rows "
        f"(keeping {kept.height} stored ok/skipped rows; asking again for {asked} rows whose "
        "cached answer was invalid)"
    )
    return Rerun(
        to_send=to_send, kept=kept, upstream=upstream, keep=tuple(keep), supersedes=supersedes
    )


def stored_supersedes(
    context: dg.AssetExecutionContext,
    asset_key: dg.AssetKey,
    io_manager_key: str,
    upstream: pl.DataFrame,
    keep: Sequence[str],
    partition_columns: Sequence[str] = (),
) -> list[str | None] | None:
    """Per input row, the ``_supersedes`` its stored row carries (None when no row has one).

    A full run keeps asking under the superseding key for rows an ``only_failed`` re-run fixed,
    so it reads their new answer from the cache instead of replaying the invalid one.
    """
    if upstream.is_empty():
        return None
    stored = _io_manager(context, io_manager_key).read_table(asset_key)
    if stored is None:
        return None
    if "_supersedes" not in stored.collect_schema().names():
        return None
    keys = list(keep)
    probe = upstream.select(keys).unique().lazy()
    for column in partition_columns:  # read only the run's partitions' files
        values = upstream[column].unique().to_list()
        stored = stored.filter(pl.col(column).cast(upstream.schema[column]).is_in(values))
    found = (
        stored.filter(pl.col("_supersedes").is_not_null())
        .select(*keys, "_supersedes")
        .join(probe, on=keys, how="semi", nulls_equal=True)
        .unique(subset=keys, keep="any")
        .collect()
    )
    if found.is_empty():
        return None
    found = found.with_columns(pl.col(k).cast(upstream.schema[k]) for k in keys)
    joined = upstream.select(keys).join(
        found, on=keys, how="left", nulls_equal=True, maintain_order="left"
    )
    return joined["_supersedes"].to_list()


def _check_same_code_version(context: dg.AssetExecutionContext, asset_key: dg.AssetKey) -> None:
    """Refuse to keep stored rows written by another prompt/model/schema (their code version)."""
    current = context.assets_def.code_versions_by_key.get(asset_key)
    if not current:
        return
    partitioned = context.has_partition_key or context.has_partition_key_range
    # only the run's own partitions: a single-partition run has no key *range*, and checking
    # every partition failed a re-run over rows that another code version wrote elsewhere
    wanted = set(context.partition_keys) if partitioned else {None}
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=asset_key,
            asset_partitions=sorted(wanted) if None not in wanted else None,
        ),
        limit=min(10_000, 4 * len(wanted)),
        ascending=False,
    ).records
    seen: set[str | None] = set()
    for record in records:
        mat = record.asset_materialization
        if mat is None or mat.partition in seen:
            continue
        seen.add(mat.partition)
        stored = mat.tags.get("dagster/code_version") if mat.tags else None
        if stored and stored != current:
            where = f" partition {mat.partition}" if mat.partition else ""
            raise dg.Failure(
                description=f"only_failed: the stored rows of {asset_key.to_user_string()}"
                f"{where} were written by code version {stored}, the asset is now {current} "
                "(prompt, schema or model changed); run without only_failed to recompute "
                "every row",
                allow_retries=False,
            )


def record_errors(
    context: dg.AssetExecutionContext,
    frame: pl.DataFrame,
    *,
    asset_key: dg.AssetKey,
    io_manager_key: str,
    keys: Sequence[str],
    partition_columns: Sequence[str],
    only_failed: bool,
) -> dict[str, Any]:
    """Write the run's failed rows to the error table; metadata for the materialization.

    The error table is the IO manager's (:meth:`DeltaIOManager.error_table`): the same storage
    root as the asset's own table, so ``lakeloom errors`` and the catalog find both together.
    """
    io_manager = _io_manager(context, io_manager_key)
    report = write_error_report(
        frame,
        asset=asset_key.to_user_string(),
        run_id=context.run_id,
        keys=keys,
        partition_columns=partition_columns,
        errors=io_manager.error_table(),
    )
    metadata: dict[str, Any] = {
        "error_report": dg.MetadataValue.md(report.markdown),
        "only_failed": only_failed,
    }
    if report.uri is not None:
        metadata["error_report_uri"] = (
            dg.MetadataValue.path(report.uri)
            if io_manager.storage.is_local
            else dg.MetadataValue.url(report.uri)
        )
        metadata["error_report_version"] = dg.MetadataValue.int(report.version or 0)
    return metadata
