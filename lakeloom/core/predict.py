"""Train and apply tree ensembles over embeddings and features: the public face of the predict core.

``nested_cv`` estimates how good a spec is; ``fit`` trains the model to keep (grid search by inner
CV on all labelled rows, then a refit on all of them); ``predict`` adds prediction and per-class
probability columns to any frame with the model's features, row for row. Everything is polars in,
polars out, with no Dagster import, so the same calls run in assets, notebooks and Modal.

Examples:
    >>> df = pl.DataFrame({"x": [float(i) for i in range(40)], "y": ["lo"] * 20 + ["hi"] * 20})
    >>> spec = PredictSpec(
    ...     features=("x",), target="y", estimator="random_forest",
    ...     param_grid={"n_estimators": (10,)}, outer_folds=2, inner_folds=2,
    ... )
    >>> nested_cv(df, spec).filter(pl.col("kind") == "mean")["accuracy"].item() > 0.9
    True
    >>> predict(fit(df, spec), df.drop("y"))["prediction"].to_list()[:3]
    ['lo', 'lo', 'lo']
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
from threadpoolctl import threadpool_limits

from lakeloom.core.cv import (
    NestedCVResult,
    TrainingData,
    evaluate,
    nested_cv,
    prepare_training_data,
    run_outer_fold,
    select_params,
)
from lakeloom.core.estimators import (
    EstimatorEntry,
    get_estimator,
    predict_proba_full,
    register_estimator,
)
from lakeloom.core.features import FeatureMismatchError, FeatureSchema, TargetInfo
from lakeloom.core.specs import PredictSpec

__all__ = [
    "EstimatorEntry",
    "FeatureMismatchError",
    "NestedCVResult",
    "TrainedModel",
    "TrainingData",
    "evaluate",
    "fit",
    "fit_prepared",
    "nested_cv",
    "predict",
    "prepare_training_data",
    "register_estimator",
    "run_outer_fold",
]


@dataclass
class TrainedModel:
    """A fitted estimator with the schema, target and spec it was fitted under (picklable)."""

    estimator: Any
    spec: PredictSpec
    schema: FeatureSchema
    target: TargetInfo
    best_params: dict[str, Any]
    inner_score: float
    n_train: int
    fit_seconds: float
    info: dict[str, Any] = field(default_factory=dict)  # set by the model store on load
    # sorted digests of the feature rows it was fitted on: predictions flag in-sample rows
    train_rows: np.ndarray | None = None

    def check(self, df: pl.DataFrame) -> None:
        """Raise :class:`FeatureMismatchError` when ``df`` cannot feed this model."""
        self.schema.check(df)

    @property
    def classes(self) -> tuple[Any, ...]:
        """Class labels in probability-column order (empty for regression)."""
        return self.target.classes


def fit_prepared(data: TrainingData, spec: PredictSpec) -> TrainedModel:
    """Select params by inner CV over all rows of ``data``, then refit on all of them.

    The arrays-in counterpart of :func:`fit`, for a Modal function that already built ``data``.
    """
    start = time.perf_counter()
    rows = np.arange(len(data.y))
    with threadpool_limits(limits=spec.estimator_threads):
        params, inner_score = select_params(data, spec, rows)
        est, fit_kwargs = get_estimator(spec.estimator).build(
            data.target.task, params, spec.seed, spec.estimator_threads, data.layout
        )
        est.fit(data.X, data.y, **fit_kwargs)
    return TrainedModel(
        estimator=est,
        spec=spec,
        schema=data.schema,
        target=data.target,
        best_params=dict(params),
        inner_score=inner_score,
        n_train=len(rows),
        fit_seconds=time.perf_counter() - start,
        train_rows=np.unique(row_digests(data.X)),
    )


def row_digests(X: np.ndarray) -> np.ndarray:
    """A stable 64-bit digest of each feature row (its float64 bytes), to recognise seen rows."""
    rows = np.ascontiguousarray(X, dtype=np.float64)
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest()) for row in rows),
        dtype=np.uint64,
        count=len(rows),
    )


def fit(df: pl.DataFrame, spec: PredictSpec) -> TrainedModel:
    """Train the final model on every labelled row of ``df`` (null-target rows are skipped)."""
    return fit_prepared(prepare_training_data(df, spec), spec)


def predict(
    model: TrainedModel,
    df: pl.DataFrame,
    *,
    prediction_column: str = "prediction",
    proba_prefix: str = "proba_",
) -> pl.DataFrame:
    """``df`` plus a prediction column and, for classifiers, one ``proba_<class>`` column per class.

    N rows in, N rows out, in order. Nulls and categories unseen at fit time are treated as
    missing values; a missing feature raises :class:`FeatureMismatchError` naming it.
    ``_in_training`` is true where the row's features are exactly those of a training row: its
    prediction is in-sample, so judge the model by its nested-CV report, not by those rows.
    """
    X = model.schema.matrix(df)
    if model.target.task == "regression":
        pred = np.asarray(model.estimator.predict(X), dtype=np.float64) if len(X) else np.empty(0)
        columns = [model.target.decode(pred, prediction_column)]
    else:
        n_classes = model.target.n_classes
        proba = (
            predict_proba_full(model.estimator, X, n_classes)
            if len(X)
            else np.empty((0, n_classes))
        )
        columns = [model.target.decode(proba.argmax(axis=1), prediction_column)]
        columns += [
            pl.Series(f"{proba_prefix}{label}", proba[:, i], dtype=pl.Float64)
            for i, label in enumerate(model.target.classes)
        ]
    seen = getattr(model, "train_rows", None)  # None: a model stored before the flag existed
    if seen is not None:
        flags = np.isin(row_digests(X), seen) if len(X) else np.empty(0, dtype=bool)
        columns.append(pl.Series("_in_training", flags, dtype=pl.Boolean))
    clash = [c.name for c in columns if c.name in df.columns]
    if clash:
        raise ValueError(f"frame already has output column(s) {clash}; drop or rename them")
    return df.with_columns(columns)
