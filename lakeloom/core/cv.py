"""Nested cross-validation: honest outer estimates, inner grid search, one picklable fold function.

:func:`run_outer_fold` is the unit of work. It takes only arrays, the spec and a fold index, and
recomputes the fold's split from the spec's seed, so a joblib worker, a Modal container or this
process all compute the same fold from the same inputs without shipping index lists around. The
inner search only ever sees that fold's training rows (slices of ``train_idx``); the outer test
rows are touched once, by the refitted best model, to score it.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from sklearn import metrics as skm
from sklearn.model_selection import (
    GroupKFold,
    KFold,
    ParameterGrid,
    StratifiedGroupKFold,
    StratifiedKFold,
)
from threadpoolctl import threadpool_limits

from lakeloom.core.estimators import Layout, get_estimator, predict_proba_full
from lakeloom.core.features import FeatureMismatchError, FeatureSchema, TargetInfo, resolve_column
from lakeloom.core.specs import (
    CLASSIFICATION_METRICS,
    LOWER_IS_BETTER,
    REGRESSION_METRICS,
    PredictSpec,
)


@dataclass(frozen=True)
class TrainingData:
    """The labelled rows of a frame as arrays, plus the schema and target that produced them."""

    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray | None
    schema: FeatureSchema
    target: TargetInfo

    @property
    def layout(self) -> Layout:
        """Categorical layout the estimator builders need."""
        return Layout(
            n_columns=self.X.shape[1],
            categorical_indices=tuple(self.schema.categorical_indices),
            cardinalities=tuple(self.schema.categorical_cardinalities),
        )


def prepare_training_data(df: pl.DataFrame, spec: PredictSpec) -> TrainingData:
    """Keep labelled rows, infer schema and target from them, build ``X``/``y``/``groups``."""
    target_series = resolve_column(df, spec.target)
    labelled = df.filter(target_series.is_not_null())
    if labelled.height == 0:
        raise FeatureMismatchError(f"target {spec.target!r} has no labelled (non-null) rows")
    target = TargetInfo.infer(resolve_column(labelled, spec.target), spec.task)
    scoring = spec.scoring_for(target.task)
    allowed = CLASSIFICATION_METRICS if target.task == "classification" else REGRESSION_METRICS
    if scoring not in allowed:
        raise ValueError(f"scoring {scoring!r} does not apply to a {target.task} target")
    schema = FeatureSchema.infer(labelled, spec.features, spec.categorical)
    groups = None
    if spec.group_column is not None:
        group_series = resolve_column(labelled, spec.group_column)
        if group_series.null_count():
            raise FeatureMismatchError(f"group column {spec.group_column!r} has null rows")
        groups = group_series.cast(pl.String).to_numpy()
    y = target.encode(resolve_column(labelled, spec.target))
    return TrainingData(X=schema.matrix(labelled), y=y, groups=groups, schema=schema, target=target)


def _splits(
    spec: PredictSpec, target: TargetInfo, n_splits: int, y: np.ndarray, groups: np.ndarray | None
) -> list[tuple[np.ndarray, np.ndarray]]:
    stratified = spec.stratify and target.task == "classification"
    seed = spec.seed
    splitter: Any
    if groups is not None:
        splitter = (
            StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed)
            if stratified
            else GroupKFold(n_splits, shuffle=True, random_state=seed)
        )
    elif stratified:
        splitter = StratifiedKFold(n_splits, shuffle=True, random_state=seed)
    else:
        splitter = KFold(n_splits, shuffle=True, random_state=seed)
    X_stub = np.zeros((len(y), 1))
    return list(splitter.split(X_stub, y, groups))


def outer_splits(data: TrainingData, spec: PredictSpec) -> list[tuple[np.ndarray, np.ndarray]]:
    """Compute the outer (train, test) index pairs, identical wherever they are computed."""
    return _splits(spec, data.target, spec.outer_folds, data.y, data.groups)


def metric(
    name: str, target: TargetInfo, y: np.ndarray, pred: np.ndarray, proba: np.ndarray | None
) -> float:
    """Compute one metric; the inner search computes only the one it optimizes."""
    if name == "rmse":
        return float(math.sqrt(skm.mean_squared_error(y, pred)))
    if name == "mae":
        return float(skm.mean_absolute_error(y, pred))
    if name == "r2":
        return float(skm.r2_score(y, pred)) if len(y) > 1 else float("nan")
    labels = list(range(target.n_classes))
    if name == "accuracy":
        return float(skm.accuracy_score(y, pred))
    if name == "f1_macro":
        return float(skm.f1_score(y, pred, average="macro", labels=labels, zero_division=0))
    assert proba is not None
    if name == "log_loss":
        return float(skm.log_loss(y, np.clip(proba, 1e-15, 1.0), labels=labels))
    if name == "roc_auc":
        try:
            if target.n_classes == 2:
                return float(skm.roc_auc_score(y, proba[:, 1]))
            return float(skm.roc_auc_score(y, proba, multi_class="ovr", labels=labels))
        except ValueError:  # a fold without every class present: AUC is undefined
            return float("nan")
    raise ValueError(f"unknown metric {name!r}")


def fold_metrics(
    target: TargetInfo, y: np.ndarray, pred: np.ndarray, proba: np.ndarray | None
) -> dict[str, float]:
    """Score one fold: accuracy, F1 macro, ROC AUC (ovr), log-loss; RMSE, MAE, R² for regression."""
    names = CLASSIFICATION_METRICS if target.task == "classification" else REGRESSION_METRICS
    return {name: metric(name, target, y, pred, proba) for name in names}


def _fit_predict(
    data: TrainingData,
    spec: PredictSpec,
    params: Mapping[str, Any],
    train_idx: np.ndarray,
    test_idx: np.ndarray,
) -> tuple[Any, np.ndarray, np.ndarray | None]:
    entry = get_estimator(spec.estimator)
    est, fit_kwargs = entry.build(
        data.target.task, params, spec.seed, spec.estimator_threads, data.layout
    )
    est.fit(data.X[train_idx], data.y[train_idx], **fit_kwargs)
    X_test = data.X[test_idx]
    if data.target.task == "regression":
        return est, np.asarray(est.predict(X_test), dtype=np.float64), None
    proba = predict_proba_full(est, X_test, data.target.n_classes)
    return est, proba.argmax(axis=1), proba


def _grid(spec: PredictSpec) -> Iterator[dict[str, Any]]:
    yield from ParameterGrid(spec.grid())


def _improves(score: float, incumbent: float, lower_is_better: bool) -> bool:
    if math.isnan(score):
        return False
    if math.isnan(incumbent):
        return True
    return score < incumbent if lower_is_better else score > incumbent


def select_params(
    data: TrainingData, spec: PredictSpec, rows: np.ndarray
) -> tuple[dict[str, Any], float]:
    """Grid search with ``spec.inner_folds`` folds over ``rows`` only; returns (params, score).

    Ties keep the first grid point (ParameterGrid order), so the choice is deterministic.
    """
    scoring = spec.scoring_for(data.target.task)
    groups = data.groups[rows] if data.groups is not None else None
    inner = _splits(spec, data.target, spec.inner_folds, data.y[rows], groups)
    best: tuple[dict[str, Any], float] | None = None
    for params in _grid(spec):
        scores = []
        for inner_train, inner_val in inner:
            _, pred, proba = _fit_predict(data, spec, params, rows[inner_train], rows[inner_val])
            scores.append(metric(scoring, data.target, data.y[rows[inner_val]], pred, proba))
        finite = [s for s in scores if not math.isnan(s)]
        score = float(np.mean(finite)) if finite else float("nan")
        if best is None or _improves(score, best[1], scoring in LOWER_IS_BETTER):
            best = (params, score)
    assert best is not None
    return best


@dataclass(frozen=True)
class FoldResult:
    """What one outer fold produced: chosen params, scores and its out-of-fold predictions."""

    fold: int
    n_train: int
    test_idx: np.ndarray
    best_params: dict[str, Any]
    inner_score: float
    metrics: dict[str, float]
    pred: np.ndarray
    proba: np.ndarray | None
    seconds: float


def run_outer_fold(data: TrainingData, spec: PredictSpec, fold: int) -> FoldResult:
    """Run outer fold ``fold``: inner search on its training rows, refit, score its test rows.

    Pure and picklable: the same call runs in-process, in a joblib worker or in a Modal function.
    """
    if not 0 <= fold < spec.outer_folds:
        raise ValueError(f"fold {fold} out of range 0..{spec.outer_folds - 1}")
    start = time.perf_counter()
    train_idx, test_idx = outer_splits(data, spec)[fold]
    with threadpool_limits(limits=spec.estimator_threads):  # OpenMP users: HGB, numpy BLAS
        params, inner_score = select_params(data, spec, train_idx)
        _, pred, proba = _fit_predict(data, spec, params, train_idx, test_idx)
    return FoldResult(
        fold=fold,
        n_train=len(train_idx),
        test_idx=test_idx,
        best_params=params,
        inner_score=inner_score,
        metrics=fold_metrics(data.target, data.y[test_idx], pred, proba),
        pred=pred,
        proba=proba,
        seconds=time.perf_counter() - start,
    )


@dataclass(frozen=True)
class NestedCVResult:
    """The per-fold report (one row per fold + mean/std rows) and the out-of-fold predictions."""

    report: pl.DataFrame
    predictions: pl.DataFrame
    target: TargetInfo

    def summary(self) -> dict[str, float]:
        """Mean of every metric over the outer folds."""
        row = self.report.filter(pl.col("kind") == "mean").drop(
            "fold", "kind", "n_train", "n_test", "best_params", "seconds"
        )
        return {k: float(v) for k, v in row.row(0, named=True).items() if v is not None}


def run_folds(data: TrainingData, spec: PredictSpec) -> list[FoldResult]:
    """Every outer fold, in parallel with joblib when ``spec.n_jobs`` != 1."""
    folds = range(spec.outer_folds)
    if spec.n_jobs == 1:
        return [run_outer_fold(data, spec, k) for k in folds]
    from joblib import Parallel, delayed

    wanted = (os.cpu_count() or 1) if spec.n_jobs < 0 else spec.n_jobs
    workers = min(wanted, spec.outer_folds)
    return list(Parallel(n_jobs=workers)(delayed(run_outer_fold)(data, spec, k) for k in folds))


def assemble(data: TrainingData, spec: PredictSpec, results: list[FoldResult]) -> NestedCVResult:
    """Turn fold results (from any executor) into the report and prediction frames."""
    results = sorted(results, key=lambda r: r.fold)
    metric_names = list(results[0].metrics)
    rows = [
        {
            "fold": r.fold,
            "kind": "fold",
            "n_train": r.n_train,
            "n_test": len(r.test_idx),
            **r.metrics,
            "inner_score": r.inner_score,
            "best_params": json.dumps(r.best_params, sort_keys=True),
            "seconds": r.seconds,
        }
        for r in results
    ]
    folds = pl.DataFrame(rows, schema_overrides={"fold": pl.Int32})
    values = [*metric_names, "inner_score", "seconds"]
    mean = folds.select(pl.lit("mean").alias("kind"), *[pl.col(c).mean() for c in values])
    std = folds.select(pl.lit("std").alias("kind"), *[pl.col(c).std() for c in values])
    report = pl.concat([folds, mean, std], how="diagonal_relaxed").select(folds.columns)

    idx = np.concatenate([r.test_idx for r in results])
    pred = np.concatenate([r.pred for r in results])
    columns: dict[str, Any] = {
        "row": idx,
        "fold": np.concatenate([np.full(len(r.test_idx), r.fold) for r in results]),
    }
    frame = pl.DataFrame(columns, schema_overrides={"fold": pl.Int32}).with_columns(
        data.target.decode(data.y[idx], "y_true"), data.target.decode(pred, "y_pred")
    )
    if data.target.task == "classification":
        proba = np.concatenate([r.proba for r in results if r.proba is not None])
        frame = frame.with_columns(
            pl.Series(f"proba_{label}", proba[:, i]) for i, label in enumerate(data.target.classes)
        )
    return NestedCVResult(report=report, predictions=frame.sort("row"), target=data.target)


def evaluate(df: pl.DataFrame, spec: PredictSpec) -> NestedCVResult:
    """Nested CV of ``spec`` on the labelled rows of ``df``: report plus out-of-fold predictions."""
    data = prepare_training_data(df, spec)
    return assemble(data, spec, run_folds(data, spec))


def nested_cv(df: pl.DataFrame, spec: PredictSpec) -> pl.DataFrame:
    """One row per outer fold (metrics, chosen params) plus ``mean`` and ``std`` summary rows."""
    return evaluate(df, spec).report
