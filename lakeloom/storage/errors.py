"""The ``lakeloom_errors`` Delta table: the one storage API for the failed rows of every LLM run.

Every embedding/generated step writes, besides its own output (which its IO manager writes), the
run's failed rows here, one table per storage root at ``<root>/assets/lakeloom_errors`` (beside
the asset tables, so the DuckDB catalog exposes it as a view). Rows are replaced per
(``run_id``, ``asset``) with a predicate overwrite, so a step retry replaces its own rows and a
run's report is exact; other runs' and assets' rows are never touched.

This module only stores and reads rows already shaped as :data:`ERRORS_SCHEMA`; what counts as a
failed row and its reason class is decided above it (:mod:`lakeloom.assets.error_table`). No
engine, core or Dagster import.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from lakeloom.storage.delta import (
    and_predicates,
    in_predicate,
    scan_table,
    table_exists,
    write_table,
)
from lakeloom.storage.settings import Storage

ERRORS_TABLE = "lakeloom_errors"
"""Table name under ``<storage root>/assets/`` (and the catalog view's name)."""

ERRORS_SCHEMA: dict[str, pl.DataType] = {
    "run_id": pl.String(),
    "asset": pl.String(),
    "partition": pl.String(),
    "key": pl.String(),
    "reason": pl.String(),
    "_reason": pl.String(),
    "_error": pl.String(),
    "_request_hash": pl.String(),
    "_model": pl.String(),
    "_attempts": pl.Int32(),
    "recorded_at": pl.Datetime("us", "UTC"),
}
"""The columns of one recorded failed row (see :mod:`lakeloom.assets.error_table`)."""


@dataclass(frozen=True)
class ErrorTable:
    """The error table of one storage root; ``repr`` shows the root only (no secret options).

    Examples:
        >>> ErrorTable(Storage(root="/tmp/lake")).uri
        '/tmp/lake/assets/lakeloom_errors'
    """

    storage: Storage

    @property
    def uri(self) -> str:
        """Where the table lives: ``<root>/assets/lakeloom_errors``."""
        return self.storage.table_uri("assets", ERRORS_TABLE)

    def exists(self) -> bool:
        """Whether any run has written the table yet."""
        return table_exists(self.uri, self.storage.storage_options)

    def has_rows(self, *, run_id: str, asset: str) -> bool:
        """Whether this run already recorded failed rows of this asset (an earlier attempt)."""
        if not self.exists():
            return False
        lf = scan_table(self.uri, storage_options=self.storage.storage_options)
        wanted = (pl.col("run_id") == run_id) & (pl.col("asset") == asset)
        return lf.filter(wanted).select(pl.len()).collect().item() > 0

    def replace(self, rows: pl.DataFrame, *, run_id: str, asset: str) -> int | None:
        """Replace what this run recorded for this asset with ``rows``; the new Delta version.

        ``None`` (nothing written) when there are no rows and no earlier attempt of the run
        recorded any: a clean run leaves the table alone, a successful retry clears its rows.
        """
        if rows.is_empty() and not self.has_rows(run_id=run_id, asset=asset):
            return None
        predicate = and_predicates(
            [in_predicate("run_id", [run_id]), in_predicate("asset", [asset])]
        )
        return write_table(
            rows,
            self.uri,
            mode="overwrite",
            predicate=predicate,
            partition_by=["asset"],
            schema_mode="merge",  # tables written before ``_reason`` existed gain the column
            storage_options=self.storage.storage_options,
            commit_metadata={"lakeloom.run_id": run_id, "lakeloom.asset": asset},
        )

    def read(self, *, run_id: str | None = None, asset: str | None = None) -> pl.DataFrame:
        """Failed rows recorded so far, optionally for one run and/or asset (empty if none)."""
        if not self.exists():
            return pl.DataFrame(schema=ERRORS_SCHEMA)
        lf = scan_table(self.uri, storage_options=self.storage.storage_options)
        if run_id is not None:
            lf = lf.filter(pl.col("run_id") == run_id)
        if asset is not None:
            lf = lf.filter(pl.col("asset") == asset)
        return lf.collect().sort(["recorded_at", "asset", "partition", "key"])
