"""cv_report / model / prediction assets materialized by Dagster with the real Delta IO manager."""

import json

import dagster as dg
import polars as pl
import pytest
from dagster._core.definitions.data_version import StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver
from deltalake import DeltaTable

from lakeloom.assets.predict import cv_report_asset, join_sources, model_asset, prediction_asset
from lakeloom.core.specs import PredictSpec
from lakeloom.models import ModelStore
from lakeloom.storage.ref import Ref
from tests.fixtures.delta_io import mat_metadata, read

PARTS = dg.StaticPartitionsDefinition(["p0", "p1", "p2"])
DIGITS = ["d0", "d1", "d2", "d3", "d4"]


@pytest.fixture(scope="module")
def demo_frames(digits_embedded):
    """The demo's shapes: an embedding asset (list[f32]) and a label asset (a struct whose
    enum-like field is a string, as lakeloom.core.schema stores enums: Delta has no enum type)."""
    df = digits_embedded.with_columns(pl.format("p{}", pl.col("id") % 3).alias("partition"))
    return df.select("id", "partition", "embedding", "ink"), df.select("id", "partition", "labels")


@pytest.fixture
def graph(demo_frames, storage):
    embedding_frame, label_frame = demo_frames

    @dg.asset(partitions_def=PARTS)
    def embeddings(context: dg.AssetExecutionContext) -> pl.DataFrame:
        return embedding_frame.filter(pl.col("partition") == context.partition_key)

    @dg.asset(partitions_def=PARTS)
    def labels(context: dg.AssetExecutionContext) -> pl.DataFrame:
        return label_frame.filter(pl.col("partition") == context.partition_key)

    spec = PredictSpec(
        features=("embedding", "ink"),
        target="labels.digit",
        param_grid={"n_estimators": (40,), "num_leaves": (7, 15)},
        outer_folds=3,
        inner_folds=2,
    )
    sources = {"embeddings": embeddings, "labels": labels}
    report = cv_report_asset("digits_cv", sources, spec, join_on="id")
    model = model_asset(
        "digits_model", sources, spec, join_on="id", cv_report=report, storage=storage
    )
    preds = prediction_asset("digits_predictions", embeddings, model, keep="id", storage=storage)
    return {
        "embeddings": embeddings,
        "labels": labels,
        "report": report,
        "model": model,
        "preds": preds,
    }


def test_report_model_and_partitioned_predictions(
    graph, run, io_manager, storage, demo_frames, digits_embedded
):
    instance = dg.DagsterInstance.ephemeral()
    assets = list(graph.values())
    for part in PARTS.get_partition_keys():
        assert run(assets, ["embeddings", "labels"], partition_key=part, instance=instance).success

    result = run(assets, ["digits_cv", "digits_model"], instance=instance)
    assert result.success

    report = read(io_manager, "digits_cv")
    assert sorted(report["kind"].to_list()) == ["fold", "fold", "fold", "mean", "std"]
    mean = report.filter(pl.col("kind") == "mean").row(0, named=True)
    assert mean["accuracy"] > 0.9
    meta = mat_metadata(result, "digits_cv")
    assert "data:image/png;base64,iVBOR" in meta["report"].value  # a real PNG, embedded
    assert "| mean |" in meta["report"].value
    assert meta["cv_accuracy"].value == pytest.approx(mean["accuracy"])
    assert meta["delta_version"].value == 0

    card = read(io_manager, "digits_model")
    assert card.select("model_name", "model_version").row(0) == ("digits_model", 1)
    model_meta = mat_metadata(result, "digits_model")
    assert model_meta["model_version"].value == 1
    stored = ModelStore(storage).metadata("digits_model")
    assert stored["cv_metrics"]["accuracy"] == pytest.approx(mean["accuracy"])
    lineage = {tuple(r["asset_key"]): r for r in stored["lineage"]}
    for key in ("embeddings", "labels"):
        table = DeltaTable(io_manager.table_uri(dg.AssetKey(key)))
        assert lineage[(key,)]["uri"] == io_manager.table_uri(dg.AssetKey(key))
        assert lineage[(key,)]["version"] == table.version() == 2  # three partition commits
    # the stored lineage reopens the exact training data, e.g. on a Modal worker
    reopened = Ref.model_validate(lineage[("labels",)]).lazy().collect()
    assert reopened.height == digits_embedded.height

    result = run(assets, ["digits_predictions"], partition_key="p2", instance=instance)
    assert result.success
    preds = read(io_manager, "digits_predictions")
    embedding_frame, label_frame = demo_frames
    expected_rows = embedding_frame.filter(pl.col("partition") == "p2").height
    assert preds.height == expected_rows
    assert preds["partition"].unique().to_list() == ["p2"]
    assert set(preds.columns) == {
        "id",
        "partition",
        "prediction",
        *(f"proba_{d}" for d in DIGITS),
        "_in_training",
        "_model_version",
    }
    assert preds.schema["_in_training"] == pl.Boolean
    assert preds["_model_version"].unique().to_list() == ["digits_model/v1"]
    truth = preds.join(label_frame, on="id").select(
        pl.col("prediction").cast(pl.String)
        == pl.col("labels").struct.field("digit").cast(pl.String)
    )
    assert truth.to_series().mean() > 0.9
    assert mat_metadata(result, "digits_predictions")["model_version"].value == "digits_model/v1"

    # retraining stores v2 and marks the predictions stale; re-predicting p2 picks v2 up
    resolver = get_stale_status_resolver(instance, assets)
    assert resolver.get_status(graph["preds"].key, "p2") == StaleStatus.FRESH
    assert run(assets, ["digits_model"], instance=instance).success
    assert ModelStore(storage).versions("digits_model") == [1, 2]
    resolver = get_stale_status_resolver(instance, assets)
    assert resolver.get_status(graph["preds"].key, "p2") == StaleStatus.STALE
    assert run(assets, ["digits_predictions"], partition_key="p2", instance=instance).success
    assert run(assets, ["digits_predictions"], partition_key="p0", instance=instance).success
    preds = read(io_manager, "digits_predictions")
    by_part = dict(preds.group_by("partition").agg(pl.col("_model_version").first()).iter_rows())
    assert by_part == {"p0": "digits_model/v2", "p2": "digits_model/v2"}
    assert preds.filter(pl.col("partition") == "p2").height == expected_rows


def test_prediction_asset_fails_clearly_on_missing_feature(
    storage, run, io_manager, digits_embedded
):
    spec = PredictSpec(
        features=("embedding", "ink"),
        target="labels.digit",
        param_grid={"n_estimators": (20,)},
        outer_folds=2,
        inner_folds=2,
    )

    @dg.asset
    def training() -> pl.DataFrame:
        return digits_embedded

    @dg.asset
    def fresh() -> pl.DataFrame:
        return digits_embedded.select("id", "embedding")  # no 'ink'

    model = model_asset("m", training, spec, storage=storage)
    preds = prediction_asset("p", fresh, model, keep="id", storage=storage)
    assert run([training, fresh, model], ["training", "fresh", "m"]).success
    result = dg.materialize(
        [training, fresh, model, preds],
        selection=["p"],
        resources={"io_manager": io_manager},
        raise_on_error=False,
    )
    assert not result.success
    error = result.get_step_failure_events()[0].event_specific_data.error
    messages = [error.message, *(c.message for c in [error.cause] if c)]
    assert any(
        "model m/v1 cannot score fresh: " in m and "missing feature 'ink'" in m for m in messages
    )


def test_join_sources_keeps_base_rows_and_refuses_duplicate_keys():
    base = pl.DataFrame({"id": [1, 2, 3], "x": [0.1, 0.2, 0.3], "_status": ["ok"] * 3})
    labels = pl.DataFrame(
        {"id": [3, 1], "labels": [{"y": "a"}, {"y": "b"}], "_status": ["ok", "error"]}
    )
    joined = join_sources({"base": base, "labels": labels}, ["x", "labels.y"], ["id"])
    assert joined["id"].to_list() == [1, 2, 3]
    assert joined["labels"].struct.field("y").to_list() == ["b", None, "a"]
    assert joined["_status"].to_list() == ["ok"] * 3  # provenance of the base, never duplicated
    with pytest.raises(
        ValueError, match=r"input 'labels' has duplicate join key\(s\) \['id'\]=\(3,\)"
    ):
        join_sources({"base": base, "labels": pl.concat([labels, labels])}, ["labels.y"], ["id"])
    with pytest.raises(ValueError, match="need join_on="):
        join_sources({"base": base, "labels": labels}, ["labels.y"], [])


def test_model_name_checked_at_definition_time():
    spec = PredictSpec(features=("x",), target="y")
    with pytest.raises(ValueError, match="model name 'bad/name'"):
        model_asset("ok", "training", spec, model_name="bad/name")
    assets = model_asset("m1", "training", spec)
    assert json.loads(json.dumps(assets.code_versions_by_key[assets.key]))  # a stable string
    changed = model_asset("m1", "training", spec.model_copy(update={"seed": 3}))
    same = model_asset("m1", "training", spec.model_copy(update={"n_jobs": 2}))
    versions = {a.code_versions_by_key[a.key] for a in (assets, same)}
    assert len(versions) == 1
    assert changed.code_versions_by_key[changed.key] not in versions
