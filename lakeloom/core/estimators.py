"""A small registry of tree-ensemble estimators, each built for one task and one feature layout.

Each entry knows how to turn (task, params, seed, threads, categorical layout) into an unfitted
scikit-learn-compatible estimator plus the keyword arguments its ``fit`` needs. Categorical
features arrive as integer codes (NaN = missing or unseen): LightGBM and HistGradientBoosting use
them natively; RandomForest gets a one-hot encoding with the fit-time vocabulary, where an unseen
category is all zeros. Register your own with :func:`register_estimator` (on Modal, import the
module that registers it inside the function image too).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lakeloom.core.features import Task

_HGB_MAX_CATEGORIES = 255  # HistGradientBoosting's native categorical limit (max_bins)


@dataclass(frozen=True)
class Layout:
    """Where the categorical features sit in the matrix and how many categories each has."""

    n_columns: int
    categorical_indices: tuple[int, ...] = ()
    cardinalities: tuple[int, ...] = ()


Builder = Callable[[Task, Mapping[str, Any], int, int, Layout], tuple[Any, dict[str, Any]]]


@dataclass(frozen=True)
class EstimatorEntry:
    """A registered estimator: its builder and the grid used when a spec declares none."""

    name: str
    build: Builder
    default_grid: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    param_source: str | None = None  # "module.Class" whose get_params() lists the valid params

    def check_params(self, names: Sequence[str]) -> None:
        """Raise naming any grid parameter the estimator does not take (LightGBM takes any)."""
        if self.param_source is None:
            return
        valid = _sklearn_params(self.param_source)
        unknown = sorted(set(names) - valid)
        if unknown:
            raise ValueError(
                f"estimator {self.name!r} has no parameter(s) {unknown}; valid: {sorted(valid)}"
            )


_REGISTRY: dict[str, EstimatorEntry] = {}


def register_estimator(entry: EstimatorEntry) -> None:
    """Add (or replace) an estimator under ``entry.name``."""
    _REGISTRY[entry.name] = entry


def get_estimator(name: str) -> EstimatorEntry:
    """Look up a registered entry; the error lists what is registered."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown estimator {name!r}; registered: {', '.join(sorted(_REGISTRY))}"
        ) from None


def estimator_names() -> list[str]:
    """Names of every registered estimator."""
    return sorted(_REGISTRY)


def _lightgbm(
    task: Task, params: Mapping[str, Any], seed: int, threads: int, layout: Layout
) -> tuple[Any, dict[str, Any]]:
    import lightgbm as lgb

    base: dict[str, Any] = {
        "random_state": seed,
        "n_jobs": threads,
        "verbose": -1,
        "deterministic": True,
        "force_col_wise": True,
    }
    cls = lgb.LGBMClassifier if task == "classification" else lgb.LGBMRegressor
    fit_kwargs: dict[str, Any] = {}
    if layout.categorical_indices:
        fit_kwargs["categorical_feature"] = list(layout.categorical_indices)
    return cls(**{**base, **params}), fit_kwargs


def _hist_gradient_boosting(
    task: Task, params: Mapping[str, Any], seed: int, threads: int, layout: Layout
) -> tuple[Any, dict[str, Any]]:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    mask = np.zeros(layout.n_columns, dtype=bool)
    for index, cardinality in zip(layout.categorical_indices, layout.cardinalities, strict=True):
        mask[index] = cardinality <= _HGB_MAX_CATEGORIES  # beyond that: ordinal codes as numbers
    cls = (
        HistGradientBoostingClassifier
        if task == "classification"
        else HistGradientBoostingRegressor
    )
    est = cls(random_state=seed, categorical_features=mask if mask.any() else None)
    return est.set_params(**params), {}


def _random_forest(
    task: Task, params: Mapping[str, Any], seed: int, threads: int, layout: Layout
) -> tuple[Any, dict[str, Any]]:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    cls = RandomForestClassifier if task == "classification" else RandomForestRegressor
    forest = cls(random_state=seed, n_jobs=threads).set_params(**params)
    if not layout.categorical_indices:
        return forest, {}
    encoder = OneHotEncoder(
        categories=[list(map(float, range(k))) for k in layout.cardinalities],
        handle_unknown="ignore",  # NaN (missing/unseen) → all zeros
        sparse_output=False,
    )
    columns = ColumnTransformer(
        [("onehot", encoder, list(layout.categorical_indices))], remainder="passthrough"
    )
    return Pipeline([("encode", columns), ("forest", forest)]), {}


@functools.cache
def _sklearn_params(cls_path: str) -> frozenset[str]:
    module, name = cls_path.rsplit(".", 1)
    cls = getattr(__import__(module, fromlist=[name]), name)
    return frozenset(cls().get_params())


register_estimator(
    EstimatorEntry(
        "lightgbm",
        _lightgbm,
        default_grid={"num_leaves": (15, 31), "learning_rate": (0.05, 0.1), "n_estimators": (100,)},
    )
)
register_estimator(
    EstimatorEntry(
        "hist_gradient_boosting",
        _hist_gradient_boosting,
        default_grid={"learning_rate": (0.05, 0.1), "max_leaf_nodes": (15, 31)},
        param_source="sklearn.ensemble.HistGradientBoostingClassifier",
    )
)
register_estimator(
    EstimatorEntry(
        "random_forest",
        _random_forest,
        default_grid={"n_estimators": (200,), "max_features": ("sqrt", 0.5)},
        param_source="sklearn.ensemble.RandomForestClassifier",
    )
)


def predict_proba_full(estimator: Any, X: np.ndarray, n_classes: int) -> np.ndarray:
    """``predict_proba`` with one column per class ``0..K-1``, even when a fit saw fewer classes."""
    proba = estimator.predict_proba(X)
    seen = np.asarray(estimator.classes_, dtype=np.int64)
    if len(seen) == n_classes and np.array_equal(seen, np.arange(n_classes)):
        return proba
    full = np.zeros((X.shape[0], n_classes), dtype=np.float64)
    full[:, seen] = proba
    return full
