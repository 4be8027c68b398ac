"""PredictSpec: everything that defines a model, as frozen data that hashes into code versions."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lakeloom.core.estimators import get_estimator
from lakeloom.core.features import Task

Metric = Literal["accuracy", "f1_macro", "roc_auc", "log_loss", "rmse", "mae", "r2"]
CLASSIFICATION_METRICS: tuple[Metric, ...] = ("accuracy", "f1_macro", "roc_auc", "log_loss")
REGRESSION_METRICS: tuple[Metric, ...] = ("rmse", "mae", "r2")
LOWER_IS_BETTER: frozenset[str] = frozenset({"log_loss", "rmse", "mae"})
GridValue = bool | int | float | str | None

# Fields that change how fast a run goes but never what it computes: left out of the spec hash.
_EXECUTION_ONLY = {"n_jobs"}


class PredictSpec(BaseModel):
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

    model_config = ConfigDict(frozen=True, extra="forbid")

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

    def spec_hash(self) -> str:
        """Stable 16-hex hash of everything that changes the result (not ``n_jobs``)."""
        payload = self.model_dump(mode="json", exclude=_EXECUTION_ONLY)
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]
