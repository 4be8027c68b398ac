"""References as the training functions take them: JSON text of a ``lakeloom.storage.ref.Ref``.

JSON text is what crosses the wire to Modal (small, readable in logs, no pickled objects); these
helpers accept a ``Ref``, its JSON or its dict, open it where the storage is reachable, and move
its URI to the root a Modal container mounts when tables live on a Volume.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import polars as pl

from lakeloom.storage.ref import Ref

RefLike = Ref | str | bytes | Mapping[str, Any]


def as_ref(ref: RefLike) -> Ref:
    """Return ``ref`` as a ``Ref`` (from a Ref, its JSON text, or its dict)."""
    if isinstance(ref, Ref):
        return ref
    if isinstance(ref, str | bytes):
        return Ref.from_json(ref)
    return Ref.model_validate(dict(ref))


def ref_json(ref: RefLike) -> str:
    """Return the JSON text of ``ref``: what the Modal functions receive."""
    return as_ref(ref).to_json()


def remap_root(ref: RefLike, local_root: str, remote_root: str) -> str:
    """Rewrite the URI of ``ref`` from ``local_root`` to ``remote_root`` (e.g. a Volume mount).

    References outside ``local_root`` (already on S3, say) are returned unchanged.
    """
    parsed = as_ref(ref)
    local = local_root.rstrip("/")
    if parsed.uri == local or parsed.uri.startswith(local + "/"):
        uri = remote_root.rstrip("/") + parsed.uri[len(local) :]
        parsed = parsed.model_copy(update={"uri": uri})
    return parsed.to_json()


def open_reference(ref: RefLike) -> pl.DataFrame:
    """Read exactly the referenced partition at the referenced Delta version."""
    return as_ref(ref).lazy().collect()


def ref_dict(ref: RefLike) -> dict[str, Any]:
    """Return ``ref`` as a plain dict (for model lineage metadata)."""
    return json.loads(ref_json(ref))
