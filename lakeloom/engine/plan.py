"""Turning request bodies into keyed, priced, token-counted requests, checked before sending.

Everything that can be wrong with the input is found here, before the first request leaves:
an empty input, a body without a model, a model with no price, a prompt over the model's
context window. Errors name the input row.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from lakeloom.core.hashing import cache_keys, canonical_json, request_keys
from lakeloom.engine.client import ProviderConfig
from lakeloom.engine.cost import ModelPrice, PriceTable
from lakeloom.engine.tokens import count_prompt_tokens
from lakeloom.engine.types import Endpoint, LLMRequest

_MAX_NAMED_ROWS = 5


class EmptyInputError(ValueError):
    """A run was asked to send nothing: usually an upstream partition with no rows."""


class InvalidRequestError(ValueError):
    """A request body cannot be sent as is (no model, not JSON, not an object)."""


class ContextWindowError(ValueError):
    """A prompt (plus its max output) does not fit the model's context window."""


Bodies = pl.Series | Sequence[Mapping[str, Any]] | Sequence[str]


def _frame(texts: pl.Series, keys: pl.Series, namespace: str) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "row": pl.int_range(0, texts.len(), dtype=pl.UInt32, eager=True),
            "key": keys,
            "cache_key": cache_keys(keys, namespace),
            "body": texts.alias("body"),
        }
    )


def _empty(endpoint: str) -> EmptyInputError:
    return EmptyInputError(
        f"no requests to send to {endpoint}: the input has 0 rows (an empty partition?)"
    )


def request_frame(endpoint: Endpoint, bodies: Bodies, *, namespace: str = "") -> pl.DataFrame:
    """One row per input: ``row``, ``key`` (request hash), ``cache_key``, ``body`` (JSON text).

    ``bodies`` is a Series/list of canonical JSON strings (see ``core.hashing.canonical_bodies``)
    or a list of dicts (canonicalized here).
    """
    if isinstance(bodies, pl.Series):
        texts = bodies.cast(pl.String)
    else:
        items = list(bodies)
        texts = pl.Series(
            "body",
            [b if isinstance(b, str) else canonical_json(b) for b in items],
            dtype=pl.String,
        )
    if texts.len() == 0:
        raise _empty(endpoint)
    if texts.null_count():
        raise InvalidRequestError(f"row {texts.is_null().arg_max()}: request body is null")
    return _frame(texts, request_keys(endpoint, texts), namespace)


def requests_frame(requests: Sequence[LLMRequest], *, namespace: str = "") -> pl.DataFrame:
    """Build the same frame for ready-made requests (their own keys are kept)."""
    if not requests:
        raise _empty("the provider")
    endpoints = {r.endpoint for r in requests}
    if len(endpoints) > 1:
        raise InvalidRequestError(f"one run sends to one endpoint, got {sorted(endpoints)}")
    texts = pl.Series("body", [canonical_json(r.body) for r in requests], dtype=pl.String)
    keys = pl.Series("key", [r.key for r in requests], dtype=pl.String)
    return _frame(texts, keys, namespace)


@dataclass(slots=True)
class Planned:
    """The requests to send (cache misses), with what the budget and the ledger need."""

    requests: list[LLMRequest] = field(default_factory=list)
    cache_keys: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    prices: list[ModelPrice] = field(default_factory=list)
    worst_usd: list[float] = field(default_factory=list)
    worst_output_tokens: list[int] = field(default_factory=list)


def _name_rows(rows: list[int]) -> str:
    shown = ", ".join(str(r) for r in rows[:_MAX_NAMED_ROWS])
    more = f" and {len(rows) - _MAX_NAMED_ROWS} more" if len(rows) > _MAX_NAMED_ROWS else ""
    return f"row{'s' if len(rows) > 1 else ''} {shown}{more}"


def _max_output(endpoint: Endpoint, body: Mapping[str, Any]) -> int:
    if endpoint == "embeddings":
        return 0
    value = body.get("max_completion_tokens") or body.get("max_tokens") or 0
    return int(value) if isinstance(value, int) else 0


def plan(
    endpoint: Endpoint,
    misses: pl.DataFrame,
    *,
    provider: ProviderConfig,
    prices: PriceTable,
    given: Mapping[str, LLMRequest] | None = None,
    parsed: Sequence[Mapping[str, Any]] | None = None,
) -> Planned:
    """Parse, price and count the cache misses (a request frame); raise on bad input.

    ``given`` holds ready-made requests by key: their bodies are not re-parsed and their
    ``prompt_tokens`` (when > 0) are trusted. ``parsed`` holds the input bodies as dicts by
    row, when the caller had them (no JSON round trip).
    """
    planned = Planned()
    bodies: list[Mapping[str, Any]] = []
    known_tokens: list[int] = []
    max_out: list[int] = []
    keys: list[str] = []
    unknown: dict[str, list[int]] = {}
    price_of: dict[str, ModelPrice | None] = {}
    columns = misses.select("row", "key", "cache_key", "body")
    for row, key, ckey, text in columns.iter_rows():
        ready = given.get(key) if given else None
        try:
            if ready is not None:
                body = ready.body
            else:
                body = parsed[row] if parsed is not None else json.loads(text)
        except ValueError as exc:
            raise InvalidRequestError(f"row {row}: request body is not JSON ({exc})") from None
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            raise InvalidRequestError(f"row {row}: request body needs a string 'model'")
        model = provider.price_model or body["model"]
        if model not in price_of:
            price_of[model] = prices.find(model)
        price = price_of[model]
        if price is None:
            unknown.setdefault(model, []).append(row)
            continue
        bodies.append(body)
        keys.append(key)
        known_tokens.append(ready.prompt_tokens if ready is not None else 0)
        max_out.append(_max_output(endpoint, body))
        planned.cache_keys.append(ckey)
        planned.rows.append(row)
        planned.texts.append(text)
        planned.models.append(model)
        planned.prices.append(price)
    if unknown:
        model, rows = next(iter(unknown.items()))
        try:
            prices.get(model)
        except ValueError as exc:
            raise type(exc)(f"{exc} ({_name_rows(rows)})") from None
    need = [i for i, t in enumerate(known_tokens) if t <= 0]
    tokens = known_tokens
    for i, count in zip(
        need, count_prompt_tokens(endpoint, [bodies[i] for i in need]), strict=True
    ):
        tokens[i] = count
    too_long: list[int] = []
    detail = ""
    for i, price in enumerate(planned.prices):
        prompt, out = tokens[i], max_out[i]
        planned.requests.append(LLMRequest(keys[i], endpoint, bodies[i], prompt, out))  # type: ignore[arg-type]
        worst_out = out
        if not worst_out and endpoint != "embeddings":
            worst_out = price.max_output or max(0, (price.context_window or prompt) - prompt)
        if price.context_window and prompt + out > price.context_window:
            too_long.append(planned.rows[i])
            detail = detail or (
                f"{prompt:,} prompt tokens + {out:,} max output tokens > "
                f"{price.context_window:,} for {planned.models[i]!r}"
            )
        planned.worst_output_tokens.append(worst_out)
        planned.worst_usd.append(price.cost(input_tokens=prompt, output_tokens=worst_out))
    if too_long:
        raise ContextWindowError(
            f"{_name_rows(too_long)}: prompt over the context window ({detail}); shorten the "
            "input or lower max_tokens"
        )
    return planned
