"""Which partition each row of a run belongs to, so the cost ledger books spend per partition.

A one-partition run books everything to its key; a run over several partitions (a single-run
backfill) labels every input row with its partition key from the asset's partition column(s),
and the core books each request to the partition of the row that carries its spend.
"""

from collections.abc import Sequence

import dagster as dg
import polars as pl

from lakeloom.io_managers.partitions import (
    Dimension,
    PartitionColumnError,
    Selection,
    column_dtypes,
)
from lakeloom.storage.lineage import bounds_expr


def run_keys(context: dg.AssetExecutionContext) -> list[str]:
    """The partition keys of this step (empty when unpartitioned)."""
    if not (context.has_partition_key or context.has_partition_key_range):
        return []
    return [str(k) for k in context.partition_keys]


def partition_label(context: dg.AssetExecutionContext) -> str | None:
    """The run's one partition key; for several, a range label (only used as a fallback)."""
    keys = run_keys(context)
    if not keys:
        return None
    return keys[0] if len(keys) == 1 else f"{keys[0]}..{keys[-1]} ({len(keys)})"


def row_partitions(
    context: dg.AssetExecutionContext, frame: pl.DataFrame, dims: Sequence[Dimension]
) -> list[str | None] | None:
    """Each row's partition key for a run over several partitions (None otherwise).

    Rows whose partition values match no key of the run (they would be refused by the IO
    manager anyway) get None; a frame without the partition columns gives None.
    """
    keys = run_keys(context)
    if len(keys) < 2 or not dims or any(d.column not in frame.columns for d in dims):
        return None
    try:
        selection = Selection(tuple(dims), column_dtypes(dims, frame.schema), tuple(keys))
        bounds = selection.bounds()
    except (PartitionColumnError, ValueError, KeyError):
        return None
    label: pl.Expr = pl.lit(None, pl.String)
    for key, bound in reversed(list(bounds.items())):
        label = pl.when(bounds_expr(bound).fill_null(False)).then(pl.lit(key)).otherwise(label)
    return frame.select(label.alias("p"))["p"].to_list()
