"""The engine: requests in, one result per input out, nothing lost, nothing paid twice.

A run goes once through three steps. *Prepare* (``engine.prepare``): hash every body
(vectorized) → keep one request per distinct key → one join against the response cache → check
the misses (price, tokens, context window). *Send*: API key and the run's budget → workers:
budget guard → limiter → client (retries) → cache journal → result. *Assemble*
(``engine.results``): one result per input, in order. Two entry points share it:

* :meth:`Engine.run` / :meth:`Engine.arun` take ``LLMRequest`` objects and return ``LLMResult``
  objects (what ``core.embed``/``core.generate`` use);
* :meth:`Engine.run_bodies` / :meth:`Engine.arun_bodies` take canonical JSON bodies (a polars
  Series, see ``engine.keys.canonical_bodies``) and return a polars frame: the fast path for
  millions of rows.

A caller that prepared already (``ModeRunner``: forecast first) hands the :class:`Prepared` to
:meth:`Engine.arun_prepared`, which sends without planning again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from lakeloom.engine.cache.store import ResponseCache
from lakeloom.engine.calls import BlockingCalls, Sent
from lakeloom.engine.client import Client
from lakeloom.engine.cost import BUDGET_ERROR, BudgetGuard, PriceTable
from lakeloom.engine.embed_inputs import cache_inputs
from lakeloom.engine.estimate import Forecast, forecast
from lakeloom.engine.ledger import CallSpend, CostLedger
from lakeloom.engine.limiter.base import RateLimiter
from lakeloom.engine.plan import Bodies, Planned
from lakeloom.engine.prepare import (
    Prepared,
    output_history,
    prepare_bodies,
    prepare_requests,
    request_models,
    start,
)
from lakeloom.engine.prepare import match as match_cache
from lakeloom.engine.prepare import misses as distinct_misses
from lakeloom.engine.prepare import run_spent as ledger_run_spent
from lakeloom.engine.progress import ProgressCallback, ProgressTracker
from lakeloom.engine.provider import ProviderConfig
from lakeloom.engine.results import (
    EngineRun,
    RunResults,
    RunStats,
    lost_result,
)
from lakeloom.engine.types import Endpoint, LLMRequest, LLMResult, RunContext
from lakeloom.storage.settings import Storage

__all__ = ["BUDGET_ERROR", "Engine", "EngineRun", "Prepared", "RunResults", "RunStats"]


class EngineWrapper:
    """What the core reads from a runner that wraps an :class:`Engine` (batch, modes)."""

    engine: Engine

    @property
    def provider(self) -> ProviderConfig:
        """The engine's provider config."""
        return self.engine.provider

    @property
    def structured_output(self) -> str:
        """The provider's JSON-schema capability (read by ``core.generate``)."""
        return self.engine.structured_output

    def prepare_requests(self, requests: Sequence[LLMRequest]) -> Prepared:
        """The engine's preparation (its cache, provider and prices)."""
        return self.engine.prepare_requests(requests)

    def prepare_bodies(
        self, endpoint: Endpoint, bodies: Bodies, *, models: Sequence[str] | None = None
    ) -> Prepared:
        """The engine's preparation (its cache, provider and prices)."""
        return self.engine.prepare_bodies(endpoint, bodies, models=models)


class Engine(BlockingCalls):
    """Sends OpenAI-compatible requests at the provider's limit, through a durable response cache.

    Examples:
        >>> provider = ProviderConfig(kind="compatible", base_url="http://127.0.0.1:8377/v1")
        >>> engine = Engine(provider)  # doctest: +SKIP
        >>> bodies = [{"model": "sim-embed", "input": "hi"}]
        >>> run = engine.run_bodies("embeddings", bodies)  # doctest: +SKIP
        >>> run.results["status"].to_list(), run.stats.cache_hits  # doctest: +SKIP
        (['ok'], 0)
    """

    def __init__(
        self,
        provider: ProviderConfig,
        *,
        limiter: RateLimiter | None = None,
        limiter_url: str | None = None,
        storage: Storage | None = None,
        cache: ResponseCache | bool = True,
        ledger: CostLedger | bool = True,
        prices: PriceTable | Mapping[str, Any] | str | None = None,
        max_cost_usd: float | None = None,
        progress: ProgressCallback | None = None,
        progress_interval_s: float = 10.0,
    ) -> None:
        """Wire a provider with its limiter, cache, prices, ledger, budget and progress sink."""
        self.provider = provider
        self.limiter = limiter or _default_limiter(provider, limiter_url)
        self.storage = storage or Storage.from_env()
        self._cache_arg = cache
        self._cache: ResponseCache | None = cache if isinstance(cache, ResponseCache) else None
        if isinstance(ledger, CostLedger):
            self.ledger: CostLedger | None = ledger
        else:
            self.ledger = CostLedger(self.storage) if ledger else None
        self.prices = prices if isinstance(prices, PriceTable) else PriceTable(prices)
        self.max_cost_usd = max_cost_usd
        self.progress = progress
        self.progress_interval_s = progress_interval_s
        self.last_stats: RunStats | None = None

    @property
    def structured_output(self) -> str:
        """The provider's JSON-schema capability (read by ``core.generate``)."""
        return self.provider.structured_output

    @property
    def cache(self) -> ResponseCache | None:
        """The response cache (opened, and orphaned journals replayed, on first use)."""
        if self._cache is None and self._cache_arg is True:
            self._cache = ResponseCache(self.storage)
        return self._cache

    # -- prepare ------------------------------------------------------------------------------

    def prepare_requests(self, requests: Sequence[LLMRequest]) -> Prepared:
        """Hash, match against the cache and plan ``LLMRequest`` objects; sends nothing."""
        return prepare_requests(
            requests,
            cache=self.cache,
            provider=self.provider,
            prices=self.prices,
            models=request_models(requests, self.provider),
        )

    def prepare_bodies(
        self, endpoint: Endpoint, bodies: Bodies, *, models: Sequence[str] | None = None
    ) -> Prepared:
        """Hash, match against the cache and plan canonical bodies; sends nothing."""
        return prepare_bodies(
            endpoint, bodies, cache=self.cache, provider=self.provider, prices=self.prices,
            models=models,
        )  # fmt: skip

    def forecast(self, endpoint: Endpoint, bodies: Bodies, **kwargs: Any) -> Forecast:
        """Dry run over bodies: see :meth:`forecast_prepared`; sends nothing."""
        prepared = prepare_bodies(
            endpoint, bodies, cache=self.cache, provider=self.provider, prices=self.prices
        )
        return self.forecast_prepared(prepared, **kwargs)

    def forecast_requests(self, requests: Sequence[LLMRequest], **kwargs: Any) -> Forecast:
        """Dry run over ``LLMRequest`` objects; sends nothing."""
        return self.forecast_prepared(self.prepare_requests(requests), **kwargs)

    def forecast_prepared(
        self,
        prepared: Prepared,
        *,
        expected_output_tokens: int | None = None,
        rpm: float | None = None,
        tpm: float | None = None,
    ) -> Forecast:
        """The forecast of a prepared run (``engine.estimate.forecast``), output history read.

        Raises the same pre-flight errors as a real run (unknown model, context window): they
        were raised by the preparation.
        """
        history: dict[str, float] = {}
        if expected_output_tokens is None:
            history = output_history(self.cache, sorted(set(prepared.planned.models)))
        return forecast(
            prepared,
            history=history,
            expected_output_tokens=expected_output_tokens,
            rpm=rpm or self.provider.rpm,
            tpm=tpm or self.provider.tpm,
        )

    def match(self, frame: pl.DataFrame, models: Sequence[str] | None = None) -> pl.DataFrame:
        """Return cached answers aligned with a request frame (nulls where not cached)."""
        return match_cache(self.cache, frame, models)

    def misses(self, frame: pl.DataFrame, hit_mask: pl.Series) -> pl.DataFrame:
        """Return the distinct requests that the cache could not answer."""
        return distinct_misses(frame, hit_mask)

    def run_spent(self, context: RunContext, budgeted: bool) -> float:
        """What the run already spent: the budget's start (see ``engine.prepare.run_spent``)."""
        return ledger_run_spent(self.ledger, context, budgeted)

    # -- send ---------------------------------------------------------------------------------

    async def send(
        self,
        prepared: Prepared,
        *,
        context: RunContext | None = None,
        max_cost_usd: float | None = None,
        budget: BudgetGuard | None = None,
    ) -> Sent:
        """Send the planned misses online; every exit path commits the cache and books spend."""
        context = context or RunContext()
        limit = self.max_cost_usd if max_cost_usd is None else max_cost_usd
        budget = await start(
            prepared,
            provider=self.provider,
            ledger=self.ledger,
            context=context,
            max_cost_usd=limit,
            budget=budget,
        )
        planned, endpoint = prepared.planned, prepared.endpoint
        spend = CallSpend(self.ledger, endpoint, context, self.prices.version)
        hit_keys = prepared.hit_keys()
        tracker = self._tracker(prepared)
        for rejected in planned.rejected:  # over a limit: the row's error, nothing sent
            tracker.add(rejected, prepared.rows_of(rejected.key))
            spend.add(rejected)
        try:
            sent = await self._send(endpoint, planned, budget, tracker, spend)
        except BaseException:  # cancelled or interrupted: commit what was paid, book it, re-raise
            if self.cache is not None:
                with contextlib.suppress(Exception):
                    self.cache.flush()
            with contextlib.suppress(Exception):
                spend.book(hit_keys)
            raise
        sent = [*planned.rejected, *sent]
        tracker.emit(final=True)
        if self.cache is not None:
            await asyncio.to_thread(_finish_cache, self.cache)
        await asyncio.to_thread(spend.book, hit_keys)
        return sent, budget.stopped

    def _tracker(self, prepared: Prepared) -> ProgressTracker:
        """Progress over the run's rows (requests, unless some answer several: embeddings)."""
        hits, misses = prepared.hits, prepared.misses
        tracker = ProgressTracker(
            hits + misses.height,
            self.progress,
            interval_s=self.progress_interval_s,
            cache_hits=hits,
        )
        given = prepared.given
        if given and any(r.input_keys for r in given.values()):
            keys = prepared.frame["key"].filter(prepared.hit_mask).to_list()
            hit_rows = sum(prepared.rows_of(k) for k in keys)
            total = hit_rows + sum(prepared.rows_of(k) for k in misses["key"].to_list())
            tracker.count_rows(total, hit_rows)
        return tracker

    async def _send(
        self,
        endpoint: Endpoint,
        planned: Planned,
        budget: BudgetGuard,
        tracker: ProgressTracker,
        spend: CallSpend,
    ) -> list[LLMResult]:
        n = len(planned.requests)
        if n == 0:
            return []
        out: list[LLMResult | None] = [None] * n
        cache = self.cache
        stop = asyncio.Event()
        background = [asyncio.create_task(tracker.run(stop))]
        if cache is not None:
            background.append(asyncio.create_task(cache.flush_loop(stop)))
        queue = iter(range(n))
        answer = _Answer(endpoint, planned, budget, tracker, spend, cache, self.provider)

        async def worker(client: Client) -> None:
            for i in queue:
                out[i] = await answer(client, i)

        try:
            async with Client(self.provider, self.limiter) as client:
                workers = min(self.provider.max_concurrency, n)
                await asyncio.gather(*(worker(client) for _ in range(workers)))
        finally:
            stop.set()
            for task in background:
                with contextlib.suppress(Exception):
                    await task
        requests = planned.requests
        return [r if r is not None else lost_result(requests[i].key) for i, r in enumerate(out)]


@dataclass(slots=True)
class _Answer:
    """One planned request through budget → client → spend journal → cache → progress."""

    endpoint: Endpoint
    planned: Planned
    budget: BudgetGuard
    tracker: ProgressTracker
    spend: CallSpend
    cache: ResponseCache | None
    provider: ProviderConfig
    abort: list[str] = field(default_factory=list)  # the first fatal error stops the rest

    async def __call__(self, client: Client, i: int) -> LLMResult:
        planned, budget, spend, cache = self.planned, self.budget, self.spend, self.cache
        request, model = planned.requests[i], planned.models[i]
        worst = planned.worst_usd[i]
        attempts = budget.attempts(worst)
        error = client.unreachable or (f"not sent: {self.abort[0]}" if self.abort else None)
        if error is None and not attempts.reserve():
            error = BUDGET_ERROR.format(budget.max_cost_usd)
        if error is not None:
            refused = LLMResult(request.key, "error", error=error, model=model)
            spend.add(refused)
            return refused
        try:
            result = await client.call(request, planned.texts[i], attempts)
        except Exception as exc:  # a bug must cost one row, not the run
            result = LLMResult(request.key, "error", error=f"internal error: {exc!r}")
        result.model = model
        if result.status == "ok":
            result.cost_usd = planned.prices[i].cost(
                input_tokens=result.input_tokens,
                output_tokens=result.output_tokens,
                cached_tokens=result.cached_input_tokens,
            )
        spend.add(result, result.uncertain_attempts * worst)  # journaled before cached
        ok = result.status == "ok"
        if ok and cache is not None and result.response_text is not None:
            result.inputs_cached = request.input_keys != () and cache_inputs(
                cache, request, result, model, self.provider.cache_namespace
            )  # an embeddings batch: one entry per input (regrouping hits)
            if not result.inputs_cached:
                cache.append(
                    planned.cache_keys[i],
                    model,
                    self.endpoint,
                    result.response_text,
                    result.input_tokens,
                    result.output_tokens,
                )
        if result.status == "ok":
            attempts.settle(result.cost_usd)
        else:
            attempts.release()
        self.tracker.add(result, len(request.input_keys) or 1)
        if result.fatal and not self.abort:
            self.abort.append(result.error or "fatal provider error")
        return result


def _default_limiter(provider: ProviderConfig, url: str | None) -> RateLimiter:
    from lakeloom.engine.limiter.factory import make_limiter

    return make_limiter(provider.limiter_key, rpm=provider.rpm, tpm=provider.tpm, url=url)


def _finish_cache(cache: ResponseCache) -> None:
    cache.flush()
    cache.compact()
