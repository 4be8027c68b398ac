"""How factories accept an upstream asset: a definition, a spec, a source asset or a bare key."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

Source = dg.AssetsDefinition | dg.AssetSpec | dg.SourceAsset | dg.AssetKey | str | Sequence[str]


def resolve_source(
    source: Source,
) -> tuple[dg.AssetKey, dg.PartitionsDefinition | None, Mapping[str, Any]]:
    """Return the source's key, partitions and definition metadata (empty for a bare key)."""
    if isinstance(source, dg.AssetsDefinition):
        key = source.key
        return key, source.partitions_def, source.specs_by_key[key].metadata
    if isinstance(source, dg.AssetSpec | dg.SourceAsset):
        return source.key, source.partitions_def, source.metadata or {}
    return dg.AssetKey.from_coercible(source), None, {}
