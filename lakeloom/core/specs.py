"""Column transformations as data: frozen, validated specs that also fingerprint themselves.

A spec says *what* to compute (which column, which prompt and output type, which model and
parameters), never *how* (provider, limits, cache: those are the engine's). Its ``version`` hashes
exactly what changes the output, so an edited prompt, schema, model or parameter changes the
Dagster code version of that asset alone, while batch sizes or concurrency do not.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from functools import cached_property
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lakeloom.core.prompt import PromptTemplate
from lakeloom.core.schema import OutputSchema
from lakeloom.engine.keys import canonical_json

StructuredOutput = Literal["json_schema", "json_object", "none"]
"""How a provider takes a JSON schema (the engine's ``ProviderConfig.structured_output``).

* ``json_schema``: OpenAI ``response_format={"type": "json_schema", "json_schema": {...,
  "strict": true}}`` (OpenAI, Azure, vLLM, the simulator);
* ``json_object``: ``{"type": "json_object", "schema": {...}}`` (llama.cpp's server,
  grammar-constrained; it rejects ``json_schema``);
* ``none``: no response format; the schema is spelled out in the system message.
"""


def _digest(payload: Any) -> str:
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:16]


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    def fingerprint(self) -> dict[str, Any]:
        """Return what the version hashes (JSON-able)."""
        raise NotImplementedError

    @property
    def version(self) -> str:
        """16 hex chars of sha256 over :meth:`fingerprint`: the asset's code version."""
        return _digest(self.fingerprint())


class EmbedSpec(_Spec):
    """Embed one text column with one model into a fixed-width ``list[f32]`` column.

    Examples:
        >>> spec = EmbedSpec(column="text", model="text-embedding-3-small", dimensions=256)
        >>> spec.output_column
        'embedding'
    """

    column: str = Field(description="Text column to embed.")
    model: str = Field(min_length=1, description="Embedding model id as the provider names it.")
    output_column: str = Field("embedding", description="Name of the vector column.")
    dimensions: int | None = Field(
        None, ge=1, le=65_536, description="Requested width (OpenAI `dimensions`); None = native."
    )
    batch_size: int = Field(
        128, ge=1, le=2048, description="Texts per embeddings request (the API takes lists)."
    )
    encoding_format: Literal["base64", "float"] = Field(
        "base64",
        description="Wire format of the vectors: base64 float32 (compact and cheap to parse; "
        "OpenAI, Azure, vLLM, TEI, llama.cpp) or JSON floats for servers without base64.",
    )
    long_text: Literal["error", "truncate", "chunk_mean"] = Field(
        "error",
        description="A text over the model's per-input token limit: 'error' (that row's error), "
        "'truncate' (embed its first max_input_tokens tokens) or 'chunk_mean' (embed windows "
        "of that size; the vector is the L2-normalized mean of theirs).",
    )

    def fingerprint(self) -> dict[str, Any]:
        """Column, model, width and long-text handling change the vectors; batching does not.

        ``long_text`` joins the fingerprint only when it is not the default, so the code version
        of every existing embedding asset stays what it was.
        """
        out: dict[str, Any] = {
            "kind": "embed",
            "column": self.column,
            "model": self.model,
            "dimensions": self.dimensions,
        }
        if self.long_text != "error":
            out["long_text"] = self.long_text
        return out

    def validate_input(
        self, schema: Mapping[str, Any] | Iterable[str], where: str = "input"
    ) -> None:
        """Fail before any request when the text column is missing or does not hold text."""
        columns = list(schema)
        if self.column not in columns:
            raise ValueError(
                f"embedding column {self.column!r} is not in the {where}; its columns are: "
                f"{', '.join(columns) or '(none)'}"
            )
        dtype = schema[self.column] if isinstance(schema, Mapping) else None
        text_types = (pl.String, pl.Categorical, pl.Enum, pl.Null)
        if isinstance(dtype, pl.DataType) and not isinstance(dtype, text_types):
            raise ValueError(
                f"embedding column {self.column!r} in the {where} must hold text, not {dtype}"
            )


class GenerateSpec(_Spec):
    """Generate one typed value per row from a prompt template over the row's columns.

    Examples:
        >>> from typing import Literal
        >>> spec = GenerateSpec(prompt="Review: {text}", output=Literal["pos", "neg"], model="m")
        >>> spec.template.fields
        ('text',)
    """

    prompt: str = Field(description="Template over row columns: 'Review: {text}' (str.format).")
    output: Any = Field(description="Pydantic model, Enum, Literal[...] or str.")
    model: str = Field(min_length=1, description="Chat model id as the provider names it.")
    system: str | None = Field(None, description="Optional system message (constant text).")
    output_column: str = Field("output", description="Name of the value column.")
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature.")
    max_tokens: int = Field(512, ge=1, le=1_000_000, description="Max output tokens per request.")
    max_repairs: int = Field(
        2, ge=0, le=10, description="Re-asks with the validation error before a row is an error."
    )
    seed: int | None = Field(None, description="Provider sampling seed, when supported.")

    @field_validator("output")
    @classmethod
    def _check_output(cls, value: Any) -> Any:
        OutputSchema(value)  # raises UnsupportedOutputType with the offending field
        return value

    @field_validator("prompt")
    @classmethod
    def _check_prompt(cls, value: str) -> str:
        PromptTemplate(value)
        return value

    @field_validator("system")
    @classmethod
    def _check_system(cls, value: str | None) -> str | None:
        if value is not None and PromptTemplate(value).fields:
            raise ValueError("the system message is constant text; put row fields in the prompt")
        return value

    @model_validator(mode="after")
    def _check_names(self) -> GenerateSpec:
        if self.output_column.startswith("_"):
            raise ValueError(f"output_column {self.output_column!r}: '_' names are provenance")
        return self

    @cached_property
    def template(self) -> PromptTemplate:
        """The parsed prompt template."""
        return PromptTemplate(self.prompt)

    @cached_property
    def schema(self) -> OutputSchema:
        """The output type with its dtype, JSON schema and parser."""
        return OutputSchema(self.output)

    def fingerprint(self) -> dict[str, Any]:
        """Prompt, system message, output JSON schema, model and sampling parameters."""
        return {
            "kind": "generate",
            "prompt": self.prompt,
            "system": self.system,
            "schema": self.schema.schema_json,
            "model": self.model,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "max_repairs": self.max_repairs,
            "seed": self.seed,
        }

    def validate_input(
        self, schema: Mapping[str, Any] | Iterable[str], where: str = "input"
    ) -> None:
        """Fail before any request when the prompt names a column the input lacks."""
        self.template.validate(schema, where=where)
