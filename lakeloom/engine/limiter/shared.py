"""The adaptive RPM + TPM limiter whose state lives in a store shared by processes.

Per process, waiting requests form one FIFO queue; whoever holds the (per event loop) lock sends
the whole queue's costs to the store in one atomic exchange, which reserves a paced slot for each
request that fits within a short horizon. Each request then sleeps until its own slot. So the
store sees one round trip per batch, not per request, and two processes on one provider draw
from the same buckets.

Feedback (``record``) is cheap and synchronous: it parses the ``x-ratelimit-*`` headers into a
pending ``Feedback`` that rides along with the next exchange. Until some limit is known (manual
or learned from headers) ``acquire`` returns at once, checking the store about once a second.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Mapping

from lakeloom.engine.limiter.base import Admission, RateLimiter
from lakeloom.engine.limiter.core import NONE, Feedback, Tuning
from lakeloom.engine.limiter.headers import BucketReport, parse_retry_after, read_bucket
from lakeloom.engine.limiter.stores import LimiterStore, store_key

_MAX_BATCH = 512


class _Waiter:
    __slots__ = ("admit_at", "cost")

    def __init__(self, cost: int) -> None:
        self.cost = cost
        self.admit_at: float | None = None  # monotonic seconds once a slot is reserved


class SharedLimiter(RateLimiter):
    """RPM + TPM token buckets shared through a store, adaptive to headers and 429s.

    Examples:
        >>> limiter = make_limiter("openai:org-1", rpm=500, tpm=200_000)  # doctest: +SKIP
        >>> admission = await limiter.acquire(1_200)  # doctest: +SKIP
        >>> limiter.record(admission, status_code=200, headers=resp.headers, used_tokens=900)
    """

    def __init__(
        self,
        key: str,
        store: LimiterStore,
        *,
        rpm: float | None = None,
        tpm: float | None = None,
        tuning: Tuning | None = None,
        refresh_s: float = 1.0,
        probe: int = 4,
        probe_wait_s: float = 2.0,
    ) -> None:
        key = store_key(key)  # persisted and shown: never with URL credentials
        for name, value in (("rpm", rpm), ("tpm", tpm)):
            if value is not None and not value > 0:
                raise ValueError(f"limiter {key!r}: {name} must be > 0 or None, got {value!r}")
        self.key = key
        self.store = store
        self.rpm = rpm
        self.tpm = tpm
        self.tuning = tuning or Tuning()
        self.refresh_s = refresh_s
        self.probe_wait_s = probe_wait_s
        self._probe_left = probe
        self._seen = False  # some response was recorded (the probe is over)
        self.limit_429s = 0  # 429s that came from the provider's limits
        self._fb = Feedback()
        self._urgent = False  # feedback that should reach the store before the next admission
        self._limited = bool(rpm or tpm)
        self._known = (0.0, 0.0)  # limits learned from headers (rpm, tpm)
        self._caps = [0.0, 0.0]  # largest provider bucket sizes seen (requests, tokens)
        self._offset = time.time() - time.monotonic()  # store clock minus monotonic clock
        self._pause_until = 0.0  # monotonic
        self._refresh_at = 0.0  # monotonic
        self._queue: deque[_Waiter] = deque()
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    # -- admission ------------------------------------------------------------------------------
    async def acquire(self, reserved_tokens: int) -> Admission:
        """Wait for a paced slot in both buckets (returns at once while no limit is known)."""
        if not self._seen and not self._limited:
            await self._probe()
        now = time.monotonic()
        if not (self._limited or self._urgent) and self._pause_until <= now < self._refresh_at:
            return Admission(reserved_tokens, now)
        while True:
            waiter = _Waiter(reserved_tokens)
            self._queue.append(waiter)
            try:
                async with self._loop_lock():
                    while waiter.admit_at is None:
                        await self._dispatch()
            finally:
                if waiter.admit_at is None and waiter in self._queue:
                    self._queue.remove(waiter)  # cancelled while queued
            delay = waiter.admit_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.monotonic()
            if now + 0.005 >= self._pause_until:
                return Admission(reserved_tokens, now)
            # a 429 paused the provider while this request slept: wait it out, queue again
            await asyncio.sleep(self._pause_until - now)

    async def _probe(self) -> None:
        """Before the first answer, with no limit known, let only a few requests out.

        The first response's headers usually tell the limits; a blind first wave of the whole
        concurrency would meet 429s (which the provider may count) and start us throttled.
        Costs one round trip at start; a provider that sends no limit headers is then free.
        """
        if self._probe_left > 0:
            self._probe_left -= 1
            return
        deadline = time.monotonic() + self.probe_wait_s
        while not (self._seen or self._limited) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        self._seen = True

    def _loop_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    async def _dispatch(self) -> None:
        """One exchange with the store for the head of the queue (called under the lock)."""
        batch = [self._queue[i] for i in range(min(len(self._queue), _MAX_BATCH))]
        fb, self._fb, self._urgent = self._fb, Feedback(), False
        before = time.monotonic()
        decision = await self.store.exchange(
            self.key, [w.cost for w in batch], fb, self.tuning, self.rpm, self.tpm
        )
        after = time.monotonic()
        mono_now = (before + after) / 2
        self._offset = decision.now - mono_now
        self._limited = decision.limited or bool(self.rpm or self.tpm)
        self._pause_until = max(self._pause_until, decision.pause_until - self._offset)
        self._refresh_at = after + self.refresh_s
        for waiter, wait in zip(batch, decision.waits, strict=False):
            waiter.admit_at = mono_now + wait
        # by identity, not popleft: a waiter cancelled during the exchange has left the queue
        self._queue = deque(w for w in self._queue if w.admit_at is None)
        if not decision.waits:
            await asyncio.sleep(max(0.001, decision.retry_in - self.tuning.horizon_s / 2))

    # -- feedback -------------------------------------------------------------------------------
    def record(
        self,
        admission: Admission,
        *,
        status_code: int | None,
        headers: Mapping[str, str],
        used_tokens: int | None,
        counted_tokens: int | None = None,
    ) -> None:
        """Learn from one response; see ``RateLimiter.record``.

        ``counted_tokens``, when the caller knows it, is what the provider charged against its
        token limit (OpenAI style: reported prompt tokens + ``max_tokens``); the bucket is then
        corrected exactly, both ways, so a tokenizer that over-counts does not waste budget.
        """
        if status_code is None:
            return
        self._seen = True
        if type(headers) is dict:  # plain dicts (tests): make lookups case-insensitive
            headers = {k.lower(): v for k, v in headers.items()}
        fb = self._fb
        grant = admission.granted_at + self._offset
        reqs = toks = None
        if "x-ratelimit-remaining-requests" in headers or "x-ratelimit-remaining-tokens" in headers:
            reqs = read_bucket(headers, "requests")
            toks = read_bucket(headers, "tokens")
            self._learn(reqs, toks, grant)
        if counted_tokens is not None and counted_tokens >= 0:
            fb.extra_tokens += counted_tokens - admission.reserved_tokens
        elif used_tokens is not None and used_tokens > admission.reserved_tokens:
            fb.extra_tokens += used_tokens - admission.reserved_tokens
        if status_code == 429 and _is_limit_429(reqs, toks, admission.reserved_tokens):
            self.limit_429s += 1
            wait = parse_retry_after(headers)
            if wait is None:
                wait = self.tuning.default_pause_s
            wait = min(wait, self.tuning.max_pause_s)
            until = time.monotonic() + wait
            self._pause_until = max(self._pause_until, until)
            fb.pause_until = max(fb.pause_until, until + self._offset)
            fb.cut_at = grant if fb.cut_at == NONE else min(fb.cut_at, grant)
            self._urgent = True

    def _learn(self, reqs: BucketReport | None, toks: BucketReport | None, grant: float) -> None:
        fb = self._fb
        known = list(self._known)
        for i, (report, kind) in enumerate(((reqs, "r"), (toks, "t"))):
            if report is None or not report.limit:
                continue
            if report.limit != known[i]:
                known[i] = report.limit
                self._urgent = True
            setattr(fb, f"l{kind}", report.limit)
            cap = report.capacity
            if cap:
                setattr(fb, f"c{kind}", cap)
                self._caps[i] = max(self._caps[i], cap)
            rem = report.remaining
            if rem is None:
                continue
            if report.reset_s is not None and self._caps[i]:
                # "remaining" stops at 0, but a provider that counts rejected requests goes
                # into debt: the reset time tells how deep (full bucket minus refill ahead)
                rem = min(rem, self._caps[i] - report.reset_s * report.limit / 60.0)
            at, old = getattr(fb, f"sync_{kind}_at"), getattr(fb, f"sync_{kind}_rem")
            per_s = report.limit / 60.0
            if at == NONE or grant - rem / per_s > at - old / per_s:
                setattr(fb, f"sync_{kind}_at", grant)
                setattr(fb, f"sync_{kind}_rem", rem)
        if tuple(known) != self._known:
            self._known = (known[0], known[1])
            self._limited = True

    def close(self) -> None:
        """Release the store's connections."""
        self.store.close()


def _is_limit_429(
    reqs: BucketReport | None, toks: BucketReport | None, reserved_tokens: int
) -> bool:
    """Tell whether a 429 is the limit's: yes unless its own headers show budget left for it.

    Overload 429s (and the simulator's injected ones) come with budget left: they neither pause
    nor slow the other requests; the client's retry of that one request honours Retry-After.
    """
    if reqs is None and toks is None:
        return True
    if reqs is not None and reqs.remaining is not None and reqs.remaining < 1:
        return True
    return toks is not None and toks.remaining is not None and toks.remaining < reserved_tokens
