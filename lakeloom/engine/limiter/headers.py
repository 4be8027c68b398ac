"""Reading what a provider says about its limits: ``x-ratelimit-*``, ``Retry-After``.

OpenAI-style providers send, on every response, ``x-ratelimit-{limit,remaining,reset}-{requests,
tokens}``; ``reset`` is a Go duration ("1s", "6m0s", "120ms") until the bucket is full again.
A 429 carries ``Retry-After`` (seconds or an HTTP date) and often ``retry-after-ms``.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "μs": 1e-6,
           "ns": 1e-9}  # fmt: skip
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s|us|µs|μs|ns)")


def parse_go_duration(text: str | None) -> float | None:
    """Seconds in a Go duration string (``"1m30.5s"``, ``"120ms"``); a bare number is seconds.

    Returns None for missing or unparseable values (a provider's odd header must never crash a
    run).

    Examples:
        >>> [parse_go_duration(s) for s in ("6m0s", "120ms", "1h2m5.25s", "2", "soon")]
        [360.0, 0.12, 3725.25, 2.0, None]
    """
    if not text:
        return None
    text = text.strip()
    try:
        value = float(text)
        return value if math.isfinite(value) and value >= 0 else None
    except ValueError:
        pass
    total, pos = 0.0, 0
    for match in _PART.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _UNIT_S[match.group(2)]
        pos = match.end()
    return total if pos == len(text) and pos > 0 else None


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


def _num(headers: Mapping[str, str], name: str) -> float | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


@dataclass(frozen=True, slots=True)
class BucketReport:
    """One bucket as the provider reports it right after charging a request."""

    limit: float | None  # per minute
    remaining: float | None
    reset_s: float | None  # seconds until full again

    @property
    def capacity(self) -> float | None:
        """The provider's bucket size, inferred as ``remaining + reset * limit / 60``."""
        if self.limit is None or self.remaining is None or self.reset_s is None:
            return None
        return self.remaining + self.reset_s * self.limit / 60.0


def read_bucket(headers: Mapping[str, str], kind: str) -> BucketReport | None:
    """Read the ``x-ratelimit-*-{kind}`` headers (kind: ``requests`` or ``tokens``), or None."""
    limit = _num(headers, f"x-ratelimit-limit-{kind}")
    remaining = _num(headers, f"x-ratelimit-remaining-{kind}")
    reset = parse_go_duration(headers.get(f"x-ratelimit-reset-{kind}"))
    if limit is None and remaining is None and reset is None:
        return None
    return BucketReport(limit, remaining, reset)
