"""``embed_column``: a fixed-width ``list[f32]`` vector per row, many texts per request.

Embeddings are cached **per input**: the cache key of a text is the request key of that text
sent alone (``{"model", "input": text, "encoding_format", "dimensions"}``, the engine's key
scheme, namespace included), whatever batch it travelled in. A run first looks every distinct
text up under that key; only the texts not cached are sent, packed into batches, and the engine
journals each answered vector under its own key (``engine.embed_inputs``). So a partition
embedded alone and then again inside a backfill, or with another batch size, is answered from
the cache. Cached texts still go through the runner, as single-input requests that its cache
answers, so forecasts, progress and the ledger count them as cached rows.

Batches are content-defined and packed within the model's published limits (``embed_plan``,
``engine.provider_limits``: inputs per request, tokens per input, tokens per request). A text
over the per-input limit is that row's error, or truncated / chunked when the spec asks for it
(``long_text``; ``chunk_mean`` is the L2-normalized mean of its chunks' vectors). A batch the
provider rejects as a whole (HTTP 4xx) is split and each text resent alone, so one bad row
costs one error row, not a batch of them.

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
from typing import Literal

import numpy as np
import polars as pl

from lakeloom.core.embed_plan import (
    ENDPOINT,
    Items,
    cached_items,
    content_batches,
    embed_body,
    embed_limits,
    engine_of,
    input_keys,
    item_requests,
    pack,
    plan_items,
)
from lakeloom.core.provenance import (
    ColumnStats,
    RowLedger,
    Runner,
    assemble,
    check_keep,
    run_requests,
)
from lakeloom.core.row_keys import row_labels
from lakeloom.core.specs import EmbedSpec
from lakeloom.engine.embed_inputs import cache_inputs
from lakeloom.engine.provider_limits import Limits
from lakeloom.engine.shares import apportion
from lakeloom.engine.types import LLMRequest, LLMResult, RunContext

__all__ = [
    "ENDPOINT",
    "VECTOR_DTYPE",
    "content_batches",
    "embed_body",
    "embed_column",
    "input_keys",
    "mean_vector",
    "run_embed",
]

VECTOR_DTYPE = pl.List(pl.Float32)
_SPLIT_ON = ("HTTP 400", "HTTP 413", "HTTP 422")


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
    column = df[spec.column].cast(pl.String)
    texts = column.to_list()
    # blank = only Unicode White_Space, as the prompt's check (polars), not str.strip (U+001F)
    blank = (column.str.strip_chars() == "").to_list()
    rows_of: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        if text is None:
            ledger.status[i], ledger.error[i] = "skipped", f"null in column {spec.column!r}"
        elif blank[i]:
            ledger.status[i], ledger.error[i] = "skipped", f"empty text in column {spec.column!r}"
        else:
            rows_of.setdefault(text, []).append(i)
    unique = sorted(rows_of, key=lambda t: hashlib.blake2b(t.encode("utf-8")).digest())
    name, limits = embed_limits(engine, spec.model)
    items, parts, refused = plan_items(spec, unique, rows_of, limits, name)
    run = _Embedding(spec, engine, items, ledger, stats, context, labels=row_labels(df, keep))
    run.send(cached_items(engine, items, name), limits, max_batch_tokens)
    if run.appended:
        engine_of(engine).cache.flush()
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
    items: Items
    ledger: RowLedger
    stats: ColumnStats
    context: RunContext | None
    width: int | None = None
    model: str | None = None
    latencies: list[float] = field(default_factory=list)
    vectors: dict[int, np.ndarray] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)
    appended: bool = False  # per-input entries journaled here: flush them at the end
    labels: list[str] | None = None  # each row's key (``ticket_id=B9``), for errors

    def __post_init__(self) -> None:
        self.width = self.spec.dimensions
        self.model = self.spec.model

    def send(self, cached: set[int], limits: Limits, max_batch_tokens: int | None) -> None:
        """Answer every item: cached ones alone (the cache answers), the rest in packed batches."""
        todo = [i for i in range(len(self.items.texts)) if i not in cached]
        batches = pack(self.items, todo, self.spec.batch_size, limits, max_batch_tokens)
        groups = [[i] for i in sorted(cached)] + batches
        for _round in range(2):  # round 2 resends the items of rejected batches one by one
            if not groups:
                break
            groups = self._round(groups)

    def _labels(self, groups: list[list[int]]) -> list[str] | None:
        """Name each request by its first text's row key (errors name rows, not positions)."""
        if self.labels is None:
            return None
        owner = self.items.owner
        return [
            self.labels[owner[g[0]]] + (f" (+{len(g) - 1} texts)" if len(g) > 1 else "")
            for g in groups
        ]

    def _round(self, groups: list[list[int]]) -> list[list[int]]:
        requests = item_requests(self.spec, self.items, groups)
        results = run_requests(
            self.runner, requests, self.context, self.stats, labels=self._labels(groups)
        )
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
        engine = engine_of(self.runner)
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
        ledger = self.ledger
        if len(group) == 1:  # an input alone (most often a cache hit): all of it
            row = self.items.owner[group[0]]
            ledger.input_tokens[row] += result.input_tokens
            ledger.cost_usd[row] += result.cost_usd
            ledger.attempts[row] += 1
            return
        weights = [self.items.tokens[i] for i in group]
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
