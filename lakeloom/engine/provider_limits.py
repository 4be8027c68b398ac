"""Provider limits as data: what one request may hold, per model and endpoint, with sources.

Limits are not prices, and they are not our simulator's beliefs: ``provider_limits.json`` beside
this module holds each value with the published source it was read from (OpenAI's API reference
and model pages). Chat models have a ``context_window`` (prompt + output tokens) and a
``max_output``; embedding models have ``max_inputs`` per request, ``max_input_tokens`` per input
and ``max_request_tokens`` summed over one request: the window of an embedding model is per
input, never per batch.

A provider overrides them per model (``ProviderConfig(limits={"my-model": {...}})``, ``"*"`` for
every model); a price-table entry's ``context_window``/``max_output`` (a user's own table) counts
as an override too, so tables written before this module keep working.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

_TABLE = Path(__file__).with_name("provider_limits.json")
LIMIT_FIELDS = (
    "context_window",
    "max_output",
    "max_inputs",
    "max_input_tokens",
    "max_request_tokens",
)


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits of one model (None = unknown: not checked)."""

    context_window: int | None = None
    max_output: int | None = None
    max_inputs: int | None = None
    max_input_tokens: int | None = None
    max_request_tokens: int | None = None
    sources: tuple[str, ...] = ()

    def merged(self, overrides: Mapping[str, Any], source: str) -> Limits:
        """Return these limits with ``overrides`` (field → int or None) on top."""
        unknown = set(overrides) - set(LIMIT_FIELDS)
        if unknown:
            raise ValueError(
                f"unknown limit(s) {sorted(unknown)} ({source}); known: {list(LIMIT_FIELDS)}"
            )
        values = {k: _positive(k, v, source) for k, v in overrides.items()}
        return replace(self, **values, sources=(*self.sources, source))

    def as_dict(self) -> dict[str, Any]:
        """Plain values (for metadata and error messages)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _positive(name: str, value: Any, source: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"limit {name}={value!r} ({source}) must be a positive integer or None")
    return value


@lru_cache(maxsize=1)
def _bundled() -> dict[str, Limits]:
    raw = json.loads(_TABLE.read_text(encoding="utf-8"))
    sources: dict[str, str] = raw["sources"]
    out: dict[str, Limits] = {}
    for model, entry in raw["models"].items():
        values = {name: pair[0] for name, pair in entry.items()}
        cited = tuple(dict.fromkeys(sources[pair[1]] for pair in entry.values()))
        out[model.lower()] = Limits(**values, sources=cited)
    return out


def _family(table: Mapping[str, Any], model: str) -> str | None:
    """Exact name, else the longest family prefix (``gpt-4o-2024-08-06`` → ``gpt-4o``)."""
    name = model.lower()
    if name in table:
        return name
    return max(
        (k for k in table if name.startswith(k + "-") or name.startswith(k + ":")),
        key=len,
        default=None,
    )


def bundled_limits(model: str) -> Limits:
    """The published limits of ``model`` (empty when none are known)."""
    table = _bundled()
    name = _family(table, model)
    return table[name] if name else Limits()


def resolve_limits(
    model: str,
    *,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    price: Any = None,
) -> Limits:
    """Limits for ``model``: bundled, then the price entry's window/max output, then overrides.

    ``overrides`` maps model names (or ``"*"``) to limit fields, as in ``ProviderConfig.limits``.
    """
    limits = bundled_limits(model)
    if price is not None:
        own = {
            k: getattr(price, k)
            for k in ("context_window", "max_output")
            if getattr(price, k, None) is not None
        }
        if own:
            limits = limits.merged(own, "price table entry")
    if overrides:
        if "*" in overrides:
            limits = limits.merged(overrides["*"], "provider limits['*']")
        name = _family({k.lower(): v for k, v in overrides.items() if k != "*"}, model)
        if name is not None:
            entry = {k.lower(): v for k, v in overrides.items()}[name]
            limits = limits.merged(entry, f"provider limits[{name!r}]")
    return limits


def embedding_input_limit(limits: Limits) -> int | None:
    """Tokens one embedding input may hold (a price entry's ``context_window`` counts as it)."""
    return limits.max_input_tokens or limits.context_window
