"""The per-row ledger: provenance columns, their fixed types, and run statistics.

Every column transformation returns exactly one output row per input row, in input order, with
``_status`` (ok / error / skipped), ``_error``, ``_reason`` (a stable class of the error, see
:mod:`lakeloom.core.reasons`: what ``GROUP BY`` counts), ``_request_hash``, ``_model``,
``_input_tokens``, ``_output_tokens``, ``_cost_usd``, ``_attempts`` (requests spent on the row:
1 + repairs) and ``_supersedes`` (set by a re-run that asked again for a failed row).
The types are fixed here, not inferred, so a partition that failed entirely still writes the
same Delta schema as a healthy one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import polars as pl

from lakeloom.core.reasons import reason_classes
from lakeloom.engine.types import LLMRequest, LLMResult, RunContext

PROVENANCE_SCHEMA: dict[str, pl.DataType] = {
    "_status": pl.String(),
    "_error": pl.String(),
    "_reason": pl.String(),
    "_request_hash": pl.String(),
    "_model": pl.String(),
    "_input_tokens": pl.Int64(),
    "_output_tokens": pl.Int64(),
    "_cost_usd": pl.Float64(),
    "_attempts": pl.Int32(),
    "_supersedes": pl.String(),
}
"""Provenance columns and their dtypes, in output order."""

PROVENANCE_DESCRIPTIONS: dict[str, str] = {
    "_status": "ok, error (see _error) or skipped (input null/blank); no row is ever dropped",
    "_error": "why the row is error or skipped (null when ok)",
    "_reason": "stable class of _error for GROUP BY (null when ok): invalid_output, http_401, "
    "http_4xx, http_5xx, rate_limited, timeout, over_context, not_sent_budget, "
    "provider_unreachable, skipped_null, ... (see lakeloom.core.reasons)",
    "_request_hash": "key of the request whose response produced the value (cache key)",
    "_model": "model that answered",
    "_input_tokens": "prompt tokens of the request(s) behind this row, repairs included (a shared "
    "embedding batch is split by text length; also counted when served from the cache)",
    "_output_tokens": "completion tokens of the request(s) behind this row, repairs included",
    "_cost_usd": "USD this run paid for this row, repairs included (0 for cache hits)",
    "_attempts": "requests made for this row: 1 + repairs (0 when skipped or when an identical "
    "input in the same frame was answered for it)",
    "_supersedes": "set when an only_failed re-run asked again for this failed row: the "
    "_request_hash of the stored (cached) answer it superseded; null otherwise",
}


class Runner(Protocol):
    """What the core needs from an engine (``lakeloom.engine.runner.Engine`` is one).

    ``run`` answers requests through cache, limiter and budget: one ``LLMResult`` per request,
    in order, in a list that carries the run's ``stats`` (retries, 429s, budget stop).
    """

    max_cost_usd: float | None

    def run(
        self,
        requests: Sequence[LLMRequest],
        *,
        context: RunContext | None = None,
        max_cost_usd: float | None = None,
    ) -> Sequence[LLMResult]:
        """Send ``requests``; one result per request, in order."""


def run_requests(
    engine: Runner,
    requests: Sequence[LLMRequest],
    context: RunContext | None,
    stats: ColumnStats,
    *,
    labels: Sequence[str] | None = None,
) -> dict[str, LLMResult]:
    """Send one round of requests through ``engine``; results by request key.

    ``labels`` (one per request: the key of the row(s) it serves, ``ticket_id=B9``) replace
    request positions in the engine's input errors, so the error names the row.

    Rounds share one budget, the run's: pass the same ``context`` to every round and the
    engine starts each from what the run already spent (earlier rounds with their uncertain
    attempts, earlier steps and step retries: see ``Engine.run_spent``). A request the engine
    returned no result for becomes an explicit error result: rows are never silently dropped.
    """
    if not requests:
        return {}
    try:
        out = engine.run(requests, context=context)
    except ValueError as exc:
        named = _labelled(exc, labels)
        if named is exc:
            raise
        # the engine's frames, without its message that names request positions
        raise named.with_traceback(exc.__traceback__) from None
    results = {r.key: r for r in out}
    stats.add_run(list(results.values()), getattr(out, "stats", None))
    for request in requests:
        if request.key not in results:
            results[request.key] = LLMResult(
                key=request.key, status="error", error="the engine returned no result"
            )
    return results


def _labelled(exc: ValueError, labels: Sequence[str] | None) -> ValueError:
    """The engine's input error with request positions (``rows``) replaced by row labels."""
    rows = getattr(exc, "rows", None)
    detail = getattr(exc, "detail", None)
    if not labels or not rows or detail is None:
        return exc
    named = [labels[r] for r in rows if 0 <= r < len(labels)]
    if not named:
        return exc
    shown = "; ".join(named[:5]) + (f" and {len(named) - 5} more" if len(named) > 5 else "")
    try:
        return type(exc)(f"{detail} ({shown})")
    except TypeError:  # an error class with another constructor: keep it
        return exc


@dataclass(slots=True)
class RowLedger:
    """Per-row provenance being filled in, one slot per input row."""

    n: int
    status: list[str | None] = field(init=False)
    error: list[str | None] = field(init=False)
    request_hash: list[str | None] = field(init=False)
    model: list[str | None] = field(init=False)
    input_tokens: list[int] = field(init=False)
    output_tokens: list[int] = field(init=False)
    cost_usd: list[float] = field(init=False)
    attempts: list[int] = field(init=False)
    supersedes: list[str | None] = field(init=False)

    def __post_init__(self) -> None:
        self.status = [None] * self.n
        self.error = [None] * self.n
        self.request_hash = [None] * self.n
        self.model = [None] * self.n
        self.input_tokens = [0] * self.n
        self.output_tokens = [0] * self.n
        self.cost_usd = [0.0] * self.n
        self.attempts = [0] * self.n
        self.supersedes = [None] * self.n

    def frame(self) -> pl.DataFrame:
        """Build the provenance columns with their fixed dtypes."""
        assert all(s is not None for s in self.status), "every row needs a status"
        return pl.DataFrame(
            {
                "_status": self.status,
                "_error": self.error,
                "_reason": reason_classes(self.status, self.error),
                "_request_hash": self.request_hash,
                "_model": self.model,
                "_input_tokens": self.input_tokens,
                "_output_tokens": self.output_tokens,
                "_cost_usd": self.cost_usd,
                "_attempts": self.attempts,
                "_supersedes": self.supersedes,
            },
            schema=PROVENANCE_SCHEMA,
        )


@dataclass(slots=True)
class ColumnStats:
    """What one column transformation did and spent: rows, requests, tokens, cost, latency."""

    rows: int = 0
    rows_ok: int = 0
    rows_error: int = 0
    rows_skipped: int = 0
    requests: int = 0
    cache_hits: int = 0
    repairs: int = 0
    retries: int = 0
    rate_limited: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    budget_exceeded: bool = False
    errors: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)

    def add_run(self, results: Sequence[LLMResult], engine_stats: Any | None) -> None:
        """Count one engine run: requests, cache hits, tokens and cost; retries/429s if known."""
        for r in results:
            self.requests += 1
            self.cache_hits += int(r.from_cache)
            self.input_tokens += r.input_tokens if not r.from_cache else 0
            self.output_tokens += r.output_tokens if not r.from_cache else 0
            self.cost_usd += r.cost_usd
        if engine_stats is not None:
            self.retries += int(getattr(engine_stats, "retries", 0))
            self.rate_limited += int(getattr(engine_stats, "rate_limited", 0))
            self.budget_exceeded |= bool(getattr(engine_stats, "budget_exceeded", False))

    def finish(self, ledger: RowLedger, latencies: Sequence[float]) -> ColumnStats:
        """Fill row counts from the ledger and latency percentiles from live requests."""
        self.rows = ledger.n
        self.rows_ok = sum(s == "ok" for s in ledger.status)
        self.rows_error = sum(s == "error" for s in ledger.status)
        self.rows_skipped = sum(s == "skipped" for s in ledger.status)
        reasons: dict[str, int] = {}
        for status, error in zip(ledger.status, ledger.error, strict=True):
            if status == "error" and error:
                head = error.split(":", 1)[0][:80]
                reasons[head] = reasons.get(head, 0) + 1
        self.errors = dict(sorted(reasons.items(), key=lambda kv: -kv[1])[:10])
        self.reasons = count_reasons(ledger.status, ledger.error)
        if latencies:
            ordered = sorted(latencies)
            self.latency_p50_s = _quantile(ordered, 0.50)
            self.latency_p95_s = _quantile(ordered, 0.95)
        self.cost_usd = round(self.cost_usd, 9)
        return self

    @property
    def ok_ratio(self) -> float:
        """Share of non-skipped rows that are ok (1.0 when every row was skipped)."""
        attempted = self.rows - self.rows_skipped
        return self.rows_ok / attempted if attempted else 1.0

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (for metadata and logs)."""
        return asdict(self)


def count_reasons(statuses: Sequence[str | None], errors: Sequence[str | None]) -> dict[str, int]:
    """Rows per reason class of the error rows, most frequent first (ties by name)."""
    counts: dict[str, int] = {}
    classes = reason_classes(statuses, errors)
    for status, reason in zip(statuses, classes, strict=True):
        if status == "error" and reason is not None:
            counts[reason] = counts.get(reason, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _quantile(ordered: Sequence[float], q: float) -> float:
    pos = (len(ordered) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return round(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo), 6)


def assemble(
    df: pl.DataFrame,
    keep: Sequence[str] | None,
    value: pl.Series,
    ledger: RowLedger,
) -> pl.DataFrame:
    """Kept input columns + the value column + provenance, rows in input order."""
    base = df if keep is None else df.select(keep)
    clash = [c for c in [value.name, *PROVENANCE_SCHEMA] if c in base.columns]
    if clash:
        base = base.drop(clash)
    return pl.concat([base, value.to_frame(), ledger.frame()], how="horizontal")


def check_keep(df_columns: Sequence[str], keep: Sequence[str] | None, where: str) -> None:
    """Fail before any request when a kept (key) column is missing."""
    if keep is None:
        return
    missing = [c for c in keep if c not in df_columns]
    if missing:
        raise ValueError(
            f"key column(s) {missing} are not in the {where}; its columns are: "
            f"{', '.join(df_columns) or '(none)'}"
        )
