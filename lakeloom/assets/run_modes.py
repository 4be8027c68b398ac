"""Backfill controls of LLM assets: online / Batch API / auto mode, per-run overrides, dry runs.

The factory sets an asset's default (``mode``, ``batch_min_requests``, ``batch_max_wait_s``,
``batch``). A run overrides it with run config (``dry_run``, ``mode``, when the asset's config
class has them) or with tags, which the launchpad and the backfill dialog both let you set:
``lakeloom/mode`` = ``online`` | ``batch`` | ``auto`` and ``lakeloom/dry_run`` = ``true``.

Every run forecasts before it sends (rows, cache hits, tokens, online and batch dollars, duration
at the current limits) and logs the forecast; the materialization metadata carries it as
``forecast_*``. A dry run stops there: nothing is sent, nothing is materialized, the step records
an ``AssetObservation`` with the forecast, and its checks report "not evaluated" (WARN).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import dagster as dg
import polars as pl

from lakeloom.core.embed import run_embed
from lakeloom.core.generate import run_generate
from lakeloom.core.provenance import ColumnStats
from lakeloom.core.specs import EmbedSpec, GenerateSpec
from lakeloom.engine.batch.runner import BatchSettings
from lakeloom.engine.modes import Mode, ModeRunner
from lakeloom.engine.types import RunContext

MODE_TAG = "lakeloom/mode"
DRY_RUN_TAG = "lakeloom/dry_run"
ATTRIBUTE = "lakeloom_column"
_MODES = ("online", "batch", "auto")


@dataclass(frozen=True)
class LLMColumn:
    """An LLM asset as data: what the forecast needs to plan its requests exactly as a run would."""

    kind: Literal["embed", "generate"]
    spec: EmbedSpec | GenerateSpec
    resource_key: str
    mode: Mode = "online"
    batch: BatchSettings = field(default_factory=BatchSettings)
    batch_min_requests: int = 1_000
    source_key: dg.AssetKey | None = None
    keep: tuple[str, ...] = ()

    def run(
        self,
        df: pl.DataFrame,
        runner: Any,
        *,
        structured_output: Any = None,
        context: RunContext | None = None,
    ) -> tuple[pl.DataFrame, ColumnStats]:
        """Run the functional core over ``df`` with ``runner`` (an engine or a ModeRunner)."""
        keep = list(self.keep) or None
        if isinstance(self.spec, EmbedSpec):
            return run_embed(df, self.spec, runner, keep=keep, context=context)
        return run_generate(
            df, self.spec, runner, keep=keep, structured_output=structured_output, context=context
        )


def column_settings(
    kind: Literal["embed", "generate"],
    spec: EmbedSpec | GenerateSpec,
    resource_key: str,
    *,
    mode: Mode,
    batch: BatchSettings | None,
    batch_min_requests: int,
    batch_max_wait_s: float | None,
) -> LLMColumn:
    """Check the factory's mode arguments (at definition time) and bundle them."""
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {list(_MODES)}, got {mode!r}")
    accepted = batch_max_wait_s is not None or (
        batch is not None and "max_wait_s" in batch.model_fields_set
    )
    if mode == "auto" and not accepted:
        raise ValueError(
            "mode='auto' sends big runs through the Batch API, which may take up to 24 h: accept "
            "that latency with batch_max_wait_s=<seconds> (or BatchSettings(max_wait_s=...))"
        )
    settings = batch or BatchSettings()
    if batch_max_wait_s is not None:
        settings = BatchSettings(**{**settings.model_dump(), "max_wait_s": batch_max_wait_s})
    return LLMColumn(kind, spec, resource_key, mode, settings, batch_min_requests)


def attach(asset: dg.AssetsDefinition, column: LLMColumn) -> dg.AssetsDefinition:
    """Keep ``column`` on the asset's compute function, where ``column_of`` finds it again."""
    setattr(asset.op.compute_fn.decorated_fn, ATTRIBUTE, column)  # type: ignore[union-attr]
    return asset


def column_of(asset: dg.AssetsDefinition) -> LLMColumn | None:
    """The ``LLMColumn`` of an asset built by the factories (None for any other asset)."""
    fn = getattr(getattr(asset.op, "compute_fn", None), "decorated_fn", None)
    return getattr(fn, ATTRIBUTE, None)


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def run_options(tags: Mapping[str, str], config: Any, column: LLMColumn) -> tuple[Mode, bool]:
    """(mode, dry_run) of this run: run config, else tags, else the asset's default."""
    mode = getattr(config, "mode", None) or tags.get(MODE_TAG) or column.mode
    if mode not in _MODES:
        raise ValueError(f"run tag {MODE_TAG}={mode!r}: expected one of {list(_MODES)}")
    dry = getattr(config, "dry_run", None)
    dry_run = bool(dry) if dry is not None else _truthy(tags.get(DRY_RUN_TAG, ""))
    return mode, dry_run  # type: ignore[return-value]


def make_runner(
    engine: Any, column: LLMColumn, *, mode: Mode, dry_run: bool, log: Callable[[str], Any]
) -> ModeRunner:
    """The runner an asset hands to the core: forecast, then dry run / online / batch."""
    return ModeRunner(
        engine,
        mode=mode,
        batch=column.batch,
        batch_min_requests=column.batch_min_requests,
        dry_run=dry_run,
        on_forecast=log,
    )


def dry_run_events(
    context: dg.AssetExecutionContext, asset_key: dg.AssetKey, runner: ModeRunner
) -> Iterator[dg.AssetObservation | dg.AssetCheckResult]:
    """What a dry run records: the forecast as an observation; checks not evaluated."""
    metadata = runner.metadata()
    if context.has_partition_key_range:
        metadata["partitions"] = dg.MetadataValue.json(list(context.partition_keys))
    yield dg.AssetObservation(asset_key=asset_key, metadata=metadata)
    for key in sorted(context.selected_asset_check_keys, key=str):
        yield dg.AssetCheckResult(
            asset_key=key.asset_key,
            check_name=key.name,
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description="not evaluated: dry run (nothing was sent or materialized)",
            metadata={"dry_run": True},
        )
