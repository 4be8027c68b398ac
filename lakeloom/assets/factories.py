"""Asset factories: one line declares an LLM column as a partitioned Dagster asset.

``embedding_asset`` and ``generated_asset`` take a spec (what to compute: an ``EmbedSpec`` or a
``GenerateSpec``) and an :class:`~lakeloom.assets.options.AssetOptions` (the Dagster side:
partitions, pool, retries, backfill policy, mode, key prefix, group, checks). The flat keywords
are a convenience that builds the same two objects. The asset reads its source's partition(s)
through the Delta IO manager, runs the functional core with the engine of an ``LLMResource``,
and returns the kept key/partition columns + the new column + provenance; editing a prompt
changes the spec's digest, so exactly that asset and its downstream turn stale.

Examples:
    >>> labels = generated_asset(  # doctest: +SKIP
    ...     "review_labels", source=reviews, prompt="Review: {text}", output=ReviewLabel,
    ...     key="review_id", model="gpt-4o-mini")
    >>> spec = GenerateSpec(  # doctest: +SKIP
    ...     prompt="Review: {text}", output=ReviewLabel, model="gpt-4o-mini")
    >>> labels = generated_asset(  # doctest: +SKIP
    ...     "review_labels", reviews, spec=spec, key="review_id",
    ...     options=AssetOptions(group_name="reviews", min_ok_ratio=0.95))
"""

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import dagster as dg

from lakeloom.assets.column_kinds import embed_kind, generate_kind, spec_from
from lakeloom.assets.llm_asset import build_llm_asset
from lakeloom.assets.options import AssetOptions, resolve_options
from lakeloom.assets.upstream import Source
from lakeloom.core.specs import EmbedSpec, GenerateSpec
from lakeloom.engine.batch.runner import BatchSettings
from lakeloom.engine.modes import Mode

RetryOption = dg.RetryPolicy | Literal["default"] | None


def embedding_asset(
    name: str,
    source: Source,
    column: str | None = None,
    *,
    key: str | Sequence[str],
    spec: EmbedSpec | None = None,
    options: AssetOptions | None = None,
    resource_key: str = "embedder",
    model: str | None = None,
    output_column: str = "embedding",
    dimensions: int | None = None,
    batch_size: int = 128,
    encoding_format: Literal["base64", "float"] = "base64",
    long_text: Literal["error", "truncate", "chunk_mean"] = "error",
    pool: str | None = None,
    partitions_def: dg.PartitionsDefinition | None = None,
    key_prefix: str | Sequence[str] | None = None,
    group_name: str | None = None,
    description: str | None = None,
    min_ok_ratio: float | None = None,
    blocking: bool = True,
    retry_policy: RetryOption = "default",
    backfill_policy: dg.BackfillPolicy | None = None,
    io_manager_key: str = "io_manager",
    metadata: Mapping[str, Any] | None = None,
    mode: Mode = "online",
    batch_min_requests: int = 1_000,
    batch_max_wait_s: float | None = None,
    batch: BatchSettings | None = None,
) -> dg.AssetsDefinition:
    """Declare an asset with ``key`` columns + a ``list[f32]`` embedding of ``column`` per row.

    Pass ``spec=EmbedSpec(...)`` or its fields (``column``, ``model``, ...); ``options=`` or its
    fields as keywords (see :class:`~lakeloom.assets.options.AssetOptions`). Partitions come
    from ``source`` (or ``partitions_def``); the pool defaults to ``llm-<resource_key>``, the
    backfill policy to one run for any number of partitions, ``min_ok_ratio`` to 0.99. ``mode``
    is ``online``, ``batch`` (OpenAI Batch API, half price, up to 24 h) or ``auto`` (batch when
    at least ``batch_min_requests`` requests miss the cache; needs ``batch_max_wait_s``); see
    :mod:`lakeloom.assets.run_modes`. A text over the model's per-input token limit is that
    row's error unless ``long_text`` is ``truncate`` or ``chunk_mean``.

    Examples:
        >>> vectors = embedding_asset(  # doctest: +SKIP
        ...     "review_vectors", source=reviews, column="text", key="review_id",
        ...     model="all-MiniLM-L6-v2")
    """
    flat_spec = {
        "column": column,
        "model": model,
        "output_column": output_column,
        "dimensions": dimensions,
        "batch_size": batch_size,
        "encoding_format": encoding_format,
        "long_text": long_text,
    }
    spec = spec_from(spec, EmbedSpec, "embedding_asset", flat_spec)
    options = resolve_options(
        options,
        "embedding_asset",
        pool=pool,
        partitions_def=partitions_def,
        key_prefix=key_prefix,
        group_name=group_name,
        description=description,
        min_ok_ratio=min_ok_ratio,
        blocking=blocking,
        retry_policy=retry_policy,
        backfill_policy=backfill_policy,
        io_manager_key=io_manager_key,
        metadata=metadata,
        mode=mode,
        batch_min_requests=batch_min_requests,
        batch_max_wait_s=batch_max_wait_s,
        batch=batch,
    )
    kind = embed_kind(spec, options.min_ok_ratio)
    return build_llm_asset(name, source, key, kind, options, resource_key)


def generated_asset(
    name: str,
    source: Source,
    prompt: str | None = None,
    output: Any = None,
    *,
    key: str | Sequence[str],
    spec: GenerateSpec | None = None,
    options: AssetOptions | None = None,
    resource_key: str = "llm",
    model: str | None = None,
    output_column: str = "output",
    system: str | None = None,
    temperature: float = 0.0,
    max_tokens: int = 512,
    max_repairs: int = 2,
    seed: int | None = None,
    pool: str | None = None,
    partitions_def: dg.PartitionsDefinition | None = None,
    key_prefix: str | Sequence[str] | None = None,
    group_name: str | None = None,
    description: str | None = None,
    min_ok_ratio: float | None = None,
    blocking: bool = True,
    retry_policy: RetryOption = "default",
    backfill_policy: dg.BackfillPolicy | None = None,
    io_manager_key: str = "io_manager",
    metadata: Mapping[str, Any] | None = None,
    mode: Mode = "online",
    batch_min_requests: int = 1_000,
    batch_max_wait_s: float | None = None,
    batch: BatchSettings | None = None,
) -> dg.AssetsDefinition:
    """Declare an asset with ``key`` columns + one typed LLM answer per row of ``source``.

    Pass ``spec=GenerateSpec(...)`` or its fields: ``prompt`` is a ``str.format`` template over
    the source's columns (checked now against its declared column schema, and again against the
    real frame before any request); ``output`` is a Pydantic model, an Enum, a ``Literal[...]``
    or ``str``. ``options=`` or its fields as keywords set the Dagster side, as in
    ``embedding_asset`` (``min_ok_ratio`` defaults to 0.9; repair rounds after a batch always
    go online).

    Examples:
        >>> labels = generated_asset(  # doctest: +SKIP
        ...     "review_labels", source=reviews, prompt="Review: {text}", output=ReviewLabel,
        ...     key="review_id", model="gpt-4o-mini")
    """
    flat_spec = {
        "prompt": prompt,
        "output": output,
        "model": model,
        "system": system,
        "output_column": output_column,
        "temperature": temperature,
        "max_tokens": max_tokens,
        "max_repairs": max_repairs,
        "seed": seed,
    }
    spec = spec_from(spec, GenerateSpec, "generated_asset", flat_spec)
    options = resolve_options(
        options,
        "generated_asset",
        pool=pool,
        partitions_def=partitions_def,
        key_prefix=key_prefix,
        group_name=group_name,
        description=description,
        min_ok_ratio=min_ok_ratio,
        blocking=blocking,
        retry_policy=retry_policy,
        backfill_policy=backfill_policy,
        io_manager_key=io_manager_key,
        metadata=metadata,
        mode=mode,
        batch_min_requests=batch_min_requests,
        batch_max_wait_s=batch_max_wait_s,
        batch=batch,
    )
    kind = generate_kind(spec, options.min_ok_ratio)
    return build_llm_asset(name, source, key, kind, options, resource_key)
