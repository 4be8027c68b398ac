"""Provider settings and the retry loop around one request.

The SDK's own retries are off (``max_retries=0``): :meth:`Client.call` retries itself so that
every attempt passes through the rate limiter (``acquire`` before, ``record`` after, with the
``x-ratelimit-*`` headers and real usage), backs off exponentially with full jitter (at least
``Retry-After``), and ends a request that keeps failing as an explicit error result instead of
an exception that would lose the finished rows. How bytes travel is ``transport.py``'s job.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any

from lakeloom.engine.cost import RETRY_BUDGET_ERROR, AttemptBudget
from lakeloom.engine.limiter.base import RateLimiter, UnlimitedLimiter
from lakeloom.engine.provider import ProviderConfig
from lakeloom.engine.transport import Attempt, Transport, make_transport
from lakeloom.engine.types import LLMRequest, LLMResult


class Client:
    """Sends requests with retries (exponential backoff, full jitter), the limiter in the loop.

    Use as an async context manager; it owns the transport (one pooled HTTP connection set).

    Examples:
        >>> async def main(cfg, request):  # doctest: +SKIP
        ...     async with Client(cfg) as client:
        ...         return await client.call(request)
    """

    def __init__(self, config: ProviderConfig, limiter: RateLimiter | None = None) -> None:
        """Bind a provider config and a limiter (default: no limits)."""
        self.config = config
        self.limiter = limiter or UnlimitedLimiter()
        self._transport: Transport | None = None
        self._sums: dict[Any, tuple[int, int]] = {}
        self._ratios: dict[Any, float] = {}
        self._connect_failures = 0
        self.unreachable: str | None = None
        """Why the provider counts as unreachable (set once: nothing more is sent)."""
        self._down = asyncio.Event()

    async def __aenter__(self) -> Client:
        """Open the transport (one pooled connection set for the whole run)."""
        self._transport = make_transport(self.config)
        await self._transport.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Close the pooled connections."""
        if self._transport is not None:
            await self._transport.close()
            self._transport = None

    def _reserve(self, request: LLMRequest) -> int:
        """Tokens to reserve: the prompt estimate scaled by what the provider has reported."""
        ratio = self._ratios.get(request.body.get("model"))
        prompt = request.prompt_tokens if ratio is None else round(request.prompt_tokens * ratio)
        return prompt + request.max_output_tokens

    def _learn(self, request: LLMRequest, reported_prompt: int) -> None:
        """Track reported/estimated prompt tokens per model (our tokenizer is an estimate)."""
        if request.prompt_tokens <= 0:
            return
        model = request.body.get("model")
        est, rep = self._sums.get(model, (0, 0))
        est, rep = est + request.prompt_tokens, rep + reported_prompt
        self._sums[model] = (est, rep)
        if est >= 200:  # enough evidence to trust the ratio
            self._ratios[model] = min(2.0, max(0.5, rep / est))

    def _backoff(self, failures: int, retry_after: float | None) -> float:
        cfg = self.config
        ceiling = min(cfg.backoff_max_s, cfg.backoff_base_s * (2 ** (failures - 1)))
        delay = random.uniform(0.0, ceiling)
        return max(delay, retry_after or 0.0)

    def _connection(self, attempt: Attempt) -> None:
        """Count consecutive connection failures; past the threshold, stop sending for good.

        Any HTTP answer (even a 429 or a 5xx) shows the provider is reachable and resets the
        count; a timeout neither counts nor resets (the server may be slow, not gone).
        """
        if attempt.status_code is not None:
            self._connect_failures = 0
            return
        if not (attempt.error or "").startswith("connection error"):
            return
        self._connect_failures += 1
        if self.unreachable is None and self._connect_failures >= self.config.unreachable_after:
            self.unreachable = (
                f"provider unreachable: not sent ({self._connect_failures} consecutive "
                f"connection failures, the last: {attempt.error})"
            )
            self._down.set()

    async def _sleep(self, seconds: float) -> None:
        """Back off, but wake at once when the provider turns out unreachable."""
        if seconds > 0 and not self._down.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._down.wait(), seconds)

    def _stop(self, result: LLMResult, error: str, started: float, fatal: bool) -> LLMResult:
        result.error, result.fatal = error, fatal
        result.latency_s = time.perf_counter() - started
        return result

    async def call(
        self,
        request: LLMRequest,
        body_text: str | None = None,
        budget: AttemptBudget | None = None,
    ) -> LLMResult:
        """Send one request until it succeeds, fails for good, or runs out of attempts.

        ``budget`` (the run's budget for this request) is asked before every attempt: a retry
        the budget cannot take is not sent, and the result says so.
        """
        result = LLMResult(key=request.key, status="error", model=request.body.get("model"))
        started = time.perf_counter()
        limiter = self.limiter
        transport = self._transport
        assert transport is not None, "use 'async with Client(...)'"
        attempt: Attempt | None = None
        for number in range(1, self.config.max_attempts + 1):
            if self.unreachable is not None:
                error = self.unreachable
                if attempt is not None:
                    tries = f"after {result.attempts} attempts"
                    error = f"provider unreachable: {attempt.error} {tries}"
                return self._stop(result, error, started, fatal=True)
            if budget is not None and not budget.reserve():
                if attempt is None:  # the runner checked the first attempt: a race, not sent
                    return self._stop(result, "budget exceeded: not sent", started, False)
                limit = budget.guard.max_cost_usd or 0.0
                error = RETRY_BUDGET_ERROR.format(limit, f"{attempt.error} ({number - 1} sent)")
                return self._stop(result, error, started, fatal=False)
            try:
                admission = await limiter.acquire(self._reserve(request))
            except Exception as exc:  # shared limiter state unreachable: stop, never overrun
                if budget is not None:
                    budget.release()
                return self._stop(result, f"limiter unavailable: {exc}", started, fatal=True)
            attempt = await transport.send(request, body_text)
            self._connection(attempt)
            used = None
            if attempt.body is not None:
                # Providers count prompt + max_tokens against TPM (not the completion): correct
                # the reservation by the real prompt size only.
                prompt = (attempt.body.get("usage") or {}).get("prompt_tokens")
                if prompt:
                    used = prompt + request.max_output_tokens
                    self._learn(request, prompt)
            limiter.record(
                admission,
                status_code=attempt.status_code,
                headers=attempt.headers,
                used_tokens=used,
            )
            result.attempts = number
            if attempt.body is not None:
                break  # the runner prices the answer and settles the reservation
            if attempt.status_code == 429:
                result.rate_limited += 1
            if attempt.maybe_billed:
                result.uncertain_attempts += 1
                if budget is not None:
                    budget.uncertain()
            elif budget is not None:
                budget.release()
            if not attempt.retryable or number == self.config.max_attempts:
                break
            result.retries += 1
            await self._sleep(self._backoff(number, attempt.retry_after_s))
        assert attempt is not None
        result.latency_s = time.perf_counter() - started
        if attempt.body is not None:
            _fill_ok(result, request, attempt)
        else:
            tries = f" after {result.attempts} attempts" if result.attempts > 1 else ""
            result.error = f"{attempt.error}{tries}"
            result.fatal = attempt.fatal
        return result


def _fill_ok(result: LLMResult, request: LLMRequest, attempt: Attempt) -> None:
    body = attempt.body or {}
    usage = body.get("usage") or {}
    result.status = "ok"
    result.response = body
    result.response_text = attempt.text
    result.input_tokens = int(usage.get("prompt_tokens") or request.prompt_tokens)
    result.output_tokens = int(usage.get("completion_tokens") or 0)
    details = usage.get("prompt_tokens_details") or {}
    result.cached_input_tokens = int(details.get("cached_tokens") or 0)
