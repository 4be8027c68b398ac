"""What a run returns: per-request results (a frame or ``LLMResult`` objects) and its stats.

The last step of a run: its :class:`~lakeloom.engine.prepare.Prepared` (cache hits) and what was
sent, assembled in input order (:func:`request_results`, :func:`frame_results`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import polars as pl

from lakeloom.engine.prepare import Prepared
from lakeloom.engine.types import LLMRequest, LLMResult

RESULT_SCHEMA: dict[str, Any] = {
    "key": pl.String,
    "status": pl.String,
    "response": pl.String,
    "error": pl.String,
    "input_tokens": pl.Int64,
    "output_tokens": pl.Int64,
    "cost_usd": pl.Float64,
    "latency_s": pl.Float64,
    "attempts": pl.Int64,
    "from_cache": pl.Boolean,
    "model": pl.String,
}


@dataclass(slots=True)
class RunStats:
    """What a run did: the summary that goes into materialization metadata."""

    requests: int = 0
    cache_hits: int = 0
    sent: int = 0
    ok: int = 0
    errors: int = 0
    retries: int = 0
    rate_limited: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_p50_s: float = 0.0
    latency_p95_s: float = 0.0
    elapsed_s: float = 0.0
    budget_exceeded: bool = False

    @property
    def hit_ratio(self) -> float:
        """Rows answered from the cache over all rows."""
        return self.cache_hits / self.requests if self.requests else 0.0

    def as_metadata(self) -> dict[str, int | float | bool]:
        """Flat numbers for ``MaterializeResult(metadata=...)``."""
        out: dict[str, int | float | bool] = asdict(self)
        out["hit_ratio"] = round(self.hit_ratio, 4)
        out["cost_usd"] = round(self.cost_usd, 6)
        out["latency_p50_s"] = round(self.latency_p50_s, 4)
        out["latency_p95_s"] = round(self.latency_p95_s, 4)
        out["elapsed_s"] = round(self.elapsed_s, 3)
        out["req_per_s"] = round(self.sent / self.elapsed_s, 1) if self.elapsed_s else 0.0
        return out


@dataclass(slots=True)
class EngineRun:
    """The results frame (input order, one row per input; columns ``RESULT_SCHEMA``) + stats."""

    results: pl.DataFrame
    stats: RunStats


class RunResults(list[LLMResult]):
    """``LLMResult`` per input request, in input order, with the run's ``stats`` attached."""

    stats: RunStats

    def __init__(self, results: Iterable[LLMResult], stats: RunStats) -> None:
        """Hold the results and the stats."""
        super().__init__(results)
        self.stats = stats


def sent_frame(sent: list[LLMResult]) -> pl.DataFrame:
    """Results of sent requests as result rows."""
    return pl.DataFrame(
        {
            "key": [r.key for r in sent],
            "status": [r.status for r in sent],
            "response": [r.response_text for r in sent],
            "error": [r.error for r in sent],
            "input_tokens": [r.input_tokens for r in sent],
            "output_tokens": [r.output_tokens for r in sent],
            "cost_usd": [r.cost_usd for r in sent],
            "latency_s": [r.latency_s for r in sent],
            "attempts": [r.attempts for r in sent],
            "from_cache": [False] * len(sent),
            "model": [r.model for r in sent],
        },
        schema=RESULT_SCHEMA,
    )


def _hit_rows(keys: pl.Series, matched: pl.DataFrame) -> pl.DataFrame:
    return matched.select(
        keys.alias("key"),
        pl.lit("ok").alias("status"),
        pl.col("response"),
        pl.lit(None, pl.String).alias("error"),
        pl.col("input_tokens"),
        pl.col("output_tokens"),
        pl.lit(0.0).alias("cost_usd"),
        pl.lit(0.0).alias("latency_s"),
        pl.lit(0, pl.Int64).alias("attempts"),
        pl.lit(True).alias("from_cache"),
        pl.col("model"),
    )


def assemble(
    frame: pl.DataFrame, matched: pl.DataFrame, hit_mask: pl.Series, sent: list[LLMResult]
) -> pl.DataFrame:
    """One result row per input row, in input order; a key sent twice is charged once.

    Cache hits come straight from the aligned ``matched`` columns (no join); only the rows
    that missed are joined with the fresh results.
    """
    hits = _hit_rows(frame["key"], matched)
    if not sent and bool(hit_mask.all()):
        return hits
    rows = pl.int_range(0, frame.height, dtype=pl.UInt32, eager=True).alias("_row")
    missed = frame.select("key").with_columns(rows).filter(~hit_mask)
    fresh = missed.join(sent_frame(sent), on="key", how="left", maintain_order="left")
    lost = pl.col("status").is_null()
    fresh = fresh.with_columns(
        pl.when(lost)
        .then(pl.lit("internal error: no result"))
        .otherwise(pl.col("error"))
        .alias("error"),
        pl.col("status").fill_null("error"),
        pl.col("from_cache").fill_null(False),
        pl.when(pl.col("key").is_first_distinct())
        .then(pl.col("cost_usd"))
        .otherwise(0.0)
        .fill_null(0.0)
        .alias("cost_usd"),
    )
    both = pl.concat(
        [hits.with_columns(rows).filter(hit_mask), fresh.select(hits.columns + ["_row"])],
        how="vertical_relaxed",
    )
    return both.sort("_row").drop("_row").select(list(RESULT_SCHEMA))


def hit_result(row: dict[str, Any]) -> LLMResult:
    """Turn one cache hit into an ``LLMResult`` (response parsed)."""
    return LLMResult(
        key=row["key"],
        status="ok",
        response=json.loads(row["response"]),
        response_text=row["response"],
        input_tokens=row["input_tokens"] or 0,
        output_tokens=row["output_tokens"] or 0,
        from_cache=True,
        model=row["model"],
    )


def lost_result(key: str) -> LLMResult:
    """The result of a request that got neither an answer nor a cache hit (a bug, never silent)."""
    return LLMResult(key, "error", error="internal error: no result")


def in_request_order(
    requests: Sequence[LLMRequest],
    keys: pl.Series,
    matched: pl.DataFrame,
    hit_mask: pl.Series,
    sent: list[LLMResult],
) -> list[LLMResult]:
    """One result per request, in order: the answer sent now, else the cache hit for its key."""
    by_key: dict[str, LLMResult] = {r.key: r for r in sent}
    for row in matched.with_columns(keys).filter(hit_mask).iter_rows(named=True):
        by_key.setdefault(row["key"], hit_result(row))
    return [by_key.get(r.key) or lost_result(r.key) for r in requests]


def run_stats(
    *,
    rows: int,
    hits: int,
    sent: list[LLMResult],
    ok: int,
    started: float,
    budget_exceeded: bool,
) -> RunStats:
    """Totals of a run (tokens and dollars are this run's spend: cache hits cost nothing)."""
    latencies = [r.latency_s for r in sent if r.attempts]
    return RunStats(
        requests=rows,
        cache_hits=hits,
        sent=len(latencies),
        ok=ok,
        errors=rows - ok,
        retries=sum(r.retries for r in sent),
        rate_limited=sum(r.rate_limited for r in sent),
        input_tokens=sum(r.input_tokens for r in sent),
        output_tokens=sum(r.output_tokens for r in sent),
        cost_usd=sum(r.cost_usd for r in sent),
        latency_p50_s=float(np.percentile(latencies, 50)) if latencies else 0.0,
        latency_p95_s=float(np.percentile(latencies, 95)) if latencies else 0.0,
        elapsed_s=time.perf_counter() - started,
        budget_exceeded=budget_exceeded,
    )


def request_results(prepared: Prepared, sent: list[LLMResult], budget_exceeded: bool) -> RunResults:
    """One ``LLMResult`` per given request, in order (a repeated key repeats its result)."""
    requests = prepared.requests
    if requests is None:
        raise ValueError("request_results needs a run prepared from LLMRequest objects")
    keys = prepared.frame["key"]
    results = in_request_order(requests, keys, prepared.matched, prepared.hit_mask, sent)
    ok = sum(r.status == "ok" for r in results)
    return RunResults(results, _run_stats(prepared, sent, ok, budget_exceeded))


def frame_results(prepared: Prepared, sent: list[LLMResult], budget_exceeded: bool) -> EngineRun:
    """The results frame: one row per input body, in input order."""
    results = assemble(prepared.frame, prepared.matched, prepared.hit_mask, sent)
    ok = int((results["status"] == "ok").sum())
    return EngineRun(results, _run_stats(prepared, sent, ok, budget_exceeded))


def _run_stats(
    prepared: Prepared, sent: list[LLMResult], ok: int, budget_exceeded: bool
) -> RunStats:
    return run_stats(
        rows=prepared.frame.height,
        hits=prepared.hits,
        sent=sent,
        ok=ok,
        started=prepared.started,
        budget_exceeded=budget_exceeded,
    )
