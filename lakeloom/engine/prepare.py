"""One preparation per run: hash, dedupe, cache match and pre-send checks, done once.

Every way of answering requests (online :class:`~lakeloom.engine.runner.Engine`, Batch API
:class:`~lakeloom.engine.batch.runner.BatchRunner`, the dry-run forecast) starts from the same
:class:`Prepared`: the request frame (one row per input), the cache's answers aligned with it,
the distinct misses, and their plan (priced, token-counted, checked against the model's limits;
rows over a limit already rejected). :class:`~lakeloom.engine.modes.ModeRunner` prepares once,
forecasts from it, chooses online or batch from it, and hands it to the chosen runner, which
sends without planning again. :func:`start` is the last step before sending (API key, the run's
budget), shared by both runners.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import polars as pl

from lakeloom.engine.cost import BudgetGuard, PriceTable
from lakeloom.engine.ledger import CostLedger
from lakeloom.engine.plan import Bodies, Planned, plan, request_frame, requests_frame
from lakeloom.engine.provider import ProviderConfig
from lakeloom.engine.types import Endpoint, LLMRequest, RunContext
from lakeloom.storage.delta import table_exists

MATCH_SCHEMA: dict[str, Any] = {
    "request_hash": pl.String,
    "response": pl.String,
    "model": pl.String,
    "input_tokens": pl.Int64,
    "output_tokens": pl.Int64,
}


class Cache(Protocol):
    """What a preparation reads from the response cache (``engine.cache.store.ResponseCache``)."""

    uri: str
    storage: Any

    def match(self, keys: pl.Series, *, models: Sequence[str] | None = None) -> pl.DataFrame:
        """Cached answers aligned with ``keys`` (nulls where not cached)."""
        ...


@dataclass(slots=True)
class Prepared:
    """A run up to the point of sending: what is cached, what is to send, what it may cost."""

    endpoint: Endpoint
    frame: pl.DataFrame  # row, key, cache_key, body per input row
    matched: pl.DataFrame  # the cache's answer per input row (nulls on a miss)
    hit_mask: pl.Series
    misses: pl.DataFrame  # distinct requests the cache could not answer
    planned: Planned  # the misses, priced and checked (over a limit: ``planned.rejected``)
    requests: Sequence[LLMRequest] | None = None  # the given requests, in input order
    given: Mapping[str, LLMRequest] | None = None  # the same by key
    started: float = 0.0

    @property
    def hits(self) -> int:
        """Input rows answered from the cache."""
        return int(self.hit_mask.sum())

    def hit_keys(self) -> pl.DataFrame:
        """Key and model of every cache hit (what the ledger books at zero cost)."""
        keys = pl.DataFrame({"key": self.frame["key"], "model": self.matched["model"]})
        return keys.filter(self.hit_mask)

    def rows_of(self, key: str) -> int:
        """Rows one request answers: the inputs of an embeddings batch, else 1."""
        request = self.given.get(key) if self.given else None
        return len(request.input_keys) or 1 if request is not None else 1

    def rows_per_request(self) -> pl.Series:
        """Rows each input request answers (an embeddings batch counts its inputs)."""
        if not self.given:
            return pl.Series("rows", [1] * self.frame.height, dtype=pl.Int64)
        return pl.Series("rows", [self.rows_of(k) for k in self.frame["key"]], dtype=pl.Int64)


def match(cache: Cache | None, frame: pl.DataFrame, models: Sequence[str] | None) -> pl.DataFrame:
    """Return cached answers aligned with a request frame (nulls where not cached)."""
    if cache is None:
        return pl.DataFrame(
            {c: pl.Series(c, [None] * frame.height, dtype=t) for c, t in MATCH_SCHEMA.items()}
        )
    return cache.match(frame["cache_key"], models=models)


def misses(frame: pl.DataFrame, hit_mask: pl.Series) -> pl.DataFrame:
    """Return the distinct requests that the cache could not answer."""
    missed = frame.filter(~hit_mask) if hit_mask.any() else frame
    return missed.filter(pl.col("key").is_first_distinct())


def prepare(
    endpoint: Endpoint,
    frame: pl.DataFrame,
    *,
    cache: Cache | None,
    provider: ProviderConfig,
    prices: PriceTable,
    requests: Sequence[LLMRequest] | None = None,
    parsed: Sequence[Mapping[str, Any]] | None = None,
    models: Sequence[str] | None = None,
) -> Prepared:
    """Match ``frame`` against the cache and plan the misses; raise on bad settings.

    ``models`` (optional) prunes the cache scan to those models; ``parsed`` holds the bodies as
    dicts by row when the caller had them.
    """
    started = time.perf_counter()
    given = {r.key: r for r in requests} if requests is not None else None
    matched = match(cache, frame, models)
    hit_mask = matched["response"].is_not_null()
    missed = misses(frame, hit_mask)
    planned = plan(endpoint, missed, provider=provider, prices=prices, given=given, parsed=parsed)
    return Prepared(endpoint, frame, matched, hit_mask, missed, planned, requests, given, started)


def prepare_requests(
    requests: Sequence[LLMRequest],
    *,
    cache: Cache | None,
    provider: ProviderConfig,
    prices: PriceTable,
    models: Sequence[str] | None = None,
) -> Prepared:
    """Prepare ready-made requests (their own keys are kept)."""
    frame = requests_frame(requests, namespace=provider.cache_namespace)
    return prepare(
        requests[0].endpoint,
        frame,
        cache=cache,
        provider=provider,
        prices=prices,
        requests=requests,
        models=models,
    )


def prepare_bodies(
    endpoint: Endpoint,
    bodies: Bodies,
    *,
    cache: Cache | None,
    provider: ProviderConfig,
    prices: PriceTable,
    models: Sequence[str] | None = None,
) -> Prepared:
    """Prepare canonical JSON bodies (or dicts: then no JSON round trip for the misses)."""
    frame = request_frame(endpoint, bodies, namespace=provider.cache_namespace)
    parsed = None
    if isinstance(bodies, list | tuple) and all(isinstance(b, Mapping) for b in bodies):
        parsed = bodies
    return prepare(
        endpoint,
        frame,
        cache=cache,
        provider=provider,
        prices=prices,
        parsed=parsed,
        models=models,
    )


def request_models(requests: Sequence[LLMRequest], provider: ProviderConfig) -> list[str]:
    """The models ``requests`` are cached under (what prunes the cache scan)."""
    return sorted({provider.price_model or str(r.body.get("model")) for r in requests})


def run_spent(ledger: CostLedger | None, context: RunContext, budgeted: bool) -> float:
    """What the run already spent (earlier calls, steps, step retries): the budget's start.

    Crashed calls' spend journals are booked first. Ad hoc runs (no run id) count only the
    calls that shared this context object.
    """
    if ledger is None:
        return context.spent_usd
    ledger.recover()
    if not budgeted or context.run_id == RunContext().run_id:
        return context.spent_usd
    return max(context.spent_usd, ledger.run_spend(context.run_id))


async def start(
    prepared: Prepared,
    *,
    provider: ProviderConfig,
    ledger: CostLedger | None,
    context: RunContext,
    max_cost_usd: float | None,
    budget: BudgetGuard | None = None,
) -> BudgetGuard:
    """The last checks before sending: the API key (when anything is sent), the run's budget.

    The budget is per run: it starts from what the run already spent (ledger by run id, killed
    calls' journals booked first, uncertain attempts included). ``budget``: a guard that already
    holds the run's spend (the Batch API's online resend shares its call's guard).
    """
    if prepared.planned.requests:
        provider.check_api_key()
    if budget is not None:
        return budget
    prior = await asyncio.to_thread(run_spent, ledger, context, max_cost_usd is not None)
    return BudgetGuard(max_cost_usd, committed_usd=prior)


def output_history(cache: Cache | None, models: Sequence[str]) -> dict[str, float]:
    """Mean output tokens of the cached responses per model (a forecast's best guess).

    Reads the cache's Delta table (its documented ``uri``), pruned to ``models``.
    """
    if cache is None or not models:
        return {}
    options = cache.storage.storage_options or None
    if not table_exists(cache.uri, options):
        return {}
    lf = pl.scan_delta(cache.uri, storage_options=options)
    lf = lf.filter(pl.col("model").is_in(list(models)))
    means = lf.group_by("model").agg(pl.col("output_tokens").mean().alias("m")).collect()
    return {m: float(v) for m, v in means.iter_rows() if v is not None}
