"""Lineage written into each Delta commit, so it can be read back from the log alone.

Every write by the Delta IO manager stamps its commit's ``commitInfo`` with one JSON entry under
:data:`COMMIT_KEY`: the asset key, the run, which partitions the commit wrote (each as a list of
:class:`Bound` filters on the table's columns) and the upstream tables it read (URI, version,
partitions). :mod:`lakeloom.storage.ref` reads it with ``DeltaTable.history()``; Dagster is not
needed.

This module is dagster-free on purpose: remote workers open references without it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from lakeloom.storage.delta import quote_ident, sql_literal

COMMIT_KEY = "lakeloom.storage.lineage"

Op = Literal["=", ">=", "<"]
Kind = Literal["str", "date", "datetime"]


class Bound(BaseModel):
    """One filter ``column op value`` that selects rows of a partition.

    The value is kept as text plus its kind, so a bound survives JSON unchanged.

    Examples:
        >>> Bound.of("day", ">=", dt.date(2024, 1, 2)).value
        '2024-01-02'
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    column: str
    op: Op
    value: str
    kind: Kind = "str"

    @classmethod
    def of(cls, column: str, op: Op, value: str | dt.date | dt.datetime) -> Bound:
        """Build a bound from a typed Python value."""
        if isinstance(value, dt.datetime):
            return cls(column=column, op=op, value=value.isoformat(), kind="datetime")
        if isinstance(value, dt.date):
            return cls(column=column, op=op, value=value.isoformat(), kind="date")
        return cls(column=column, op=op, value=str(value), kind="str")

    def typed(self) -> str | dt.date | dt.datetime:
        """Return the value as the Python type it was written with."""
        if self.kind == "datetime":
            return dt.datetime.fromisoformat(self.value)
        if self.kind == "date":
            return dt.date.fromisoformat(self.value)
        return self.value

    def expr(self) -> pl.Expr:
        """Render the bound as a polars expression."""
        col, value = pl.col(self.column), pl.lit(self.typed())
        if self.op == "=":
            return col == value
        return col >= value if self.op == ">=" else col < value

    def sql(self) -> str:
        """Render the bound as SQL (identifiers quoted, literals escaped)."""
        return f"{quote_ident(self.column)} {self.op} {sql_literal(self.typed())}"


def bounds_expr(bounds: Sequence[Bound]) -> pl.Expr:
    """Combine bounds with AND (``True`` for none)."""
    expr = pl.lit(True)
    for bound in bounds:
        expr = expr & bound.expr()
    return expr


def bounds_sql(bounds: Sequence[Bound]) -> str:
    """Combine bounds with AND as SQL (``TRUE`` for none)."""
    return " AND ".join(b.sql() for b in bounds) or "TRUE"


class UpstreamRef(BaseModel):
    """What one step read from one upstream table: enough to reopen exactly those rows."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    asset_key: tuple[str, ...]
    uri: str
    version: int
    partitions: dict[str, tuple[Bound, ...]] | None = Field(
        default=None, description="Partition key -> its bounds; None = the whole table."
    )


class CommitLineage(BaseModel):
    """The lineage entry stored in one Delta commit."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    asset_key: tuple[str, ...]
    run_id: str | None = None
    partition_columns: dict[str, str] = Field(default_factory=dict)
    partitions: dict[str, tuple[Bound, ...]] | None = Field(
        default=None, description="Partition keys this commit wrote; None = whole table."
    )
    upstream: tuple[UpstreamRef, ...] = ()

    def to_commit_metadata(self) -> dict[str, str]:
        """Return the ``custom_metadata`` mapping for a Delta commit."""
        return {COMMIT_KEY: self.model_dump_json()}

    @classmethod
    def from_history_entry(cls, entry: Mapping[str, Any]) -> CommitLineage | None:
        """Parse one ``DeltaTable.history()`` entry; ``None`` when it has no lineage."""
        raw = entry.get(COMMIT_KEY)
        if raw is None:
            return None
        return cls.model_validate(json.loads(raw) if isinstance(raw, str) else raw)


def lineage_history(
    history: Iterable[Mapping[str, Any]], *, upto: int
) -> list[tuple[int, CommitLineage]]:
    """Return (version, lineage) of commits at or below ``upto``, newest first."""
    found = []
    for entry in history:
        version = int(entry["version"])
        lineage = CommitLineage.from_history_entry(entry) if version <= upto else None
        if lineage is not None:
            found.append((version, lineage))
    return sorted(found, key=lambda item: -item[0])
