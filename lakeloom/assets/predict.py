"""Asset factories for models: a nested-CV report, a stored model, and partitioned predictions.

``cv_report_asset`` writes the per-fold metrics (plus mean/std rows) as a Delta table and shows a
markdown table with an out-of-fold confusion matrix or predicted-vs-actual plot in the UI.
``model_asset`` fits the final model, saves it in the model store with the pinned Delta versions
of its inputs, and materializes a one-row "model card" table; its data version is the stored
model version, so every retrain marks the predictions stale. ``prediction_asset`` scores each
partition of an input asset with the model named by the card, row for row, and stamps
``_model_version``. Training inputs may be several assets joined on a key (labels + embeddings).

Examples:
    >>> spec = PredictSpec(features=("embedding",), target="labels.sentiment")  # doctest: +SKIP
    >>> sources = {"embeddings": embeddings, "labels": labels}  # doctest: +SKIP
    >>> report = cv_report_asset("sentiment_cv", sources, spec, join_on="id")  # doctest: +SKIP
    >>> model = model_asset("sentiment_model", sources, spec, join_on="id")  # doctest: +SKIP
    >>> preds = prediction_asset("sentiment_preds", embeddings, model, keep="id")  # doctest: +SKIP
"""

import hashlib
import json
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
import polars as pl

from lakeloom.assets.predict_report import report_markdown
from lakeloom.assets.upstream import Source, resolve_source
from lakeloom.core.cv import evaluate
from lakeloom.core.features import FeatureMismatchError
from lakeloom.core.predict import PredictSpec, fit, predict
from lakeloom.io_managers.partitions import dimensions
from lakeloom.models.store import ModelStore, check_model_name
from lakeloom.storage.ref import RefError, ref
from lakeloom.storage.settings import Storage

Sources = Source | Mapping[str, Source]
CARD_COLUMNS = ("model_name", "model_version", "model_uri", "spec_hash")


def _ins(
    sources: Sources,
) -> dict[str, tuple[dg.AssetKey, dg.PartitionsDefinition | None, Mapping]]:
    """Input name → (key, partitions, metadata); a single source is the input ``source``."""
    items = sources.items() if isinstance(sources, Mapping) else [("source", sources)]
    out = {name: resolve_source(src) for name, src in items}
    if not out:
        raise ValueError("name at least one source asset")
    return out


def _root(name: str, columns: Sequence[str]) -> str | None:
    """Find the frame column holding ``name`` (itself, or the struct column of 'col.field')."""
    if name in columns:
        return name
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        if ".".join(parts[:cut]) in columns:
            return ".".join(parts[:cut])
    return None


def join_sources(
    frames: Mapping[str, pl.DataFrame], needed: Sequence[str], join_on: Sequence[str]
) -> pl.DataFrame:
    """Left-join the inputs on ``join_on`` (first input is the base: its rows are the rows).

    Each needed column is taken from the first input that has it; a later input must have
    unique keys, else the join would duplicate rows, and that is refused by name.
    """
    names = list(frames)
    if len(names) == 1:
        return frames[names[0]]
    if not join_on:
        raise ValueError(f"inputs {names} need join_on= naming the key column(s) to join them on")
    base_name = names[0]
    base = frames[base_name]
    taken = set(base.columns)
    for name in names[1:]:
        frame = frames[name]
        missing = [k for k in join_on if k not in frame.columns or k not in base.columns]
        if missing:
            raise ValueError(f"join key(s) {missing} missing from input {name!r} or {base_name!r}")
        wanted = [
            c
            for n in needed
            if (c := _root(n, frame.columns)) and c not in taken and c not in join_on
        ]
        if not wanted:
            continue
        part = frame.select(*join_on, *dict.fromkeys(wanted))
        dupes = part.select(join_on).is_duplicated()
        if dupes.any():
            example = part.filter(dupes).select(join_on).row(0)
            raise ValueError(f"input {name!r} has duplicate join key(s) {join_on}={example}")
        base = base.join(part, on=list(join_on), how="left", nulls_equal=False)
        taken |= set(wanted)
    return base


def _lineage(keys: Sequence[dg.AssetKey], storage: Storage) -> list[dict[str, Any]]:
    """Pin each training input as a ``lakeloom.ref`` (Delta version) in JSON-able form."""
    refs = []
    for key in keys:
        try:
            refs.append(json.loads(ref(key, storage=storage).to_json()))
        except RefError:  # stored elsewhere than this storage root: keep the key at least
            refs.append({"asset_key": list(key.path), "uri": None, "version": None})
    return refs


def _version(*parts: Any) -> str:
    payload = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _kinds(spec: PredictSpec) -> set[str]:
    return {"lightgbm" if spec.estimator == "lightgbm" else "scikitlearn", "polars", "deltalake"}


def _training_frame(spec: PredictSpec, inputs: Mapping[str, pl.DataFrame], join_on: Sequence[str]):
    needed = [*spec.features, spec.target, *([spec.group_column] if spec.group_column else [])]
    return join_sources(inputs, needed, join_on)


def _join_keys(join_on: str | Sequence[str] | None) -> tuple[str, ...]:
    if join_on is None:
        return ()
    return (join_on,) if isinstance(join_on, str) else tuple(join_on)


def cv_report_asset(
    name: str,
    sources: Sources,
    spec: PredictSpec,
    *,
    join_on: str | Sequence[str] | None = None,
    key_prefix: Sequence[str] = (),
    group_name: str | None = None,
    io_manager_key: str = "io_manager",
) -> dg.AssetsDefinition:
    """Nested CV of ``spec`` on the (joined) sources: per-fold metrics table + report metadata."""
    ins = _ins(sources)
    keys = _join_keys(join_on)

    @dg.asset(
        key=dg.AssetKey([*key_prefix, name]),
        ins={n: dg.AssetIn(key=k) for n, (k, _, _) in ins.items()},
        code_version=_version("cv_report", spec.spec_hash(), keys),
        metadata={"lakeloom/spec_hash": spec.spec_hash(), "lakeloom/estimator": spec.estimator},
        description=f"Nested CV ({spec.outer_folds}x{spec.inner_folds} folds) of "
        f"{spec.estimator} predicting {spec.target}.",
        group_name=group_name,
        io_manager_key=io_manager_key,
        kinds=_kinds(spec),
    )
    def _asset(context: dg.AssetExecutionContext, **inputs: pl.DataFrame) -> dg.Output:
        frame = _training_frame(spec, inputs, keys)
        result = evaluate(frame, spec)
        summary = result.summary()
        context.log.info(f"{name}: " + ", ".join(f"{k}={v:.4f}" for k, v in summary.items()))
        metadata: dict[str, Any] = {
            "report": dg.MetadataValue.md(report_markdown(result, f"{name}: {spec.estimator}")),
            "n_labelled": result.predictions.height,
            "spec_hash": spec.spec_hash(),
            **{f"cv_{k}": dg.MetadataValue.float(float(v)) for k, v in summary.items()},
        }
        if result.target.task == "classification":
            counts = result.predictions["y_true"].cast(pl.String).value_counts(sort=True)
            metadata["class_counts"] = dg.MetadataValue.json(dict(counts.iter_rows()))
        return dg.Output(result.report, metadata=metadata)

    return _asset


def model_asset(
    name: str,
    sources: Sources,
    spec: PredictSpec,
    *,
    join_on: str | Sequence[str] | None = None,
    model_name: str | None = None,
    cv_report: Source | None = None,
    storage: Storage | None = None,
    key_prefix: Sequence[str] = (),
    group_name: str | None = None,
    io_manager_key: str = "io_manager",
) -> dg.AssetsDefinition:
    """Fit ``spec`` on all labelled rows, store the model, materialize its one-row model card.

    ``cv_report`` (the asset from :func:`cv_report_asset`) makes its mean metrics part of the
    stored metadata. ``storage`` defaults to ``Storage.from_env()`` at run time.
    """
    ins = _ins(sources)
    keys = _join_keys(join_on)
    stored_as = model_name or name
    check_model_name(stored_as)
    asset_ins = {n: dg.AssetIn(key=k) for n, (k, _, _) in ins.items()}
    if cv_report is not None:
        if "cv_report" in asset_ins:
            raise ValueError("an input is already named 'cv_report'; rename it")
        asset_ins["cv_report"] = dg.AssetIn(key=resolve_source(cv_report)[0])

    @dg.asset(
        key=dg.AssetKey([*key_prefix, name]),
        ins=asset_ins,
        code_version=_version("model", spec.spec_hash(), keys, stored_as),
        metadata={"lakeloom/spec_hash": spec.spec_hash(), "lakeloom/model_name": stored_as},
        description=f"{spec.estimator} model predicting {spec.target}, stored as {stored_as!r}.",
        group_name=group_name,
        io_manager_key=io_manager_key,
        kinds=_kinds(spec),
    )
    def _asset(context: dg.AssetExecutionContext, **inputs: pl.DataFrame) -> dg.Output:
        report = inputs.pop("cv_report", None) if cv_report is not None else None
        cv_metrics = None
        if report is not None:
            mean = report.filter(pl.col("kind") == "mean").drop(
                "fold", "kind", "n_train", "n_test", "best_params", "seconds"
            )
            cv_metrics = {k: v for k, v in mean.row(0, named=True).items() if v is not None}
        root = storage or Storage.from_env()
        lineage = _lineage([ins[n][0] for n in inputs], root)  # versions just read
        model = fit(_training_frame(spec, inputs, keys), spec)
        store = ModelStore(root)
        ref = store.save(model, stored_as, lineage=lineage, cv_metrics=cv_metrics)
        context.log.info(f"stored {ref.name} v{ref.version} at {ref.uri}")
        card = pl.DataFrame(
            {
                "model_name": [ref.name],
                "model_version": [ref.version],
                "model_uri": [ref.uri],
                "spec_hash": [spec.spec_hash()],
                "estimator": [spec.estimator],
                "task": [model.target.task],
                "target": [spec.target],
                "params": [json.dumps(model.best_params, sort_keys=True)],
                "inner_score": [model.inner_score],
                "n_train": [model.n_train],
            },
            schema_overrides={"model_version": pl.Int64},
        )
        metadata = {
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
        with warnings.catch_warnings():  # data_version is beta, and exactly what we need here
            warnings.simplefilter("ignore", dg.BetaWarning)
            return dg.Output(
                card, metadata=metadata, data_version=dg.DataVersion(f"{ref.name}/v{ref.version}")
            )

    return _asset


def prediction_asset(
    name: str,
    sources: Sources,
    model: Source,
    *,
    keep: str | Sequence[str],
    join_on: str | Sequence[str] | None = None,
    partitions_def: dg.PartitionsDefinition | None = None,
    storage: Storage | None = None,
    prediction_column: str = "prediction",
    key_prefix: Sequence[str] = (),
    group_name: str | None = None,
    io_manager_key: str = "io_manager",
    backfill_policy: dg.BackfillPolicy | None = None,
) -> dg.AssetsDefinition:
    """Score each partition of the (first) source with the model its model card names.

    Output: the ``keep`` columns (+ partition columns), the prediction, ``proba_<class>``
    columns for classifiers, and ``_model_version`` (``name/vN``). N rows in, N rows out.
    """
    ins = _ins(sources)
    keys = _join_keys(join_on)
    keep_cols = [keep] if isinstance(keep, str) else list(keep)
    first_key, first_parts, first_meta = next(iter(ins.values()))
    partitions = partitions_def if partitions_def is not None else first_parts
    model_key = resolve_source(model)[0]
    if "model" in ins:
        raise ValueError("an input is already named 'model'; rename it")
    partition_columns = [d.column for d in dimensions(partitions, first_meta)] if partitions else []
    metadata: dict[str, Any] = {}
    if "partition_expr" in first_meta:
        metadata["partition_expr"] = first_meta["partition_expr"]

    @dg.asset(
        key=dg.AssetKey([*key_prefix, name]),
        ins={
            **{n: dg.AssetIn(key=k) for n, (k, _, _) in ins.items()},
            "model": dg.AssetIn(key=model_key),
        },
        partitions_def=partitions,
        code_version=_version("predictions", keep_cols, keys, prediction_column),
        metadata=metadata,
        description=f"Predictions of {model_key.to_user_string()} for "
        f"{first_key.to_user_string()}.",
        group_name=group_name,
        io_manager_key=io_manager_key,
        backfill_policy=backfill_policy,
        kinds={"polars", "deltalake"},
    )
    def _asset(context: dg.AssetExecutionContext, model: pl.DataFrame, **inputs: pl.DataFrame):
        if model.height != 1 or not set(CARD_COLUMNS) <= set(model.columns):
            raise ValueError(
                f"{model_key.to_user_string()} is not a model card (one row with {CARD_COLUMNS})"
            )
        card = model.row(0, named=True)
        store = ModelStore(storage or Storage.from_env())
        first = next(iter(inputs.values()))
        partition_cols = [c for c in partition_columns if c in first.columns]
        wanted = [*keep_cols, *partition_cols]
        trained = store.load(card["model_name"], card["model_version"])
        frame = join_sources(inputs, [*trained.schema.names, *wanted], keys)
        missing = [c for c in keep_cols if c not in frame.columns]
        if missing:
            raise ValueError(
                f"keep column(s) {missing} are not in the input (columns: {frame.columns})"
            )
        tag = f"{card['model_name']}/v{card['model_version']}"
        try:
            trained.check(frame)
        except FeatureMismatchError as exc:
            raise FeatureMismatchError(
                f"model {tag} cannot score {first_key.to_user_string()}: {exc}"
            ) from exc
        scored = predict(trained, frame, prediction_column=prediction_column)
        new = [c for c in scored.columns if c not in frame.columns]
        out = scored.select(*dict.fromkeys(wanted), *new).with_columns(
            pl.lit(tag).alias("_model_version")
        )
        extra: dict[str, Any] = {"model_version": tag, "rows": out.height}
        if trained.target.task == "classification":
            counts = out[prediction_column].cast(pl.String).value_counts(sort=True)
            extra["prediction_counts"] = dg.MetadataValue.json(dict(counts.iter_rows()))
        elif out.height:
            extra["prediction_mean"] = dg.MetadataValue.float(float(out[prediction_column].mean()))
        return dg.Output(out, metadata=extra)

    return _asset
