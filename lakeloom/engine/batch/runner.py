"""Batch API mode: the engine's planned requests answered through the OpenAI Batch API.

Same contract as :class:`~lakeloom.engine.runner.Engine` (``run``/``arun`` over ``LLMRequest``
objects, ``run_bodies``/``arun_bodies`` over canonical bodies; one result per input, in order),
so ``core.embed``/``core.generate`` run unchanged on a :class:`BatchRunner`.

Pipeline: the run's one preparation (``engine.prepare``: hash → one cache join → plan the misses,
the same pre-flight checks as online: prices, context windows), then the API key and the run's
budget (``prepare.start``: it starts from what the run already spent, read from the ledger by run
id, as online), which reserves each line's worst case at batch prices before anything is
submitted; lines that do not fit end ``budget exceeded: not sent`` → resume the open
jobs whose keys overlap the misses (see ``batch_store``) and cut the rest into batches within
the per-batch limits (requests, bytes, tokens, embedding inputs; one model per batch) → upload,
create, poll with backoff, download (``batch_jobs``) → answers into the response cache under the
online keys (a later online run reuses them) → failed lines that a retry can fix (5xx, 429,
expired, cancelled, failed batch) sent online when ``on_failed="online"`` (through the engine,
with the same budget guard: the prior spend is counted once), the rest reported with the
provider's reason; lines of a batch left running are booked at their worst case
(``uncertain_usd``) → cost ledger at batch prices, endpoint ``batch:<endpoint>`` (online retries
are ledgered by the engine as online spend). Each answer's spend is journaled before it enters
the cache (``batch_spend``), so a run killed before its ledger write is still booked by the next
one.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from lakeloom.engine.batch.files import URLS, BatchAPI, ChunkLimits, chunk, embedding_inputs
from lakeloom.engine.batch.files import jsonl_line as _line
from lakeloom.engine.batch.jobs import JobOutcome, JobRunner, JobTiming
from lakeloom.engine.batch.spend import BatchSpend, worst_by_key
from lakeloom.engine.batch.store import BatchJob, BatchStore, job_id
from lakeloom.engine.calls import BlockingCalls, Sent
from lakeloom.engine.cost import BUDGET_ERROR, BudgetGuard
from lakeloom.engine.ledger import CallSpend
from lakeloom.engine.plan import Planned
from lakeloom.engine.prepare import Prepared, start
from lakeloom.engine.results import RunStats, lost_result
from lakeloom.engine.runner import Engine, EngineWrapper
from lakeloom.engine.types import Endpoint, LLMResult, RunContext

__all__ = ["BatchRunner", "BatchSettings"]


class BatchSettings(BaseModel):
    """How Batch API mode splits, waits for and falls back from batches.

    Examples:
        >>> BatchSettings(max_requests=10_000, on_failed="error").max_bytes
        199229440
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_requests: int = Field(50_000, ge=1, description="Requests per batch (OpenAI: 50,000).")
    max_bytes: int = Field(
        190 * 1024**2, ge=1024, description="Input file size per batch (OpenAI: 200 MB)."
    )
    max_tokens: int | None = Field(
        None, gt=0, description="Prompt + max output tokens per batch (enqueued-token limits)."
    )
    max_embedding_inputs: int = Field(
        50_000, ge=1, description="Embedding inputs per batch (OpenAI: 50,000)."
    )
    max_wait_s: float = Field(
        25 * 3600.0,
        gt=0,
        description="Wait this long for a batch, then cancel it, keep its answers and treat the "
        "rest as failed lines (see on_failed).",
    )
    cancel_wait_s: float = Field(
        900.0, ge=0, description="How long a cancellation may take before lines are reported."
    )
    poll_interval_s: float = Field(10.0, gt=0, description="First poll interval (then ×1.5).")
    poll_max_interval_s: float = Field(120.0, gt=0, description="Longest poll interval.")
    progress_interval_s: float = Field(30.0, gt=0, description="Seconds between progress lines.")
    on_failed: Literal["online", "error"] = Field(
        "online",
        description="Failed lines a retry can fix (5xx, 429, expired, cancelled, failed batch): "
        "send online, or report as error rows.",
    )
    api_retries: int = Field(5, ge=0, le=20, description="SDK retries of each files/batches call.")

    def limits(self) -> ChunkLimits:
        """The per-batch limits."""
        return ChunkLimits(
            self.max_requests, self.max_bytes, self.max_tokens, self.max_embedding_inputs
        )


class BatchRunner(EngineWrapper, BlockingCalls):
    """Answers requests through the Batch API, with the engine's cache, prices, ledger and budget.

    Examples:
        >>> engine = Engine(ProviderConfig(kind="openai"))  # doctest: +SKIP
        >>> runner = BatchRunner(engine, BatchSettings(poll_interval_s=30))  # doctest: +SKIP
        >>> labels, stats = run_generate(df, spec, runner)  # doctest: +SKIP
    """

    def __init__(
        self,
        engine: Engine,
        settings: BatchSettings | None = None,
        *,
        store: BatchStore | None = None,
    ) -> None:
        """Wrap an engine; jobs are recorded in ``store`` (default: under its storage root)."""
        self.engine = engine
        self.settings = settings or BatchSettings()
        self.store = store or BatchStore(engine.storage)
        self.max_cost_usd = engine.max_cost_usd
        self.jobs: list[BatchJob] = []
        self.last_stats: RunStats | None = None

    def _record(self, stats: RunStats) -> None:
        self.last_stats = self.engine.last_stats = stats

    # -- send -----------------------------------------------------------------------------------
    async def send(
        self,
        prepared: Prepared,
        *,
        context: RunContext | None = None,
        max_cost_usd: float | None = None,
        budget: BudgetGuard | None = None,
    ) -> Sent:
        """Send the planned misses through the Batch API; every exit path books the spend."""
        engine, endpoint = self.engine, prepared.endpoint
        context = context or RunContext()
        limit = engine.max_cost_usd if max_cost_usd is None else max_cost_usd
        budget = await start(
            prepared,
            provider=engine.provider,
            ledger=engine.ledger,
            context=context,
            max_cost_usd=limit,
            budget=budget,
        )
        self.jobs = []
        spend = CallSpend(engine.ledger, f"batch:{endpoint}", context, engine.prices.version)
        hit_keys = prepared.hit_keys()
        planned = prepared.planned
        try:
            results = await self._send(endpoint, planned, budget, context, spend)
        except BaseException:  # cancelled or failed: book what was paid, re-raise
            with contextlib.suppress(Exception):
                spend.book(hit_keys)
            raise
        results = [*planned.rejected, *results]  # over a limit: the rows' errors, never sent
        await asyncio.to_thread(spend.book, hit_keys)
        return results, budget.stopped

    async def _send(
        self,
        endpoint: Endpoint,
        planned: Planned,
        budget: BudgetGuard,
        context: RunContext,
        spend: CallSpend,
    ) -> list[LLMResult]:
        """Results for every planned request; those the Batch API settled go to ``spend``."""
        if not planned.requests:
            return []
        s = self.settings
        n = len(planned.requests)
        out: list[LLMResult | None] = [None] * n
        worst = [
            price.batch_cost(input_tokens=r.prompt_tokens, output_tokens=w)
            for r, price, w in zip(
                planned.requests, planned.prices, planned.worst_output_tokens, strict=True
            )
        ]
        admitted: list[int] = []
        for i, request in enumerate(planned.requests):
            if budget.try_reserve(worst[i]):
                admitted.append(i)
            else:
                error = BUDGET_ERROR.format(budget.max_cost_usd)
                out[i] = LLMResult(request.key, "error", error=error, model=planned.models[i])
        index = {planned.requests[i].key: i for i in admitted}
        answers = BatchSpend(spend, planned, index, self.engine.prices)
        jobs, texts = await self._plan_jobs(endpoint, planned, admitted, index)
        self.jobs = jobs
        outcomes: list[JobOutcome] = []
        if jobs:
            timing = JobTiming(
                s.poll_interval_s,
                s.poll_max_interval_s,
                s.max_wait_s,
                s.cancel_wait_s,
                s.progress_interval_s,
            )
            async with BatchAPI(self.provider, retries=s.api_retries) as api:
                runner = JobRunner(
                    api,
                    self.store,
                    self.engine.cache,
                    endpoint=endpoint,
                    namespace=self.provider.cache_namespace,
                    timing=timing,
                    context=context,
                    progress=self.engine.progress,
                    on_answers=answers.on_answers,
                    inputs={r.key: r for r in planned.requests if r.input_keys},
                )
                outcomes = list(await asyncio.gather(*(runner.run(j, texts) for j in jobs)))
                for key in runner.per_input:  # cached per input already: the core adds none
                    if key in answers.answered:
                        answers.answered[key].inputs_cached = True
        retry = self._settle(planned, outcomes, index, out, worst, budget, answers.answered)
        answers.add_settled([r for r in out if r is not None], worst_by_key(planned, worst))
        if retry:  # online, through the engine: its own cache check, limiter, ledger rows
            # the same guard (prior spend counted once, batch spend settled): resends fit in
            # what the batch left, each attempt at its online worst case
            stopped, budget.stopped = budget.stopped, False
            online = await self.engine.arun(
                [planned.requests[i] for i in retry], context=context, budget=budget
            )
            for i, result in zip(retry, online, strict=True):
                result.model = result.model or planned.models[i]
                out[i] = result
            budget.stopped |= stopped
        return [
            r if r is not None else lost_result(planned.requests[i].key) for i, r in enumerate(out)
        ]

    def _settle(
        self,
        planned: Planned,
        outcomes: list[JobOutcome],
        index: Mapping[str, int],
        out: list[LLMResult | None],
        worst: list[float],
        budget: BudgetGuard,
        answered: Mapping[str, LLMResult],
    ) -> list[int]:
        """Turn line outcomes into results (answers: priced already); return those to resend."""
        retry: list[int] = []
        for outcome in outcomes:
            for key, line in outcome.lines.items():
                i = index.get(key)
                if i is None or out[i] is not None:
                    continue  # a resumed job's other keys: in the cache now, not asked here
                model = planned.models[i]
                result = answered.get(key) if line.text is not None else None
                if result is not None:
                    budget.settle(worst[i], result.cost_usd)
                    out[i] = result
                    continue
                # a line still running may be billed later: keep its worst case committed
                budget.settle(worst[i], worst[i] if outcome.still_open else 0.0)
                if line.retryable and self.settings.on_failed == "online":
                    retry.append(i)
                    continue
                out[i] = LLMResult(
                    key,
                    "error",
                    error=line.error,
                    attempts=1,
                    latency_s=outcome.seconds,
                    model=model,
                    fatal=line.fatal,
                    uncertain_attempts=int(outcome.still_open),  # booked at its worst case
                )
        return retry

    async def _plan_jobs(
        self,
        endpoint: Endpoint,
        planned: Planned,
        admitted: list[int],
        index: Mapping[str, int],
    ) -> tuple[list[BatchJob], dict[str, str]]:
        """Resume open jobs that overlap the misses; chunk the rest into new jobs."""
        provider = self.provider.limiter_key
        jobs: list[BatchJob] = []
        claimed: set[str] = set()
        for job in await asyncio.to_thread(self.store.open_jobs, provider, endpoint):
            if any(k in index and k not in claimed for k in job.keys):
                jobs.append(job)
                claimed.update(job.keys)
        groups: dict[tuple[str, str], list[int]] = {}
        for i in admitted:
            request = planned.requests[i]
            if request.key not in claimed:
                group = (planned.models[i], str(request.body.get("model")))
                groups.setdefault(group, []).append(i)
        url = URLS[endpoint]
        overhead = len(_line(url, "0" * 32, ""))
        texts: dict[str, str] = {}
        for (model, _), items in groups.items():
            items.sort(key=lambda i: planned.requests[i].key)
            sizes = [overhead + len(planned.texts[i].encode()) for i in items]
            tokens = [planned.requests[i].reserved_tokens for i in items]
            inputs = [
                embedding_inputs(planned.requests[i].body) if endpoint == "embeddings" else 1
                for i in items
            ]
            for positions in chunk(sizes, tokens, inputs, self.settings.limits()):
                keys = [planned.requests[items[p]].key for p in positions]
                name = f"{job_id(provider, endpoint, model, keys)[:20]}-{uuid.uuid4().hex[:8]}"
                jobs.append(BatchJob(name, provider, endpoint, model, keys))
                for p in positions:
                    texts[planned.requests[items[p]].key] = planned.texts[items[p]]
        return jobs, texts
