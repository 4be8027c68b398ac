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
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
from deltalake.exceptions import TableNotFoundError

from lakeloom.delta import table_exists, write_table
from lakeloom.engine.crash import crash_point
from lakeloom.engine.types import LLMResult, RunContext
from lakeloom.settings import Storage, data_dir

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
_COUNTS = ("requests", "sent", "ok", "errors", "retries", "rate_limited", "uncertain_attempts")


def result_record(
    result: LLMResult, shares: Mapping[str | None, float], uncertain_usd: float = 0.0
) -> dict[str, Any]:
    """What the ledger keeps of one sent result (also the spend journal's line)."""
    return {
        "model": result.model or "?",
        "shares": {"" if k is None else k: v for k, v in shares.items()},
        "sent": int(result.attempts > 0),
        "ok": int(result.status == "ok"),
        "retries": result.retries,
        "rate_limited": result.rate_limited,
        "input_tokens": result.input_tokens,
        "output_tokens": result.output_tokens,
        "cost_usd": result.cost_usd,
        "uncertain_attempts": result.uncertain_attempts,
        "uncertain_usd": uncertain_usd,
        "latency_s": result.latency_s if result.attempts else None,
    }


def _split(total: int, weights: Sequence[int]) -> list[int]:
    """Split an integer by weights into integer parts that sum exactly (largest remainder)."""
    wsum = sum(weights)
    if wsum <= 0:
        return [total] + [0] * (len(weights) - 1)
    raw = [total * w / wsum for w in weights]
    parts = [int(x) for x in raw]
    order = sorted(range(len(raw)), key=lambda i: parts[i] - raw[i])
    for i in order[: total - sum(parts)]:
        parts[i] += 1
    return parts


def partition_shares(context: RunContext, key: str) -> dict[str | None, float]:
    """The partitions request ``key`` is booked to, with their shares (summing to 1).

    A request the core mapped (``request_partitions``) follows its rows; an unmapped request of a
    multi-partition run is split by the run's rows per partition; else the run's partition.
    """
    mapped = context.request_partitions.get(key)
    if mapped:
        return dict(mapped)
    rows = context.row_partitions
    if rows:
        counts: dict[str | None, int] = {}
        for p in rows:
            counts[p] = counts.get(p, 0) + 1
        return {p: c / len(rows) for p, c in counts.items()}
    return {context.partition: 1.0}


def _new_row(base: Mapping[str, Any], partition: str | None, model: str) -> dict[str, Any]:
    return {
        **base,
        "partition": partition,
        "model": model,
        **dict.fromkeys(("cache_hits", *_COUNTS, "input_tokens", "output_tokens"), 0),
        "cost_usd": 0.0,
        "uncertain_usd": 0.0,
    }


def rows_from_records(
    base: Mapping[str, Any], records: Iterable[Mapping[str, Any]], hits: Mapping[Any, int]
) -> list[dict[str, Any]]:
    """Ledger rows per (partition, model) from result records and hits by (partition, model).

    Money splits by share; tokens by share, as integers that sum exactly; the request counters
    go whole to the request's largest share.
    """
    rows: dict[tuple[str | None, str], dict[str, Any]] = {}
    latencies: dict[tuple[str | None, str], list[float]] = {}

    def row(partition: str | None, model: str) -> dict[str, Any]:
        key = (partition, model)
        if key not in rows:
            rows[key] = _new_row(base, partition, model)
        return rows[key]

    for (partition, model), count in hits.items():
        r = row(partition, model)
        r["requests"] += count
        r["cache_hits"] += count
    for rec in records:
        shares = [(p or None, float(w)) for p, w in rec["shares"].items()] or [(None, 1.0)]
        weights = [round(w * 1e6) for _, w in shares]
        tokens_in = _split(int(rec["input_tokens"]), weights)
        tokens_out = _split(int(rec["output_tokens"]), weights)
        main = max(range(len(shares)), key=lambda i: shares[i][1])
        for i, (partition, share) in enumerate(shares):
            r = row(partition, rec["model"])
            r["input_tokens"] += tokens_in[i]
            r["output_tokens"] += tokens_out[i]
            r["cost_usd"] += rec["cost_usd"] * share
            r["uncertain_usd"] += rec.get("uncertain_usd", 0.0) * share
            if i == main:
                r["requests"] += 1
                r["errors"] += 1 - rec["ok"]
                for name in ("sent", "ok", "retries", "rate_limited", "uncertain_attempts"):
                    r[name] += rec.get(name, 0)
                if rec.get("latency_s") is not None:
                    latencies.setdefault((partition, rec["model"]), []).append(rec["latency_s"])
    for key, r in rows.items():
        lat = latencies.get(key)
        r["latency_p50_s"] = float(np.percentile(lat, 50)) if lat else None
        r["latency_p95_s"] = float(np.percentile(lat, 95)) if lat else None
    return list(rows.values())


def ledger_rows(
    endpoint: str,
    context: RunContext,
    hits: pl.DataFrame,
    sent: Sequence[LLMResult],
    *,
    price_table: str,
    journal: str | None = None,
    uncertain_usd: Sequence[float] | None = None,
) -> list[dict[str, Any]]:
    """Ledger rows per (partition, model) for one engine call (hits cost nothing).

    ``hits`` has a ``model`` column (and a ``key`` column to book hits to their partitions);
    ``uncertain_usd`` is each sent result's worst case of possibly billed attempts.
    """
    base = _base(endpoint, context, price_table, journal)
    by_hit: dict[tuple[str | None, str], int] = {}
    if hits.height:
        keyed = "key" in hits.columns and (context.request_partitions or context.row_partitions)
        for rec in hits.iter_rows(named=True):
            shares = partition_shares(context, rec["key"]) if keyed else {context.partition: 1}
            partition = max(shares, key=lambda p: shares[p])
            k = (partition, rec["model"] or "?")
            by_hit[k] = by_hit.get(k, 0) + 1
    unc = list(uncertain_usd) if uncertain_usd is not None else [0.0] * len(sent)
    records = [
        result_record(result, partition_shares(context, result.key), worst)
        for result, worst in zip(sent, unc, strict=True)
    ]
    return rows_from_records(base, records, by_hit)


def _base(
    endpoint: str, context: RunContext, price_table: str, journal: str | None
) -> dict[str, Any]:
    return {
        "run_id": context.run_id,
        "asset": context.asset,
        "endpoint": endpoint,
        "price_table": price_table,
        "journal": journal,
    }


class SpendJournal:
    """One engine call's paid results, one JSON line each, handed to the OS as they arrive."""

    def __init__(self, directory: Path, base: Mapping[str, Any]) -> None:
        """Prepare a segment (created, and ``flock``-ed, by the first line)."""
        self.id = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.path = directory / f"{self.id}.jsonl"
        self.base = dict(base, journal=self.id)
        self._fd: int | None = None

    def add(self, record: Mapping[str, Any]) -> None:
        """Journal one result record (one ``write`` call: survives ``kill -9``)."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(self._fd, (json.dumps(self.base) + "\n").encode())
        os.write(self._fd, (json.dumps(record) + "\n").encode())

    def close(self, *, remove: bool) -> None:
        """Release the segment; ``remove`` once its rows are in the ledger."""
        if self._fd is not None:
            if remove:
                self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None


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

    def run_spend(self, run_id: str) -> float:
        """USD a run has booked so far, uncertain attempts included (what its budget counts)."""
        df = self.read().filter(pl.col("run_id") == run_id)
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
        booked = self.read().filter(pl.col("journal") == base.get("journal"))
        if booked.height:
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


class CallSpend:
    """One engine call's results as they finish: journaled when sent, booked in the ledger once.

    :meth:`add` runs before the response enters the cache journal, so whatever the cache holds
    has its spend journaled; :meth:`book` (normal end, failure or cancellation alike) writes the
    ledger rows, then drops the journal. A ``kill -9`` in between leaves the journal for
    :meth:`CostLedger.recover`.
    """

    def __init__(
        self, ledger: CostLedger | None, endpoint: str, context: RunContext, price_table: str
    ) -> None:
        """Bind the call's ledger (None: nothing is written) and who is spending."""
        self.ledger, self.endpoint, self.context = ledger, endpoint, context
        self.price_table = price_table
        self.results: list[LLMResult] = []
        self.uncertain: list[float] = []
        self.booked = False
        base = _base(endpoint, context, price_table, None)
        self._journal = ledger.journal(base) if ledger is not None else None

    def add(self, result: LLMResult, uncertain_usd: float = 0.0) -> None:
        """Keep one finished result; journal it when it was sent (it may have cost money)."""
        self.results.append(result)
        self.uncertain.append(uncertain_usd)
        if self._journal is not None and result.attempts > 0:
            shares = partition_shares(self.context, result.key)
            self._journal.add(result_record(result, shares, uncertain_usd))

    @property
    def spent_usd(self) -> float:
        """Reported cost + uncertain worst cases of this call so far."""
        return sum(r.cost_usd for r in self.results) + sum(self.uncertain)

    def book(self, hits: pl.DataFrame) -> None:
        """Write this call's ledger rows (once); ``hits``: ``key`` and ``model`` of cache hits."""
        if self.booked:
            return
        self.booked = True
        self.context.spent_usd += self.spent_usd
        if self.ledger is None:
            return
        journal = self._journal
        rows = ledger_rows(
            self.endpoint,
            self.context,
            hits,
            self.results,
            price_table=self.price_table,
            journal=journal.id if journal is not None else None,
            uncertain_usd=self.uncertain,
        )
        crash_point("before_ledger")  # responses durable in the cache, ledger not yet written
        try:
            self.ledger.append(rows)
        except BaseException:
            if journal is not None:
                journal.close(remove=False)  # the next engine books it
            raise
        if journal is not None:
            journal.close(remove=True)
