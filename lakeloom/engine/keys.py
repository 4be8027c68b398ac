"""Canonical request JSON and the content hash that keys the response cache.

A request's key is ``sha256(namespace, endpoint, canonical body)`` cut to 128 bits (32 hex
characters). The canonical body is ``json.dumps(sort_keys=True, separators=(",", ":"),
ensure_ascii=False)``, so every parameter (model, messages, schema, temperature, max_tokens, ...)
is part of the key and key order never matters.

Two ways to get the same keys:

* per request: :func:`canonical_json` + :func:`request_key` (plain Python, any body);
* per frame: :func:`canonical_bodies` renders a body *template* whose leaves may be polars
  expressions into one canonical JSON string per row without building a dict per row, and
  :func:`request_keys` hashes a whole column at once
  (``polars-hash``'s Rust SHA-256). A million keys take about a second in all.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

try:  # registers the ``.chash`` expression namespace
    import polars_hash as _plh
except ImportError:  # pragma: no cover - the pinned dependency is normally there
    _plh = None

KEY_HEX_CHARS = 32
"""Length of a request key: 128 bits of sha256, as hex."""


def canonical_json(obj: Any) -> str:
    """Return the canonical JSON text of ``obj``: sorted keys, compact separators, raw UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _prefix(endpoint: str, namespace: str) -> str:
    return f"{namespace}\n{endpoint}\n"


def request_key(endpoint: str, body: Mapping[str, Any], *, namespace: str = "") -> str:
    """Return the cache key of one request body sent to ``endpoint``.

    Examples:
        >>> request_key("embeddings", {"model": "m", "input": "hi"}) == request_key(
        ...     "embeddings", {"input": "hi", "model": "m"})
        True
    """
    text = _prefix(endpoint, namespace) + canonical_json(body)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:KEY_HEX_CHARS]


def request_keys(
    endpoint: str, bodies: pl.Series | Sequence[str], *, namespace: str = ""
) -> pl.Series:
    """Hash many canonical bodies at once: vectorized :func:`request_key`.

    The bodies must already be canonical (from :func:`canonical_json` or
    :func:`canonical_bodies`); the result equals ``request_key`` of the parsed bodies. SHA-256
    runs in Rust through the ``polars-hash`` plugin (~0.3 s per million bodies on one core);
    a ``hashlib`` loop is the fallback if the plugin cannot load.
    """
    series = bodies if isinstance(bodies, pl.Series) else pl.Series("body", list(bodies))
    frame = pl.DataFrame({"body": series.cast(pl.String)})
    prefixed = pl.lit(_prefix(endpoint, namespace)) + pl.col("body")
    if _plh is not None:
        try:
            out = frame.select(prefixed.chash.sha2_256().str.slice(0, KEY_HEX_CHARS).alias("key"))
            return out["key"]
        except Exception:  # noqa: BLE001 - plugin/polars ABI mismatch: fall back, same result
            pass
    prefix = _prefix(endpoint, namespace)
    keys = [
        hashlib.sha256((prefix + body).encode("utf-8")).hexdigest()[:KEY_HEX_CHARS]
        for body in frame["body"].to_list()
    ]
    return pl.Series("key", keys, dtype=pl.String)


def cache_keys(keys: pl.Series, namespace: str) -> pl.Series:
    """Scope request keys to a cache namespace (identity for the default namespace ``""``).

    A namespace keeps, say, simulator answers for ``gpt-4o-mini`` apart from real ones while the
    request key itself (provenance ``_request_hash``) stays the same everywhere.
    """
    if not namespace:
        return keys.alias("cache_key")
    return request_keys("cache", keys, namespace=namespace).alias("cache_key")


def _json_value(expr: pl.Expr) -> pl.Expr:
    """Encode a scalar expression (string, number, bool, null) as one JSON literal per row."""
    encoded = pl.struct(expr.alias("v")).struct.json_encode()
    return encoded.str.slice(5, encoded.str.len_chars() - 6)


def _template_parts(node: Any, parts: list[str | pl.Expr]) -> None:
    if isinstance(node, pl.Expr):
        parts.append(_json_value(node))
    elif isinstance(node, Mapping):
        parts.append("{")
        for i, key in enumerate(sorted(node)):
            if not isinstance(key, str):
                raise TypeError(f"template keys must be strings, got {key!r}")
            parts.append(("," if i else "") + canonical_json(key) + ":")
            _template_parts(node[key], parts)
        parts.append("}")
    elif isinstance(node, list | tuple):
        parts.append("[")
        for i, item in enumerate(node):
            if i:
                parts.append(",")
            _template_parts(item, parts)
        parts.append("]")
    else:
        parts.append(canonical_json(node))


def canonical_bodies(df: pl.DataFrame, template: Mapping[str, Any]) -> pl.Series:
    """Render one canonical JSON body per row of ``df`` from a template.

    ``template`` is a request body in which any leaf may be a polars expression evaluated on
    ``df`` (a string, number, bool or null per row); everything else is constant. The output is
    byte-identical to ``canonical_json`` of the per-row dict, so keys agree with
    :func:`request_key`.

    Examples:
        >>> df = pl.DataFrame({"text": ["good", "bad"]})
        >>> body = {"model": "m", "input": pl.format("Review: {}", pl.col("text"))}
        >>> canonical_bodies(df, body).to_list()
        ['{"input":"Review: good","model":"m"}', '{"input":"Review: bad","model":"m"}']
    """
    parts: list[str | pl.Expr] = []
    _template_parts(template, parts)
    merged: list[pl.Expr] = []
    pending = ""
    for part in parts:
        if isinstance(part, str):
            pending += part
        else:
            if pending:
                merged.append(pl.lit(pending))
                pending = ""
            merged.append(part)
    if pending:
        merged.append(pl.lit(pending))
    if len(df) == 0:
        return pl.Series("body", [], dtype=pl.String)
    if not any(isinstance(p, pl.Expr) for p in parts):
        return pl.Series("body", ["".join(str(p) for p in parts)] * len(df), dtype=pl.String)
    return df.select(pl.concat_str(merged).alias("body"))["body"]
