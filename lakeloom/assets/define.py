"""``define_asset``: ``dg.asset`` without Dagster's beta notice on ``backfill_policy``.

Single-run backfills are what lakeloom wants for LLM columns and partitioned sources (one
engine, one cache join per backfill), and Dagster marks the parameter beta with a warning on
every asset definition, flooding every command. The notice is silenced for the factories' own
decorator calls only: a user's ``dg.asset(backfill_policy=...)`` still warns as Dagster intends.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import dagster as dg


def define_asset(**kwargs: Any) -> Callable[[Callable[..., Any]], dg.AssetsDefinition]:
    """``dg.asset(**kwargs)``, its ``backfill_policy`` BetaWarning silenced for this call only."""
    with warnings.catch_warnings():  # Dagster warns when dg.asset(...) is called, not applied
        warnings.filterwarnings(
            "ignore", message="Parameter `backfill_policy`", category=dg.BetaWarning
        )
        return dg.asset(**kwargs)
