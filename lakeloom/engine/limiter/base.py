"""Rate limiting against a provider's RPM and TPM limits.

The engine talks to a limiter through two calls: ``acquire`` (wait until both the request and the
token bucket admit a request of a given reserved size) and ``record`` (feed back what the provider
said: status code, ``x-ratelimit-*`` headers, ``Retry-After``, real token usage).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass

LIMITER_URL_ENV = "LAKELOOM_LIMITER_URL"


@dataclass(frozen=True, slots=True)
class Admission:
    """A granted slot: how many tokens were reserved for it, and when (monotonic seconds)."""

    reserved_tokens: int
    granted_at: float


class RateLimiter(ABC):
    """Admits requests under a provider's limits; learns from what the provider answers."""

    @abstractmethod
    async def acquire(self, reserved_tokens: int) -> Admission:
        """Wait until one request of ``reserved_tokens`` (prompt + max output) fits both buckets."""

    @abstractmethod
    def record(
        self,
        admission: Admission,
        *,
        status_code: int | None,
        headers: Mapping[str, str],
        used_tokens: int | None,
        counted_tokens: int | None = None,
    ) -> None:
        """Feed back one response (``status_code`` None = transport failure/timeout).

        Learns limits/remaining from ``x-ratelimit-*`` headers, and on a 429 from the limit
        honours ``Retry-After`` and cuts the rate multiplicatively (recovering additively).
        ``used_tokens`` is what the provider reported (prompt + completion); only a shortfall
        (``used_tokens > reserved``) is charged to the token bucket. A surplus is never refunded:
        providers count ``max_tokens`` up front, and the ``remaining`` headers re-sync the
        estimate anyway. ``counted_tokens`` (optional) is what the provider charged to its
        token limit when the caller knows it (reported prompt tokens + ``max_tokens``): it
        corrects the reservation exactly, both ways.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release shared resources (files, connections)."""


class UnlimitedLimiter(RateLimiter):
    """Admits everything at once: for providers without limits (local servers) and benchmarks."""

    async def acquire(self, reserved_tokens: int) -> Admission:
        """Admit immediately."""
        return Admission(reserved_tokens, 0.0)

    def record(
        self,
        admission: Admission,
        *,
        status_code: int | None,
        headers: Mapping[str, str],
        used_tokens: int | None,
        counted_tokens: int | None = None,
    ) -> None:
        """Nothing to learn."""
