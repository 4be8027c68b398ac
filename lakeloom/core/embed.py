"""``embed_column``: a fixed-width ``list[f32]`` vector per row, many texts per request.

Embeddings are cached **per input**: the cache key of a text is the request key of that text
sent alone (``{"model", "input": text, "encoding_format", "dimensions"}``, the engine's key
scheme, namespace included), whatever batch it travelled in. A run first looks every distinct
text up under that key; only the texts not cached are sent, packed into batches, and the engine
journals each answered vector under its own key (``engine.embed_inputs``). So a partition
embedded alone and then again inside a backfill, or with another batch size, is answered from
the cache. Cached texts still go through the runner, as single-input requests that its cache
answers, so forecasts, progress and the ledger count them as cached rows.

Batches are content-defined (texts ordered by hash; a batch ends after a text whose hash hits a
boundary, about one in ``batch_size``) and packed within the model's published limits
(``engine.provider_limits``: inputs per request, tokens per input, tokens per request). A text
over the per-input limit is that row's error, or truncated / chunked when the spec asks for it
(``long_text``). A batch the provider rejects as a whole (HTTP 4xx) is split and each text
resent alone, so one bad row costs one error row, not a batch of them.

The vector column is ``pl.List(pl.Float32)``, not ``pl.Array``: Delta has no fixed-size list and
polars refuses to read ``Array`` back from it. The width is fixed by the spec (``dimensions``) or
by the first answer, and checked on every vector.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import polars as pl

from lakeloom.core.hashing import cache_keys, canonical_json, request_key, request_keys
from lakeloom.core.provenance import (
    ColumnStats,
    RowLedger,
    Runner,
    apportion,
    assemble,
    check_keep,
    run_requests,
)
from lakeloom.core.specs import EmbedSpec
from lakeloom.engine.embed_inputs import cache_inputs
from lakeloom.engine.provider_limits import Limits, embedding_input_limit, resolve_limits
from lakeloom.engine.tokens import count_texts, token_windows
from lakeloom.engine.types import LLMRequest, LLMResult, RunContext

ENDPOINT = "embeddings"
VECTOR_DTYPE = pl.List(pl.Float32)
_SPLIT_ON = ("HTTP 400", "HTTP 413", "HTTP 422")


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


def _body(spec: EmbedSpec, texts: str | list[str]) -> dict[str, Any]:
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

    Vectorized with the engine's own key function (``core.hashing.request_keys``): equal to
    ``request_key("embeddings", _body(spec, text))`` for every text.
    """
    if not texts:
        return []
    bodies = [canonical_json(_body(spec, t)) for t in texts]
    return request_keys(ENDPOINT, bodies).to_list()


def _decode(embedding: str | list[float]) -> np.ndarray | list[float]:
    """One vector: base64 little-endian float32, or JSON floats (servers that ignore the ask)."""
    if isinstance(embedding, str):
        return np.frombuffer(base64.b64decode(embedding, validate=True), dtype="<f4")
    return embedding


def _vectors(result: LLMResult, count: int, width: int | None) -> np.ndarray:
    """Return the batch's vectors in input order; ``ValueError`` if the answer is inconsistent."""
    data = (result.response or {}).get("data") or []
    if len(data) != count:
        raise ValueError(f"provider returned {len(data)} vectors for {count} inputs")
    ordered = sorted(data, key=lambda d: d.get("index", 0))
    try:
        matrix = np.asarray([_decode(d["embedding"]) for d in ordered], dtype=np.float32)
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise ValueError(f"malformed embeddings in the response: {exc}") from None
    if matrix.ndim != 2:
        raise ValueError("vectors in one response have different widths")
    if width is not None and matrix.shape[1] != width:
        raise ValueError(f"vector width {matrix.shape[1]} != expected {width}")
    return matrix


@dataclass(slots=True)
class _Items:
    """The distinct strings to embed (a text, its truncation or its chunks), by position."""

    texts: list[str] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    owner: list[int] = field(default_factory=list)  # the row charged for the item
    index: dict[str, int] = field(default_factory=dict)

    def add(self, text: str, tokens: int, row: int) -> int:
        if text not in self.index:
            self.index[text] = len(self.texts)
            self.texts.append(text)
            self.tokens.append(tokens)
            self.owner.append(row)
        return self.index[text]


def _engine_of(runner: Any) -> Any:
    return getattr(runner, "engine", runner)


def embed_limits(runner: Any, model: str) -> tuple[str, Limits]:
    """The priced model name and its limits, as the runner's provider resolves them."""
    provider = getattr(runner, "provider", None)
    name = getattr(provider, "price_model", None) or model
    prices = getattr(_engine_of(runner), "prices", None)
    price = prices.find(name) if prices is not None and hasattr(prices, "find") else None
    return name, resolve_limits(name, overrides=getattr(provider, "limits", None), price=price)


def _plan_items(
    spec: EmbedSpec, unique: list[str], rows_of: dict[str, list[int]], limits: Limits, name: str
) -> tuple[_Items, list[list[int]], dict[int, str]]:
    """Items to embed, each unique text's items, and the texts refused (over the limit)."""
    items = _Items()
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


def _cached(runner: Any, items: _Items, name: str) -> set[int]:
    """Items whose per-input key the runner's cache holds (none when it cannot tell)."""
    engine = _engine_of(runner)
    provider = getattr(engine, "provider", None)
    if not items.keys or not hasattr(engine, "match") or provider is None:
        return set()
    keys = pl.Series("key", items.keys, dtype=pl.String)
    frame = pl.DataFrame({"key": keys, "cache_key": cache_keys(keys, provider.cache_namespace)})
    matched = engine.match(frame, [name])
    return {i for i, hit in enumerate(matched["response"].is_not_null().to_list()) if hit}


def _requests(spec: EmbedSpec, items: _Items, groups: list[list[int]]) -> list[LLMRequest]:
    """One request per group: an item alone under its own key, else a batch naming its items."""
    out = []
    for group in groups:
        if len(group) == 1:
            i = group[0]
            body = _body(spec, items.texts[i])
            out.append(LLMRequest(items.keys[i], ENDPOINT, body, items.tokens[i]))
            continue
        body = _body(spec, [items.texts[i] for i in group])
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


def run_embed(
    df: pl.DataFrame,
    spec: EmbedSpec,
    engine: Runner,
    *,
    keep: Sequence[str] | None = None,
    max_batch_tokens: int | None = None,
    context: RunContext | None = None,
) -> tuple[pl.DataFrame, ColumnStats]:
    """Embed ``spec.column`` for every row; return the frame and the run's stats.

    ``max_batch_tokens`` caps the tokens of one request below the model's own limit.
    """
    spec.validate_input(df.schema, where="input frame")
    check_keep(df.columns, keep, "input frame")
    ledger = RowLedger(df.height)
    stats = ColumnStats()
    texts = df[spec.column].cast(pl.String).to_list()
    rows_of: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        if text is None:
            ledger.status[i], ledger.error[i] = "skipped", f"null in column {spec.column!r}"
        elif not text.strip():
            ledger.status[i], ledger.error[i] = "skipped", f"empty text in column {spec.column!r}"
        else:
            rows_of.setdefault(text, []).append(i)
    unique = sorted(rows_of, key=lambda t: hashlib.blake2b(t.encode("utf-8")).digest())
    name, limits = embed_limits(engine, spec.model)
    items, parts, refused = _plan_items(spec, unique, rows_of, limits, name)
    run = _Embedding(spec, engine, items, ledger, stats, context)
    run.send(_cached(engine, items, name), limits, max_batch_tokens)
    if run.appended:
        _engine_of(engine).cache.flush()
    vectors: dict[str, np.ndarray] = {}
    for u, text in enumerate(unique):
        vec, error = run.vector(parts[u])
        error = refused.get(u, error)
        if vec is not None:
            vectors[text] = vec
        for row in rows_of[text]:
            ledger.status[row] = "ok" if vec is not None else "error"
            ledger.error[row] = None if vec is not None else error
            ledger.model[row] = run.model
            ledger.request_hash[row] = items.keys[parts[u][0]] if parts[u] else None
    column = _vector_series(spec.output_column, texts, vectors, run.width)
    frame = assemble(df, keep, column, ledger)
    return frame, stats.finish(ledger, run.latencies)


@dataclass(slots=True)
class _Embedding:
    """One run's items, their answers (vector or error per item) and the rows charged."""

    spec: EmbedSpec
    runner: Runner
    items: _Items
    ledger: RowLedger
    stats: ColumnStats
    context: RunContext | None
    width: int | None = None
    model: str | None = None
    latencies: list[float] = field(default_factory=list)
    vectors: dict[int, np.ndarray] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)
    appended: bool = False  # per-input entries journaled here: flush them at the end

    def __post_init__(self) -> None:
        self.width = self.spec.dimensions
        self.model = self.spec.model

    def send(self, cached: set[int], limits: Limits, max_batch_tokens: int | None) -> None:
        """Answer every item: cached ones alone (the cache answers), the rest in packed batches."""
        items = self.items
        cap = limits.max_request_tokens or 250_000
        if max_batch_tokens is not None:
            cap = min(cap, max_batch_tokens)
        todo = [i for i in range(len(items.texts)) if i not in cached]
        todo.sort(key=lambda i: hashlib.blake2b(items.texts[i].encode("utf-8")).digest())
        digests = [hashlib.blake2b(items.texts[i].encode("utf-8")).digest() for i in todo]
        batches = content_batches(
            digests, [items.tokens[i] for i in todo], self.spec.batch_size, cap, limits.max_inputs
        )
        groups = [[i] for i in sorted(cached)] + [[todo[j] for j in b] for b in batches]
        for _round in range(2):  # round 2 resends the items of rejected batches one by one
            if not groups:
                break
            groups = self._round(groups)

    def _round(self, groups: list[list[int]]) -> list[list[int]]:
        requests = _requests(self.spec, self.items, groups)
        results = run_requests(self.runner, requests, self.context, self.stats)
        split: list[list[int]] = []
        for group, request in zip(groups, requests, strict=True):
            result = results[request.key]
            if not result.from_cache and result.latency_s:
                self.latencies.append(result.latency_s)
            self._charge(group, result)
            error = result.error or "request failed"
            if result.status == "ok":
                try:
                    self._take(group, request, result)
                    continue
                except ValueError as exc:
                    error = str(exc)
            elif len(group) > 1 and error.startswith(_SPLIT_ON) and not result.fatal:
                split.extend([i] for i in group)
                continue
            for i in group:
                self.errors[i] = error
        return split

    def _take(self, group: list[int], request: LLMRequest, result: LLMResult) -> None:
        """Keep the vectors of an answered request (and cache them per input if not yet)."""
        matrix = _vectors(result, len(group), self.width)
        self.width = self.width or matrix.shape[1]
        self.model = result.model or self.model
        for pos, i in enumerate(group):
            vec = matrix[pos]
            if np.isfinite(vec).all():
                self.vectors[i] = vec
            else:
                self.errors[i] = "vector contains NaN or infinite values"
        if request.input_keys and not result.inputs_cached:
            self._cache_inputs(request, result)

    def _cache_inputs(self, request: LLMRequest, result: LLMResult) -> None:
        """A batch answer cached whole (Batch API, older entries): add its per-input entries."""
        engine = _engine_of(self.runner)
        cache = getattr(engine, "cache", None)
        provider = getattr(engine, "provider", None)
        if cache is None or provider is None:
            return
        model = result.model or self.spec.model
        self.appended |= cache_inputs(cache, request, result, model, provider.cache_namespace)

    def _charge(self, group: list[int], result: LLMResult) -> None:
        """Split a request's reported usage and cost over its items by their token estimates.

        Each distinct item is charged to its first row; identical items elsewhere cost nothing.
        """
        ledger, weights = self.ledger, [self.items.tokens[i] for i in group]
        total = sum(weights)
        parts = apportion(result.input_tokens, weights)
        for i, part, weight in zip(group, parts, weights, strict=True):
            row = self.items.owner[i]
            ledger.input_tokens[row] += part
            ledger.cost_usd[row] += result.cost_usd * (weight / total if total else 1 / len(group))
            ledger.attempts[row] += 1

    def vector(self, parts: list[int]) -> tuple[np.ndarray | None, str | None]:
        """One text's vector from its items (the normalized mean of chunks), or its error."""
        if not parts:
            return None, None
        for i in parts:
            if i not in self.vectors:
                return None, self.errors.get(i, "internal error: no result")
        if len(parts) == 1:
            return self.vectors[parts[0]], None
        return mean_vector([self.vectors[i] for i in parts]), None


def mean_vector(vectors: Sequence[np.ndarray]) -> np.ndarray:
    """The L2-normalized mean of ``vectors`` (a long text's vector from its chunks' vectors)."""
    mean = np.mean(np.asarray(vectors, dtype=np.float64), axis=0)
    norm = float(np.linalg.norm(mean))
    return (mean / norm if norm > 0 else mean).astype(np.float32)


def _vector_series(
    name: str, texts: list[str | None], vectors: dict[str, np.ndarray], width: int | None
) -> pl.Series:
    if not vectors or width is None:
        return pl.Series(name, [None] * len(texts), dtype=VECTOR_DTYPE)
    matrix = np.zeros((len(texts), width), dtype=np.float32)
    present = np.zeros(len(texts), dtype=bool)
    for i, text in enumerate(texts):
        vec = vectors.get(text) if text is not None else None
        if vec is not None:
            matrix[i] = vec
            present[i] = True
    values = pl.Series(name, matrix).cast(VECTOR_DTYPE)
    return pl.select(pl.when(pl.lit(pl.Series(present))).then(values)).to_series().alias(name)


def embed_column(
    df: pl.DataFrame,
    column: str,
    *,
    engine: Runner,
    model: str,
    output_column: str = "embedding",
    batch_size: int = 128,
    dimensions: int | None = None,
    long_text: Literal["error", "truncate", "chunk_mean"] = "error",
    keep: Sequence[str] | None = None,
    context: RunContext | None = None,
) -> pl.DataFrame:
    """Add an embedding column (plus provenance) to ``df``; rows out = rows in.

    Null or blank texts are ``_status='skipped'`` rows with a null vector; a text over the
    model's per-input limit is an error row unless ``long_text`` truncates or chunks it.

    Examples:
        >>> vectors = embed_column(  # doctest: +SKIP
        ...     reviews, "text", engine=engine, model="text-embedding-3-small", keep=["id"])
    """
    spec = EmbedSpec(
        column=column,
        model=model,
        output_column=output_column,
        batch_size=batch_size,
        dimensions=dimensions,
        long_text=long_text,
    )
    frame, _ = run_embed(df, spec, engine, keep=keep, context=context)
    return frame
