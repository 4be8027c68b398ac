"""Training and batch prediction on Modal: the predict core, fed by references, models on a Volume.

Each Modal function is a thin wrapper over a plain function of this module, and those call the
same core functions as the local path (``lakeloom.core.predict``): ``run_fold`` runs one outer
fold of nested CV (``run_outer_fold``), ``final_fit`` trains the model to keep (``fit``) and
stores it in the model store on the ``model_volume``, ``batch_predict`` scores a table
(``predict``) and writes the result as a Delta table. Inputs travel as ``lakeloom.ref`` JSON
(asset key, partition, Delta URI and version, storage option names), never as frames: each
container opens the pinned Delta version itself, from S3-compatible storage (credentials from the
``storage_secret``) or from a Volume mounted at ``data_mount``.

Deploy with ``lakeloom modal deploy train``; settings: ``LAKELOOM_MODAL_TRAIN_*``.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import modal
import numpy as np
import polars as pl

from lakeloom.core.cv import FoldResult, NestedCVResult, TrainingData, assemble
from lakeloom.core.features import FeatureSchema, TargetInfo
from lakeloom.core.predict import fit, predict, prepare_training_data, run_outer_fold
from lakeloom.core.specs import PredictSpec
from lakeloom.modal_apps.config import TrainConfig
from lakeloom.modal_apps.refs import as_ref, open_reference, ref_dict
from lakeloom.models.store import ModelRef, ModelStore
from lakeloom.storage.delta import write_table
from lakeloom.storage.lineage import bounds_sql
from lakeloom.storage.settings import Storage

config = TrainConfig.from_env()

#: What the training image installs, at the versions installed here (the pyproject pins), so a
#: fold on Modal computes exactly what it computes locally.
TRAIN_PACKAGES = tuple(
    f"{dist}=={importlib.metadata.version(dist)}"
    for dist in (
        "polars",
        "deltalake",
        "pyarrow",
        "pydantic",
        "scikit-learn",
        "lightgbm",
        "numpy",
        "joblib",
        "fsspec",
        "duckdb",
    )
)


@dataclass(frozen=True)
class FoldOutput:
    """One outer fold's result plus what assembling the report needs without re-reading data."""

    result: FoldResult
    y_test: np.ndarray
    target: TargetInfo
    schema: FeatureSchema
    n_rows: int


def _spec(spec: PredictSpec | str | Mapping[str, Any]) -> PredictSpec:
    if isinstance(spec, PredictSpec):
        return spec
    return PredictSpec.model_validate_json(spec) if isinstance(spec, str) else PredictSpec(**spec)


def fold_from_ref(ref_json: str, spec: PredictSpec | str, fold: int) -> FoldOutput:
    """Open the referenced table and run outer fold ``fold`` of the spec's nested CV."""
    spec = _spec(spec)
    data = prepare_training_data(open_reference(ref_json), spec)
    result = run_outer_fold(data, spec, fold)
    return FoldOutput(
        result=result,
        y_test=data.y[result.test_idx],
        target=data.target,
        schema=data.schema,
        n_rows=len(data.y),
    )


def assemble_folds(outputs: Sequence[FoldOutput], spec: PredictSpec | str) -> NestedCVResult:
    """Build the nested-CV report from fold outputs computed anywhere (same as ``evaluate``).

    The outer test folds partition the labelled rows, so their true labels rebuild ``y`` whole.
    """
    spec = _spec(spec)
    found = sorted(o.result.fold for o in outputs)
    if found != list(range(spec.outer_folds)):
        raise ValueError(f"expected folds 0..{spec.outer_folds - 1}, got {found}")
    first = outputs[0]
    y = np.empty(first.n_rows, dtype=first.y_test.dtype)
    for out in outputs:
        y[out.result.test_idx] = out.y_test
    data = TrainingData(
        X=np.empty((first.n_rows, 0)), y=y, groups=None, schema=first.schema, target=first.target
    )
    return assemble(data, spec, [o.result for o in outputs])


def fit_from_ref(
    ref_json: str,
    spec: PredictSpec | str,
    name: str,
    models_root: str,
    cv_metrics: Mapping[str, float] | None = None,
) -> str:
    """Train the final model on the referenced table, store it under ``models_root``.

    Returns the stored model's ``ModelRef`` as JSON; the training reference is its lineage.
    """
    model = fit(open_reference(ref_json), _spec(spec))
    store = ModelStore(Storage(root=models_root))
    ref = store.save(model, name, lineage=[ref_dict(ref_json)], cv_metrics=cv_metrics)
    return ref.model_dump_json()


def predict_from_ref(
    model_ref_json: str,
    input_ref_json: str,
    models_root: str,
    output_uri: str,
    *,
    keep_columns: Sequence[str] | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Score the referenced table with a stored model and write the predictions to Delta.

    ``keep_columns`` (e.g. the key columns) are kept beside the prediction columns; default:
    every input column. A partition reference overwrites exactly that partition of the output
    (its filter columns must be kept). Returns the output URI, version and row count (N in, N out).
    """
    model_ref = ModelRef.model_validate_json(model_ref_json)
    source = as_ref(input_ref_json)
    frame = open_reference(source)
    model = ModelStore(Storage(root=models_root)).load(
        model_ref.name, model_ref.version, check=frame, metadata_sha256=model_ref.metadata_sha256
    )
    scored = predict(model, frame)
    if keep_columns is not None:
        lost = sorted({b.column for b in source.bounds} - set(keep_columns))
        if lost:
            raise ValueError(f"keep_columns must include the partition column(s) {lost}")
        new = [c for c in scored.columns if c not in frame.columns]
        scored = scored.select([*keep_columns, *new])
    scored = scored.with_columns(
        pl.lit(f"{model_ref.name}/v{model_ref.version}").alias("_model_version")
    )
    version = write_table(
        scored,
        output_uri,
        mode="overwrite",
        predicate=bounds_sql(source.bounds) if source.bounds else None,
        storage_options=dict(storage_options or {}) or None,
    )
    return {"uri": output_uri, "version": version, "rows": scored.height}


# -- the Modal app -------------------------------------------------------------------------------

image = (
    modal.Image.debian_slim(python_version="3.11")
    .apt_install("libgomp1")  # LightGBM's OpenMP runtime
    .uv_pip_install(*TRAIN_PACKAGES)
    .add_local_python_source("lakeloom")
)
model_volume = modal.Volume.from_name(config.model_volume, create_if_missing=True)
app = modal.App(config.app_name)


def train_function_options(cfg: TrainConfig) -> dict[str, Any]:
    """Return the ``app.function`` keyword arguments of the training functions."""
    volumes: dict[str, modal.Volume] = {cfg.models_mount: model_volume}
    if cfg.data_volume:
        volumes[cfg.data_mount] = modal.Volume.from_name(cfg.data_volume)
    return {
        "image": image,
        "gpu": cfg.gpu,
        "cpu": cfg.cpu,
        "memory": cfg.memory,
        "timeout": cfg.timeout,
        "max_containers": cfg.max_containers,
        "retries": cfg.retries,
        "volumes": volumes,
        "secrets": [modal.Secret.from_name(cfg.storage_secret)] if cfg.storage_secret else [],
        "env": cfg.to_env(),
    }


@app.function(**train_function_options(config))
def run_fold(ref_json: str, spec_json: str, fold: int) -> FoldOutput:
    """Modal entry point: one outer fold, computed from the referenced Delta version."""
    return fold_from_ref(ref_json, spec_json, fold)


@app.function(**train_function_options(config))
def final_fit(ref_json: str, spec_json: str, name: str, cv_metrics: dict | None = None) -> str:
    """Modal entry point: fit on all labelled rows, store on the model volume, commit it."""
    ref = fit_from_ref(ref_json, spec_json, name, config.models_mount, cv_metrics)
    if not modal.is_local():  # in a container: publish the new version to other containers
        model_volume.commit()
    return ref


@app.function(**train_function_options(config))
def batch_predict(
    model_ref_json: str,
    input_ref_json: str,
    output_uri: str,
    keep_columns: list[str] | None = None,
) -> dict[str, Any]:
    """Modal entry point: score a referenced table with a stored model, write Delta."""
    if not modal.is_local():  # see models committed by other containers since this one started
        model_volume.reload()
    return predict_from_ref(
        model_ref_json,
        input_ref_json,
        config.models_mount,
        output_uri,
        keep_columns=keep_columns,
        storage_options=Storage.from_env().storage_options,
    )
