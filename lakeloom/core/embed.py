"""``embed_column``: a fixed-width ``list[f32]`` vector per row, many texts per request.

Batches are content-defined so the response cache keeps working when a partition changes: the
distinct texts are ordered by their hash and a batch ends after a text whose hash hits a
boundary (about one in ``batch_size``; at most ``2 * batch_size`` texts and ``max_batch_tokens``
tokens). Adding or editing one row changes only the batch it falls in; every other batch keeps
its request key and is served from the cache. A batch the provider rejects as a whole (HTTP
4xx: e.g. one text over the model's input limit) is split and each text resent alone, so one
bad row costs one error row, not a batch of them.

The vector column is ``pl.List(pl.Float32)``, not ``pl.Array``: Delta has no fixed-size list and
polars refuses to read ``Array`` back from it. The width is fixed by the spec (``dimensions``) or
by the first answer, and checked on every vector.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from lakeloom.core.hashing import request_key
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
from lakeloom.engine.tokens import count_texts
from lakeloom.engine.types import LLMRequest, LLMResult, RunContext

ENDPOINT = "embeddings"
VECTOR_DTYPE = pl.List(pl.Float32)
_SPLIT_ON = ("HTTP 400", "HTTP 413", "HTTP 422")


def _boundary(digest: bytes, batch_size: int) -> bool:
    return int.from_bytes(digest[8:16], "little") % batch_size == 0


def content_batches(
    digests: Sequence[bytes], tokens: Sequence[int], batch_size: int, max_batch_tokens: int
) -> list[list[int]]:
    """Group items (already ordered by digest) into content-defined batches of indices."""
    batches: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i, (digest, n) in enumerate(zip(digests, tokens, strict=True)):
        if current and (len(current) >= 2 * batch_size or used + n > max_batch_tokens):
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


def _body(spec: EmbedSpec, texts: list[str]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": spec.model,
        "input": texts,
        "encoding_format": spec.encoding_format,
    }
    if spec.dimensions is not None:
        body["dimensions"] = spec.dimensions
    return body


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
    max_batch_tokens: int = 250_000,
    context: RunContext | None = None,
) -> tuple[pl.DataFrame, ColumnStats]:
    """Embed ``spec.column`` for every row; return the frame and the run's stats."""
    spec.validate_input(df.schema, where="input frame")
    check_keep(df.columns, keep, "input frame")
    n = df.height
    ledger = RowLedger(n)
    stats = ColumnStats()
    latencies: list[float] = []

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
    digests = [hashlib.blake2b(t.encode("utf-8")).digest() for t in unique]
    tokens = count_texts(unique, spec.model)
    batches = content_batches(digests, tokens, spec.batch_size, max_batch_tokens)

    width = spec.dimensions
    vectors: dict[str, np.ndarray] = {}
    rounds: list[list[list[int]]] = [batches]
    for round_no in range(2):  # round 1 resends texts of rejected batches one by one
        todo = rounds[round_no]
        if not todo:
            break
        requests = []
        for batch in todo:
            body = _body(spec, [unique[i] for i in batch])
            requests.append(
                LLMRequest(
                    key=request_key(ENDPOINT, body),
                    endpoint=ENDPOINT,
                    body=body,
                    prompt_tokens=sum(tokens[i] for i in batch),
                )
            )
        results = run_requests(engine, requests, context, stats)
        split: list[list[int]] = []
        for batch, request in zip(todo, requests, strict=True):
            result = results[request.key]
            if not result.from_cache and result.latency_s:
                latencies.append(result.latency_s)
            _charge(ledger, [rows_of[unique[i]][0] for i in batch], batch, tokens, result)
            error = result.error or "request failed"
            matrix = None
            if result.status == "ok":
                try:
                    matrix = _vectors(result, len(batch), width)
                    width = width or matrix.shape[1]
                except ValueError as exc:
                    error = str(exc)
            elif len(batch) > 1 and error.startswith(_SPLIT_ON) and not result.fatal:
                split.extend([i] for i in batch)
                continue
            model = result.model or spec.model
            for pos, i in enumerate(batch):
                vec = None if matrix is None else matrix[pos]
                row_error = None if vec is not None else error
                if vec is not None and not np.isfinite(vec).all():
                    vec, row_error = None, "vector contains NaN or infinite values"
                if vec is not None:
                    vectors[unique[i]] = vec
                for row in rows_of[unique[i]]:
                    ledger.request_hash[row], ledger.model[row] = request.key, model
                    ledger.status[row] = "ok" if vec is not None else "error"
                    ledger.error[row] = row_error
        rounds.append(split)

    column = _vector_series(spec.output_column, texts, vectors, width)
    frame = assemble(df, keep, column, ledger)
    return frame, stats.finish(ledger, latencies)


def _charge(
    ledger: RowLedger, rows: list[int], batch: list[int], tokens: list[int], result: LLMResult
) -> None:
    """Split a batch's reported usage and cost over its texts by their token estimates.

    Each distinct text is charged to its first row; identical texts elsewhere cost nothing.
    """
    weights = [tokens[i] for i in batch]
    total = sum(weights)
    for row, part, weight in zip(
        rows, apportion(result.input_tokens, weights), weights, strict=True
    ):
        ledger.input_tokens[row] += part
        ledger.cost_usd[row] += result.cost_usd * (weight / total if total else 1 / len(batch))
        ledger.attempts[row] += 1


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
    keep: Sequence[str] | None = None,
    context: RunContext | None = None,
) -> pl.DataFrame:
    """Add an embedding column (plus provenance) to ``df``; rows out = rows in.

    Null or blank texts are ``_status='skipped'`` rows with a null vector.

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
    )
    frame, _ = run_embed(df, spec, engine, keep=keep, context=context)
    return frame
