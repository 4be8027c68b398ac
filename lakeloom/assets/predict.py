"""Asset factories for models: a nested-CV report, a stored model, and partitioned predictions.

``cv_report_asset`` writes the per-fold metrics (plus mean/std rows) as a Delta table and shows a
markdown table with an out-of-fold confusion matrix or predicted-vs-actual plot in the UI.
``model_asset`` fits the final model, saves it in the model store with the pinned Delta versions
of its inputs, and materializes a one-row "model card" table; its data version is the stored
model version, so every retrain marks the predictions stale. ``prediction_asset`` scores each
partition of an input asset with the model named by the card, row for row, and stamps
``_model_version``. Training inputs may be several assets joined on a key (labels + embeddings).
Each factory takes the ``PredictSpec`` and an optional
:class:`~lakeloom.assets.options.AssetOptions` (key prefix, group, pool, retries, partitions);
the flat keywords build the same options.

Examples:
    >>> spec = PredictSpec(features=("embedding",), target="labels.sentiment")  # doctest: +SKIP
    >>> sources = {"embeddings": embeddings, "labels": labels}  # doctest: +SKIP
    >>> report = cv_report_asset("sentiment_cv", sources, spec, join_on="id")  # doctest: +SKIP
    >>> model = model_asset("sentiment_model", sources, spec, join_on="id")  # doctest: +SKIP
    >>> preds = prediction_asset("sentiment_preds", embeddings, model, keep="id")  # doctest: +SKIP
"""

import json
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
import polars as pl

from lakeloom.assets.options import LLM_ONLY, AssetOptions, resolve_options
from lakeloom.assets.predict_inputs import (
    Sources,
    input_sources,
    join_keys,
    join_sources,
    pin_inputs,
    training_frame,
)
from lakeloom.assets.predict_report import report_markdown
from lakeloom.assets.upstream import Source, resolve_source
from lakeloom.core.cv import evaluate
from lakeloom.core.features import FeatureMismatchError
from lakeloom.core.predict import TrainedModel, fit, predict
from lakeloom.core.specs import PredictSpec, digest
from lakeloom.io_managers.partitions import dimensions
from lakeloom.models.store import ModelStore, check_model_name
from lakeloom.storage.settings import Storage

CARD_COLUMNS = ("model_name", "model_version", "model_uri", "spec_hash")
SPEC_VERSION = "lakeloom/spec_version"
UNPARTITIONED = (*LLM_ONLY, "partitions_def", "backfill_policy")


def _code_version(*parts: Any) -> str:
    # The JSON text these code versions have always hashed, byte for byte (spaced separators):
    # a new serialization would mark every existing model asset stale.
    return digest(json.dumps(parts, sort_keys=True, default=str))


def _kinds(spec: PredictSpec) -> set[str]:
    return {"lightgbm" if spec.estimator == "lightgbm" else "scikitlearn", "polars", "deltalake"}


def _options(
    options: AssetOptions | None, factory: str, refused: Sequence[str], **flat: Any
) -> AssetOptions:
    resolved = resolve_options(options, factory, **flat)
    resolved.refuse(refused, factory)
    return resolved


def cv_report_asset(
    name: str,
    sources: Sources,
    spec: PredictSpec,
    *,
    join_on: str | Sequence[str] | None = None,
    options: AssetOptions | None = None,
    key_prefix: str | Sequence[str] = (),
    group_name: str | None = None,
    io_manager_key: str = "io_manager",
) -> dg.AssetsDefinition:
    """Nested CV of ``spec`` on the (joined) sources: per-fold metrics table + report metadata."""
    ins = input_sources(sources)
    keys = join_keys(join_on)
    opts = _options(
        options,
        "cv_report_asset",
        UNPARTITIONED,
        key_prefix=key_prefix,
        group_name=group_name,
        io_manager_key=io_manager_key,
    )

    @dg.asset(
        key=dg.AssetKey(opts.key_path(name)),
        ins={n: dg.AssetIn(key=k) for n, (k, _, _) in ins.items()},
        code_version=_code_version("cv_report", spec.version, keys),
        metadata={
            **opts.metadata,
            SPEC_VERSION: spec.version,
            "lakeloom/estimator": spec.estimator,
        },
        description=opts.description
        or f"Nested CV ({spec.outer_folds}x{spec.inner_folds} folds) of "
        f"{spec.estimator} predicting {spec.target}.",
        group_name=opts.group_name,
        io_manager_key=opts.io_manager_key,
        pool=opts.pool,
        retry_policy=opts.retries(None),
        kinds=_kinds(spec),
    )
    def _asset(context: dg.AssetExecutionContext, **inputs: pl.DataFrame) -> dg.Output:
        result = evaluate(training_frame(spec, inputs, keys), spec)
        summary = result.summary()
        context.log.info(f"{name}: " + ", ".join(f"{k}={v:.4f}" for k, v in summary.items()))
        metadata: dict[str, Any] = {
            "report": dg.MetadataValue.md(report_markdown(result, f"{name}: {spec.estimator}")),
            "n_labelled": result.predictions.height,
            "spec_version": spec.version,
            **{f"cv_{k}": dg.MetadataValue.float(float(v)) for k, v in summary.items()},
        }
        if result.target.task == "classification":
            counts = result.predictions["y_true"].cast(pl.String).value_counts(sort=True)
            metadata["class_counts"] = dg.MetadataValue.json(dict(counts.iter_rows()))
        return dg.Output(result.report, metadata=metadata)

    return _asset


def _cv_metrics(report: pl.DataFrame | None) -> dict[str, Any] | None:
    """The mean metrics of a cv_report table (None without one)."""
    if report is None:
        return None
    mean = report.filter(pl.col("kind") == "mean").drop(
        "fold", "kind", "n_train", "n_test", "best_params", "seconds"
    )
    return {k: v for k, v in mean.row(0, named=True).items() if v is not None}


def _model_card(ref: Any, spec: PredictSpec, model: TrainedModel) -> pl.DataFrame:
    """The one-row model card (its ``spec_hash`` column is the spec's version)."""
    return pl.DataFrame(
        {
            "model_name": [ref.name],
            "model_version": [ref.version],
            "model_uri": [ref.uri],
            "spec_hash": [spec.version],
            "estimator": [spec.estimator],
            "task": [model.target.task],
            "target": [spec.target],
            "params": [json.dumps(model.best_params, sort_keys=True)],
            "inner_score": [model.inner_score],
            "n_train": [model.n_train],
        },
        schema_overrides={"model_version": pl.Int64},
    )


def _model_metadata(ref: Any, model: TrainedModel, lineage: list[Any]) -> dict[str, Any]:
    return {
        "model_name": ref.name,
        "model_version": dg.MetadataValue.int(ref.version),
        "model_uri": dg.MetadataValue.path(ref.uri),
        "model_ref": dg.MetadataValue.json(ref.model_dump()),
        "params": dg.MetadataValue.json(model.best_params),
        "features": dg.MetadataValue.json(model.schema.names),
        "inner_score": dg.MetadataValue.float(float(model.inner_score)),
        "n_train": model.n_train,
        "fit_seconds": dg.MetadataValue.float(round(model.fit_seconds, 3)),
        "lineage": dg.MetadataValue.json(lineage),
    }


def model_asset(
    name: str,
    sources: Sources,
    spec: PredictSpec,
    *,
    join_on: str | Sequence[str] | None = None,
    model_name: str | None = None,
    cv_report: Source | None = None,
    storage: Storage | None = None,
    options: AssetOptions | None = None,
    key_prefix: str | Sequence[str] = (),
    group_name: str | None = None,
    io_manager_key: str = "io_manager",
) -> dg.AssetsDefinition:
    """Fit ``spec`` on all labelled rows, store the model, materialize its one-row model card.

    ``cv_report`` (the asset from :func:`cv_report_asset`) makes its mean metrics part of the
    stored metadata. ``storage`` defaults to ``Storage.from_env()`` at run time.
    """
    ins = input_sources(sources)
    keys = join_keys(join_on)
    stored_as = model_name or name
    check_model_name(stored_as)
    opts = _options(
        options,
        "model_asset",
        UNPARTITIONED,
        key_prefix=key_prefix,
        group_name=group_name,
        io_manager_key=io_manager_key,
    )
    asset_ins = {n: dg.AssetIn(key=k) for n, (k, _, _) in ins.items()}
    if cv_report is not None:
        if "cv_report" in asset_ins:
            raise ValueError("an input is already named 'cv_report'; rename it")
        asset_ins["cv_report"] = dg.AssetIn(key=resolve_source(cv_report)[0])

    @dg.asset(
        key=dg.AssetKey(opts.key_path(name)),
        ins=asset_ins,
        code_version=_code_version("model", spec.version, keys, stored_as),
        metadata={**opts.metadata, SPEC_VERSION: spec.version, "lakeloom/model_name": stored_as},
        description=opts.description
        or f"{spec.estimator} model predicting {spec.target}, stored as {stored_as!r}.",
        group_name=opts.group_name,
        io_manager_key=opts.io_manager_key,
        pool=opts.pool,
        retry_policy=opts.retries(None),
        kinds=_kinds(spec),
    )
    def _asset(context: dg.AssetExecutionContext, **inputs: pl.DataFrame) -> dg.Output:
        cv_metrics = _cv_metrics(inputs.pop("cv_report", None) if cv_report is not None else None)
        root = storage or Storage.from_env()
        lineage = pin_inputs([ins[n][0] for n in inputs], root)  # versions just read
        model = fit(training_frame(spec, inputs, keys), spec)
        ref = ModelStore(root).save(model, stored_as, lineage=lineage, cv_metrics=cv_metrics)
        context.log.info(f"stored {ref.name} v{ref.version} at {ref.uri}")
        with warnings.catch_warnings():  # data_version is beta, and exactly what we need here
            warnings.simplefilter("ignore", dg.BetaWarning)
            return dg.Output(
                _model_card(ref, spec, model),
                metadata=_model_metadata(ref, model, lineage),
                data_version=dg.DataVersion(f"{ref.name}/v{ref.version}"),
            )

    return _asset


def _score(
    card: dict[str, Any],
    store: ModelStore,
    inputs: Mapping[str, pl.DataFrame],
    wanted: Sequence[str],
    keys: Sequence[str],
    first_name: str,
    prediction_column: str,
) -> tuple[pl.DataFrame, TrainedModel, str]:
    """Load the card's model and score the joined inputs: wanted columns + predictions."""
    trained = store.load(card["model_name"], card["model_version"])
    frame = join_sources(inputs, [*trained.schema.names, *wanted], keys)
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise ValueError(
            f"keep column(s) {missing} are not in the input (columns: {frame.columns})"
        )
    tag = f"{card['model_name']}/v{card['model_version']}"
    try:
        trained.check(frame)
    except FeatureMismatchError as exc:
        raise FeatureMismatchError(f"model {tag} cannot score {first_name}: {exc}") from exc
    scored = predict(trained, frame, prediction_column=prediction_column)
    new = [c for c in scored.columns if c not in frame.columns]
    out = scored.select(*dict.fromkeys(wanted), *new)
    return out.with_columns(pl.lit(tag).alias("_model_version")), trained, tag


def _check_card(model: pl.DataFrame, model_key: dg.AssetKey) -> None:
    if model.height != 1 or not set(CARD_COLUMNS) <= set(model.columns):
        raise ValueError(
            f"{model_key.to_user_string()} is not a model card (one row with {CARD_COLUMNS})"
        )


def _prediction_metadata(
    out: pl.DataFrame, trained: TrainedModel, tag: str, prediction_column: str
) -> dict[str, Any]:
    extra: dict[str, Any] = {"model_version": tag, "rows": out.height}
    if trained.target.task == "classification":
        counts = out[prediction_column].cast(pl.String).value_counts(sort=True)
        extra["prediction_counts"] = dg.MetadataValue.json(dict(counts.iter_rows()))
    elif out.height:
        extra["prediction_mean"] = dg.MetadataValue.float(float(out[prediction_column].mean()))
    return extra


def prediction_asset(
    name: str,
    sources: Sources,
    model: Source,
    *,
    keep: str | Sequence[str],
    join_on: str | Sequence[str] | None = None,
    storage: Storage | None = None,
    prediction_column: str = "prediction",
    options: AssetOptions | None = None,
    partitions_def: dg.PartitionsDefinition | None = None,
    key_prefix: str | Sequence[str] = (),
    group_name: str | None = None,
    io_manager_key: str = "io_manager",
    backfill_policy: dg.BackfillPolicy | None = None,
) -> dg.AssetsDefinition:
    """Score each partition of the (first) source with the model its model card names.

    Output: the ``keep`` columns (+ partition columns), the prediction, ``proba_<class>``
    columns for classifiers, and ``_model_version`` (``name/vN``). N rows in, N rows out.
    """
    ins = input_sources(sources)
    keys = join_keys(join_on)
    keep_cols = [keep] if isinstance(keep, str) else list(keep)
    opts = _options(
        options,
        "prediction_asset",
        LLM_ONLY,
        partitions_def=partitions_def,
        key_prefix=key_prefix,
        group_name=group_name,
        io_manager_key=io_manager_key,
        backfill_policy=backfill_policy,
    )
    first_key, first_parts, first_meta = next(iter(ins.values()))
    partitions = opts.partitions_def if opts.partitions_def is not None else first_parts
    model_key = resolve_source(model)[0]
    if "model" in ins:
        raise ValueError("an input is already named 'model'; rename it")
    partition_columns = [d.column for d in dimensions(partitions, first_meta)] if partitions else []
    metadata: dict[str, Any] = dict(opts.metadata)
    if "partition_expr" in first_meta:
        metadata["partition_expr"] = first_meta["partition_expr"]

    @dg.asset(
        key=dg.AssetKey(opts.key_path(name)),
        ins={
            **{n: dg.AssetIn(key=k) for n, (k, _, _) in ins.items()},
            "model": dg.AssetIn(key=model_key),
        },
        partitions_def=partitions,
        code_version=_code_version("predictions", keep_cols, keys, prediction_column),
        metadata=metadata,
        description=opts.description
        or f"Predictions of {model_key.to_user_string()} for {first_key.to_user_string()}.",
        group_name=opts.group_name,
        io_manager_key=opts.io_manager_key,
        pool=opts.pool,
        retry_policy=opts.retries(None),
        backfill_policy=opts.backfill_policy,
        kinds={"polars", "deltalake"},
    )
    def _asset(context: dg.AssetExecutionContext, model: pl.DataFrame, **inputs: pl.DataFrame):
        _check_card(model, model_key)
        first = next(iter(inputs.values()))
        wanted = [*keep_cols, *(c for c in partition_columns if c in first.columns)]
        out, trained, tag = _score(
            model.row(0, named=True),
            ModelStore(storage or Storage.from_env()),
            inputs,
            wanted,
            keys,
            first_key.to_user_string(),
            prediction_column,
        )
        return dg.Output(out, metadata=_prediction_metadata(out, trained, tag, prediction_column))

    return _asset
