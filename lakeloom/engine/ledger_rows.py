"""Ledger rows from results: per (partition, model), money split by each request's partition shares.

Used by the engine (:class:`~lakeloom.engine.ledger_journal.CallSpend`) and by the recovery of a
dead writer's spend journal (:meth:`~lakeloom.engine.ledger.CostLedger.recover`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from lakeloom.engine.types import LLMResult, RunContext

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
    base = base_row(endpoint, context, price_table, journal)
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


def base_row(
    endpoint: str, context: RunContext, price_table: str, journal: str | None
) -> dict[str, Any]:
    """The columns every row of one engine call shares (who spent, where, at which prices)."""
    return {
        "run_id": context.run_id,
        "asset": context.asset,
        "endpoint": endpoint,
        "price_table": price_table,
        "journal": journal,
    }
