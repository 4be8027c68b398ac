"""Model store on a real local folder: round trip, versions, lineage, compatibility checks."""

import json
import threading
from pathlib import Path

import lightgbm as lgb
import numpy as np
import polars as pl
import pytest

from lakeloom.core.features import FeatureMismatchError
from lakeloom.core.predict import PredictSpec, fit, predict
from lakeloom.models import ModelNotFoundError, ModelStore, load_model, save_model
from lakeloom.settings import Storage


@pytest.fixture(scope="module")
def digits_model(digits_embedded):
    spec = PredictSpec(
        features=("embedding", "ink"),
        target="labels.digit",
        param_grid={"n_estimators": (30,), "num_leaves": (7,)},
        outer_folds=2,
        inner_folds=2,
    )
    return fit(digits_embedded, spec)


class FakeRef:
    """Stands in for lakeloom.ref(...): anything with to_json() is accepted as lineage."""

    def to_json(self):
        return {"asset_key": ["embeddings"], "partition": "2024-01-01", "version": 3}


def test_round_trip_predicts_identically(digits_model, digits_embedded, storage):
    lineage = [FakeRef(), {"asset_key": ["labels"], "uri": "/x/labels", "version": 5}]
    ref = save_model(
        digits_model, "digits", storage=storage, lineage=lineage, cv_metrics={"accuracy": 0.97}
    )
    assert (ref.name, ref.version) == ("digits", 1)
    assert ref.uri == f"{storage.root}/_lakeloom/models/digits/v1"
    folder = Path(ref.uri)
    assert {p.name for p in folder.iterdir()} >= {"model.joblib", "model.lgb.txt", "metadata.json"}

    loaded = load_model("digits", storage=storage, check=digits_embedded)
    frame = digits_embedded.drop("labels")
    assert predict(loaded, frame).equals(predict(digits_model, frame))

    meta = json.loads((folder / "metadata.json").read_text())
    assert loaded.info == meta
    assert meta["task"] == "classification" and meta["estimator"] == "lightgbm"
    assert meta["target"]["classes"] == ["d0", "d1", "d2", "d3", "d4"]
    assert [f["name"] for f in meta["features"]] == ["embedding", "ink"]
    assert meta["features"][0]["width"] == 64
    assert meta["features"][1]["categories"] == ["heavy", "light", "medium"]
    assert meta["lineage"][0]["version"] == 3 and meta["lineage"][1]["uri"] == "/x/labels"
    assert meta["cv_metrics"] == {"accuracy": 0.97}
    assert meta["params"] == {"n_estimators": 30, "num_leaves": 7}
    assert meta["spec_hash"] == digits_model.spec.spec_hash()
    assert meta["versions"]["lightgbm"] == lgb.__version__ and meta["versions"]["lakeloom"]
    assert meta["created_at"].endswith("+00:00")

    # the native booster alone reproduces the probabilities (portable without lakeloom)
    booster = lgb.Booster(model_file=str(folder / "model.lgb.txt"))
    X = loaded.schema.matrix(frame.head(20))
    assert np.allclose(booster.predict(X), digits_model.estimator.predict_proba(X))


def test_versions_latest_and_pinned(digits_model, storage):
    store = ModelStore(storage)
    assert store.versions("digits") == [] and store.names() == []
    first = store.save(digits_model, "digits", cv_metrics={"accuracy": 0.5})
    second = store.save(digits_model, "digits", cv_metrics={"accuracy": 0.9})
    assert (first.version, second.version) == (1, 2)
    assert store.versions("digits") == [1, 2] and store.names() == ["digits"]
    assert store.load("digits").info["cv_metrics"] == {"accuracy": 0.9}
    assert store.load("digits", 1).info["cv_metrics"] == {"accuracy": 0.5}
    with pytest.raises(ModelNotFoundError, match=r"no version 7 \(versions: \[1, 2\]\)"):
        store.load("digits", 7)
    with pytest.raises(ModelNotFoundError, match="no stored model named 'other'"):
        store.load("other")
    with pytest.raises(ValueError, match="model name '../evil'"):
        store.save(digits_model, "../evil")


def test_default_storage_comes_from_env(digits_model, monkeypatch, tmp_path):
    monkeypatch.setenv("LAKELOOM_STORAGE_ROOT", str(tmp_path / "lake"))
    ref = save_model(digits_model, "envmodel")
    assert ref.uri.startswith(str(tmp_path / "lake") + "/_lakeloom/models/envmodel/v1")
    assert load_model("envmodel").info["version"] == 1


def test_load_checks_the_frame_and_names_the_model(digits_model, digits_embedded, storage):
    save_model(digits_model, "digits", storage=storage)
    with pytest.raises(FeatureMismatchError, match="model 'digits' v1: .*missing feature 'ink'"):
        load_model("digits", storage=storage, check=digits_embedded.drop("ink"))


def test_crashed_save_is_invisible_and_its_version_not_reused(digits_model, storage):
    store = ModelStore(storage)
    store.save(digits_model, "digits")
    crashed = Path(store.uri("digits", 2))
    crashed.mkdir()
    (crashed / "_reserved").write_bytes(b"")
    (crashed / "model.joblib").write_bytes(b"half a pickle")
    assert store.versions("digits") == [1]
    assert store.load("digits").info["version"] == 1
    assert store.save(digits_model, "digits").version == 3


def test_bad_lineage_fails_before_anything_is_written(digits_model, storage):
    store = ModelStore(storage)
    with pytest.raises(TypeError, match="lineage reference must be a dict"):
        store.save(digits_model, "digits", lineage=[42])
    with pytest.raises(TypeError, match="not JSON serializable"):
        store.save(digits_model, "digits", lineage=[{"when": object()}])
    assert not Path(store.base, "digits").exists()


def test_concurrent_saves_get_distinct_versions(digits_model, tmp_path):
    storage = Storage(root=str(tmp_path / "shared"))
    refs, errors = [], []

    def save():
        try:
            refs.append(ModelStore(storage).save(digits_model, "race"))
        except Exception as exc:  # pragma: no cover - surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=save) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(r.version for r in refs) == [1, 2, 3, 4]
    assert ModelStore(storage).versions("race") == [1, 2, 3, 4]


def test_regression_model_without_native_file(diabetes, storage):
    features = tuple(c for c in diabetes.columns if c not in {"id", "target"})
    spec = PredictSpec(
        features=features,
        target="target",
        task="regression",
        estimator="random_forest",
        param_grid={"n_estimators": (20,)},
        outer_folds=2,
        inner_folds=2,
    )
    model = fit(diabetes, spec)
    ref = save_model(model, "diabetes-rf", storage=storage)
    meta = load_model("diabetes-rf", storage=storage).info
    assert meta["files"] == {"model": "model.joblib", "native": None}
    assert meta["target"]["classes"] == [] and meta["task"] == "regression"
    assert not (Path(ref.uri) / "model.lgb.txt").exists()
    out = predict(load_model("diabetes-rf", storage=storage), diabetes)
    assert out["prediction"].equals(predict(model, diabetes)["prediction"])
    assert isinstance(out, pl.DataFrame)
