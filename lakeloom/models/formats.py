"""How a trained model becomes files, and back, with a sha256 per file checked before parsing.

A stored model is code for whoever loads it when it is a pickle: anyone who can write the store
could make every predicting worker run theirs. So:

* LightGBM models are stored with no pickle at all: the booster in LightGBM's own text format
  (``model.lgb.txt``), the rest of :class:`TrainedModel` as JSON (``model.json``), the class
  labels as Arrow IPC (``classes.arrow``) and the training-row digests as ``.npy`` (read with
  ``allow_pickle=False``). Loading them parses data, it runs nothing.
* Other (scikit-learn) estimators still need joblib, so ``model.joblib`` is only unpickled once
  its bytes match the sha256 recorded in ``metadata.json`` at save time.

The digests are only as trustworthy as ``metadata.json``: it is written by the training run, and
whoever may write it may also change the digests. Keep the store writable by training runs only;
pin ``ModelRef.metadata_sha256`` (returned by ``save``) to also detect a rewritten metadata file.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
from typing import Any

import joblib
import numpy as np
import polars as pl

from lakeloom.core.features import FeatureSchema, TargetInfo
from lakeloom.core.predict import TrainedModel
from lakeloom.core.specs import PredictSpec

JOBLIB = "model.joblib"
NATIVE = "model.lgb.txt"
SIDECAR = "model.json"
CLASSES = "classes.arrow"
TRAIN_ROWS = "train_rows.npy"
LIGHTGBM_FORMAT = "lightgbm-text"
JOBLIB_FORMAT = "joblib"


class ModelIntegrityError(ValueError):
    """A stored model file does not match the digest its metadata recorded: it is not loaded."""


def sha256(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def verify(name: str, version: int, filename: str, data: bytes, meta: Mapping[str, Any]) -> None:
    """Raise :class:`ModelIntegrityError` unless ``data`` has the digest ``meta`` recorded."""
    recorded = (meta.get("sha256") or {}).get(filename)
    if not recorded:
        raise ModelIntegrityError(
            f"model {name!r} v{version}: metadata.json records no sha256 for {filename} (saved "
            "by a lakeloom without integrity checks, or edited); refusing to load it. Re-save "
            "the model from its training run."
        )
    actual = sha256(data)
    if actual != recorded:
        raise ModelIntegrityError(
            f"model {name!r} v{version}: {filename} has sha256 {actual} but metadata.json "
            f"records {recorded}; the file was changed after it was saved, refusing to load it"
        )


class BoosterModel:
    """A LightGBM booster behind the estimator methods lakeloom calls (no pickle involved).

    Predicts exactly as the ``LGBMClassifier``/``LGBMRegressor`` it was saved from: the same
    booster, every iteration, and for binary tasks ``[1 - p, p]`` as the sklearn wrapper does.
    """

    def __init__(self, booster: Any, classes: np.ndarray | None) -> None:
        self.booster_ = booster
        self.classes_ = classes

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities, one column per fitted class."""
        out = np.asarray(self.booster_.predict(X))
        return out if out.ndim == 2 else np.vstack((1.0 - out, out)).transpose()

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Values (regression) or the most probable fitted class (classification)."""
        if self.classes_ is None:
            return np.asarray(self.booster_.predict(X))
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


def is_lightgbm(model: TrainedModel) -> bool:
    """True when the estimator is a fitted LightGBM model (it has a ``booster_``)."""
    return getattr(model.estimator, "booster_", None) is not None


def dump_lightgbm(model: TrainedModel) -> dict[str, bytes]:
    """The files of a LightGBM model: booster text, JSON sidecar, classes, train-row digests."""
    est = model.estimator
    classes = getattr(est, "classes_", None)
    sidecar = {
        "spec": model.spec.model_dump(mode="json"),
        "schema": model.schema.model_dump(mode="json"),
        "target": model.target.model_dump(mode="json", exclude={"classes"}),
        "best_params": model.best_params,
        "inner_score": model.inner_score,
        "n_train": model.n_train,
        "fit_seconds": model.fit_seconds,
        "estimator_classes": None if classes is None else np.asarray(classes).tolist(),
    }
    files = {
        NATIVE: est.booster_.model_to_string().encode(),
        SIDECAR: json.dumps(sidecar, sort_keys=True).encode(),
    }
    if model.target.classes:
        buffer = io.BytesIO()
        pl.DataFrame({"classes": pl.Series(list(model.target.classes))}).write_ipc(buffer)
        files[CLASSES] = buffer.getvalue()
    if model.train_rows is not None:
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(model.train_rows, dtype=np.uint64), allow_pickle=False)
        files[TRAIN_ROWS] = buffer.getvalue()
    return files


def load_lightgbm(files: Mapping[str, bytes]) -> TrainedModel:
    """Rebuild a :class:`TrainedModel` from verified :func:`dump_lightgbm` files (no pickle)."""
    import lightgbm as lgb

    sidecar = json.loads(files[SIDECAR])
    target = dict(sidecar["target"])
    if CLASSES in files:
        target["classes"] = tuple(pl.read_ipc(io.BytesIO(files[CLASSES]))["classes"].to_list())
    booster = lgb.Booster(model_str=files[NATIVE].decode())
    fitted = sidecar["estimator_classes"]
    train_rows = None
    if TRAIN_ROWS in files:
        train_rows = np.load(io.BytesIO(files[TRAIN_ROWS]), allow_pickle=False)
    return TrainedModel(
        estimator=BoosterModel(booster, None if fitted is None else np.asarray(fitted)),
        spec=PredictSpec.model_validate(sidecar["spec"]),
        schema=FeatureSchema.model_validate(sidecar["schema"]),
        target=TargetInfo.model_validate(target),
        best_params=dict(sidecar["best_params"]),
        inner_score=sidecar["inner_score"],
        n_train=sidecar["n_train"],
        fit_seconds=sidecar["fit_seconds"],
        train_rows=train_rows,
    )


def dump_joblib(model: TrainedModel) -> bytes:
    """The whole model as one compressed joblib pickle (scikit-learn estimators)."""
    buffer = io.BytesIO()
    joblib.dump(model, buffer, compress=3)
    return buffer.getvalue()


def load_joblib(data: bytes) -> TrainedModel:
    """Unpickle ``data``: call only after :func:`verify` accepted these very bytes."""
    return joblib.load(io.BytesIO(data))
