"""fit / predict on real frames: embeddings, categoricals, struct targets, row counts, errors."""

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from lakeloom.core.features import FeatureMismatchError, FeatureSchema
from lakeloom.core.predict import evaluate, fit, predict
from lakeloom.core.specs import PredictSpec

ESTIMATORS = {
    "lightgbm": {"n_estimators": (40,), "num_leaves": (7,)},
    "hist_gradient_boosting": {"max_iter": (30,)},
    "random_forest": {"n_estimators": (30,)},
}


def digits_spec(estimator: str = "lightgbm", **update) -> PredictSpec:
    return PredictSpec(
        features=("embedding", "ink"),
        target="labels.digit",
        estimator=estimator,
        param_grid=ESTIMATORS[estimator],
        outer_folds=3,
        inner_folds=2,
        **update,
    )


def test_embedding_and_categorical_features_learn_digits(digits_embedded):
    result = evaluate(digits_embedded, digits_spec())
    assert result.target.classes == ("d0", "d1", "d2", "d3", "d4")
    summary = result.summary()
    assert summary["accuracy"] > 0.9 and summary["roc_auc"] > 0.98


def test_embedding_expansion_matches_rows_and_nulls_become_nan(digits_embedded):
    df = digits_embedded.head(5).with_columns(
        pl.when(pl.col("id") == 2).then(None).otherwise(pl.col("embedding")).alias("embedding")
    )
    schema = FeatureSchema.infer(df, ["embedding"])
    X = schema.matrix(df)
    assert X.shape == (5, 64) and X.dtype == np.float32
    assert np.isnan(X[2]).all()
    assert np.array_equal(X[0], np.asarray(df["embedding"][0].to_list(), dtype=np.float32))
    as_array = df.with_columns(pl.col("embedding").list.to_array(64))
    assert np.array_equal(
        FeatureSchema.infer(as_array, ["embedding"]).matrix(as_array), X, equal_nan=True
    )


def test_embedding_width_mismatch_is_named(digits_embedded):
    model = fit(digits_embedded, digits_spec())
    short = digits_embedded.with_columns(pl.col("embedding").list.head(32))
    with pytest.raises(
        FeatureMismatchError, match="embedding 'embedding' has width 32, expected 64"
    ):
        predict(model, short)
    mixed = pl.DataFrame({"e": [[1.0, 2.0], [1.0]], "y": [0, 1]})
    with pytest.raises(FeatureMismatchError, match=r"'e' mixes widths \[1, 2\]"):
        FeatureSchema.infer(mixed, ["e"])


@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
def test_unseen_categories_at_predict_time_are_missing_values(digits_embedded, estimator):
    model = fit(digits_embedded, digits_spec(estimator))
    assert model.schema.columns[1].categories == ("heavy", "light", "medium")
    new = digits_embedded.head(40).drop("labels")
    unseen = new.with_columns(pl.lit("neon").alias("ink"))
    missing = new.with_columns(pl.lit(None, dtype=pl.String).alias("ink"))
    out_unseen, out_missing = predict(model, unseen), predict(model, missing)
    assert out_unseen.height == 40
    proba = pl.col("^proba_.*$")
    # an unseen category is encoded exactly like a missing value, never as some other category
    assert out_unseen.select(proba).equals(out_missing.select(proba))
    assert (out_unseen["prediction"] == predict(model, new)["prediction"]).mean() > 0.8


def test_n_rows_in_n_rows_out_in_order(digits_embedded):
    model = fit(digits_embedded, digits_spec())
    shuffled = digits_embedded.sample(fraction=1.0, shuffle=True, seed=3).drop("labels")
    out = predict(model, shuffled)
    assert out.height == shuffled.height
    assert out["id"].equals(shuffled["id"])
    assert out.columns[: shuffled.width] == shuffled.columns
    assert np.allclose(out.select(pl.sum_horizontal(pl.col("^proba_.*$"))).to_series(), 1.0)
    assert predict(model, shuffled.head(0)).height == 0
    one = predict(model, shuffled.head(1))
    assert one.height == 1 and one["prediction"][0] in model.classes


def test_missing_feature_error_names_it(digits_embedded):
    model = fit(digits_embedded, digits_spec())
    with pytest.raises(FeatureMismatchError, match="missing feature 'ink'"):
        predict(model, digits_embedded.drop("ink"))
    with pytest.raises(FeatureMismatchError, match="feature 'ink' was categorical"):
        predict(model, digits_embedded.with_columns(pl.col("id").cast(pl.Float64).alias("ink")))
    with pytest.raises(ValueError, match=r"already has output column\(s\) \['prediction'\]"):
        predict(model, digits_embedded.with_columns(pl.lit(1).alias("prediction")))


def test_unlabelled_rows_are_skipped_in_training_and_predicted(breast_cancer):
    features = tuple(c for c in breast_cancer.columns if c not in {"id", "target"})
    spec = PredictSpec(
        features=features,
        target="target",
        estimator="random_forest",
        param_grid={"n_estimators": (30,)},
        outer_folds=3,
        inner_folds=2,
    )
    half = breast_cancer.with_columns(
        pl.when(pl.col("id") % 2 == 0).then(pl.col("target")).alias("target")
    )
    model = fit(half, spec)
    assert model.n_train == (breast_cancer.height + 1) // 2
    out = predict(model, half)
    held_out = out.filter(pl.col("target").is_null())
    truth = breast_cancer.filter(pl.col("id") % 2 == 1)["target"]
    assert held_out.height == truth.len()
    assert (held_out["prediction"] == truth).mean() > 0.9
    # exactly the labelled rows are flagged in-sample; a changed feature value is not
    assert out["_in_training"].to_list() == (out["id"] % 2 == 0).to_list()
    nudged = half.head(4).with_columns(pl.col(features[0]) + 1e-9)
    assert not predict(model, nudged)["_in_training"].any()


def test_regression_prediction_column(diabetes):
    features = tuple(c for c in diabetes.columns if c not in {"id", "target"})
    spec = PredictSpec(features=features, target="target", param_grid={"n_estimators": (50,)})
    model = fit(diabetes.with_columns(pl.col("target").cast(pl.Float64)), spec)
    assert model.target.task == "regression"
    out = predict(model, diabetes.drop("target"))
    assert out.schema["prediction"] == pl.Float64 and out.height == diabetes.height
    assert not any(c.startswith("proba_") for c in out.columns)
    assert np.corrcoef(out["prediction"], diabetes["target"])[0, 1] > 0.6


def test_struct_field_errors_are_named(digits_embedded):
    with pytest.raises(FeatureMismatchError, match="struct column 'labels' has no field 'colour'"):
        fit(digits_embedded, digits_spec().model_copy(update={"target": "labels.colour"}))
    with pytest.raises(FeatureMismatchError, match="frame has no column 'nope'"):
        fit(digits_embedded, digits_spec().model_copy(update={"target": "nope"}))


def test_spec_validation_fails_before_any_work():
    with pytest.raises(ValidationError, match="unknown estimator 'xgb'"):
        PredictSpec(features=("a",), target="y", estimator="xgb")
    with pytest.raises(ValidationError, match=r"has no parameter\(s\) \['num_leaves'\]"):
        PredictSpec(
            features=("a",), target="y", estimator="random_forest", param_grid={"num_leaves": [7]}
        )
    with pytest.raises(ValidationError, match="target 'y' is also listed as a feature"):
        PredictSpec(features=("a", "y"), target="y")
    with pytest.raises(ValidationError, match="scoring 'rmse' does not apply to classification"):
        PredictSpec(features=("a",), target="y", task="classification", scoring="rmse")
    with pytest.raises(ValidationError, match="extra"):
        PredictSpec(features=("a",), target="y", folds=3)


def test_spec_hash_tracks_results_not_parallelism():
    spec = PredictSpec(features=("a", "b"), target="y", param_grid={"num_leaves": 7})
    assert spec.param_grid == {"num_leaves": (7,)}
    assert spec.spec_hash() == spec.model_copy(update={"n_jobs": 4}).spec_hash()
    assert spec.spec_hash() != spec.model_copy(update={"seed": 1}).spec_hash()
    assert spec.spec_hash() != PredictSpec(features=("a", "b"), target="y").spec_hash()


def test_numeric_column_forced_categorical(diabetes):
    features = tuple(c for c in diabetes.columns if c not in {"id", "target"})
    spec = PredictSpec(
        features=features,
        target="target",
        task="regression",
        categorical=("sex",),
        estimator="hist_gradient_boosting",
        param_grid={"max_iter": (30,)},
        outer_folds=2,
        inner_folds=2,
    )
    model = fit(diabetes, spec)
    sex = next(c for c in model.schema.columns if c.name == "sex")
    assert sex.kind == "categorical" and len(sex.categories) == 2
    assert model.schema.categorical_indices == [features.index("sex")]
    odd = diabetes.head(10).with_columns(pl.lit(0.5).alias("sex"))
    assert predict(model, odd)["prediction"].null_count() == 0
