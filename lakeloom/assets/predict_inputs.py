"""Training and scoring inputs of the model assets: several assets joined on a key, pinned.

The first input is the base (its rows are the rows); each needed column comes from the first
input that has it; every training input is pinned as a ``lakeloom.ref`` (its Delta version).
"""

import json
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
import polars as pl

from lakeloom.assets.upstream import Source, resolve_source
from lakeloom.core.specs import PredictSpec
from lakeloom.storage.ref import RefError, ref
from lakeloom.storage.settings import Storage

Sources = Source | Mapping[str, Source]


def input_sources(
    sources: Sources,
) -> dict[str, tuple[dg.AssetKey, dg.PartitionsDefinition | None, Mapping]]:
    """Input name → (key, partitions, metadata); a single source is the input ``source``."""
    items = sources.items() if isinstance(sources, Mapping) else [("source", sources)]
    out = {name: resolve_source(src) for name, src in items}
    if not out:
        raise ValueError("name at least one source asset")
    return out


def _root(name: str, columns: Sequence[str]) -> str | None:
    """Find the frame column holding ``name`` (itself, or the struct column of 'col.field')."""
    if name in columns:
        return name
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        if ".".join(parts[:cut]) in columns:
            return ".".join(parts[:cut])
    return None


def join_sources(
    frames: Mapping[str, pl.DataFrame], needed: Sequence[str], join_on: Sequence[str]
) -> pl.DataFrame:
    """Left-join the inputs on ``join_on`` (first input is the base: its rows are the rows).

    Each needed column is taken from the first input that has it; a later input must have
    unique keys, else the join would duplicate rows, and that is refused by name.
    """
    names = list(frames)
    if len(names) == 1:
        return frames[names[0]]
    if not join_on:
        raise ValueError(f"inputs {names} need join_on= naming the key column(s) to join them on")
    base_name = names[0]
    base = frames[base_name]
    taken = set(base.columns)
    for name in names[1:]:
        frame = frames[name]
        missing = [k for k in join_on if k not in frame.columns or k not in base.columns]
        if missing:
            raise ValueError(f"join key(s) {missing} missing from input {name!r} or {base_name!r}")
        wanted = [
            c
            for n in needed
            if (c := _root(n, frame.columns)) and c not in taken and c not in join_on
        ]
        if not wanted:
            continue
        part = frame.select(*join_on, *dict.fromkeys(wanted))
        dupes = part.select(join_on).is_duplicated()
        if dupes.any():
            example = part.filter(dupes).select(join_on).row(0)
            raise ValueError(f"input {name!r} has duplicate join key(s) {join_on}={example}")
        base = base.join(part, on=list(join_on), how="left", nulls_equal=False)
        taken |= set(wanted)
    return base


def pin_inputs(keys: Sequence[dg.AssetKey], storage: Storage) -> list[dict[str, Any]]:
    """Pin each training input as a ``lakeloom.ref`` (Delta version) in JSON-able form."""
    refs = []
    for key in keys:
        try:
            refs.append(json.loads(ref(key, storage=storage).to_json()))
        except RefError:  # stored elsewhere than this storage root: keep the key at least
            refs.append({"asset_key": list(key.path), "uri": None, "version": None})
    return refs


def training_frame(
    spec: PredictSpec, inputs: Mapping[str, pl.DataFrame], join_on: Sequence[str]
) -> pl.DataFrame:
    """The joined frame with the spec's features, target and group column."""
    needed = [*spec.features, spec.target, *([spec.group_column] if spec.group_column else [])]
    return join_sources(inputs, needed, join_on)


def join_keys(join_on: str | Sequence[str] | None) -> tuple[str, ...]:
    """``join_on`` as a tuple of column names."""
    if join_on is None:
        return ()
    return (join_on,) if isinstance(join_on, str) else tuple(join_on)
