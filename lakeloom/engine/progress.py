"""Progress of a run: counters updated by the workers, snapshots delivered at intervals.

Kept apart from the limiter on purpose: the limiter decides *when* to send, this only reports
what happened. The Dagster asset passes ``context.log.info`` as the callback; a notebook can
pass ``print``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from lakeloom.engine.types import LLMResult


@dataclass(frozen=True, slots=True)
class ProgressSnapshot:
    """Where a run stands: counts, rates and an ETA for the requests still to send."""

    done: int
    total: int
    ok: int
    errors: int
    cache_hits: int
    elapsed_s: float
    req_per_s: float
    tokens_per_s: float
    eta_s: float | None
    final: bool = False
    rows_done: int | None = None
    rows_total: int | None = None

    def message(self) -> str:
        """One log line, e.g. ``1,200/5,000 requests (24%) · 310 req/s · 9.8k tok/s · ETA 12s``.

        When requests answer many rows (embedding batches) it counts rows:
        ``1,200/5,000 rows (24%) in 10/40 requests · ...``.
        """
        pct = 100.0 * self.done / self.total if self.total else 100.0
        counted = f"{self.done:,}/{self.total:,} requests ({pct:.0f}%)"
        if self.rows_total is not None and self.rows_done is not None:
            share = 100.0 * self.rows_done / self.rows_total if self.rows_total else 100.0
            counted = (
                f"{self.rows_done:,}/{self.rows_total:,} rows ({share:.0f}%) in "
                f"{self.done:,}/{self.total:,} requests"
            )
        eta = (
            "done"
            if self.final
            else (f"ETA {self.eta_s:,.0f}s" if self.eta_s is not None else "ETA ?")
        )
        return (
            f"{'finished' if self.final else 'progress'}: {counted}"
            f" · {self.req_per_s:,.0f} req/s · {self.tokens_per_s:,.0f} tok/s · "
            f"{eta} · {self.errors:,} errors · {self.cache_hits:,} cache hits"
        )


ProgressCallback = Callable[[str], object]


class ProgressTracker:
    """Counts finished requests and emits a snapshot every ``interval_s`` seconds (and at the end).

    Examples:
        >>> tracker = ProgressTracker(total=10, callback=print, cache_hits=4)
        >>> tracker.snapshot().done
        4
    """

    def __init__(
        self,
        total: int,
        callback: ProgressCallback | None = None,
        *,
        interval_s: float = 10.0,
        cache_hits: int = 0,
    ) -> None:
        """Start counting; rows already answered from the cache count as done."""
        self.total = total
        self.callback = callback
        self.interval_s = interval_s
        self.cache_hits = cache_hits
        self.sent_done = 0
        self.ok = cache_hits
        self.errors = 0
        self.tokens = 0
        self.started = time.perf_counter()
        self.rows_total: int | None = None
        self.rows_done = 0

    def count_rows(self, total: int, cached: int) -> None:
        """Report rows, not requests: requests that answer several rows (embedding batches)."""
        self.rows_total, self.rows_done = total, cached

    def add(self, result: LLMResult, rows: int = 1) -> None:
        """Count one finished request answering ``rows`` rows (called by the workers: cheap)."""
        self.sent_done += 1
        self.rows_done += rows
        if result.status == "ok":
            self.ok += 1
        else:
            self.errors += 1
        self.tokens += result.input_tokens + result.output_tokens

    def snapshot(self, *, final: bool = False) -> ProgressSnapshot:
        """Return the counts now, with rates over the run so far."""
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        rate = self.sent_done / elapsed
        done = self.cache_hits + self.sent_done
        left = self.total - done
        eta = left / rate if rate > 0 else None
        return ProgressSnapshot(
            done=done,
            total=self.total,
            ok=self.ok,
            errors=self.errors,
            cache_hits=self.cache_hits,
            elapsed_s=elapsed,
            req_per_s=rate,
            tokens_per_s=self.tokens / elapsed,
            eta_s=eta,
            final=final,
            rows_done=self.rows_done if self.rows_total is not None else None,
            rows_total=self.rows_total,
        )

    def emit(self, *, final: bool = False) -> None:
        """Deliver one snapshot to the callback (a failing callback never stops the run)."""
        if self.callback is not None:
            with contextlib.suppress(Exception):
                self.callback(self.snapshot(final=final).message())

    async def run(self, stop: asyncio.Event) -> None:
        """Emit snapshots every ``interval_s`` until ``stop`` is set."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval_s)
            if not stop.is_set():
                self.emit()
