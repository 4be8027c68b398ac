"""The engine: requests in, one result per input out, nothing lost, nothing paid twice.

Pipeline: hash every body (vectorized) → keep one request per distinct key → one join against
the response cache → check the misses (price, tokens, context window, API key) → workers:
budget guard → limiter → client (retries) → cache journal → result. Two entry points share it:

* :meth:`Engine.run` / :meth:`Engine.arun` take ``LLMRequest`` objects and return ``LLMResult``
  objects (what ``core.embed``/``core.generate`` use);
* :meth:`Engine.run_bodies` / :meth:`Engine.arun_bodies` take canonical JSON bodies (a polars
  Series, see ``core.hashing.canonical_bodies``) and return a polars frame: the fast path for
  millions of rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import polars as pl

from lakeloom.engine.cache.store import ResponseCache
from lakeloom.engine.client import Client
from lakeloom.engine.cost import BUDGET_ERROR, BudgetGuard, PriceTable
from lakeloom.engine.embed_inputs import cache_inputs
from lakeloom.engine.estimate import Forecast, forecast
from lakeloom.engine.ledger import CallSpend, CostLedger
from lakeloom.engine.limiter.base import RateLimiter
from lakeloom.engine.plan import Bodies, Planned, plan, request_frame, requests_frame
from lakeloom.engine.progress import ProgressCallback, ProgressTracker
from lakeloom.engine.provider import ProviderConfig
from lakeloom.engine.results import (
    MATCH_SCHEMA,
    EngineRun,
    RunResults,
    RunStats,
    assemble,
    in_request_order,
    lost_result,
    run_stats,
)
from lakeloom.engine.types import Endpoint, LLMRequest, LLMResult, RunContext
from lakeloom.storage.settings import Storage

__all__ = ["BUDGET_ERROR", "Engine", "EngineRun", "RunResults", "RunStats"]


@dataclass(slots=True)
class _Outcome:
    frame: pl.DataFrame  # key, cache_key, body per input row
    matched: pl.DataFrame  # cached answer per input row (nulls on a miss)
    hit_mask: pl.Series
    sent: list[LLMResult]  # one per distinct miss
    hits: int
    budget: BudgetGuard
    started: float


class BlockingCalls:
    """``run``/``run_bodies`` for a runner that implements ``arun``/``arun_bodies``.

    Blocking calls work inside a running event loop too (e.g. Jupyter): they get their own thread.
    """

    def run(
        self,
        requests: Sequence[LLMRequest],
        *,
        context: RunContext | None = None,
        max_cost_usd: float | None = None,
    ) -> RunResults:
        """Blocking :meth:`arun`."""
        coro = self.arun(requests, context=context, max_cost_usd=max_cost_usd)  # type: ignore[attr-defined]
        return _blocking(coro)

    def run_bodies(
        self,
        endpoint: Endpoint,
        bodies: Bodies,
        *,
        context: RunContext | None = None,
        max_cost_usd: float | None = None,
        models: Sequence[str] | None = None,
    ) -> EngineRun:
        """Blocking :meth:`arun_bodies`."""
        coro = self.arun_bodies(  # type: ignore[attr-defined]
            endpoint, bodies, context=context, max_cost_usd=max_cost_usd, models=models
        )
        return _blocking(coro)


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

    # -- public API ---------------------------------------------------------------------------

    async def arun(
        self,
        requests: Sequence[LLMRequest],
        *,
        context: RunContext | None = None,
        max_cost_usd: float | None = None,
        budget: BudgetGuard | None = None,
    ) -> RunResults:
        """One ``LLMResult`` per request, in order (a repeated key repeats its result).

        ``budget``: a guard that already holds the run's spend (the Batch API's online resend
        shares its call's guard); ``max_cost_usd`` and the run's ledger spend are then not read.
        """
        frame = requests_frame(requests, namespace=self.provider.cache_namespace)
        given = {r.key: r for r in requests}
        models = sorted({self.provider.price_model or str(r.body.get("model")) for r in requests})
        outcome = await self._execute(
            requests[0].endpoint, frame, given, context, max_cost_usd, models=models, budget=budget
        )
        results = in_request_order(
            requests, frame["key"], outcome.matched, outcome.hit_mask, outcome.sent
        )
        ok = sum(r.status == "ok" for r in results)
        return RunResults(results, self._stats(outcome, ok))

    async def arun_bodies(
        self,
        endpoint: Endpoint,
        bodies: Bodies,
        *,
        context: RunContext | None = None,
        max_cost_usd: float | None = None,
        models: Sequence[str] | None = None,
    ) -> EngineRun:
        """Answer canonical JSON bodies; the frame has one row per body, in input order.

        ``models`` (optional: the models the bodies name) limits the cache scan to them.
        """
        frame = request_frame(endpoint, bodies, namespace=self.provider.cache_namespace)
        parsed = None
        if isinstance(bodies, list | tuple) and all(isinstance(b, Mapping) for b in bodies):
            parsed = bodies  # dicts already: no JSON round trip for the misses
        outcome = await self._execute(
            endpoint, frame, None, context, max_cost_usd, models=models, parsed=parsed
        )
        results = assemble(frame, outcome.matched, outcome.hit_mask, outcome.sent)
        ok = int((results["status"] == "ok").sum())
        return EngineRun(results, self._stats(outcome, ok))

    def forecast(self, endpoint: Endpoint, bodies: Bodies, **kwargs: Any) -> Forecast:
        """Dry run over bodies: see :func:`lakeloom.engine.estimate.forecast`; sends nothing."""
        frame = request_frame(endpoint, bodies, namespace=self.provider.cache_namespace)
        return forecast(self, endpoint, frame, **kwargs)

    def forecast_requests(self, requests: Sequence[LLMRequest], **kwargs: Any) -> Forecast:
        """Dry run over ``LLMRequest`` objects; sends nothing."""
        frame = requests_frame(requests, namespace=self.provider.cache_namespace)
        given = {r.key: r for r in requests}
        return forecast(self, requests[0].endpoint, frame, given=given, **kwargs)

    # -- the pipeline -------------------------------------------------------------------------

    def match(self, frame: pl.DataFrame, models: Sequence[str] | None = None) -> pl.DataFrame:
        """Return cached answers aligned with a request frame (nulls where not cached)."""
        cache = self.cache
        if cache is None:
            return pl.DataFrame(
                {c: pl.Series(c, [None] * frame.height, dtype=t) for c, t in MATCH_SCHEMA.items()}
            )
        return cache.match(frame["cache_key"], models=models)

    def misses(self, frame: pl.DataFrame, hit_mask: pl.Series) -> pl.DataFrame:
        """Return the distinct requests that the cache could not answer."""
        missed = frame.filter(~hit_mask) if hit_mask.any() else frame
        return missed.filter(pl.col("key").is_first_distinct())

    async def _execute(
        self,
        endpoint: Endpoint,
        frame: pl.DataFrame,
        given: Mapping[str, LLMRequest] | None,
        context: RunContext | None,
        max_cost_usd: float | None,
        *,
        models: Sequence[str] | None,
        parsed: Sequence[Mapping[str, Any]] | None = None,
        budget: BudgetGuard | None = None,
    ) -> _Outcome:
        started = time.perf_counter()
        context = context or RunContext()
        matched = self.match(frame, models)
        hit_mask = matched["response"].is_not_null()
        misses = self.misses(frame, hit_mask)
        planned = plan(
            endpoint,
            misses,
            provider=self.provider,
            prices=self.prices,
            given=given,
            parsed=parsed,
        )
        if planned.requests:
            self.provider.check_api_key()
        if budget is None:
            limit = self.max_cost_usd if max_cost_usd is None else max_cost_usd
            prior = await asyncio.to_thread(self.run_spent, context, limit is not None)
            budget = BudgetGuard(limit, committed_usd=prior)
        spend = CallSpend(self.ledger, endpoint, context, self.prices.version)
        hits = int(hit_mask.sum())
        hit_keys = pl.DataFrame({"key": frame["key"], "model": matched["model"]}).filter(hit_mask)
        tracker = ProgressTracker(
            hits + misses.height,
            self.progress,
            interval_s=self.progress_interval_s,
            cache_hits=hits,
        )
        _track_rows(tracker, frame, hit_mask, misses, given)
        for rejected in planned.rejected:  # over a limit: the row's error, nothing sent
            tracker.add(rejected, _rows_of(given, rejected.key))
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
        return _Outcome(frame, matched, hit_mask, sent, hits, budget, started)

    def run_spent(self, context: RunContext, budgeted: bool) -> float:
        """What the run already spent (earlier calls, steps, step retries): the budget's start.

        Crashed calls' spend journals are booked first. Ad hoc runs (no run id) count only the
        calls that shared this context object.
        """
        if self.ledger is None:
            return context.spent_usd
        self.ledger.recover()
        if not budgeted or context.run_id == RunContext().run_id:
            return context.spent_usd
        return max(context.spent_usd, self.ledger.run_spend(context.run_id))

    def _stats(self, outcome: _Outcome, ok: int) -> RunStats:
        stats = run_stats(
            rows=outcome.frame.height,
            hits=outcome.hits,
            sent=outcome.sent,
            ok=ok,
            started=outcome.started,
            budget_exceeded=outcome.budget.stopped,
        )
        self.last_stats = stats
        return stats

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
        abort: list[str] = []
        requests, texts, models = planned.requests, planned.texts, planned.models

        async def worker(client: Client) -> None:
            for i in queue:
                request = requests[i]
                worst = planned.worst_usd[i]
                attempts = budget.attempts(worst)
                error = client.unreachable or (f"not sent: {abort[0]}" if abort else None)
                if error is None and not attempts.reserve():
                    error = BUDGET_ERROR.format(budget.max_cost_usd)
                if error is not None:
                    out[i] = LLMResult(request.key, "error", error=error, model=models[i])
                    spend.add(out[i])
                    continue
                try:
                    result = await client.call(request, texts[i], attempts)
                except Exception as exc:  # a bug must cost one row, not the run
                    result = LLMResult(request.key, "error", error=f"internal error: {exc!r}")
                result.model = models[i]
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
                        cache, request, result, models[i], self.provider.cache_namespace
                    )  # an embeddings batch: one entry per input (regrouping hits)
                    if not result.inputs_cached:
                        cache.append(
                            planned.cache_keys[i],
                            models[i],
                            endpoint,
                            result.response_text,
                            result.input_tokens,
                            result.output_tokens,
                        )
                if result.status == "ok":
                    attempts.settle(result.cost_usd)
                else:
                    attempts.release()
                out[i] = result
                tracker.add(result, len(request.input_keys) or 1)
                if result.fatal and not abort:
                    abort.append(result.error or "fatal provider error")

        try:
            async with Client(self.provider, self.limiter) as client:
                workers = min(self.provider.max_concurrency, n)
                await asyncio.gather(*(worker(client) for _ in range(workers)))
        finally:
            stop.set()
            for task in background:
                with contextlib.suppress(Exception):
                    await task
        return [r if r is not None else lost_result(requests[i].key) for i, r in enumerate(out)]


def _rows_of(given: Mapping[str, LLMRequest] | None, key: str) -> int:
    """Rows one request answers: the inputs of an embeddings batch, else 1."""
    request = given.get(key) if given else None
    return len(request.input_keys) or 1 if request is not None else 1


def _track_rows(
    tracker: ProgressTracker,
    frame: pl.DataFrame,
    hit_mask: pl.Series,
    misses: pl.DataFrame,
    given: Mapping[str, LLMRequest] | None,
) -> None:
    """Progress counts rows when some requests answer several (embedding batches)."""
    if not given or not any(r.input_keys for r in given.values()):
        return
    hit_rows = sum(_rows_of(given, k) for k in frame["key"].filter(hit_mask).to_list())
    total = hit_rows + sum(_rows_of(given, k) for k in misses["key"].to_list())
    tracker.count_rows(total, hit_rows)


def _default_limiter(provider: ProviderConfig, url: str | None) -> RateLimiter:
    from lakeloom.engine.limiter.factory import make_limiter

    return make_limiter(provider.limiter_key, rpm=provider.rpm, tpm=provider.tpm, url=url)


def _blocking(coro: Any) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _run_sync(coro)
    with ThreadPoolExecutor(1) as pool:  # inside a running loop (a notebook): own thread
        return pool.submit(_run_sync, coro).result()


class _Boxed:
    """A run's result behind a constant repr.

    ``asyncio.Runner.run`` calls ``signal.getsignal(SIGINT)`` when it finishes, and Python 3.11
    formats the handler (a partial holding the main task) with ``repr``: a done task's repr
    includes its result, so a result of a million ``LLMResult`` objects was rendered to text,
    twice, after every blocking run (seconds per million rows).
    """

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<run result>"


async def _boxed(coro: Any) -> _Boxed:
    return _Boxed(await coro)


def _run_sync(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(_boxed(coro)).value
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_boxed(coro)).value


def _finish_cache(cache: ResponseCache) -> None:
    cache.flush()
    cache.compact()
