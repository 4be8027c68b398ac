"""Build a limiter from a URL: memory, SQLite or Redis stores behind ``SharedLimiter``."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from lakeloom.engine.limiter.base import LIMITER_URL_ENV, RateLimiter, UnlimitedLimiter
from lakeloom.storage.redact import redact_url

if TYPE_CHECKING:
    from lakeloom.engine.limiter.core import Tuning
    from lakeloom.engine.limiter.stores import LimiterStore


_STORES: dict[str, LimiterStore] = {}


def open_store(url: str | None = None) -> LimiterStore:
    """Open the state store for ``url`` (or ``LAKELOOM_LIMITER_URL``; default: SQLite file).

    ``sqlite:///path/file.sqlite``, ``memory://`` (this process only), ``redis://``/``rediss://``/
    ``unix://`` (Redis; checked with a PING now, so an unreachable server fails the run at once).
    """
    from lakeloom.engine.limiter.stores import MemoryStore, SQLiteStore
    from lakeloom.storage.settings import data_dir

    url = url or os.environ.get(LIMITER_URL_ENV) or ""
    cache_key = url or f"sqlite:///{data_dir() / 'limiter.sqlite'}"
    store = _STORES.get(cache_key)
    if store is not None:
        return store
    if url.startswith(("redis://", "rediss://", "unix://")):
        from lakeloom.engine.limiter.redis import RedisStore

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
    from lakeloom.engine.limiter.shared import SharedLimiter

    return SharedLimiter(provider_key, open_store(url), rpm=rpm, tpm=tpm, tuning=tuning)
