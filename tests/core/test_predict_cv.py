"""Nested cross-validation on real data: scores, reproducibility, splits and no leakage."""

import json
import pickle

import numpy as np
import polars as pl
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.tree import DecisionTreeClassifier

from lakeloom.core.cv import (
    evaluate,
    nested_cv,
    outer_splits,
    prepare_training_data,
    run_outer_fold,
)
from lakeloom.core.estimators import EstimatorEntry, register_estimator
from lakeloom.core.specs import PredictSpec


def features_of(df: pl.DataFrame, *exclude: str) -> tuple[str, ...]:
    return tuple(c for c in df.columns if c not in {"id", "target", *exclude})


def fold_rows(report: pl.DataFrame) -> pl.DataFrame:
    return report.filter(pl.col("kind") == "fold")


@pytest.mark.parametrize(
    ("estimator", "grid"),
    [
        ("lightgbm", {"num_leaves": (7, 15), "n_estimators": (60,)}),
        ("hist_gradient_boosting", {"max_iter": (40,), "learning_rate": (0.1, 0.2)}),
        ("random_forest", {"n_estimators": (40,), "max_depth": (4, None)}),
    ],
)
def test_breast_cancer_scores_for_every_estimator(breast_cancer, estimator, grid):
    spec = PredictSpec(
        features=features_of(breast_cancer),
        target="target",
        estimator=estimator,
        param_grid=grid,
        outer_folds=3,
        inner_folds=2,
    )
    report = nested_cv(breast_cancer, spec)
    assert report["kind"].to_list() == ["fold"] * 3 + ["mean", "std"]
    folds = fold_rows(report)
    assert folds["n_test"].sum() == breast_cancer.height
    assert set(folds.columns) >= {"accuracy", "f1_macro", "roc_auc", "log_loss", "best_params"}
    mean = report.filter(pl.col("kind") == "mean").row(0, named=True)
    assert mean["accuracy"] > 0.9 and mean["roc_auc"] > 0.95 and mean["log_loss"] < 0.35
    for params in folds["best_params"]:
        chosen = json.loads(params)
        assert all(chosen[k] in v for k, v in grid.items())


def test_regression_metrics_on_diabetes(diabetes):
    spec = PredictSpec(
        features=features_of(diabetes),
        target="target",
        task="regression",
        param_grid={"n_estimators": (60,), "num_leaves": (4, 8), "learning_rate": (0.05,)},
        outer_folds=3,
        inner_folds=2,
    )
    report = nested_cv(diabetes, spec)
    mean = report.filter(pl.col("kind") == "mean").row(0, named=True)
    assert {"rmse", "mae", "r2"} <= set(report.columns)
    assert "accuracy" not in report.columns
    assert 0.2 < mean["r2"] < 0.8 and mean["mae"] < mean["rmse"] < 75


def test_multiclass_enum_target_uses_ovr_auc(iris):
    spec = PredictSpec(
        features=features_of(iris, "species"),
        target="species",
        estimator="hist_gradient_boosting",
        param_grid={"max_iter": (30,)},
        outer_folds=3,
        inner_folds=2,
    )
    result = evaluate(iris, spec)
    assert result.target.classes == ("setosa", "versicolor", "virginica")
    assert result.summary()["roc_auc"] > 0.95
    preds = result.predictions
    assert preds.height == iris.height and preds["row"].to_list() == list(range(iris.height))
    assert preds.schema["y_pred"] == iris.schema["species"]  # Enum in, Enum out
    probas = preds.select(pl.sum_horizontal(pl.col("^proba_.*$"))).to_series()
    assert np.allclose(probas.to_numpy(), 1.0)


def test_scores_reproducible_with_seed_and_across_workers(wine):
    spec = PredictSpec(
        features=features_of(wine),
        target="target",
        param_grid={"num_leaves": (4, 8), "n_estimators": (30,)},
        outer_folds=3,
        inner_folds=2,
        seed=7,
    )
    metric_cols = ["accuracy", "f1_macro", "roc_auc", "log_loss", "inner_score", "best_params"]
    first = nested_cv(wine, spec).select(metric_cols)
    again = nested_cv(wine, spec).select(metric_cols)
    parallel = nested_cv(wine, spec.model_copy(update={"n_jobs": 2})).select(metric_cols)
    assert first.equals(again)
    assert first.equals(parallel)
    other_seed = nested_cv(wine, spec.model_copy(update={"seed": 8})).select(metric_cols)
    assert not first.equals(other_seed)


def test_stratified_and_grouped_splits(breast_cancer):
    df = breast_cancer.with_columns((pl.col("id") // 7).alias("patient"))
    spec = PredictSpec(features=features_of(df, "patient"), target="target", outer_folds=4)
    data = prepare_training_data(df, spec)
    base_rate = data.y.mean()
    for _, test in outer_splits(data, spec):
        assert abs(data.y[test].mean() - base_rate) < 0.02

    grouped = spec.model_copy(update={"group_column": "patient"})
    data = prepare_training_data(df, grouped)
    for train, test in outer_splits(data, grouped):
        assert not set(data.groups[train]) & set(data.groups[test])


def test_outer_fold_is_picklable_and_identical_in_a_fresh_copy(breast_cancer):
    """What a Modal function would do: unpickle (data, spec), run one fold, same answer."""
    spec = PredictSpec(
        features=features_of(breast_cancer),
        target="target",
        param_grid={"num_leaves": (7, 15), "n_estimators": (40,)},
        outer_folds=3,
        inner_folds=2,
    )
    data = prepare_training_data(breast_cancer, spec)
    local = run_outer_fold(data, spec, 1)
    shipped_data, shipped_spec = pickle.loads(pickle.dumps((data, spec)))
    remote = pickle.loads(pickle.dumps(run_outer_fold(shipped_data, shipped_spec, 1)))
    assert remote.metrics == local.metrics
    assert remote.best_params == local.best_params
    assert np.array_equal(remote.test_idx, local.test_idx)
    assert np.array_equal(remote.proba, local.proba)
    with pytest.raises(ValueError, match="fold 3 out of range"):
        run_outer_fold(data, spec, 3)


# --- leakage, proven by construction --------------------------------------------------------

SPY_LOG: list[tuple[str, frozenset[int]]] = []


class RowSpy(ClassifierMixin, BaseEstimator):
    """A decision tree that logs which rows (column 0 holds the row id) it fits and predicts."""

    def __init__(self, max_depth=None, random_state=None):
        self.max_depth = max_depth
        self.random_state = random_state

    def fit(self, X, y):
        SPY_LOG.append(("fit", frozenset(X[:, 0].astype(int).tolist())))
        self.tree_ = DecisionTreeClassifier(
            max_depth=self.max_depth, random_state=self.random_state
        ).fit(X[:, 1:], y)
        self.classes_ = self.tree_.classes_
        return self

    def predict_proba(self, X):
        SPY_LOG.append(("predict", frozenset(X[:, 0].astype(int).tolist())))
        return self.tree_.predict_proba(X[:, 1:])

    def predict(self, X):
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


register_estimator(
    EstimatorEntry(
        "row_spy",
        lambda task, params, seed, threads, layout: (RowSpy(random_state=seed, **params), {}),
    )
)


def test_inner_search_never_sees_the_outer_test_fold(breast_cancer):
    grid = {"max_depth": (2, 4, None)}
    spec = PredictSpec(
        features=("id", *features_of(breast_cancer)),
        target="target",
        estimator="row_spy",
        param_grid=grid,
        outer_folds=4,
        inner_folds=3,
        group_column=None,
    )
    data = prepare_training_data(breast_cancer, spec)
    ids = data.X[:, 0].astype(int)
    for fold, (train, test) in enumerate(outer_splits(data, spec)):
        SPY_LOG.clear()
        result = run_outer_fold(data, spec, fold)
        test_ids, train_ids = set(ids[test]), set(ids[train])
        fits = [rows for kind, rows in SPY_LOG if kind == "fit"]
        predicts = [rows for kind, rows in SPY_LOG if kind == "predict"]
        # 3 grid points x 3 inner folds, plus the refit on the whole outer training fold
        assert len(fits) == len(grid["max_depth"]) * spec.inner_folds + 1
        assert all(not rows & test_ids for rows in fits)
        assert fits[-1] == train_ids
        # every inner validation set is disjoint from its inner training set and the outer test
        for fit_rows, val_rows in zip(fits[:-1], predicts[:-1], strict=True):
            assert not fit_rows & val_rows and not val_rows & test_ids
            assert fit_rows | val_rows == train_ids
        # the outer test rows are predicted exactly once, by the refitted model, at the very end
        assert predicts[-1] == test_ids
        assert sum(1 for rows in predicts if rows & test_ids) == 1
        assert set(ids[result.test_idx]) == test_ids
