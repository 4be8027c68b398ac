"""The response cache: every paid response, keyed by request hash, in a Delta table.

Durability comes in two steps. Each response is first appended to a local write-ahead journal
(JSON lines under ``data_dir()/journal/``), written through to the OS by one unbuffered
``write`` per response before ``append`` returns, so ``kill -9`` (or an OOM kill) loses only
requests still in flight. Journal lines are not fsynced by default: the OS page cache survives
any process crash, and an fsync per response would cost more than the request bookkeeping
itself; a power loss or kernel panic can lose the lines of the last seconds, which are then
paid again. Set ``fsync=True`` (or ``LAKELOOM_JOURNAL_FSYNC=1``) to fsync every append for
machine-crash durability. Every ``flush_every`` responses or ``flush_interval_s`` seconds the
journal segment is committed to Delta and deleted.

Each live segment holds an exclusive ``flock`` taken *before* the segment becomes visible: it is
created under a hidden staging name (``.<name>.new``), locked, then renamed to
``<name>.jsonl``. When a cache opens, visible segments nobody holds (their writer died) are
replayed into Delta, skipping keys already there; a replayer never touches a locked segment.

Lookups push the key filter into the scan (see ``cache_scan``): files whose key range cannot
hold a wanted key are skipped, and only matching rows are read. The table is partitioned by
``model``, written sorted by ``request_hash``, and compacted with ``optimize.compact`` when
small files pile up; ``vacuum`` only removes files older than the retention window, so
concurrent readers stay safe.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError, TableNotFoundError

from lakeloom.engine.cache import journal
from lakeloom.engine.cache.match import match_keys
from lakeloom.engine.cache.scan import ScanStats, scan_keys
from lakeloom.engine.crash import crash_point
from lakeloom.storage.delta import table_exists, write_table
from lakeloom.storage.settings import Storage, data_dir

SCHEMA = {
    "request_hash": pl.String,
    "model": pl.String,
    "endpoint": pl.String,
    "response": pl.String,
    "input_tokens": pl.Int64,
    "output_tokens": pl.Int64,
    "created_at": pl.Datetime("us", "UTC"),
}
_LOOKUP_COLUMNS = ["request_hash", "response", "model", "input_tokens", "output_tokens"]
_LOOKUP_SCHEMA = {c: SCHEMA[c] for c in _LOOKUP_COLUMNS}


@dataclass(slots=True)
class CacheStats:
    """Hits and misses of this cache object's lookups."""

    hits: int = 0
    misses: int = 0

    @property
    def hit_ratio(self) -> float:
        """Share of hits among lookups; 0 when nothing was looked up."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


def _frame(rows: Sequence[Sequence[Any]]) -> pl.DataFrame:
    columns = [
        "request_hash",
        "model",
        "endpoint",
        "input_tokens",
        "output_tokens",
        "created_at",
        "response",
    ]
    df = pl.DataFrame(list(rows), schema=columns, orient="row")
    return df.with_columns(
        pl.col("input_tokens").cast(pl.Int64),
        pl.col("output_tokens").cast(pl.Int64),
        pl.from_epoch(pl.col("created_at").cast(pl.Int64), time_unit="us")
        .dt.replace_time_zone("UTC")
        .alias("created_at"),
    ).select(list(SCHEMA))


class ResponseCache:
    """Paid responses keyed by request hash: journal first, Delta in small batches.

    Examples:
        >>> cache = ResponseCache(Storage.from_env())  # doctest: +SKIP
        >>> cache.append("ab12...", "gpt-4o-mini", "chat.completions", '{"choices": []}', 12, 3)
        >>> cache.flush(); cache.lookup(pl.Series(["ab12..."])).height  # doctest: +SKIP
        1
    """

    def __init__(
        self,
        storage: Storage | None = None,
        *,
        table: str = "cache",
        flush_every: int = 5000,
        flush_interval_s: float = 2.0,
        compact_min_files: int = 64,
        fsync: bool | None = None,
    ) -> None:
        """Open the cache under ``<root>/_lakeloom/<table>`` and replay orphaned journals.

        ``fsync`` (default ``LAKELOOM_JOURNAL_FSYNC``, off) fsyncs every journal append.
        """
        self.storage = storage or Storage.from_env()
        self.uri = self.storage.table_uri("_lakeloom", table)
        self.flush_every = flush_every
        self.flush_interval_s = flush_interval_s
        self.compact_min_files = compact_min_files
        if fsync is None:
            fsync = os.environ.get("LAKELOOM_JOURNAL_FSYNC", "") not in ("", "0")
        self.fsync = fsync
        self.stats = CacheStats()
        self.scan_stats = ScanStats()
        digest = hashlib.sha256(self.uri.encode()).hexdigest()[:16]
        self.journal_dir = data_dir() / "journal" / digest
        self.journal_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._pending: list[list[Any]] = []
        self._segment: int | None = None  # the live segment's file descriptor (locked)
        self._segment_path: Path | None = None
        self._flush_due: asyncio.Event | None = None  # set while flush_loop runs
        self.replayed = self.replay_orphans()

    # -- journal ------------------------------------------------------------------------------

    def _open_segment(self) -> None:
        """Start a new segment, locked before any replayer can see it."""
        self._segment, self._segment_path = journal.open_segment(self.journal_dir)

    def append(
        self,
        key: str,
        model: str,
        endpoint: str,
        response_text: str,
        input_tokens: int,
        output_tokens: int,
    ) -> None:
        """Record one paid response: on the OS (journal) before returning, in Delta soon."""
        row = [
            key,
            model,
            endpoint,
            input_tokens,
            output_tokens,
            time.time_ns() // 1000,
            response_text,
        ]
        self._journal([row])

    def append_many(self, entries: Sequence[tuple[str, str, str, str, int, int]]) -> None:
        """Record the entries of one paid answer together (an embeddings batch, per input).

        Each entry is (key, model, endpoint, response, input_tokens, output_tokens). One write
        for all of them: a crash keeps all of the answer's entries or none.
        """
        if not entries:
            return
        now = time.time_ns() // 1000
        rows = [[k, m, e, i, o, now, text] for k, m, e, text, i, o in entries]
        self._journal(rows)

    def _journal(self, rows: list[list[Any]]) -> None:
        """One unbuffered write of ``rows`` to the live segment, then they are pending."""
        data = b"".join(journal.encode(row) for row in rows)
        with self._lock:
            if self._segment is None:
                self._open_segment()
            assert self._segment is not None
            journal.write_through(self._segment, data, fsync=self.fsync)
            self._pending.extend(rows)
            due = len(self._pending) >= self.flush_every
        crash_point("journal_append")
        if due and self._flush_due is not None:
            self._flush_due.set()

    @property
    def pending(self) -> int:
        """Responses journaled but not yet committed to Delta."""
        return len(self._pending)

    def flush(self) -> int:
        """Commit the pending responses to Delta, then drop their journal segment."""
        with self._flush_lock:
            with self._lock:
                rows, self._pending = self._pending, []
                segment, path = self._segment, self._segment_path
                self._segment = self._segment_path = None
            if rows:
                crash_point("cache_commit")
                try:
                    self._write(_frame(rows))
                except BaseException:
                    with self._lock:  # keep them for the next flush; the journal still has them
                        self._pending[:0] = rows
                    if segment is not None:
                        os.close(segment)  # lock released: the next open replays it
                    raise
                crash_point("cache_committed")
            if segment is not None:
                if path is not None:
                    path.unlink(missing_ok=True)  # unlink while locked: no replay sees it
                os.close(segment)
            return len(rows)

    def _write(self, df: pl.DataFrame) -> None:
        """Append sorted by key: narrow key ranges per row group (and file) prune lookups."""
        write_table(
            df.sort("request_hash"),
            self.uri,
            mode="append",
            partition_by=["model"],
            storage_options=self.storage.storage_options or None,
        )

    def put(self, entries: pl.DataFrame) -> int:
        """Bulk-add responses that were paid elsewhere (Batch API results, an import).

        ``entries`` needs request_hash, model, endpoint, response, input_tokens and
        output_tokens; keys already cached are skipped. Returns the rows added.
        """
        df = entries.with_columns(
            pl.col("input_tokens").cast(pl.Int64), pl.col("output_tokens").cast(pl.Int64)
        )
        if "created_at" not in df.columns:
            df = df.with_columns(pl.lit(time.time_ns() // 1000).alias("created_at"))
        df = (
            df.with_columns(
                pl.col("created_at").cast(pl.Datetime("us", "UTC"))
                if df.schema["created_at"] != pl.Datetime("us", "UTC")
                else pl.col("created_at")
            )
            .select(list(SCHEMA))
            .unique("request_hash", keep="first")
        )
        known = self._known(df["request_hash"], df["model"].unique().to_list())
        df = df.join(known, on="request_hash", how="anti")
        if df.height:
            self._write(df)
        return df.height

    def replay_orphans(self) -> int:
        """Commit journals left by dead writers (a crash) to Delta; returns rows added."""
        journal.clear_stale(self.journal_dir)
        added = 0
        for path in sorted(self.journal_dir.glob("*.jsonl")):
            if path == self._segment_path:
                continue
            with journal.orphan(path) as handle:
                if handle is None:
                    continue
                rows = [r for r in map(journal.parse, handle) if r is not None]
                if rows:
                    df = _frame(rows).unique("request_hash", keep="first")
                    known = self._known(df["request_hash"], df["model"].unique().to_list())
                    df = df.join(known, on="request_hash", how="anti")
                    if df.height:
                        self._write(df)
                        added += df.height
                path.unlink(missing_ok=True)
        return added

    # -- lookups ------------------------------------------------------------------------------

    def _scan(self, models: Sequence[str] | None) -> pl.LazyFrame | None:
        """The whole table, lazily, pruned to ``models`` (for aggregates such as forecasts)."""
        options = self.storage.storage_options or None
        if not table_exists(self.uri, options):
            return None
        lf = pl.scan_delta(self.uri, storage_options=options)
        if models:
            lf = lf.filter(pl.col("model").is_in(list(models)))
        return lf

    def _scan_keys(self, keys: pl.Series, models: Sequence[str] | None) -> pl.DataFrame | None:
        """Cached rows among ``keys`` read from Delta (None: no table yet)."""
        options = self.storage.storage_options or None
        return scan_keys(self.uri, options, keys, _LOOKUP_SCHEMA, self.scan_stats, models=models)

    def _known(self, keys: pl.Series, models: Sequence[str] | None) -> pl.DataFrame:
        found = self._scan_keys(keys, models)
        if found is None:
            return pl.DataFrame({"request_hash": keys.cast(pl.String)}).clear()
        return found.select("request_hash").unique()

    def match(
        self, keys: pl.Series | Sequence[str], *, models: Sequence[str] | None = None
    ) -> pl.DataFrame:
        """Look up many keys at once: one row per key, in order, nulls where not cached.

        Columns: request_hash, response (JSON text or null), model, input_tokens,
        output_tokens (the in-memory join: :func:`~lakeloom.engine.cache.match.match_keys`;
        a 64-bit collision can only cause a miss, never a wrong answer). ``models`` prunes
        the scan to those model partitions. Only rows whose key is asked for are read
        (``scan_stats`` counts them), so memory follows the lookup, not the cache.
        """
        keys = keys if isinstance(keys, pl.Series) else pl.Series(list(keys), dtype=pl.String)
        sources = []
        stored = self._scan_keys(keys.cast(pl.String), models)
        if stored is not None and stored.height:
            sources.append(stored)
        with self._lock:
            pending = list(self._pending)
        if pending:
            sources.append(_frame(pending).select(_LOOKUP_COLUMNS))
        if not sources:
            cached = pl.DataFrame(schema=_LOOKUP_SCHEMA)
        else:
            cached = pl.concat(sources, how="vertical_relaxed") if len(sources) > 1 else sources[0]
        out = match_keys(keys, cached)
        hits = out.height - out["response"].null_count()
        self.stats.hits += hits
        self.stats.misses += out.height - hits
        return out

    def lookup(
        self, keys: pl.Series | Sequence[str], *, models: Sequence[str] | None = None
    ) -> pl.DataFrame:
        """Return the cached rows among ``keys`` (see :meth:`match`), one per distinct key."""
        found = self.match(keys, models=models).filter(pl.col("response").is_not_null())
        return found.unique("request_hash", keep="first", maintain_order=True)

    # -- lifecycle ----------------------------------------------------------------------------

    async def flush_loop(self, stop: asyncio.Event) -> None:
        """Flush in a worker thread every ``flush_interval_s`` or ``flush_every`` responses.

        Returns as soon as ``stop`` is set (the caller flushes what is left).
        """
        due = self._flush_due = asyncio.Event()
        stopped = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                woken = asyncio.ensure_future(due.wait())
                await asyncio.wait(
                    {woken, stopped},
                    timeout=self.flush_interval_s,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                woken.cancel()
                due.clear()
                if self._pending and not stop.is_set():
                    await asyncio.to_thread(self.flush)
        finally:
            stopped.cancel()
            self._flush_due = None

    def file_count(self) -> int:
        """Count the data files of the current table version (0 when there is no table)."""
        try:
            return len(
                DeltaTable(
                    self.uri, storage_options=self.storage.storage_options or None
                ).file_uris()
            )
        except TableNotFoundError:
            return 0

    def compact(self, *, force: bool = False, retention_hours: int = 168) -> bool:
        """Merge small files (when at least ``compact_min_files``) and vacuum expired ones."""
        if not force and self.file_count() < self.compact_min_files:
            return False
        try:
            table = DeltaTable(self.uri, storage_options=self.storage.storage_options or None)
            table.optimize.compact()
            table.vacuum(
                retention_hours=retention_hours,
                dry_run=False,
                enforce_retention_duration=retention_hours >= 168,
            )
        except CommitFailedError:
            return False  # a concurrent writer won; compaction can wait for the next run
        return True

    def close(self) -> None:
        """Flush what is pending and release the journal."""
        self.flush()
