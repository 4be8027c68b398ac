"""Model store on a real local folder: round trip, versions, lineage, compatibility checks."""

import hashlib
import json
import threading
from pathlib import Path

import lightgbm as lgb
import numpy as np
import polars as pl
import pytest

from lakeloom.core.features import FeatureMismatchError
from lakeloom.core.predict import fit, predict
from lakeloom.core.specs import PredictSpec
from lakeloom.models import (
    ModelIntegrityError,
    ModelNotFoundError,
    ModelStore,
    load_model,
    save_model,
)
from lakeloom.storage.settings import Storage


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
    # LightGBM is stored with no pickle at all (issue 13.12): booster text + data sidecars
    assert {p.name for p in folder.iterdir()} >= {"model.lgb.txt", "model.json", "metadata.json"}
    assert not (folder / "model.joblib").exists()

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


# -- issue 13.12: the store verifies every file before parsing; LightGBM loads with no pickle --
def _marker_payload(marker: Path) -> bytes:
    """A pickle whose unpickling creates ``marker`` (what an attacker would put in the bucket)."""
    import pickle

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    return pickle.dumps(Payload())


def _rf_model(diabetes):
    features = tuple(c for c in diabetes.columns if c not in {"id", "target"})
    spec = PredictSpec(
        features=features,
        target="target",
        task="regression",
        estimator="random_forest",
        param_grid={"n_estimators": (5,)},
        outer_folds=2,
        inner_folds=2,
    )
    return fit(diabetes, spec)


def test_tampered_joblib_is_refused_before_unpickling(diabetes, storage, tmp_path):
    import pickle

    ref = save_model(_rf_model(diabetes), "rf", storage=storage)
    meta = json.loads((Path(ref.uri) / "metadata.json").read_text())
    good = meta["sha256"]["model.joblib"]
    assert good == hashlib.sha256((Path(ref.uri) / "model.joblib").read_bytes()).hexdigest()

    proof = tmp_path / "payload-works"
    pickle.loads(_marker_payload(proof))  # the payload really runs code when unpickled
    assert proof.exists()

    marker = tmp_path / "pwned"
    evil = _marker_payload(marker)
    (Path(ref.uri) / "model.joblib").write_bytes(evil)
    with pytest.raises(ModelIntegrityError) as refused:
        load_model("rf", storage=storage)
    message = str(refused.value)
    assert "'rf' v1" in message and "model.joblib" in message
    assert good in message and hashlib.sha256(evil).hexdigest() in message
    assert not marker.exists()  # nothing was unpickled


def test_metadata_without_digest_is_refused(diabetes, storage, tmp_path):
    ref = save_model(_rf_model(diabetes), "rf", storage=storage)
    path = Path(ref.uri) / "metadata.json"
    meta = json.loads(path.read_text())
    del meta["sha256"]
    path.write_text(json.dumps(meta))
    marker = tmp_path / "pwned"
    (Path(ref.uri) / "model.joblib").write_bytes(_marker_payload(marker))
    with pytest.raises(ModelIntegrityError, match="'rf' v1: metadata.json records no sha256"):
        load_model("rf", storage=storage)
    assert not marker.exists()


def test_pinned_metadata_digest_detects_a_rewritten_metadata_file(diabetes, storage):
    store = ModelStore(storage)
    ref = store.save(_rf_model(diabetes), "rf")
    assert ref.metadata_sha256 and store.load("rf", 1, metadata_sha256=ref.metadata_sha256)
    path = Path(ref.uri) / "metadata.json"
    path.write_text(path.read_text().replace('"n_train"', '"n_train" '))
    with pytest.raises(ModelIntegrityError, match="metadata.json has sha256 .* but the reference"):
        store.load("rf", 1, metadata_sha256=ref.metadata_sha256)


def test_lightgbm_round_trip_is_exact_and_unpickles_nothing(
    digits_model, digits_embedded, storage, monkeypatch
):
    import pickle

    import joblib

    ref = save_model(digits_model, "digits", storage=storage)
    meta = json.loads((Path(ref.uri) / "metadata.json").read_text())
    assert meta["format"] == "lightgbm-text"
    assert meta["files"] == {"model": None, "native": "model.lgb.txt"}
    assert set(meta["sha256"]) >= {"model.lgb.txt", "model.json", "classes.arrow"}

    def refuse(*args, **kwargs):
        raise AssertionError("a pickle was loaded")

    monkeypatch.setattr(joblib, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    loaded = load_model("digits", storage=storage, check=digits_embedded)
    frame = digits_embedded.drop("labels")
    assert predict(loaded, frame).equals(predict(digits_model, frame))  # bit-identical
    X = loaded.schema.matrix(frame)
    assert np.array_equal(
        loaded.estimator.predict_proba(X), digits_model.estimator.predict_proba(X)
    )
    assert np.array_equal(loaded.estimator.predict(X), digits_model.estimator.predict(X))
    assert loaded.spec.spec_hash() == digits_model.spec.spec_hash()
    assert loaded.target == digits_model.target and loaded.schema == digits_model.schema
    assert np.array_equal(loaded.train_rows, digits_model.train_rows)


def test_lightgbm_regression_round_trip_is_exact(diabetes, storage):
    features = tuple(c for c in diabetes.columns if c not in {"id", "target"})
    spec = PredictSpec(
        features=features,
        target="target",
        task="regression",
        param_grid={"n_estimators": (20,), "num_leaves": (7,)},
        outer_folds=2,
        inner_folds=2,
    )
    model = fit(diabetes, spec)
    save_model(model, "diabetes-lgb", storage=storage)
    out = predict(load_model("diabetes-lgb", storage=storage), diabetes)
    assert out.equals(predict(model, diabetes))


@pytest.mark.parametrize("filename", ["model.lgb.txt", "model.json"])
def test_tampered_lightgbm_files_are_refused(digits_model, storage, filename):
    ref = save_model(digits_model, "digits", storage=storage)
    path = Path(ref.uri) / filename
    text = path.read_text()
    path.write_text(text.replace("0", "1", 1))
    with pytest.raises(ModelIntegrityError, match=f"'digits' v1: {filename} has sha256"):
        load_model("digits", storage=storage)
