"""lakeloom: LLM-powered columns as partitioned Dagster assets stored as Delta tables.

``lakeloom.ref`` and ``lakeloom.Ref`` load on first use, so ``import lakeloom`` stays light.
``lakeloom.ref`` is the :mod:`lakeloom.storage.ref` module made callable: ``lakeloom.ref("a/b")``
calls :func:`lakeloom.storage.ref.ref` however the module was first imported.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lakeloom.storage.ref import Ref as Ref
    from lakeloom.storage.ref import ref as ref

__all__ = ["Ref", "ref"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        module = importlib.import_module("lakeloom.storage.ref")
        return module if name == "ref" else module.Ref
    raise AttributeError(f"module 'lakeloom' has no attribute {name!r}")
