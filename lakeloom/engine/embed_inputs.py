"""Embedding answers cached per input, so a regrouped batch is answered from the cache.

An embeddings request carries many inputs, but what is worth keeping is each input's vector:
the same text sent in another batch (another partition, another batch size) must not be paid
again. A batch request that names its inputs' own request keys (``LLMRequest.input_keys``: the
key of ``{"model", "input": text, ...}`` sent alone, see ``core.embed``) is cached as one entry
per input, each shaped like the answer to that single-input request, with the batch's usage
split over the inputs by their token estimates. The split happens where the answer is received
(the engine's worker, through the cache journal), so a crash right after loses nothing paid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl

from lakeloom.engine.keys import cache_keys, canonical_json
from lakeloom.engine.shares import apportion
from lakeloom.engine.types import LLMRequest, LLMResult


def split_response(
    response: dict[str, Any], count: int, input_tokens: int, weights: Sequence[int]
) -> list[tuple[str, int]] | None:
    """One (single-input answer JSON, tokens) per input, in input order; None if inconsistent."""
    data = response.get("data")
    if not isinstance(data, list) or len(data) != count:
        return None
    try:
        ordered = sorted(data, key=lambda d: int(d.get("index", 0)))
    except (AttributeError, TypeError, ValueError):
        return None
    if [int(d.get("index", i)) for i, d in enumerate(ordered)] != list(range(count)):
        return None
    parts = apportion(input_tokens, list(weights) if weights else [1] * count)
    out: list[tuple[str, int]] = []
    for item, tokens in zip(ordered, parts, strict=True):
        single = {
            "object": "list",
            "data": [{**item, "index": 0}],
            "model": response.get("model"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        out.append((canonical_json(single), tokens))
    return out


def per_input_entries(
    request: LLMRequest, result: LLMResult, namespace: str
) -> list[tuple[str, str, int]] | None:
    """(cache key, answer JSON, tokens) per input of an answered batch; None if it can't split."""
    if not request.input_keys or result.status != "ok" or result.response is None:
        return None
    n = len(request.input_keys)
    weights = request.input_tokens if len(request.input_tokens) == n else [1] * n
    split = split_response(result.response, n, result.input_tokens, weights)
    if split is None:
        return None
    keys = cache_keys(pl.Series("key", list(request.input_keys), dtype=pl.String), namespace)
    return [(k, text, t) for k, (text, t) in zip(keys.to_list(), split, strict=True)]


def cache_inputs(
    cache: Any, request: LLMRequest, result: LLMResult, model: str, namespace: str
) -> bool:
    """Journal one cache entry per input of ``result``; False when it cannot be split."""
    entries = per_input_entries(request, result, namespace)
    if entries is None:
        return False
    rows = [(key, model, request.endpoint, text, tokens, 0) for key, text, tokens in entries]
    cache.append_many(rows)  # one journal write: all of the answer's entries or none
    return True
