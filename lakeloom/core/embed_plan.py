"""What an embedding run sends: the distinct inputs, their per-input keys, and packed batches.

A text becomes one input, or (``long_text``) its truncation or its chunks; each input's cache key
is the request key of that input sent alone (the engine's key scheme), so it stays the same in
any batch. Inputs not cached are packed into content-defined batches within the model's limits
(``engine.provider_limits``): a batch ends after an input whose hash hits a boundary (about one
in ``batch_size``), at ``2 * batch_size`` or the model's ``max_inputs``, and before its tokens
would pass the per-request limit. Adding or editing one row changes only the batch it falls in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from lakeloom.core.specs import EmbedSpec
from lakeloom.engine.keys import cache_keys, canonical_bodies, request_key, request_keys
from lakeloom.engine.provider_limits import Limits, embedding_input_limit, resolve_limits
from lakeloom.engine.tokens import count_texts, token_windows
from lakeloom.engine.types import LLMRequest

ENDPOINT = "embeddings"
DEFAULT_MAX_BATCH_TOKENS = 250_000
"""Tokens per request when the model publishes no per-request limit (local servers)."""


def _boundary(digest: bytes, batch_size: int) -> bool:
    return int.from_bytes(digest[8:16], "little") % batch_size == 0


def content_batches(
    digests: Sequence[bytes],
    tokens: Sequence[int],
    batch_size: int,
    max_batch_tokens: int,
    max_inputs: int | None = None,
) -> list[list[int]]:
    """Group items (already ordered by digest) into content-defined batches of indices.

    A batch holds at most ``2 * batch_size`` items (and ``max_inputs``) and ``max_batch_tokens``
    tokens summed (an item alone over that is a batch of its own).
    """
    cap = min(2 * batch_size, max_inputs) if max_inputs else 2 * batch_size
    batches: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i, (digest, n) in enumerate(zip(digests, tokens, strict=True)):
        if current and (len(current) >= cap or used + n > max_batch_tokens):
            batches.append(current)
            current, used = [], 0
        current.append(i)
        used += n
        if batch_size == 1 or _boundary(digest, batch_size):
            batches.append(current)
            current, used = [], 0
    if current:
        batches.append(current)
    return batches


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8")).digest()


def pack(
    items: Items,
    todo: Sequence[int],
    batch_size: int,
    limits: Limits,
    max_batch_tokens: int | None = None,
) -> list[list[int]]:
    """Content-defined batches of the items ``todo`` within the model's request limits."""
    cap = limits.max_request_tokens or DEFAULT_MAX_BATCH_TOKENS
    if max_batch_tokens is not None:
        cap = min(cap, max_batch_tokens)
    ordered = sorted(todo, key=lambda i: _digest(items.texts[i]))
    digests = [_digest(items.texts[i]) for i in ordered]
    tokens = [items.tokens[i] for i in ordered]
    batches = content_batches(digests, tokens, batch_size, cap, limits.max_inputs)
    return [[ordered[j] for j in batch] for batch in batches]


def embed_body(spec: EmbedSpec, texts: str | list[str]) -> dict[str, Any]:
    """An embeddings body: ``texts`` a string (one input alone: its cache key) or a list."""
    body: dict[str, Any] = {
        "model": spec.model,
        "input": texts,
        "encoding_format": spec.encoding_format,
    }
    if spec.dimensions is not None:
        body["dimensions"] = spec.dimensions
    return body


def input_keys(spec: EmbedSpec, texts: Sequence[str]) -> list[str]:
    """The per-input cache key of each text: the request key of that text sent alone.

    Vectorized with the engine's own functions (``canonical_bodies`` + ``request_keys``): equal
    to ``request_key("embeddings", embed_body(spec, text))`` for every text.
    """
    if not texts:
        return []
    frame = pl.DataFrame({"text": list(texts)}, schema={"text": pl.String})
    template = {**embed_body(spec, ""), "input": pl.col("text")}
    return request_keys(ENDPOINT, canonical_bodies(frame, template)).to_list()


@dataclass(slots=True)
class Items:
    """The distinct strings to embed (a text, its truncation or its chunks), by position."""

    texts: list[str] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    owner: list[int] = field(default_factory=list)  # the row charged for the item
    index: dict[str, int] = field(default_factory=dict)

    def add(self, text: str, tokens: int, row: int) -> int:
        """Position of ``text`` (added once: identical inputs are sent and paid once)."""
        if text not in self.index:
            self.index[text] = len(self.texts)
            self.texts.append(text)
            self.tokens.append(tokens)
            self.owner.append(row)
        return self.index[text]


def engine_of(runner: Any) -> Any:
    """The engine behind a runner (ModeRunner/BatchRunner wrap one; an Engine is itself)."""
    return getattr(runner, "engine", runner)


def embed_limits(runner: Any, model: str) -> tuple[str, Limits]:
    """The priced model name and its limits, as the runner's provider resolves them."""
    provider = getattr(runner, "provider", None)
    name = getattr(provider, "price_model", None) or model
    prices = getattr(engine_of(runner), "prices", None)
    price = prices.find(name) if prices is not None and hasattr(prices, "find") else None
    return name, resolve_limits(name, overrides=getattr(provider, "limits", None), price=price)


def plan_items(
    spec: EmbedSpec, unique: list[str], rows_of: dict[str, list[int]], limits: Limits, name: str
) -> tuple[Items, list[list[int]], dict[int, str]]:
    """Items to embed, each unique text's items, and the texts refused (over the limit)."""
    items = Items()
    parts: list[list[int]] = []
    refused: dict[int, str] = {}
    limit = embedding_input_limit(limits)
    tokens = count_texts(unique, spec.model)
    for u, (text, n) in enumerate(zip(unique, tokens, strict=True)):
        row = rows_of[text][0]
        if limit is None or n <= limit:
            parts.append([items.add(text, n, row)])
            continue
        if spec.long_text == "error":
            refused[u] = f"over context window: {n:,} tokens > {limit:,} for {name!r}"
            parts.append([])
            continue
        pieces = token_windows(text, spec.model, limit)
        if spec.long_text == "truncate":
            pieces = pieces[:1]
        counts = count_texts(pieces, spec.model)
        parts.append([items.add(p, c, row) for p, c in zip(pieces, counts, strict=True)])
    items.keys = input_keys(spec, items.texts)
    return items, parts, refused


def cached_items(runner: Any, items: Items, name: str) -> set[int]:
    """Items whose per-input key the runner's cache holds (none when it cannot tell)."""
    engine = engine_of(runner)
    provider = getattr(engine, "provider", None)
    if not items.keys or not hasattr(engine, "match") or provider is None:
        return set()
    keys = pl.Series("key", items.keys, dtype=pl.String)
    frame = pl.DataFrame({"key": keys, "cache_key": cache_keys(keys, provider.cache_namespace)})
    matched = engine.match(frame, [name])
    return {i for i, hit in enumerate(matched["response"].is_not_null().to_list()) if hit}


def item_requests(spec: EmbedSpec, items: Items, groups: list[list[int]]) -> list[LLMRequest]:
    """One request per group: an item alone under its own key, else a batch naming its items."""
    out = []
    for group in groups:
        if len(group) == 1:
            i = group[0]
            body = embed_body(spec, items.texts[i])
            out.append(LLMRequest(items.keys[i], ENDPOINT, body, items.tokens[i]))
            continue
        body = embed_body(spec, [items.texts[i] for i in group])
        out.append(
            LLMRequest(
                request_key(ENDPOINT, body),
                ENDPOINT,
                body,
                sum(items.tokens[i] for i in group),
                input_keys=tuple(items.keys[i] for i in group),
                input_tokens=tuple(items.tokens[i] for i in group),
            )
        )
    return out
