"""lakeloom: LLM-powered columns as partitioned Dagster assets stored as Delta tables.

The public API, one import away: the specs (what to compute), the asset factories and their
options (the Dagster side), the resources, the Delta IO manager and ``ref`` (a pinned reference to
an asset's Delta table)::

    from lakeloom import GenerateSpec, generated_asset, LLMResource, DeltaIOManager

Every name loads on first use (module ``__getattr__``), so ``import lakeloom`` imports neither
Dagster nor polars: a Modal container or ``lakeloom sql`` pays only for what it touches.
``lakeloom.ref`` is the :mod:`lakeloom.storage.ref` module made callable: ``lakeloom.ref("a/b")``
calls :func:`lakeloom.storage.ref.ref` however the module was first imported.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the same names as _HOMES, for type checkers and IDEs
    from lakeloom.assets.factories import embedding_asset as embedding_asset
    from lakeloom.assets.factories import generated_asset as generated_asset
    from lakeloom.assets.options import AssetOptions as AssetOptions
    from lakeloom.assets.predict import cv_report_asset as cv_report_asset
    from lakeloom.assets.predict import model_asset as model_asset
    from lakeloom.assets.predict import prediction_asset as prediction_asset
    from lakeloom.assets.sources import file_source_asset as file_source_asset
    from lakeloom.core.specs import EmbedSpec as EmbedSpec
    from lakeloom.core.specs import GenerateSpec as GenerateSpec
    from lakeloom.core.specs import PredictSpec as PredictSpec
    from lakeloom.engine.batch.runner import BatchSettings as BatchSettings
    from lakeloom.io_managers.io_manager import DeltaIOManager as DeltaIOManager
    from lakeloom.resources.duckdb import DuckDBCatalogResource as DuckDBCatalogResource
    from lakeloom.resources.llm import LLMResource as LLMResource
    from lakeloom.resources.modal import ModalResource as ModalResource
    from lakeloom.storage.ref import Ref as Ref
    from lakeloom.storage.ref import ref as ref

# Public name -> the module that defines it (tests/test_public_api.py checks that it matches the
# TYPE_CHECKING imports above and that every name resolves).
_HOMES: dict[str, str] = {
    # specs: what to compute
    "EmbedSpec": "lakeloom.core.specs",
    "GenerateSpec": "lakeloom.core.specs",
    "PredictSpec": "lakeloom.core.specs",
    # factories and their Dagster-side options
    "generated_asset": "lakeloom.assets.factories",
    "embedding_asset": "lakeloom.assets.factories",
    "file_source_asset": "lakeloom.assets.sources",
    "cv_report_asset": "lakeloom.assets.predict",
    "model_asset": "lakeloom.assets.predict",
    "prediction_asset": "lakeloom.assets.predict",
    "AssetOptions": "lakeloom.assets.options",
    "BatchSettings": "lakeloom.engine.batch.runner",
    # resources and the IO manager
    "LLMResource": "lakeloom.resources.llm",
    "DuckDBCatalogResource": "lakeloom.resources.duckdb",
    "ModalResource": "lakeloom.resources.modal",
    "DeltaIOManager": "lakeloom.io_managers.io_manager",
    # references to asset tables
    "Ref": "lakeloom.storage.ref",
    "ref": "lakeloom.storage.ref",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    """Import the module that defines ``name`` on first use, then keep the name here."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'lakeloom' has no attribute {name!r}")
    module = importlib.import_module(home)
    value = module if name == "ref" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
