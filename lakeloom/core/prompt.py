"""Prompt templates over row columns, checked against the input schema when they are declared.

Syntax: Python ``str.format`` fields naming columns, ``"Review of {product}: {text}"``; ``{{`` and
``}}`` are literal braces. A field is a whole column name (no attribute/index access, no format
spec or conversion), so a template renders as one vectorized polars expression over the frame,
not a Python loop, and a typo fails at definition time with the column name instead of at row
40,000.
"""

from __future__ import annotations

import difflib
import string
from collections.abc import Iterable, Mapping
from functools import cached_property
from typing import Any

import polars as pl

_NESTED = (pl.Struct, pl.List, pl.Array, pl.Object)


class PromptError(ValueError):
    """A template that cannot be rendered over the given columns."""


class PromptTemplate:
    """A ``str.format``-style template whose fields are column names.

    Examples:
        >>> t = PromptTemplate("Review: {text}")
        >>> t.fields
        ('text',)
        >>> pl.DataFrame({"text": ["great"]}).select(t.expr())["prompt"].to_list()
        ['Review: great']
    """

    def __init__(self, template: str) -> None:
        if not isinstance(template, str) or not template.strip():
            raise PromptError("a prompt template must be a non-empty string")
        self.template = template
        self._parts = self._parse(template)

    def __repr__(self) -> str:
        return f"PromptTemplate({self.template!r})"

    @staticmethod
    def _parse(template: str) -> list[tuple[str, str | None]]:
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as exc:
            raise PromptError(f"bad prompt template {template!r}: {exc}") from exc
        parts: list[tuple[str, str | None]] = []
        for literal, field, spec, conversion in parsed:
            if field is not None:
                if not field.strip():
                    raise PromptError(
                        f"prompt template {template!r} has an empty field '{{}}': name a column"
                    )
                if spec or conversion:
                    raise PromptError(
                        f"field {{{field}}} in {template!r}: format specs and conversions are not "
                        "supported; format the column upstream"
                    )
            parts.append((literal, field))
        return parts

    @cached_property
    def fields(self) -> tuple[str, ...]:
        """The referenced column names, in first-use order, without duplicates."""
        return tuple(dict.fromkeys(f for _, f in self._parts if f is not None))

    def validate(self, schema: Mapping[str, Any] | Iterable[str], *, where: str = "input") -> None:
        """Raise ``PromptError`` naming every referenced column missing from ``schema``.

        ``schema`` is a polars schema / ``{name: dtype}`` mapping (dtypes are then checked too:
        nested columns cannot be rendered into text) or just column names.
        """
        columns = dict(schema) if isinstance(schema, Mapping) else dict.fromkeys(schema)
        missing = [f for f in self.fields if f not in columns]
        if missing:
            hints = []
            for name in missing:
                close = difflib.get_close_matches(name, list(columns), n=1)
                hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise PromptError(
                f"prompt {self.template!r} references column(s) {', '.join(hints)} that the "
                f"{where} does not have; its columns are: {', '.join(columns) or '(none)'}"
            )
        for name in self.fields:
            dtype = columns[name]
            if dtype is not None and isinstance(dtype, _NESTED):
                raise PromptError(
                    f"prompt {self.template!r}: column {name!r} is {dtype}, which cannot be "
                    "rendered as text; flatten or format it upstream"
                )

    def expr(self, alias: str = "prompt") -> pl.Expr:
        """Render the prompt per row as an expression (null when a referenced column is null)."""
        pieces: list[pl.Expr] = []
        for literal, field in self._parts:
            if literal:
                pieces.append(pl.lit(literal, dtype=pl.String))
            if field is not None:
                pieces.append(pl.col(field).cast(pl.String))
        if not self.fields:
            return pl.lit(self.render({}), dtype=pl.String).alias(alias)
        return pl.concat_str(pieces, ignore_nulls=False).alias(alias)

    def render(self, row: Mapping[str, Any]) -> str:
        """Render one row in Python (for previews and tests; frames use :meth:`expr`)."""
        out = []
        for literal, field in self._parts:
            out.append(literal)
            if field is not None:
                out.append(str(row[field]))
        return "".join(out)

    def skip_reason(self) -> pl.Expr:
        """Why a row is not sent: a referenced column is null or blank (else null)."""
        reason: pl.Expr = pl.lit(None, dtype=pl.String)
        for name in reversed(self.fields):
            value = pl.col(name)
            reason = (
                pl.when(value.is_null())
                .then(pl.lit(f"null in column {name!r}"))
                .when(value.cast(pl.String).str.strip_chars() == "")
                .then(pl.lit(f"empty value in column {name!r}"))
                .otherwise(reason)
            )
        return reason.alias("_skip_reason")
