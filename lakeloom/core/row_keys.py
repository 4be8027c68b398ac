"""Row identity: the key columns that name a row, checked before any spend, and shown in errors.

An LLM asset's ``key`` must identify each input row: a re-run of failed rows finds the stored
row by its key, and an error a person reads names the row by it (``ticket_id=B9``), never by
its position in a batch. Duplicate or null keys are refused before the first request, naming
the key column(s), the offending values and example rows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import polars as pl

_SHOWN = 5


class RowKeyError(ValueError):
    """An input's key columns do not identify its rows (duplicates or nulls)."""


def _value(v: Any) -> str:
    return "null" if v is None else str(v)


def label(row: dict[str, Any]) -> str:
    """``ticket_id=B9`` (several columns: ``shop=north, ticket=7``)."""
    return ", ".join(f"{k}={_value(v)}" for k, v in row.items())


def row_labels(df: pl.DataFrame, keys: Sequence[str] | None) -> list[str] | None:
    """One label per row from its key columns (``None`` when there are none to use)."""
    cols = [k for k in (keys or []) if k in df.columns]
    if not cols:
        return None
    return [label(r) for r in df.select(cols).iter_rows(named=True)]


def name_rows(labels: Sequence[str], *, limit: int = _SHOWN) -> str:
    """``ticket_id=B9, ticket_id=C1 and 3 more``."""
    shown = ", ".join(labels[:limit])
    return shown + (f" and {len(labels) - limit} more" if len(labels) > limit else "")


def _examples(df: pl.DataFrame, mask: pl.Series, columns: Sequence[str]) -> str:
    rows = df.filter(mask).head(3).select(columns).iter_rows(named=True)
    return "; ".join(json.dumps(r, default=str, ensure_ascii=False) for r in rows)


def check_unique_keys(
    df: pl.DataFrame, keys: Sequence[str], *, where: str, unique_within: Sequence[str] = ()
) -> None:
    """Raise when a key column holds a null, or the key repeats (within ``unique_within``).

    ``unique_within`` are columns the key only has to be unique inside (partition columns).
    """
    keys = [k for k in keys if k in df.columns]
    if not keys or df.is_empty():
        return
    named = ", ".join(repr(k) for k in keys)
    shown = list(dict.fromkeys([*keys, *unique_within, *df.columns[:6]]))
    problems: list[str] = []
    nulls = pl.any_horizontal([pl.col(k).is_null() for k in keys])
    null_mask = df.select(nulls.alias("n"))["n"]
    if null_mask.any():
        problems.append(
            f"{int(null_mask.sum())} row(s) with a null key; e.g. {_examples(df, null_mask, shown)}"
        )
    group = list(dict.fromkeys([*keys, *(c for c in unique_within if c in df.columns)]))
    dup_mask = df.select(pl.struct(group).is_duplicated().alias("d"))["d"] & ~null_mask
    if dup_mask.any():
        repeated = (
            df.filter(dup_mask)
            .group_by(group, maintain_order=True)
            .len()
            .sort("len", descending=True, maintain_order=True)
        )
        values = [
            f"{label({k: r[k] for k in keys})} ({r['len']} rows)"
            for r in repeated.head(_SHOWN).iter_rows(named=True)
        ]
        more = f" and {repeated.height - _SHOWN} more" if repeated.height > _SHOWN else ""
        problems.append(
            f"{repeated.height} duplicated key value(s): {', '.join(values)}{more}; "
            f"e.g. {_examples(df, dup_mask, shown)}"
        )
    if problems:
        scope = f" within {', '.join(unique_within)}" if unique_within else ""
        raise RowKeyError(
            f"key column(s) {named} must be unique{scope} and non-null in {where}: "
            + "; ".join(problems)
            + ". Nothing was sent: fix the source, or pass a key that identifies each row"
        )
