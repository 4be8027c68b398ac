"""Turn polars columns into the numeric matrix tree ensembles eat, with a schema frozen at fit time.

A :class:`FeatureSchema` is inferred once from the training frame (column kinds, embedding widths,
category vocabularies) and then reused verbatim for every later frame, so a category unseen at fit
time becomes a missing value instead of shifting every other code, and a frame that lacks a
feature fails with the feature's name before any model runs. Embedding columns (``list[f32]`` or
``Array``) are expanded with ``list.to_array(width).to_numpy()``: one vectorized copy, no Python
loop over rows. Struct fields are addressed as ``"column.field"`` (generated columns are structs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

FeatureKind = Literal["numeric", "categorical", "embedding"]
Task = Literal["classification", "regression"]
_CATEGORICAL_DTYPES = (pl.String, pl.Categorical, pl.Enum)
_TEXT_DTYPES = ("String", "Categorical", "Enum")


class FeatureMismatchError(ValueError):
    """A frame does not carry the features (or target) a model or spec expects."""


def resolve_column(df: pl.DataFrame, name: str) -> pl.Series:
    """Get column ``name``, or a struct field addressed as ``"column.field"`` (nested allowed)."""
    if name in df.columns:
        return df.get_column(name)
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        root = ".".join(parts[:cut])
        if root in df.columns and isinstance(df.schema[root], pl.Struct):
            series = df.get_column(root)
            for field in parts[cut:]:
                fields = [f.name for f in series.dtype.fields]  # type: ignore[union-attr]
                if field not in fields:
                    raise FeatureMismatchError(
                        f"struct column {root!r} has no field {field!r} (fields: {fields})"
                    )
                series = series.struct.field(field)
            return series.alias(name)
    raise FeatureMismatchError(
        f"frame has no column {name!r} (columns: {', '.join(df.columns) or 'none'})"
    )


def _kind_of(series: pl.Series, force_categorical: bool) -> FeatureKind:
    dtype = series.dtype
    if force_categorical or isinstance(dtype, _CATEGORICAL_DTYPES):
        return "categorical"
    if isinstance(dtype, pl.List | pl.Array):
        if not dtype.inner.is_numeric():  # type: ignore[union-attr]
            raise FeatureMismatchError(
                f"column {series.name!r} is a list of {dtype.inner}, not of numbers"  # type: ignore[union-attr]
            )
        return "embedding"
    if dtype.is_numeric() or dtype == pl.Boolean:
        return "numeric"
    raise FeatureMismatchError(
        f"column {series.name!r} has dtype {dtype}, which is not a numeric, categorical, "
        "string or embedding (list of numbers) feature"
    )


def _embedding_width(series: pl.Series) -> int:
    if isinstance(series.dtype, pl.Array):
        return int(series.dtype.size)
    widths = series.list.len().drop_nulls().unique()
    if widths.len() == 0:
        raise FeatureMismatchError(f"embedding column {series.name!r} has no non-null rows")
    if widths.len() > 1:
        raise FeatureMismatchError(
            f"embedding column {series.name!r} mixes widths {sorted(widths.to_list())}"
        )
    return int(widths[0])


class FeatureColumn(BaseModel):
    """One input column as the model saw it at fit time (JSON-able for the model store)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="Column name, or 'column.field' for a struct field.")
    kind: FeatureKind
    dtype: str = Field(description="polars dtype at fit time, for messages and metadata.")
    width: int = Field(1, ge=1, description="Matrix columns this feature expands to.")
    categories: tuple[str, ...] = Field((), description="Vocabulary fixed at fit time.")

    def kind_of(self, series: pl.Series) -> FeatureKind:
        """Kind of ``series`` seen through this column: numbers stay categorical only if forced."""
        forced = self.kind == "categorical" and not self.dtype.startswith(_TEXT_DTYPES)
        return _kind_of(series, forced)

    def to_matrix(self, df: pl.DataFrame) -> np.ndarray:
        """Build this feature's ``(n, width)`` float block; nulls and unseen categories are NaN."""
        series = resolve_column(df, self.name)
        kind = self.kind_of(series)
        if kind != self.kind:
            raise FeatureMismatchError(
                f"feature {self.name!r} was {self.kind} ({self.dtype}) at fit time "
                f"but is {series.dtype} here"
            )
        if kind == "embedding":
            if isinstance(series.dtype, pl.List):
                bad = series.list.len().ne(self.width).fill_null(False)
                if bad.any():
                    row = int(bad.arg_true()[0])
                    raise FeatureMismatchError(
                        f"embedding {self.name!r} has width {series[row].len()} at row {row}, "
                        f"expected {self.width}"
                    )
                series = series.list.to_array(self.width)
            elif series.dtype.size != self.width:  # type: ignore[union-attr]
                raise FeatureMismatchError(
                    f"embedding {self.name!r} has width {series.dtype.size}, "  # type: ignore[union-attr]
                    f"expected {self.width}"
                )
            block = series.to_numpy()
            if not np.issubdtype(block.dtype, np.floating):
                block = block.astype(np.float64)
            return block
        if kind == "categorical":
            codes = series.cast(pl.String).replace_strict(
                list(self.categories),
                list(range(len(self.categories))),
                default=None,
                return_dtype=pl.Float32,
            )
            return codes.to_numpy().reshape(-1, 1)
        return series.cast(pl.Float64).to_numpy().reshape(-1, 1)


class FeatureSchema(BaseModel):
    """The ordered feature columns of a model; builds matrices and checks frames against itself.

    Examples:
        >>> df = pl.DataFrame({"x": [1.0, 2.0], "c": ["a", "b"], "e": [[0.1, 0.2], [0.3, 0.4]]})
        >>> schema = FeatureSchema.infer(df, ["x", "c", "e"])
        >>> schema.matrix(df).shape
        (2, 4)
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    columns: tuple[FeatureColumn, ...]

    @classmethod
    def infer(
        cls, df: pl.DataFrame, features: Sequence[str], categorical: Sequence[str] = ()
    ) -> FeatureSchema:
        """Kinds, widths and vocabularies from a training frame."""
        unknown = set(categorical) - set(features)
        if unknown:
            raise FeatureMismatchError(f"categorical columns {sorted(unknown)} are not features")
        columns = []
        for name in features:
            series = resolve_column(df, name)
            kind = _kind_of(series, name in categorical)
            width, categories = 1, ()
            if kind == "embedding":
                width = _embedding_width(series)
            elif kind == "categorical":
                categories = tuple(sorted(series.cast(pl.String).drop_nulls().unique().to_list()))
            columns.append(
                FeatureColumn(
                    name=name,
                    kind=kind,
                    dtype=str(series.dtype),
                    width=width,
                    categories=categories,
                )
            )
        return cls(columns=tuple(columns))

    @property
    def names(self) -> list[str]:
        """Input column names in model order."""
        return [c.name for c in self.columns]

    @property
    def n_matrix_columns(self) -> int:
        """Width of the matrix :meth:`matrix` builds."""
        return sum(c.width for c in self.columns)

    @property
    def categorical_indices(self) -> list[int]:
        """Matrix column index of every categorical feature."""
        out, offset = [], 0
        for c in self.columns:
            if c.kind == "categorical":
                out.append(offset)
            offset += c.width
        return out

    @property
    def categorical_cardinalities(self) -> list[int]:
        """Vocabulary size of every categorical feature, in :attr:`categorical_indices` order."""
        return [len(c.categories) for c in self.columns if c.kind == "categorical"]

    def matrix_column_names(self) -> list[str]:
        """One name per matrix column (``emb[0]``, ``emb[1]``, ... for embeddings)."""
        names: list[str] = []
        for c in self.columns:
            names.extend([c.name] if c.width == 1 else [f"{c.name}[{i}]" for i in range(c.width)])
        return names

    def check(self, df: pl.DataFrame) -> None:
        """Raise :class:`FeatureMismatchError` naming every missing or incompatible feature."""
        problems = []
        for column in self.columns:
            try:
                series = resolve_column(df, column.name)
                kind = column.kind_of(series)
            except FeatureMismatchError as exc:
                problems.append(f"missing feature {column.name!r}: {exc}")
                continue
            if kind != column.kind:
                problems.append(
                    f"feature {column.name!r} was {column.kind} ({column.dtype}) at fit time "
                    f"but is {series.dtype} here"
                )
            elif kind == "embedding" and len(series.drop_nulls()) > 0:
                width = _embedding_width(series)
                if width != column.width:
                    problems.append(
                        f"embedding {column.name!r} has width {width}, expected {column.width}"
                    )
        if problems:
            raise FeatureMismatchError(
                "frame does not match the model's features: " + "; ".join(problems)
            )

    def matrix(self, df: pl.DataFrame) -> np.ndarray:
        """Build the ``(n_rows, n_matrix_columns)`` matrix; float32 unless a part needs float64."""
        self.check(df)
        blocks = [c.to_matrix(df) for c in self.columns]
        dtype = np.result_type(*[b.dtype for b in blocks])
        if len(blocks) == 1:
            return np.ascontiguousarray(blocks[0], dtype=dtype)
        return np.concatenate(blocks, axis=1, dtype=dtype)


class TargetInfo(BaseModel):
    """What the model predicts: the column, the task and (for classification) the class labels."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    task: Task
    dtype: str = Field(description="polars dtype of the target at fit time.")
    classes: tuple[Any, ...] = Field((), description="Class labels in code order (classification).")
    enum_categories: tuple[str, ...] | None = Field(
        None, description="All categories of an Enum target, to give predictions the same dtype."
    )

    @classmethod
    def infer(cls, series: pl.Series, task: Task | None) -> TargetInfo:
        """Task (floats → regression, anything else → classification) and the observed classes."""
        dtype = series.dtype
        if task is None:
            task = "regression" if dtype.is_float() else "classification"
        if task == "regression":
            if not (dtype.is_numeric() or dtype == pl.Boolean):
                raise FeatureMismatchError(
                    f"regression target {series.name!r} has non-numeric dtype {dtype}"
                )
            return cls(name=series.name, task=task, dtype=str(dtype))
        if isinstance(dtype, pl.List | pl.Array | pl.Struct):
            raise FeatureMismatchError(
                f"classification target {series.name!r} has dtype {dtype}; pick a scalar field"
            )
        enum_categories = None
        if isinstance(dtype, pl.Enum):
            enum_categories = tuple(dtype.categories.to_list())
            seen = set(series.drop_nulls().cast(pl.String).to_list())
            classes = tuple(c for c in enum_categories if c in seen)
        else:
            values = series.drop_nulls()
            if isinstance(dtype, pl.Categorical):
                values = values.cast(pl.String)
            classes = tuple(values.unique().sort().to_list())
        if len(classes) < 2:
            raise FeatureMismatchError(
                f"classification target {series.name!r} needs 2+ classes, got {list(classes)}"
            )
        return cls(
            name=series.name,
            task=task,
            dtype=str(dtype),
            classes=classes,
            enum_categories=enum_categories,
        )

    def encode(self, series: pl.Series) -> np.ndarray:
        """Labels → codes ``0..K-1`` (classification) or floats (regression); nulls not allowed."""
        if series.null_count():
            raise FeatureMismatchError(f"target {self.name!r} has {series.null_count()} null rows")
        if self.task == "regression":
            return series.cast(pl.Float64).to_numpy()
        values = (
            series.cast(pl.String)
            if self.enum_categories or series.dtype == pl.Categorical
            else series
        )
        codes = values.replace_strict(
            list(self.classes), list(range(len(self.classes))), default=None, return_dtype=pl.Int64
        )
        if codes.null_count():
            unknown = values.filter(codes.is_null()).unique().to_list()[:5]
            raise FeatureMismatchError(f"target {self.name!r} has unknown classes {unknown}")
        return codes.to_numpy()

    def decode(self, codes: np.ndarray, name: str) -> pl.Series:
        """Codes → a label series with the target's dtype (an Enum target stays an Enum)."""
        if self.task == "regression":
            return pl.Series(name, np.asarray(codes, dtype=np.float64))
        labels = pl.Series(name, list(self.classes)).gather(np.asarray(codes, dtype=np.int64))
        if self.enum_categories is not None:
            return labels.cast(pl.Enum(list(self.enum_categories)))
        return labels

    @property
    def n_classes(self) -> int:
        """Number of classes (0 for regression)."""
        return len(self.classes)
