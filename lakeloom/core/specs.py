"""The specs, lakeloom's public API: frozen, validated data that also fingerprints itself.

``EmbedSpec``, ``GenerateSpec`` and ``PredictSpec`` say *what* to compute (which column, prompt
and output type, model, parameters, features), never *how* (provider, limits, cache, Dagster
options: those are the engine's and the factories'). A spec's ``version`` hashes exactly what
changes the output, so an edited prompt, schema, model or parameter changes the Dagster code
version of that asset alone, while batch sizes or concurrency do not. :func:`digest` is the one
"16 hex of sha256" of the package: spec versions, code versions and metadata hashes all use it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from functools import cached_property
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lakeloom.core.estimators import get_estimator
from lakeloom.core.features import Task
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


DIGEST_HEX_CHARS = 16


def digest(payload: Any) -> str:
    """16 hex chars of sha256: over ``payload`` itself when it is text, else its canonical JSON.

    Text goes in as is so that a frozen serialization (see ``PredictSpec.version``) or a raw
    prompt hashes exactly as it always has.

    Examples:
        >>> digest({"b": 1, "a": "x"}) == digest('{"a":"x","b":1}')
        True
    """
    text = payload if isinstance(payload, str) else canonical_json(payload)
    return hashlib.sha256(text.encode()).hexdigest()[:DIGEST_HEX_CHARS]


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    def fingerprint(self) -> dict[str, Any]:
        """Return what the version hashes (JSON-able)."""
        raise NotImplementedError

    @property
    def version(self) -> str:
        """16 hex chars of sha256 over :meth:`fingerprint`: the asset's code version."""
        return digest(self.fingerprint())


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


Metric = Literal["accuracy", "f1_macro", "roc_auc", "log_loss", "rmse", "mae", "r2"]
CLASSIFICATION_METRICS: tuple[Metric, ...] = ("accuracy", "f1_macro", "roc_auc", "log_loss")
REGRESSION_METRICS: tuple[Metric, ...] = ("rmse", "mae", "r2")
LOWER_IS_BETTER: frozenset[str] = frozenset({"log_loss", "rmse", "mae"})
GridValue = bool | int | float | str | None

# Fields that change how fast a run goes but never what it computes: left out of the spec hash.
_EXECUTION_ONLY = {"n_jobs"}


class PredictSpec(_Spec):
    """Features, target, estimator, grid and cross-validation plan of one model.

    Examples:
        >>> spec = PredictSpec(
        ...     features=("embedding", "length", "source"),
        ...     target="labels.sentiment",
        ...     estimator="lightgbm",
        ...     param_grid={"num_leaves": (15, 31)},
        ... )
        >>> spec.outer_folds, spec.inner_folds
        (5, 3)
    """

    features: tuple[str, ...] = Field(
        min_length=1,
        description="Feature columns: numeric, categorical/enum/string, or list[f32] embeddings; "
        "'column.field' addresses a struct field.",
    )
    target: str = Field(description="Target column (or 'column.field'); null rows are unlabelled.")
    task: Task | None = Field(
        None, description="classification or regression; None infers (float → regression)."
    )
    categorical: tuple[str, ...] = Field(
        (), description="Features to treat as categorical even though they are numeric."
    )
    estimator: str = Field("lightgbm", description="Registered estimator name.")
    param_grid: dict[str, tuple[GridValue, ...]] = Field(
        default_factory=dict,
        description="Hyper-parameter grid searched by the inner CV; empty → estimator's default.",
    )
    outer_folds: int = Field(5, ge=2, le=50, description="Folds of the unbiased outer estimate.")
    inner_folds: int = Field(3, ge=2, le=50, description="Folds of the inner grid search.")
    stratify: bool = Field(True, description="Stratify folds on the class (classification only).")
    group_column: str | None = Field(
        None, description="Rows sharing a value of this column never straddle train and test."
    )
    scoring: Metric | None = Field(
        None, description="Inner-search metric; None → log_loss (classification) or rmse."
    )
    seed: int = Field(0, description="Seeds the fold shuffles and the estimators.")
    n_jobs: int = Field(1, description="Outer folds run in parallel (joblib); -1 = all cores.")
    estimator_threads: int = Field(
        1, ge=1, description="Threads per estimator fit; keep 1 when folds run in parallel."
    )

    @field_validator("param_grid", mode="before")
    @classmethod
    def _grid_lists(cls, grid: Any) -> Any:
        """Accept scalars and lists for grid values; every value becomes a non-empty tuple."""
        if not isinstance(grid, dict):
            return grid
        out = {}
        for key, values in grid.items():
            values = tuple(values) if isinstance(values, list | tuple) else (values,)
            if not values:
                raise ValueError(f"param_grid[{key!r}] is empty")
            out[key] = values
        return out

    @model_validator(mode="after")
    def _consistent(self) -> PredictSpec:
        entry = get_estimator(self.estimator)
        entry.check_params(list(self.param_grid))
        if self.target in self.features:
            raise ValueError(f"target {self.target!r} is also listed as a feature")
        if len(set(self.features)) != len(self.features):
            raise ValueError(f"duplicate features in {self.features}")
        unknown = set(self.categorical) - set(self.features)
        if unknown:
            raise ValueError(f"categorical columns {sorted(unknown)} are not in features")
        if self.scoring is not None and self.task is not None:
            allowed = (
                CLASSIFICATION_METRICS if self.task == "classification" else REGRESSION_METRICS
            )
            if self.scoring not in allowed:
                raise ValueError(f"scoring {self.scoring!r} does not apply to {self.task}")
        if self.n_jobs == 0:
            raise ValueError("n_jobs must be a positive number of workers or -1")
        return self

    def grid(self) -> dict[str, tuple[Any, ...]]:
        """Return the declared grid, or the estimator's default one when none is declared."""
        if self.param_grid:
            return dict(self.param_grid)
        return {k: tuple(v) for k, v in get_estimator(self.estimator).default_grid.items()}

    def scoring_for(self, task: Task) -> Metric:
        """Return the inner-search metric for ``task``."""
        if self.scoring is not None:
            return self.scoring
        return "log_loss" if task == "classification" else "rmse"

    def fingerprint(self) -> dict[str, Any]:
        """Every field that changes the result (not ``n_jobs``)."""
        return self.model_dump(mode="json", exclude=_EXECUTION_ONLY)

    @property
    def version(self) -> str:
        """16 hex of sha256 over the fingerprint as ASCII-escaped JSON (stored models carry it).

        Escaped, not raw UTF-8 as the LLM specs: that is the hash PredictSpec has always had, so
        code versions and stored model cards of non-ASCII feature names stay what they were.
        """
        return digest(json.dumps(self.fingerprint(), sort_keys=True, separators=(",", ":")))

    def spec_hash(self) -> str:
        """The same value as :attr:`version`: the name model cards and the model store use."""
        return self.version
