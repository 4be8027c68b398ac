"""Which provider a cached answer came from: the default cache namespace, and its migration.

Two servers can serve the same model name (a simulator and OpenAI, a fine-tune behind the
same name, a second account with a wrong key), so the cache must never answer one provider's
request with another's response. The default namespace is therefore the provider's identity:
its kind and normalized base URL (scheme, lower-case host, port unless the scheme's default,
path without trailing slash; never userinfo, query or fragment, so no secret can enter a key).
Sharing a cache between providers is an explicit ``cache_namespace="shared-name"``.

Caches written before this (namespace ``""``: the cache key was the request key itself) stay
readable with ``cache_namespace=""``, and :func:`migrate_namespace` (``lakeloom cache migrate``)
copies their entries under a provider's namespace once, so its runs hit them again.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

import polars as pl
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from lakeloom.engine.cache.store import SCHEMA, ResponseCache
from lakeloom.engine.keys import cache_keys

OPENAI_BASE_URL = "https://api.openai.com/v1"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def provider_namespace(kind: str, base_url: str | None) -> str:
    """The default cache namespace of a provider: ``kind:scheme://host[:port]/path``.

    Examples:
        >>> provider_namespace("compatible", "HTTP://user:pw@LocalHost:8377/v1/?api-key=x")
        'compatible:http://localhost:8377/v1'
        >>> provider_namespace("openai", None)
        'openai:https://api.openai.com/v1'
    """
    parts = urlsplit((base_url or OPENAI_BASE_URL).strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()  # no userinfo; IPv6 loses its brackets here
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:  # not a number: keep no port rather than fail on a name
        port = None
    netloc = host if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    return f"{kind}:{scheme}://{netloc}{parts.path.rstrip('/')}"


def migrate_namespace(
    cache: ResponseCache,
    to_namespace: str,
    *,
    from_namespace: str = "",
    models: Sequence[str] | None = None,
) -> int:
    """Copy the entries of ``from_namespace`` (only ``""`` can be mapped) under ``to_namespace``.

    With the empty namespace the stored key is the request key, so the new key is computable;
    any other namespace's keys are one-way hashes of it and cannot be moved. Entries are copied,
    not moved (``cache_namespace=""`` still reads them), one data file at a time, skipping keys
    already there and entries that are copies of another entry (so a second run adds
    nothing); returns the entries added. Keys of ``from_namespace`` cannot be told apart from
    other namespaces' in the table: run it once, on a cache that served this one provider.
    """
    if from_namespace:
        raise ValueError(
            f"cannot migrate from cache namespace {from_namespace!r}: its keys are hashes of "
            "the request keys; only entries of the old default namespace '' can be re-keyed"
        )
    if not to_namespace or to_namespace == from_namespace:
        raise ValueError("to_namespace must be a non-empty namespace different from the source")
    options = cache.storage.storage_options or None
    try:
        table = DeltaTable(cache.uri, storage_options=options)
    except TableNotFoundError:
        return 0
    actions = pl.DataFrame(table.get_add_actions(flatten=True))
    partitions = (
        actions["partition.model"].to_list()
        if "partition.model" in actions.columns
        else [None] * actions.height
    )
    files = [
        (uri, model)
        for uri, model in zip(table.file_uris(), partitions, strict=True)
        if not (models and model is not None and model not in models)
    ]
    # Rows that are themselves copies (their key is the re-key of another row) are skipped,
    # so running the migration again adds nothing.
    copies = pl.concat(
        [
            cache_keys(
                pl.read_parquet(uri, columns=["request_hash"], **_read(options))["request_hash"],
                to_namespace,
            )
            for uri, _ in files
        ]
        or [pl.Series("cache_key", [], dtype=pl.String)]
    ).implode()
    added = 0
    for uri, model in files:
        df = pl.read_parquet(uri, **_read(options))
        if "model" not in df.columns:
            df = df.with_columns(pl.lit(model, dtype=pl.String).alias("model"))
        df = df.filter(~pl.col("request_hash").is_in(copies))
        if models:
            df = df.filter(pl.col("model").is_in(list(models)))
        if df.is_empty():
            continue
        rekeyed = df.with_columns(cache_keys(df["request_hash"], to_namespace))
        rekeyed = rekeyed.drop("request_hash").rename({"cache_key": "request_hash"})
        added += cache.put(rekeyed.select(list(SCHEMA)))
    return added


def _read(options: dict[str, str] | None) -> dict[str, object]:
    return {"storage_options": options, "hive_partitioning": False}
