"""Forecast an LLM asset before a backfill: rows, cache hits, tokens, dollars, time; sends nothing.

``forecast_asset`` finds the asset (built by ``embedding_asset``/``generated_asset``) in a
``Definitions`` object, reads its upstream partitions through the upstream's IO manager (as a
run would), and runs the asset's own functional core with a dry-run
:class:`~lakeloom.engine.modes.ModeRunner`: the same prompts, embedding batches and request hashes
as a real run, one join against the response cache, the same pre-flight checks (prices, context
windows), token counts, and duration at the limits a run would obey now (configured, else learned
by the shared limiter). Output tokens come from the model's cached history when there is one,
else from ``max_tokens`` (an upper bound): the forecast says which.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import polars as pl

from lakeloom.assets.run_modes import LLMColumn, column_of
from lakeloom.engine.estimate import Forecast
from lakeloom.engine.keys import cache_keys
from lakeloom.engine.modes import Mode, ModeRunner, current_limits
from lakeloom.engine.provider import MissingAPIKeyError

BATCH_WINDOW = "within the 24 h completion window (often much sooner)"


class ForecastError(ValueError):
    """The asset cannot be forecast as asked (unknown asset, not an LLM asset, bad partition)."""


@dataclass(slots=True)
class AssetForecast:
    """The forecast of one asset over some partitions."""

    asset: str
    partitions: list[str] | None
    rows: int
    rows_skipped: int
    rows_cached: int
    mode: str
    limits: str
    forecast: Forecast
    input_basis: str = "tokenizer estimate"
    models: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Flat JSON-ready values."""
        fc = self.forecast.as_metadata()
        return {
            "asset": self.asset,
            "partitions": self.partitions,
            "rows": self.rows,
            "rows_skipped": self.rows_skipped,
            "rows_cached": self.rows_cached,
            "mode": self.mode,
            "requests": fc["rows"],
            "requests_cached": fc["cache_hits"],
            "requests_to_send": fc["to_send"] if fc["requests"] is None else fc["requests"],
            "input_tokens": fc["input_tokens"],
            "input_basis": self.input_basis,
            "output_tokens": fc["output_tokens"],
            "output_basis": fc["output_basis"],
            "online_usd": fc["online_usd"],
            "batch_usd": fc["batch_usd"],
            "online_duration_s": fc["duration_s"],
            "rpm": fc["rpm"],
            "tpm": fc["tpm"],
            "limits": self.limits,
            "models": fc["models"],
        }

    def render(self) -> str:
        """A short human-readable report."""
        d, fc = self.as_dict(), self.forecast
        parts = ", ".join(self.partitions) if self.partitions else "all"
        duration = (
            f"~{fc.duration_s:,.0f} s at {fc.rpm or '-'} rpm / {fc.tpm or '-'} tpm ({self.limits})"
            if fc.duration_s is not None
            else "unknown (no rpm/tpm configured or learned yet)"
        )
        mark = {"online": " <- this run", "batch": ""}
        batch_mark = " <- this run" if self.mode == "batch" else ""
        lines = [
            f"forecast for {self.asset} (partitions: {parts})",
            f"  rows               {d['rows']:>14,}  ({d['rows_skipped']:,} skipped: null/blank)",
            f"  rows from cache    {d['rows_cached']:>14,}",
            f"  requests           {d['requests']:>14,}  ({d['requests_cached']:,} cached)",
            f"  requests to send   {d['requests_to_send']:>14,}",
            f"  input tokens       {d['input_tokens']:>14,}  ({self.input_basis})",
            f"  output tokens      {d['output_tokens']:>14,}  ({d['output_basis']})",
            f"  online USD         {fc.online_usd:>14,.4f}  {duration}{mark.get(self.mode, '')}",
            f"  batch USD          {fc.batch_usd:>14,.4f}  {BATCH_WINDOW}{batch_mark}",
            "nothing was sent.",
        ]
        return "\n".join(lines)


def load_definitions(module: str) -> dg.Definitions:
    """Import ``module`` (``pkg.mod`` or ``pkg.mod:attr``) and return its Definitions."""
    name, _, attr = module.partition(":")
    loaded = importlib.import_module(name)
    if attr:
        value = getattr(loaded, attr)
        return value() if callable(value) and not isinstance(value, dg.Definitions) else value
    found = [v for v in vars(loaded).values() if isinstance(v, dg.Definitions)]
    if len(found) != 1:
        raise ForecastError(
            f"module {name!r} has {len(found)} Definitions objects; use {name}:ATTR"
        )
    return found[0]


def find_asset(defs: dg.Definitions, asset: str) -> tuple[dg.AssetsDefinition, LLMColumn]:
    """The asset definition and its ``LLMColumn`` (raises ``ForecastError``)."""
    key = dg.AssetKey.from_user_string(asset)
    graph = defs.resolve_asset_graph()
    if not graph.has(key):
        llm = sorted(
            n.key.to_user_string()
            for n in graph.asset_nodes
            if n.assets_def is not None and column_of(n.assets_def) is not None
        )
        raise ForecastError(f"no asset {asset!r}; LLM assets here: {', '.join(llm) or '(none)'}")
    assets_def = graph.get(key).assets_def
    column = column_of(assets_def) if assets_def is not None else None
    if column is None or column.source_key is None:
        raise ForecastError(
            f"{asset!r} is not an LLM asset (made by embedding_asset/generated_asset)"
        )
    return assets_def, column


def _upstream(
    defs: dg.Definitions, column: LLMColumn
) -> tuple[str, dg.PartitionsDefinition | None, dict[str, Any]]:
    graph = defs.resolve_asset_graph()
    key = column.source_key
    assert key is not None
    node = graph.get(key)
    io_key = "io_manager"
    if node.assets_def is not None:
        io_key = node.assets_def.get_io_manager_key_for_asset_key(key)
    return io_key, node.partitions_def, dict(node.metadata or {})


def read_upstream(
    io_manager: Any,
    column: LLMColumn,
    partitions_def: dg.PartitionsDefinition | None,
    metadata: dict[str, Any],
    partitions: Sequence[str] | None,
) -> pl.DataFrame:
    """Read the upstream rows a run of ``partitions`` would read (all rows when None)."""
    key = column.source_key
    upstream_output = dg.build_output_context(asset_key=key, definition_metadata=metadata)
    if partitions is None or partitions_def is None:
        context = dg.build_input_context(asset_key=key, upstream_output=upstream_output)
        return io_manager.load_input(context)
    frames = []
    for partition in partitions:
        context = dg.build_input_context(
            asset_key=key,
            partition_key=partition,
            asset_partitions_def=partitions_def,
            upstream_output=upstream_output,
        )
        frames.append(io_manager.load_input(context))
    return pl.concat(frames, how="vertical_relaxed")


def _engine(llm: Any) -> Any:
    """The resource's engine; a forecast needs no API key (nothing is sent)."""
    try:
        return llm.engine()
    except MissingAPIKeyError:
        return llm.model_copy(update={"api_key": "unused-by-a-forecast"}).engine()


def forecast_asset(
    defs: dg.Definitions,
    asset: str,
    *,
    partitions: Sequence[str] | None = None,
    mode: Mode | None = None,
) -> AssetForecast:
    """Forecast materializing ``partitions`` (None: every upstream row) of ``asset``."""
    assets_def, column = find_asset(defs, asset)
    io_key, pdef, metadata = _upstream(defs, column)
    if partitions is not None and pdef is None:
        raise ForecastError(f"{asset!r} is not partitioned: drop --partitions")
    if partitions is not None and isinstance(pdef, dg.StaticPartitionsDefinition):
        unknown = sorted(set(partitions) - set(pdef.get_partition_keys()))
        if unknown:
            raise ForecastError(
                f"unknown partition(s) {unknown} of {asset!r}; known: {pdef.get_partition_keys()}"
            )
    resources = dict(defs.resources or {})
    missing = [k for k in (io_key, column.resource_key) if k not in resources]
    if missing:
        raise ForecastError(f"the Definitions have no resource(s) {missing} for {asset!r}")
    wanted = {"io": resources[io_key], "llm": resources[column.resource_key]}
    with dg.build_resources(wanted) as built:
        df = read_upstream(built.io, column, pdef, metadata, partitions)
        engine = _engine(built.llm)
        runner = ModeRunner(
            engine,
            mode=mode or column.mode,
            batch=column.batch,
            batch_min_requests=column.batch_min_requests,
            dry_run=True,
        )
        structured = getattr(built.llm, "structured_output", None)
        frame, _ = column.run(df, runner, structured_output=structured)
        if runner.forecast is None:  # nothing to send at all (every row skipped)
            runner.forecast = Forecast(0, 0, 0, 0, 0, "none", 0.0, 0.0, None, None, None)
        hashes = frame["_request_hash"].drop_nulls().unique()
        cached = set()
        if hashes.len():
            ckeys = cache_keys(hashes, engine.provider.cache_namespace)
            matched = engine.match(pl.DataFrame({"cache_key": ckeys}))
            cached = set(hashes.filter(matched["response"].is_not_null()).to_list())
        rpm, tpm, basis = current_limits(engine)
    fc = runner.forecast
    chosen = runner.mode
    if chosen == "auto":
        to_send = fc.to_send if fc.requests is None else fc.requests
        chosen = "batch" if to_send >= column.batch_min_requests else "online"
    return AssetForecast(
        asset=assets_def.key.to_user_string(),
        partitions=list(partitions) if partitions is not None else None,
        rows=frame.height,
        rows_skipped=int((frame["_status"] == "skipped").sum()),
        rows_cached=int(frame["_request_hash"].is_in(list(cached)).sum()) if cached else 0,
        mode=chosen,
        limits=basis,
        forecast=fc,
        input_basis=runner.input_basis or "tokenizer estimate",
        models=dict(fc.models),
    )
