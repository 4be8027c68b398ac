"""The cost ledger: Delta rows per (run, asset, partition, model), written on every exit path.

``lakeloom cost`` and :func:`report` aggregate it with polars by asset, partition, model or day.
Nothing secret goes in: no keys, no prompts, only counts, tokens, dollars and latencies.

Money columns: ``cost_usd`` is what the provider reported (usage × prices) for answered
requests; ``uncertain_usd`` is the worst case of attempts that may have been billed without a
usage report (timeouts, garbled bodies), booked separately so the bill is ``cost_usd`` and its
upper bound ``cost_usd + uncertain_usd``. The budget counts both.

Durability: every paid or uncertain result is first written to a local spend journal (one JSON
line, handed to the OS before the response enters the cache journal), so ``kill -9`` between the
cache and the ledger loses no spend: the next engine to open the ledger books journals whose
writer died (``flock`` free) under their original run id, once (rows carry their journal id).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import polars as pl
from deltalake.exceptions import TableNotFoundError

from lakeloom.engine.ledger_journal import CallSpend, SpendJournal
from lakeloom.engine.ledger_rows import ledger_rows, rows_from_records
from lakeloom.storage.delta import table_exists, write_table
from lakeloom.storage.settings import Storage, data_dir

__all__ = ["SCHEMA", "CallSpend", "CostLedger", "SpendJournal", "ledger_rows", "report"]

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
    "uncertain_attempts": pl.Int64,
    "uncertain_usd": pl.Float64,
    "journal": pl.String,
}
GroupBy = Literal["asset", "partition", "model", "day", "run_id"]


class CostLedger:
    """Append-only Delta table of what each run spent, under ``<root>/_lakeloom/cost_ledger``.

    Examples:
        >>> ledger = CostLedger(Storage(root="/tmp/lake"))  # doctest: +SKIP
        >>> report(ledger.read(), by=["model"])  # doctest: +SKIP
    """

    def __init__(self, storage: Storage | None = None, *, table: str = "cost_ledger") -> None:
        """Point at the ledger table (created by the first append) and its spend journals."""
        self.storage = storage or Storage.from_env()
        self.uri = self.storage.table_uri("_lakeloom", table)
        digest = hashlib.sha256(self.uri.encode()).hexdigest()[:16]
        self.journal_dir = data_dir() / "ledger_journal" / digest
        self._recovered = False

    def journal(self, base: Mapping[str, Any]) -> SpendJournal:
        """A spend journal for one engine call (``base``: run id, asset, endpoint, prices)."""
        self.journal_dir.mkdir(parents=True, exist_ok=True)
        return SpendJournal(self.journal_dir, base)

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
            df,
            self.uri,
            mode="append",
            schema_mode="merge",  # ledgers written before uncertain_usd/journal existed
            storage_options=self.storage.storage_options or None,
        )

    def read(self) -> pl.DataFrame:
        """Read the whole ledger (an empty frame with the schema when nothing was recorded)."""
        options = self.storage.storage_options or None
        if not table_exists(self.uri, options):
            return pl.DataFrame(schema=SCHEMA)
        try:
            df = pl.read_delta(self.uri, storage_options=options)
        except TableNotFoundError:
            return pl.DataFrame(schema=SCHEMA)
        missing = [pl.lit(None, t).alias(c) for c, t in SCHEMA.items() if c not in df.columns]
        return df.with_columns(missing) if missing else df

    def _rows_where(self, column: str, value: str) -> pl.DataFrame:
        """The ledger rows with ``column == value`` (a filtered scan, not the whole table)."""
        options = self.storage.storage_options or None
        if not table_exists(self.uri, options):
            return pl.DataFrame(schema=SCHEMA)
        try:
            lf = pl.scan_delta(self.uri, storage_options=options)
            names = lf.collect_schema().names()
            if column not in names:
                return pl.DataFrame(schema=SCHEMA)
            df = lf.filter(pl.col(column) == value).collect()
        except TableNotFoundError:
            return pl.DataFrame(schema=SCHEMA)
        missing = [pl.lit(None, t).alias(c) for c, t in SCHEMA.items() if c not in df.columns]
        return df.with_columns(missing) if missing else df

    def run_spend(self, run_id: str) -> float:
        """USD a run has booked so far, uncertain attempts included (what its budget counts)."""
        df = self._rows_where("run_id", run_id)
        if df.is_empty():
            return 0.0
        return float(df["cost_usd"].fill_null(0).sum() + df["uncertain_usd"].fill_null(0).sum())

    def recover(self) -> int:
        """Book spend journals whose writer died (a crash) under their run; returns rows added.

        Runs once per ledger object; a journal whose rows are already in the ledger (the writer
        died after appending, before removing it) is only removed.
        """
        if self._recovered or not self.journal_dir.is_dir():
            self._recovered = True
            return 0
        self._recovered = True
        added = 0
        for path in sorted(self.journal_dir.glob("*.jsonl")):
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live writer owns it
                added += self._book(path)
                path.unlink(missing_ok=True)
            finally:
                os.close(fd)
        return added

    def _book(self, path: Path) -> int:
        text = path.read_text()  # JSON Lines: "\n" only (splitlines also cuts at U+2028)
        lines = [json.loads(x) for x in text.split("\n") if x.strip().endswith("}")]
        if len(lines) < 2:
            return 0
        base, records = lines[0], lines[1:]
        if self._rows_where("journal", str(base.get("journal"))).height:
            return 0
        rows = rows_from_records(base, records, {})
        self.append(rows)
        return len(rows)


def report(ledger: pl.DataFrame, by: Sequence[GroupBy] = ("asset", "model")) -> pl.DataFrame:
    """Totals per group, most expensive first: requests, hits, tokens, dollars, worst p95."""
    if ledger.is_empty():
        return pl.DataFrame(schema={**{k: SCHEMA[k] for k in by}, "cost_usd": pl.Float64})
    if "uncertain_usd" not in ledger.columns:
        ledger = ledger.with_columns(pl.lit(None, pl.Float64).alias("uncertain_usd"))
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
            pl.col("uncertain_usd").fill_null(0).sum().round(6),
            pl.col("latency_p95_s").max().round(3).alias("max_p95_s"),
        )
        .sort(["cost_usd", *by], descending=[True, *([False] * len(by))])
    )
