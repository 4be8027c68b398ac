"""Typed outputs: a Pydantic model, an Enum, a ``Literal[...]`` or ``str`` → polars/Delta types.

The table schema of a generated column is derived from the declared output type, never inferred
from the data, so a partition where every row failed still has the right columns and types.
Mapping (checked when the output is declared, so an unsupported type fails before any request):

* ``BaseModel`` → ``pl.Struct`` (nested models → nested structs), ``list[X]``/``tuple[X, ...]``
  → ``pl.List``, ``X | None`` → the same type (every polars column is nullable);
* ``Enum`` / ``Literal`` of strings → ``pl.String`` (allowed values are kept for the asset check;
  ``pl.Enum`` is not used because Delta has no dictionary type), of ints → ``pl.Int64``;
* ``str``/``int``/``float``/``bool``/``date``/``datetime``/``Decimal`` → the obvious scalars.

``dict`` and multi-type unions are refused: strict JSON-schema output cannot express them and a
Delta column needs one type.
"""

from __future__ import annotations

import datetime as dt
import enum
import types
import typing
from decimal import Decimal
from functools import cached_property
from typing import Any, Literal, get_args, get_origin

import polars as pl
from pydantic import BaseModel, ConfigDict, TypeAdapter, create_model

from lakeloom.engine.keys import canonical_json

OutputKind = Literal["model", "enum", "literal", "str"]

_SCALARS: dict[type, pl.DataType] = {
    str: pl.String(),
    int: pl.Int64(),
    float: pl.Float64(),
    bool: pl.Boolean(),
    Decimal: pl.Float64(),
    dt.date: pl.Date(),
    dt.datetime: pl.Datetime("us", "UTC"),
}


class UnsupportedOutputType(TypeError):
    """An output type that cannot become a Delta column or a strict JSON schema."""


def _strip(tp: Any) -> tuple[Any, bool]:
    """Remove ``Annotated`` and ``None`` from a union; return (type, nullable)."""
    while get_origin(tp) is typing.Annotated:
        tp = get_args(tp)[0]
    origin = get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) != 1:
            raise UnsupportedOutputType(
                f"union {tp!r} has several non-null types; a Delta column needs exactly one"
            )
        return _strip(args[0])[0], True
    return tp, False


def _values_dtype(values: list[Any], where: str) -> pl.DataType:
    if all(isinstance(v, bool) for v in values):
        return pl.Boolean()
    if all(isinstance(v, str) for v in values):
        return pl.String()
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return pl.Int64()
    raise UnsupportedOutputType(f"{where}: values {values!r} must all be str, all int or all bool")


def polars_dtype(tp: Any, where: str = "output") -> pl.DataType:
    """Map a Python/Pydantic annotation to its polars dtype (see the module docstring)."""
    tp, _ = _strip(tp)
    origin = get_origin(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return pl.Struct(
            {
                name: polars_dtype(field.annotation, f"{where}.{name}")
                for name, field in tp.model_fields.items()
            }
        )
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _values_dtype([m.value for m in tp], where)
    if origin is Literal:
        return _values_dtype(list(get_args(tp)), where)
    if origin in (list, tuple, set, frozenset):
        args = [a for a in get_args(tp) if a is not Ellipsis]
        if len(args) != 1:
            raise UnsupportedOutputType(f"{where}: use list[X] / tuple[X, ...], not {tp!r}")
        return pl.List(polars_dtype(args[0], f"{where}[]"))
    if tp in _SCALARS:
        return _SCALARS[tp]
    for scalar in (dt.datetime, dt.date, str, bool, int, float, Decimal):  # subclasses
        if isinstance(tp, type) and issubclass(tp, scalar):
            return _SCALARS[scalar]
    raise UnsupportedOutputType(
        f"{where}: type {tp!r} is not supported (dicts/Any/unions cannot be a strict JSON schema "
        "or one Delta column; use a nested model or a list)"
    )


def allowed_values(tp: Any, path: str = "") -> dict[str, list[Any]]:
    """Every enum/literal leaf of ``tp`` by dotted path (``[]`` marks list items)."""
    tp, _ = _strip(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        out: dict[str, list[Any]] = {}
        for name, field in tp.model_fields.items():
            out.update(allowed_values(field.annotation, f"{path}.{name}" if path else name))
        return out
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {path: [m.value for m in tp]}
    if get_origin(tp) is Literal:
        return {path: list(get_args(tp))}
    if get_origin(tp) in (list, tuple, set, frozenset):
        args = [a for a in get_args(tp) if a is not Ellipsis]
        return allowed_values(args[0], f"{path}[]")
    return {}


def to_plain(value: Any) -> Any:
    """Pydantic-validated Python → values polars accepts (enums by value, models as dicts)."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, BaseModel):
        return {name: to_plain(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_plain(v) for v in value]
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)
    return value


class OutputSchema:
    """A declared output type with everything derived from it: dtype, JSON schema, parser.

    Non-model outputs (Enum, Literal) are wrapped in a one-field object ``{"value": ...}`` because
    JSON-schema response formats need an object root; ``str`` is free text (no schema).

    Examples:
        >>> OutputSchema(Literal["pos", "neg"]).parse('{"value": "pos"}')
        'pos'
    """

    def __init__(self, output: Any) -> None:
        self.output = output
        tp, _ = _strip(output)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            self.kind: OutputKind = "model"
        elif isinstance(tp, type) and issubclass(tp, enum.Enum):
            self.kind = "enum"
        elif get_origin(tp) is Literal:
            self.kind = "literal"
        elif tp is str:
            self.kind = "str"
        else:
            raise UnsupportedOutputType(
                f"output must be a Pydantic model, an Enum, a Literal[...] or str, not {output!r}"
            )
        self.dtype = polars_dtype(tp)
        self._tp = tp

    @property
    def name(self) -> str:
        """A readable name for logs and the response format (``Review``, ``Sentiment``)."""
        return getattr(self._tp, "__name__", None) or self.kind.capitalize()

    @cached_property
    def wire_model(self) -> type[BaseModel] | None:
        """The object model the provider must answer with (``None`` for free text)."""
        if self.kind == "model":
            return self._tp
        if self.kind == "str":
            return None
        return create_model("Answer", __config__=ConfigDict(extra="forbid"), value=(self._tp, ...))

    @cached_property
    def json_schema(self) -> dict[str, Any] | None:
        """The strict JSON schema of the answer (OpenAI strict rules: all keys required)."""
        if self.wire_model is None:
            return None
        # The SDK's strict-schema builder, imported here: a Modal training container that only
        # reads a PredictSpec from this package never needs the openai package.
        from openai.lib._pydantic import to_strict_json_schema

        return to_strict_json_schema(self.wire_model)

    @cached_property
    def schema_json(self) -> str:
        """Canonical text of the JSON schema: part of the code version and of every request."""
        return canonical_json(self.json_schema if self.json_schema is not None else "text")

    @cached_property
    def _adapter(self) -> TypeAdapter[Any]:
        return TypeAdapter(self.wire_model) if self.wire_model else TypeAdapter(str)

    def parse(self, text: str | None) -> Any:
        """Validate one answer and return its plain value; raises ``ValueError`` with the reason.

        Pydantic's ``ValidationError`` is a ``ValueError``: its message is what the re-ask sends
        back to the model.
        """
        if text is None:
            raise ValueError("the response has no message content")
        if self.kind == "str":
            value = text.strip()
            if not value:
                raise ValueError("the response is empty")
            return value
        parsed = self._adapter.validate_json(_strip_fences(text))
        if self.kind == "model":
            return to_plain(parsed)
        return to_plain(parsed.value)

    @cached_property
    def allowed(self) -> dict[str, list[Any]]:
        """Enum/literal leaves by dotted path below the value column (``""`` = the column)."""
        return allowed_values(self._tp)

    def series(self, name: str, values: list[Any]) -> pl.Series:
        """Build a column of parsed values (``None`` for failed rows) with the declared dtype."""
        return pl.Series(name, values, dtype=self.dtype, strict=False)

    def descriptions(self) -> str:
        """One line per field with its Pydantic description: the Dagster column description."""
        if self.kind == "model":
            return describe_model(self._tp)
        if self.allowed:
            return "one of " + ", ".join(repr(v) for v in self.allowed[""])
        return "free text"


def describe_model(model: type[BaseModel], prefix: str = "") -> str:
    """``field (type): description`` lines for a model and its nested models."""
    lines: list[str] = []
    if not prefix and model.__doc__:
        lines.append(model.__doc__.strip().splitlines()[0])
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        dtype = polars_dtype(field.annotation, path)
        desc = f" — {field.description}" if field.description else ""
        lines.append(f"{path} ({_short(dtype)}){desc}")
        inner, _ = _strip(field.annotation)
        while get_origin(inner) in (list, tuple, set, frozenset):
            inner, _ = _strip(next(a for a in get_args(inner) if a is not Ellipsis))
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            lines.append(describe_model(inner, f"{path}."))
    return "\n".join(lines)


def _short(dtype: pl.DataType) -> str:
    if isinstance(dtype, pl.Struct):
        return "struct"
    if isinstance(dtype, pl.List):
        return f"list<{_short(dtype.inner)}>"
    return str(dtype).lower()


def _strip_fences(text: str) -> str:
    """Drop a Markdown code fence around JSON (prompt-only models often add one)."""
    body = text.strip()
    if body.startswith("```"):
        body = body.split("\n", 1)[1] if "\n" in body else body[3:]
        if body.rstrip().endswith("```"):
            body = body.rstrip()[:-3]
    return body.strip()


def inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """Replace every local ``$ref`` by its definition (the result has no ``$defs``).

    Some grammar compilers (llama.cpp's JSON-schema → GBNF) handle inline schemas best.
    Recursive models are refused: they cannot be inlined.
    """
    defs = schema.get("$defs", {})

    def walk(node: Any, seen: tuple[str, ...]) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                name = ref.removeprefix("#/$defs/")
                if name in seen:
                    raise UnsupportedOutputType(f"recursive model {name!r} cannot be inlined")
                rest = {k: v for k, v in node.items() if k != "$ref"}
                return {**walk(defs[name], (*seen, name)), **walk(rest, seen)}
            return {k: walk(v, seen) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [walk(v, seen) for v in node]
        return node

    return walk(schema, ())
