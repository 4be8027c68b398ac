"""A stable reason class per row (``_reason``): what ``GROUP BY`` can count, beside ``_error``.

``_error`` is the detail a person reads; it carries offsets, counts and provider text
(``line 1 column 57``, ``after 3 attempts``), so one cause shows up as many distinct strings.
``reason_class`` maps a row's status and error text to one short, stable class: the same cause
always gives the same class, whatever numbers the message carries. The rules are a table,
matched in order, first match wins; ``other`` is the fallback, never a crash.

Transient classes (a later attempt may succeed) are listed in ``TRANSIENT``: step retries and
re-runs are worth it for those only.

Examples:
    >>> reason_class("error", "HTTP 401: Incorrect API key provided")
    'http_401'
    >>> reason_class("error", "invalid output after 3 attempts: (root): Invalid JSON at line 1")
    'invalid_output'
    >>> reason_class("ok", None) is None
    True
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import polars as pl

OTHER = "other"

_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern, re.IGNORECASE))
    for name, pattern in (
        ("not_sent_dry_run", r"^dry run: not sent"),
        ("not_sent_budget", r"^budget exceeded"),
        ("provider_unreachable", r"provider unreachable|^connection error"),
        ("limiter_unavailable", r"^limiter unavailable"),
        ("over_context", r"context window|context.length|maximum context"),
        (
            "over_limit",
            r"^too many inputs|^over the request token limit"
            r"|^max_(completion_)?tokens [\d,]+ > max output",
        ),
        ("cut_off", r"^invalid output after .*answer cut off at max_tokens"),
        ("refusal", r"^invalid output after [^:]*: refusal"),
        ("invalid_output", r"^invalid output"),
        (
            "invalid_output",
            r"^provider returned \d+ vectors|^malformed embeddings|^vector width"
            r"|^vectors in one response|^vector contains NaN",
        ),
        ("rate_limited", r"^HTTP 429\b"),
        ("http_401", r"^HTTP 401\b"),
        ("http_403", r"^HTTP 403\b"),
        ("http_404", r"^HTTP 404\b"),
        ("timeout", r"^HTTP 408\b|^timeout\b|timed out"),
        ("http_4xx", r"^HTTP 4\d\d\b"),
        ("http_5xx", r"^HTTP 5\d\d\b"),
        ("malformed_response", r"^malformed JSON body|^response (is not|has no|choice has no)"),
        ("batch_expired", r"^(batch_)?expired\b"),
        ("batch_line", r"^batch[ _]"),
        ("internal", r"^internal error|^the engine returned no result"),
    )
)
"""(class, pattern) in match order; patterns see the message without ``not sent:`` prefixes."""

TRANSIENT = frozenset(
    {"rate_limited", "timeout", "http_5xx", "provider_unreachable", "limiter_unavailable"}
)
"""Classes whose cause can go away by itself: worth a step retry or a later re-run."""

ANSWERED = frozenset({"invalid_output", "cut_off", "refusal"})
"""Classes of rows whose failing answer was received and cached: a re-run of failed rows must
ask again for them rather than replay that answer (and its repair chain) from the cache."""

_NOT_SENT = re.compile(r"^(not sent: )+", re.IGNORECASE)


def reason_class(status: str | None, error: str | None) -> str | None:
    """The stable class of a row: ``None`` when ok, ``skipped_*`` when skipped, else a cause.

    A row that was not sent because an earlier request failed for good (``not sent: HTTP
    401: ...``) gets the class of that cause: the whole partition then counts as one reason.
    """
    if status == "ok":
        return None
    text = (error or "").strip()
    if status == "skipped":
        if text.startswith("empty"):
            return "skipped_empty"
        return "skipped_null"
    if not text:
        return OTHER
    text = _NOT_SENT.sub("", text)
    for name, pattern in _RULES:
        if pattern.search(text):
            return name
    return OTHER


def reason_classes(
    statuses: Iterable[str | None], errors: Iterable[str | None]
) -> list[str | None]:
    """``reason_class`` for parallel sequences of statuses and errors (each distinct pair once)."""
    seen: dict[tuple[str | None, str | None], str | None] = {}
    out: list[str | None] = []
    for pair in zip(statuses, errors, strict=True):
        if pair not in seen:
            seen[pair] = reason_class(*pair)
        out.append(seen[pair])
    return out


def reason_expr(status: str = "_status", error: str = "_error") -> pl.Expr:
    """A polars expression computing ``_reason`` from the status and error columns."""
    return (
        pl.struct(status, error)
        .map_batches(
            lambda s: pl.Series(
                reason_classes(s.struct.field(status), s.struct.field(error)), dtype=pl.String
            ),
            return_dtype=pl.String,
        )
        .alias("_reason")
    )


def is_transient(reasons: Iterable[str | None]) -> bool:
    """True when any of ``reasons`` may go away by itself (so a retry can help)."""
    return any(r in TRANSIENT for r in reasons)
