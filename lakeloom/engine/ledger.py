"""The cost ledger: one Delta row per (run, asset, partition, model), appended as runs finish.

``lakeloom cost`` and :func:`report` aggregate it with polars by asset, partition, model or day.
Nothing secret goes in: no keys, no prompts, only counts, tokens, dollars and latencies.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import polars as pl
from deltalake.exceptions import TableNotFoundError

from lakeloom.delta import table_exists, write_table
from lakeloom.engine.types import LLMResult, RunContext
from lakeloom.settings import Storage

SCHEMA: dict[str, Any] = {
    "run_id": pl.String,
    "asset": pl.String,
    "partition": pl.String,
    "model": pl.String,
    "endpoint": pl.String,
    "requests": pl.Int64,
    "cache_hits": pl.Int64,
    "sent": pl.Int64,
    "ok": pl.Int64,
    "errors": pl.Int64,
    "retries": pl.Int64,
    "rate_limited": pl.Int64,
    "input_tokens": pl.Int64,
    "output_tokens": pl.Int64,
    "cost_usd": pl.Float64,
    "latency_p50_s": pl.Float64,
    "latency_p95_s": pl.Float64,
    "price_table": pl.String,
    "recorded_at": pl.Datetime("us", "UTC"),
    "day": pl.Date,
}
GroupBy = Literal["asset", "partition", "model", "day", "run_id"]


def ledger_rows(
    endpoint: str,
    context: RunContext,
    hits: pl.DataFrame,
    sent: Sequence[LLMResult],
    *,
    price_table: str,
) -> list[dict[str, Any]]:
    """One ledger row per model for a finished run (hits count as requests, cost nothing)."""
    rows: dict[str, dict[str, Any]] = {}
    latencies: dict[str, list[float]] = {}

    def row(model: str) -> dict[str, Any]:
        if model not in rows:
            rows[model] = {
                "run_id": context.run_id,
                "asset": context.asset,
                "partition": context.partition,
                "model": model,
                "endpoint": endpoint,
                "requests": 0,
                "cache_hits": 0,
                "sent": 0,
                "ok": 0,
                "errors": 0,
                "retries": 0,
                "rate_limited": 0,
                "input_tokens": 0,
                "output_tokens": 0,
                "cost_usd": 0.0,
                "price_table": price_table,
            }
        return rows[model]

    if hits.height:
        for model, count in hits.group_by("model").len().iter_rows():
            r = row(model)
            r["requests"] += count
            r["cache_hits"] += count
    for result in sent:
        r = row(result.model or "?")
        r["requests"] += 1
        r["sent"] += int(result.attempts > 0)
        r["ok" if result.status == "ok" else "errors"] += 1
        r["retries"] += result.retries
        r["rate_limited"] += result.rate_limited
        r["input_tokens"] += result.input_tokens
        r["output_tokens"] += result.output_tokens
        r["cost_usd"] += result.cost_usd
        if result.attempts:
            latencies.setdefault(r["model"], []).append(result.latency_s)
    for model, r in rows.items():
        lat = latencies.get(model)
        r["latency_p50_s"] = float(np.percentile(lat, 50)) if lat else None
        r["latency_p95_s"] = float(np.percentile(lat, 95)) if lat else None
    return list(rows.values())


class CostLedger:
    """Append-only Delta table of what each run spent, under ``<root>/_lakeloom/cost_ledger``.

    Examples:
        >>> ledger = CostLedger(Storage(root="/tmp/lake"))  # doctest: +SKIP
        >>> report(ledger.read(), by=["model"])  # doctest: +SKIP
    """

    def __init__(self, storage: Storage | None = None, *, table: str = "cost_ledger") -> None:
        """Point at the ledger table (created by the first append)."""
        self.storage = storage or Storage.from_env()
        self.uri = self.storage.table_uri("_lakeloom", table)

    def append(self, rows: Sequence[dict[str, Any]]) -> int | None:
        """Append rows (missing columns become null); returns the new table version."""
        if not rows:
            return None
        now = dt.datetime.now(dt.UTC)
        filled = [
            {**{c: None for c in SCHEMA}, "recorded_at": now, "day": now.date(), **r} for r in rows
        ]
        df = pl.DataFrame(filled, schema=SCHEMA)
        return write_table(
            df, self.uri, mode="append", storage_options=self.storage.storage_options or None
        )

    def read(self) -> pl.DataFrame:
        """Read the whole ledger (an empty frame with the schema when nothing was recorded)."""
        options = self.storage.storage_options or None
        if not table_exists(self.uri, options):
            return pl.DataFrame(schema=SCHEMA)
        try:
            return pl.read_delta(self.uri, storage_options=options)
        except TableNotFoundError:
            return pl.DataFrame(schema=SCHEMA)


def report(ledger: pl.DataFrame, by: Sequence[GroupBy] = ("asset", "model")) -> pl.DataFrame:
    """Totals per group, most expensive first: requests, hits, tokens, dollars, worst p95."""
    if ledger.is_empty():
        return pl.DataFrame(schema={**{k: SCHEMA[k] for k in by}, "cost_usd": pl.Float64})
    hits = pl.col("cache_hits").sum()
    return (
        ledger.group_by(list(by))
        .agg(
            pl.col("run_id").n_unique().alias("runs"),
            pl.col("requests").sum(),
            hits.alias("cache_hits"),
            (hits / pl.col("requests").sum()).round(3).alias("hit_ratio"),
            pl.col("errors").sum(),
            pl.col("retries").sum(),
            pl.col("rate_limited").sum(),
            pl.col("input_tokens").sum(),
            pl.col("output_tokens").sum(),
            pl.col("cost_usd").sum().round(6),
            pl.col("latency_p95_s").max().round(3).alias("max_p95_s"),
        )
        .sort(["cost_usd", *by], descending=[True, *([False] * len(by))])
    )
