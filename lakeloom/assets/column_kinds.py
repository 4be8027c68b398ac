"""What differs between an embedding column and a generated column, as one small object each.

``ColumnKind`` holds a spec's checks, compute step, value column and asset checks, so that
:mod:`lakeloom.assets.llm_asset` builds both kinds of asset with one code path.

No ``from __future__ import annotations``: the module sits beside Dagster definitions that read
real annotations.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import dagster as dg
import polars as pl

from lakeloom.assets import checks
from lakeloom.core.embed import run_embed
from lakeloom.core.generate import run_generate
from lakeloom.core.provenance import ColumnStats
from lakeloom.core.specs import EmbedSpec, GenerateSpec, digest
from lakeloom.engine.types import RunContext

Compute = Callable[..., tuple[pl.DataFrame, ColumnStats, dict[str, Any]]]


@dataclass(frozen=True)
class ColumnKind:
    """One LLM column kind bound to its spec: everything the shared asset builder varies on."""

    kind: Literal["embed", "generate"]
    spec: EmbedSpec | GenerateSpec
    description: str
    value_column: tuple[str, str, str]
    min_ok_ratio: float
    validate: Callable[[Mapping[str, Any], str], None]
    compute: Compute
    more_check_specs: Callable[[dg.AssetKey], list[dg.AssetCheckSpec]]
    extra_checks: Callable[[pl.DataFrame], list[dg.AssetCheckResult]]


def spec_from(spec: Any, cls: type, factory: str, flat: Mapping[str, Any]) -> Any:
    """``spec`` itself, or one built from the factory's flat keywords; never a mix of both."""
    if spec is None:
        missing = [n for n, f in cls.model_fields.items() if f.is_required() and flat[n] is None]
        if missing:
            raise ValueError(f"{factory}: pass spec= or {', '.join(f'{n}=' for n in missing)}")
        return cls(**flat)
    if not isinstance(spec, cls):
        raise TypeError(f"{factory}: spec must be a {cls.__name__}, not {type(spec).__name__}")
    fields = cls.model_fields
    mixed = [
        n
        for n, v in flat.items()
        if (v is not None if fields[n].is_required() else v != fields[n].default)
    ]
    if mixed:
        raise ValueError(f"{factory}: {mixed} belong in the {cls.__name__}; pass spec= alone")
    return spec


def embed_kind(spec: EmbedSpec, min_ok_ratio: float | None) -> ColumnKind:
    """The embedding column of ``spec``: a ``list[f32]`` per row, checked for one width."""
    width = f"list<float32>[{spec.dimensions}]" if spec.dimensions else "list<float32>"

    def compute(
        resource: Any,
        upstream: pl.DataFrame,
        keep: list[str],
        run: RunContext,
        log: Any,
        runner_for: Callable[[Any], Any] = lambda engine: engine,
        supersedes: Sequence[str | None] | None = None,
        label_columns: Sequence[str] | None = None,
    ) -> tuple[pl.DataFrame, ColumnStats, dict[str, Any]]:
        engine = runner_for(resource.engine(progress=log))
        frame, stats = run_embed(upstream, spec, engine, keep=keep, context=run)
        widths = frame[spec.output_column].list.len().drop_nulls().unique().to_list()
        return frame, stats, {"model": spec.model, "spec_version": spec.version, "widths": widths}

    return ColumnKind(
        kind="embed",
        spec=spec,
        description=f"Embeddings of {spec.column!r} with {spec.model}.",
        value_column=(spec.output_column, width, f"embedding of {spec.column!r} by {spec.model}"),
        min_ok_ratio=0.99 if min_ok_ratio is None else min_ok_ratio,
        validate=lambda schema, where: spec.validate_input(schema, where=where),
        compute=compute,
        more_check_specs=lambda key: [checks.embedding_width_spec(key)],
        extra_checks=lambda df: [
            checks.check_embedding_width(df, spec.output_column, spec.dimensions)
        ],
    )


def generate_kind(spec: GenerateSpec, min_ok_ratio: float | None) -> ColumnKind:
    """The generated column of ``spec``: one typed value per row, enums checked for values."""
    schema = spec.schema
    allowed = schema.allowed

    def compute(
        resource: Any,
        upstream: pl.DataFrame,
        keep: list[str],
        run: RunContext,
        log: Any,
        runner_for: Callable[[Any], Any] = lambda engine: engine,
        supersedes: Sequence[str | None] | None = None,
        label_columns: Sequence[str] | None = None,
    ) -> tuple[pl.DataFrame, ColumnStats, dict[str, Any]]:
        engine = runner_for(resource.engine(progress=log))
        mode = resource.structured_output
        frame, stats = run_generate(
            upstream,
            spec,
            engine,
            keep=keep,
            structured_output=mode,
            context=run,
            supersedes=supersedes,
            label_columns=label_columns,
        )
        extra = {
            "model": spec.model,
            "spec_version": spec.version,
            "prompt_hash": digest(spec.prompt),
            "schema_hash": digest(schema.schema_json),
            "structured_output": mode,
        }
        return frame, stats, extra

    def extra_checks(df: pl.DataFrame) -> list[dg.AssetCheckResult]:
        return [checks.check_enum_values(df, spec.output_column, allowed)] if allowed else []

    return ColumnKind(
        kind="generate",
        spec=spec,
        description=f"{schema.name} per row from {spec.model}: {spec.prompt!r}",
        value_column=(spec.output_column, str(schema.dtype).lower(), schema.descriptions()),
        min_ok_ratio=0.9 if min_ok_ratio is None else min_ok_ratio,
        validate=lambda columns, where: spec.validate_input(_polars_only(columns), where=where),
        compute=compute,
        more_check_specs=(lambda key: [checks.enum_values_spec(key)]) if allowed else lambda k: [],
        extra_checks=extra_checks,
    )


def _polars_only(columns: Mapping[str, Any]) -> Mapping[str, Any]:
    """Keep column names only: declared Dagster types are strings (the frame's are checked)."""
    return {k: (v if isinstance(v, pl.DataType) else None) for k, v in columns.items()}
