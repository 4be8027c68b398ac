"""Every factory takes a spec and one AssetOptions; the flat keywords build the same objects."""

import inspect
from pathlib import Path
from typing import Literal

import dagster as dg
import polars as pl
import pytest

from lakeloom.assets.factories import embedding_asset, generated_asset
from lakeloom.assets.options import DEFAULT_RETRY, AssetOptions, flat_defaults
from lakeloom.assets.predict import cv_report_asset, model_asset, prediction_asset
from lakeloom.assets.sources import file_source_asset
from lakeloom.core.specs import EmbedSpec, GenerateSpec, PredictSpec

PARTS = dg.StaticPartitionsDefinition(["a", "b"])
SOURCE = dg.AssetSpec(
    "posts",
    partitions_def=PARTS,
    metadata={
        "partition_expr": "part",
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn("id", "string"), dg.TableColumn("text", "string")]
        ),
    },
)
LABEL = Literal["pos", "neg"]
FACTORIES = [
    embedding_asset,
    generated_asset,
    cv_report_asset,
    model_asset,
    prediction_asset,
    file_source_asset,
]


def shape(asset: dg.AssetsDefinition) -> dict:
    """Everything a factory decides about an asset definition, comparable across call forms."""
    spec = asset.specs_by_key[asset.key]
    return {
        "key": asset.key,
        "code_version": asset.code_versions_by_key[asset.key],
        "metadata": {k: str(v) for k, v in spec.metadata.items()},
        "group": spec.group_name,
        "description": spec.description,
        "retry": asset.op.retry_policy,
        "pool": asset.op.pool,
        "backfill": asset.backfill_policy,
        "partitions": asset.partitions_def,
        "checks": sorted(str(c.key) for c in asset.check_specs),
        "blocking": sorted(c.blocking for c in asset.check_specs),
    }


def test_generated_asset_spec_and_options_build_the_flat_form_asset():
    flat = generated_asset(
        "labels", SOURCE, "Post: {text}", LABEL, key="id", model="m", max_tokens=16,
        key_prefix="llm", group_name="g", min_ok_ratio=0.5, retry_policy=None, pool="p",
        blocking=False,
    )  # fmt: skip
    spec = GenerateSpec(prompt="Post: {text}", output=LABEL, model="m", max_tokens=16)
    options = AssetOptions(
        key_prefix="llm", group_name="g", min_ok_ratio=0.5, retry_policy=None, pool="p",
        blocking=False,
    )  # fmt: skip
    typed = generated_asset("labels", SOURCE, spec=spec, key="id", options=options)
    assert shape(typed) == shape(flat)
    assert typed.key == dg.AssetKey(["llm", "labels"]) and typed.op.retry_policy is None


def test_embedding_asset_spec_and_options_build_the_flat_form_asset():
    flat = embedding_asset("vecs", SOURCE, "text", key="id", model="e", dimensions=8)
    spec = EmbedSpec(column="text", model="e", dimensions=8)
    typed = embedding_asset("vecs", SOURCE, spec=spec, key="id", options=AssetOptions())
    assert shape(typed) == shape(flat)
    assert flat.op.retry_policy == DEFAULT_RETRY  # "default" retries: the LLM columns' own


def test_one_options_object_serves_every_factory():
    shared = AssetOptions(key_prefix=("team", "ml"), group_name="shared")
    spec = PredictSpec(features=("x",), target="y", estimator="random_forest")
    assets = [
        generated_asset("l", SOURCE, spec=GenerateSpec(prompt="{text}", output=LABEL, model="m"),
                        key="id", options=shared),
        embedding_asset("e", SOURCE, spec=EmbedSpec(column="text", model="e"), key="id",
                        options=shared),
        cv_report_asset("cv", SOURCE, spec, options=shared),
        model_asset("mdl", SOURCE, spec, options=shared),
        prediction_asset("p", SOURCE, "team/ml/mdl", keep="id", options=shared),
        file_source_asset("f", "x.csv", {"id": pl.String}, key="id", options=shared),
    ]  # fmt: skip
    for asset in assets:
        assert asset.key.path[:2] == ["team", "ml"]
        assert asset.specs_by_key[asset.key].group_name == "shared"


def test_prediction_asset_takes_a_string_key_prefix_as_one_level():
    # Before: key_prefix="ml" was spread letter by letter into the key (['m', 'l', 'p']).
    preds = prediction_asset("p", SOURCE, "mdl", keep="id", key_prefix="ml")
    assert preds.key == dg.AssetKey(["ml", "p"])
    spec = PredictSpec(features=("x",), target="y", estimator="random_forest")
    assert cv_report_asset("cv", SOURCE, spec, key_prefix="ml").key == dg.AssetKey(["ml", "cv"])


def test_flat_keywords_default_to_the_options_defaults():
    # A keyword left at its default must leave the options' field at its default (None -> ()).
    defaults = flat_defaults()
    for factory in FACTORIES:
        for name, param in inspect.signature(factory).parameters.items():
            if name in defaults:
                built = getattr(AssetOptions(**{name: param.default}), name)
                assert built == defaults[name], (factory.__name__, name)


def test_a_field_set_both_ways_is_refused_by_name():
    with pytest.raises(ValueError, match=r"\['group_name'\] set both in options= and as keywords"):
        generated_asset(
            "l", SOURCE, "{text}", LABEL, key="id", model="m", group_name="a",
            options=AssetOptions(group_name="b"),
        )  # fmt: skip
    merged = generated_asset(
        "l", SOURCE, "{text}", LABEL, key="id", model="m", pool="p",
        options=AssetOptions(group_name="b"),
    )  # fmt: skip
    assert merged.op.pool == "p" and merged.specs_by_key[merged.key].group_name == "b"


def test_a_spec_and_its_flat_fields_together_are_refused():
    spec = GenerateSpec(prompt="{text}", output=LABEL, model="m")
    with pytest.raises(ValueError, match=r"\['max_tokens'\] belong in the GenerateSpec"):
        generated_asset("l", SOURCE, spec=spec, key="id", max_tokens=9)
    with pytest.raises(ValueError, match="pass spec= or model="):
        generated_asset("l", SOURCE, "{text}", LABEL, key="id")
    with pytest.raises(TypeError, match="spec must be a EmbedSpec"):
        embedding_asset("e", SOURCE, spec=spec, key="id")  # type: ignore[arg-type]


def test_llm_only_options_are_refused_where_unused():
    spec = PredictSpec(features=("x",), target="y", estimator="random_forest")
    with pytest.raises(ValueError, match=r"cv_report_asset does not use option\(s\) \['mode'\]"):
        cv_report_asset("cv", SOURCE, spec, options=AssetOptions(mode="batch"))
    with pytest.raises(ValueError, match=r"\['partitions_def'\]"):
        model_asset("m", SOURCE, spec, options=AssetOptions(partitions_def=PARTS))
    with pytest.raises(ValueError, match=r"file_source_asset does not use .*min_ok_ratio"):
        file_source_asset(
            "f", Path("x.csv"), {"id": pl.String}, key="id", options=AssetOptions(min_ok_ratio=1)
        )


def test_options_are_frozen_and_checked():
    options = AssetOptions()
    with pytest.raises(ValueError):
        options.group_name = "x"  # type: ignore[misc]
    with pytest.raises(ValueError, match="mode must be one of"):
        AssetOptions(mode="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="extra"):
        AssetOptions(groupname="x")  # type: ignore[call-arg]
    assert "Dagster pool" in (AssetOptions.model_fields["pool"].description or "")
