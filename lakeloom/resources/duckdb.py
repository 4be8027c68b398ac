"""A Dagster resource giving DuckDB connections with a view per asset table."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import duckdb
from dagster_duckdb import DuckDBResource
from pydantic import Field

from lakeloom.storage.catalog import DUCKDB_CONFIG, Catalog, default_database
from lakeloom.storage.settings import Storage


class DuckDBCatalogResource(DuckDBResource):
    """DuckDBResource whose connections carry one view per asset's Delta table.

    Views are rebuilt from the Delta logs on every ``get_connection()``, so they read the latest
    committed versions; ``as_of`` pins some tables to older versions.

    Examples:
        >>> import dagster as dg
        >>> @dg.asset(deps=["reviews", "labels"])
        ... def report(catalog: DuckDBCatalogResource) -> None:
        ...     with catalog.get_connection() as con:
        ...         con.sql("SELECT * FROM reviews JOIN labels USING (id)").fetchall()
        >>> defs = dg.Definitions(assets=[report], resources={"catalog": DuckDBCatalogResource()})
    """

    database: str = Field(
        default="",
        description="DuckDB file; empty means <data>/catalog.duckdb; ':memory:' for in-memory.",
    )
    connection_config: dict[str, Any] = Field(
        default_factory=lambda: dict(DUCKDB_CONFIG),
        description="DuckDB settings; extension auto-install stays off so failures are immediate.",
    )
    root: str | None = Field(
        default=None, description="Storage root of the Delta tables; default LAKELOOM_STORAGE_ROOT."
    )
    storage_options: dict[str, str] | None = Field(
        default=None, description="delta-rs storage options; default LAKELOOM_STORAGE_OPTIONS."
    )

    def catalog(self) -> Catalog:
        """Return the catalog over this resource's storage root and database."""
        return Catalog(
            Storage.resolve(self.root, self.storage_options), database=self.database or None
        )

    @contextmanager
    def get_connection(
        self, as_of: Mapping[str, int] | None = None
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """Yield a connection (retried while another process holds the file) with fresh views."""
        catalog = self.catalog()
        resolved = self.model_copy(
            update={
                "database": catalog.database or default_database(),
                "connection_config": {**DUCKDB_CONFIG, **self.connection_config},
            }
        )
        with DuckDBResource.get_connection(resolved) as con:
            catalog.register(con, as_of=as_of)
            yield con
