"""The training app's function bodies, run locally on references to real Delta tables.

They must give exactly what the local predict path gives with the same spec and seed: the same
nested-CV report and out-of-fold predictions, the same final model, the same predictions.
"""

import json

import numpy as np
import polars as pl
import pytest
from sklearn.datasets import load_breast_cancer

from lakeloom.core.cv import evaluate
from lakeloom.core.predict import fit, predict
from lakeloom.core.specs import PredictSpec
from lakeloom.modal_apps import train
from lakeloom.modal_apps.refs import remap_root
from lakeloom.models.store import ModelRef, ModelStore
from lakeloom.storage.delta import read_table, write_table
from lakeloom.storage.ref import Ref, ref
from lakeloom.storage.settings import Storage

SPEC = PredictSpec(
    features=("embedding", "mean_radius", "mean_texture", "worst_area", "site"),
    target="target",
    estimator="lightgbm",
    param_grid={"num_leaves": (7, 15), "n_estimators": (40,)},
    outer_folds=3,
    inner_folds=2,
    seed=7,
)


def cancer_frame() -> pl.DataFrame:
    """Breast-cancer rows with an embedding-like list[f32] column, numeric and categorical features,
    split into a labelled "train" partition and an unlabelled "new" one."""
    bunch = load_breast_cancer()
    names = [n.replace(" ", "_") for n in bunch.feature_names]
    X = bunch.data.astype(np.float32)
    rng = np.random.default_rng(0)
    return (
        pl.DataFrame(X, schema=names, orient="row")
        .select("mean_radius", "mean_texture", "worst_area")
        .with_columns(
            pl.Series("embedding", X[:, 10:26], dtype=pl.List(pl.Float32)),
            pl.Series("site", rng.choice(["a", "b", "c"], len(X))),
            pl.Series("target", bunch.target),
            pl.Series("split", np.where(np.arange(len(X)) % 5 == 0, "new", "train")),
        )
        .with_row_index("id")
    )


@pytest.fixture
def cancer_table(storage: Storage) -> tuple[pl.DataFrame, Storage]:
    df = cancer_frame()
    write_table(df, storage.table_uri("assets", "cancer"), mode="overwrite", partition_by=["split"])
    return df, storage


def _without_timing(report: pl.DataFrame) -> pl.DataFrame:
    return report.drop("seconds")


def test_folds_from_a_reference_equal_the_local_nested_cv(cancer_table):
    df, storage = cancer_table
    train_ref = ref("cancer", partition="train", storage=storage)
    text = train_ref.to_json()
    assert len(text) < 1000  # what crosses the wire is the reference, not the rows

    outputs = [train.fold_from_ref(text, SPEC.model_dump_json(), k) for k in range(3)]
    remote = train.assemble_folds(outputs, SPEC)
    local = evaluate(df.filter(pl.col("split") == "train"), SPEC)

    assert remote.report.height == 5  # 3 folds + mean + std
    assert _without_timing(remote.report).equals(_without_timing(local.report))
    assert remote.predictions.equals(local.predictions)
    assert remote.summary() == local.summary()
    assert remote.summary()["roc_auc"] > 0.9
    # The Modal function object wraps the same body.
    with pytest.warns(UserWarning, match="executing locally"):
        via_modal_wrapper = train.run_fold.local(text, SPEC.model_dump_json(), 1)
    assert via_modal_wrapper.result.metrics == outputs[1].result.metrics


def test_assembly_refuses_missing_folds(cancer_table):
    _, storage = cancer_table
    text = ref("cancer", partition="train", storage=storage).to_json()
    outputs = [train.fold_from_ref(text, SPEC, k) for k in (0, 2)]
    with pytest.raises(ValueError, match="expected folds 0..2"):
        train.assemble_folds(outputs, SPEC)


def test_final_fit_and_batch_prediction_match_the_local_path(cancer_table, tmp_path):
    df, storage = cancer_table
    models_root = str(tmp_path / "models_volume")
    train_text = ref("cancer", partition="train", storage=storage).to_json()
    new_ref = ref("cancer", partition="new", storage=storage)

    model_json = train.fit_from_ref(train_text, SPEC, "cancer", models_root, {"roc_auc": 0.98})
    model_ref = ModelRef.model_validate_json(model_json)
    assert model_ref.version == 1 and model_ref.uri.startswith(models_root)
    stored = ModelStore(Storage(root=models_root)).load("cancer")
    assert stored.info["lineage"] == [json.loads(train_text)]  # trained from a pinned version

    local_model = fit(df.filter(pl.col("split") == "train"), SPEC)
    assert stored.best_params == local_model.best_params

    output_uri = storage.table_uri("assets", "cancer_predictions")
    out = train.predict_from_ref(
        model_json, new_ref.to_json(), models_root, output_uri, keep_columns=["id", "split"]
    )
    new_rows = df.filter(pl.col("split") == "new")
    assert out["rows"] == new_rows.height
    written = read_table(output_uri).sort("id")
    expected = predict(local_model, new_rows).sort("id")
    assert written["id"].to_list() == expected["id"].to_list()
    assert written["prediction"].to_list() == expected["prediction"].to_list()
    np.testing.assert_array_equal(written["proba_1"].to_numpy(), expected["proba_1"].to_numpy())
    assert set(written["_model_version"]) == {"cancer/v1"}

    # Re-scoring the same partition replaces it: N rows in, N rows out, no duplicates.
    train.predict_from_ref(
        model_json, new_ref.to_json(), models_root, output_uri, keep_columns=["id", "split"]
    )
    assert read_table(output_uri).height == new_rows.height


def test_partition_column_must_be_kept(cancer_table, tmp_path):
    df, storage = cancer_table
    models_root = str(tmp_path / "models")
    train_text = ref("cancer", partition="train", storage=storage).to_json()
    model_json = train.fit_from_ref(train_text, SPEC, "cancer", models_root)
    with pytest.raises(ValueError, match="split"):
        train.predict_from_ref(
            model_json,
            ref("cancer", partition="new", storage=storage).to_json(),
            models_root,
            storage.table_uri("assets", "out"),
            keep_columns=["id"],
        )


def test_reference_is_moved_to_the_volume_mount(storage):
    r = Ref(asset_key=("a",), uri=f"{storage.root}/assets/a", version=3)
    moved = Ref.from_json(remap_root(r, storage.root, "/data/delta"))
    assert moved.uri == "/data/delta/assets/a" and moved.version == 3
    s3 = Ref(asset_key=("a",), uri="s3://bucket/lake/assets/a", version=1)
    assert Ref.from_json(remap_root(s3, storage.root, "/data/delta")) == s3


def test_training_image_pins_the_local_versions():
    import importlib.metadata

    pins = dict(p.split("==") for p in train.TRAIN_PACKAGES)
    assert pins["scikit-learn"] == importlib.metadata.version("scikit-learn")
    assert pins["lightgbm"] == importlib.metadata.version("lightgbm")
    assert {"polars", "deltalake", "duckdb", "numpy"} <= set(pins)
