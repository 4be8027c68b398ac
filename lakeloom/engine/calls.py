"""The entry points every runner shares: prepare once, send, assemble; blocking forms.

A runner (:class:`~lakeloom.engine.runner.Engine`, ``BatchRunner``) implements three steps
(``prepare_requests``, ``prepare_bodies``, ``send``); :class:`BlockingCalls` turns them into
``arun``/``arun_prepared``/``arun_bodies`` and their blocking ``run*`` forms, so no runner
writes the preamble or the assembly again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from lakeloom.engine.cost import BudgetGuard
from lakeloom.engine.plan import Bodies
from lakeloom.engine.prepare import Prepared
from lakeloom.engine.results import (
    EngineRun,
    RunResults,
    RunStats,
    frame_results,
    request_results,
)
from lakeloom.engine.types import Endpoint, LLMRequest, LLMResult, RunContext

Sent = tuple[list[LLMResult], bool]
"""What a runner's send step returns: one result per planned request, and budget_exceeded."""


class BlockingCalls:
    """The run entry points of a runner, over its ``prepare_*`` and ``send`` steps.

    A runner (:class:`Engine`, ``BatchRunner``) implements ``prepare_requests``,
    ``prepare_bodies`` and ``send``; every entry point here prepares once, sends, assembles.
    Blocking calls work inside a running event loop too (e.g. Jupyter): they get their own thread.
    """

    last_stats: RunStats | None

    def prepare_requests(self, requests: Sequence[LLMRequest]) -> Prepared:
        """Prepare ``LLMRequest`` objects (see ``engine.prepare``)."""
        raise NotImplementedError

    def prepare_bodies(
        self, endpoint: Endpoint, bodies: Bodies, *, models: Sequence[str] | None = None
    ) -> Prepared:
        """Prepare canonical JSON bodies (see ``engine.prepare``)."""
        raise NotImplementedError

    async def send(
        self,
        prepared: Prepared,
        *,
        context: RunContext | None = None,
        max_cost_usd: float | None = None,
        budget: BudgetGuard | None = None,
    ) -> Sent:
        """Send what ``prepared`` planned; one result per planned request (rejected included)."""
        raise NotImplementedError

    def _record(self, stats: RunStats) -> None:
        self.last_stats = stats

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
        prepared = self.prepare_requests(requests)
        return await self.arun_prepared(
            prepared, context=context, max_cost_usd=max_cost_usd, budget=budget
        )

    async def arun_prepared(
        self,
        prepared: Prepared,
        *,
        context: RunContext | None = None,
        max_cost_usd: float | None = None,
        budget: BudgetGuard | None = None,
    ) -> RunResults:
        """Send and assemble a run prepared from ``LLMRequest`` objects (no second plan)."""
        sent, stopped = await self.send(
            prepared, context=context, max_cost_usd=max_cost_usd, budget=budget
        )
        results = request_results(prepared, sent, stopped)
        self._record(results.stats)
        return results

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
        prepared = self.prepare_bodies(endpoint, bodies, models=models)
        sent, stopped = await self.send(prepared, context=context, max_cost_usd=max_cost_usd)
        run = frame_results(prepared, sent, stopped)
        self._record(run.stats)
        return run

    def run(
        self,
        requests: Sequence[LLMRequest],
        *,
        context: RunContext | None = None,
        max_cost_usd: float | None = None,
    ) -> RunResults:
        """Blocking :meth:`arun`."""
        return _blocking(self.arun(requests, context=context, max_cost_usd=max_cost_usd))

    def run_prepared(
        self,
        prepared: Prepared,
        *,
        context: RunContext | None = None,
        max_cost_usd: float | None = None,
    ) -> RunResults:
        """Blocking :meth:`arun_prepared`."""
        coro = self.arun_prepared(prepared, context=context, max_cost_usd=max_cost_usd)
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
        coro = self.arun_bodies(
            endpoint, bodies, context=context, max_cost_usd=max_cost_usd, models=models
        )
        return _blocking(coro)


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
