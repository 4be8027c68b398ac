"""Rate limiting against a provider's RPM and TPM limits.

The engine talks to a limiter through two calls: ``acquire`` (wait until both the request and the
token bucket admit a request of a given reserved size) and ``record`` (feed back what the provider
said: status code, ``x-ratelimit-*`` headers, ``Retry-After``, real token usage).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lakeloom.storage.redact import redact_url

if TYPE_CHECKING:
    from lakeloom.engine.limiter_core import Tuning
    from lakeloom.engine.limiter_stores import LimiterStore

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


_STORES: dict[str, LimiterStore] = {}


def open_store(url: str | None = None) -> LimiterStore:
    """Open the state store for ``url`` (or ``LAKELOOM_LIMITER_URL``; default: SQLite file).

    ``sqlite:///path/file.sqlite``, ``memory://`` (this process only), ``redis://``/``rediss://``/
    ``unix://`` (Redis; checked with a PING now, so an unreachable server fails the run at once).
    """
    from lakeloom.engine.limiter_stores import MemoryStore, SQLiteStore
    from lakeloom.settings import data_dir

    url = url or os.environ.get(LIMITER_URL_ENV) or ""
    cache_key = url or f"sqlite:///{data_dir() / 'limiter.sqlite'}"
    store = _STORES.get(cache_key)
    if store is not None:
        return store
    if url.startswith(("redis://", "rediss://", "unix://")):
        from lakeloom.engine.limiter_redis import RedisStore

        store = RedisStore(url)
    elif url.startswith("memory://"):
        store = MemoryStore()
    elif url == "" or url.startswith("sqlite:///"):
        store = SQLiteStore(url.removeprefix("sqlite:///") or data_dir() / "limiter.sqlite")
    else:
        raise ValueError(
            f"{LIMITER_URL_ENV}={redact_url(url)!r}: expected redis://..., rediss://..., "
            "unix://..., sqlite:///path or memory://"
        )
    _STORES[cache_key] = store
    return store


def make_limiter(
    provider_key: str,
    rpm: float | None = None,
    tpm: float | None = None,
    url: str | None = None,
    *,
    tuning: Tuning | None = None,
) -> RateLimiter:
    """Build the shared adaptive limiter for one provider account.

    Args:
        provider_key: Names the limit (e.g. ``"openai:org-123"``); every process using the same
            key and store shares one pair of buckets.
        rpm: Requests per minute to obey; None = learn from ``x-ratelimit-*`` headers.
        tpm: Tokens (prompt + max output) per minute; None = learn from headers.
        url: Where the state lives (see ``open_store``); None = ``LAKELOOM_LIMITER_URL`` or a
            SQLite file under ``data_dir()``; ``"off"`` = no limiting at all.
        tuning: Override the pacing knobs (``limiter_core.Tuning``).

    Examples:
        >>> limiter = make_limiter("sim:local", rpm=600, url="memory://")
        >>> type(limiter).__name__
        'SharedLimiter'
    """
    if (url or os.environ.get(LIMITER_URL_ENV) or "").lower() in ("off", "none"):
        return UnlimitedLimiter()
    from lakeloom.engine.limiter_shared import SharedLimiter

    return SharedLimiter(provider_key, open_store(url), rpm=rpm, tpm=tpm, tuning=tuning)
