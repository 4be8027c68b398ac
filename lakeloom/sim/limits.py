"""Server-side rate limits, enforced the way OpenAI does: two continuously refilling buckets.

Requests and tokens (prompt + ``max_tokens``) each have a bucket of ``limit * burst_s / 60``
that refills at ``limit / 60`` per second. A request is admitted when both buckets hold its cost,
or when a bucket is full (so one request larger than the bucket still gets through, then leaves
the bucket in debt). A rejected request can still spend a request slot (``count_rejected``),
which is what starves clients that answer a 429 with an immediate retry storm.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass


def go_duration(seconds: float) -> str:
    """Format seconds like Go's ``time.Duration.String`` at millisecond precision.

    Examples:
        >>> [go_duration(s) for s in (0, 0.12, 1, 1.5, 360, 3725.25)]
        ['0s', '120ms', '1s', '1.5s', '6m0s', '1h2m5.25s']
    """
    ms = round(max(seconds, 0.0) * 1000)
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


class Bucket:
    """One continuously refilling bucket (level may go negative: debt)."""

    __slots__ = ("capacity", "level", "limit", "rate", "updated")

    def __init__(self, limit_per_minute: float, burst_s: float) -> None:
        self.limit = limit_per_minute
        self.rate = limit_per_minute / 60.0
        self.capacity = self.rate * burst_s
        self.level = self.capacity
        self.updated = time.monotonic()

    def refill(self, now: float) -> None:
        """Bring the level up to ``now``."""
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def fits(self, cost: float) -> bool:
        """Whether a request of ``cost`` may pass now (after ``refill``)."""
        return self.level >= cost or self.level >= self.capacity

    def wait_for(self, cost: float) -> float:
        """Seconds until ``cost`` fits (0 if it fits now)."""
        need = min(cost, self.capacity) - self.level
        return max(need, 0.0) / self.rate

    def headers(self, kind: str, out: dict[str, str]) -> None:
        """Add the three ``x-ratelimit-*-{kind}`` headers describing this bucket."""
        out[f"x-ratelimit-limit-{kind}"] = str(int(self.limit))
        out[f"x-ratelimit-remaining-{kind}"] = str(max(0, math.floor(self.level)))
        out[f"x-ratelimit-reset-{kind}"] = go_duration((self.capacity - self.level) / self.rate)


@dataclass(slots=True)
class Verdict:
    """The limiter's answer for one request."""

    admitted: bool
    kind: str = ""  # "requests" or "tokens" when rejected
    retry_after_s: float = 0.0
    too_large: bool = False


class ProviderLimits:
    """RPM + TPM buckets of one simulated provider (all models share them)."""

    def __init__(self, rpm: float, tpm: float, burst_s: float, count_rejected: bool) -> None:
        self.requests = Bucket(rpm, burst_s) if rpm > 0 else None
        self.tokens = Bucket(tpm, burst_s) if tpm > 0 else None
        self.count_rejected = count_rejected
        self.enabled = self.requests is not None or self.tokens is not None

    def admit(self, cost: int) -> Verdict:
        """Charge one request of ``cost`` tokens if both buckets allow it."""
        now = time.monotonic()
        req, tok = self.requests, self.tokens
        if req is not None:
            req.refill(now)
        if tok is not None:
            tok.refill(now)
            if cost > tok.limit:
                return Verdict(False, "tokens", 0.0, too_large=True)
        req_ok = req is None or req.fits(1)
        tok_ok = tok is None or tok.fits(cost)
        if req_ok and tok_ok:
            if req is not None:
                req.level -= 1
            if tok is not None:
                tok.level -= cost
            return Verdict(True)
        if self.count_rejected and req is not None:
            req.level -= 1
        wait = max(
            req.wait_for(1) if req is not None else 0.0,
            tok.wait_for(cost) if tok is not None else 0.0,
        )
        return Verdict(False, "requests" if not req_ok else "tokens", wait)

    def headers(self) -> dict[str, str]:
        """Return the ``x-ratelimit-*`` headers for the current state (empty when unlimited)."""
        out: dict[str, str] = {}
        if self.requests is not None:
            self.requests.headers("requests", out)
        if self.tokens is not None:
            self.tokens.headers("tokens", out)
        return out

    def reset(self) -> None:
        """Refill both buckets (used by ``POST /stats/reset?limits=1``)."""
        now = time.monotonic()
        for bucket in (self.requests, self.tokens):
            if bucket is not None:
                bucket.level, bucket.updated = bucket.capacity, now
