"""Code versions and spec digests pinned to the values main computed before the spec redesign.

A code version that moves marks every materialization of that asset stale for existing users, so
these literals are the contract: they were printed by the code before specs, digests and options
were merged (issue 14) and must never change without a migration note.
"""

from typing import Literal

import dagster as dg

from lakeloom.assets.factories import embedding_asset, generated_asset
from lakeloom.assets.predict import cv_report_asset, model_asset, prediction_asset
from lakeloom.core.specs import EmbedSpec, GenerateSpec, PredictSpec

DEMO_CODE_VERSIONS = {
    "reviews": None,
    "review_embeddings": "ac9f66b460dc8b0e",
    "review_labels": "a1b21a62dd354c1e",
    "sentiment_cv": "4a2641d637bb1c66",
    "sentiment_model": "eca7e14b8b93f4bc",
    "sentiment_predictions": "1b21265b9c76dffc",
}
DEMO_SPEC_VERSIONS = {
    "review_embeddings": "78f708ccf04739af",
    "review_labels": "de0967b70354b598",
    "sentiment_cv": "bca5a937feebd720",
    "sentiment_model": "bca5a937feebd720",
}
NON_ASCII_PREDICT = PredictSpec(
    features=("émbed", "x"),
    target="note_é",
    estimator="random_forest",
    param_grid={"n_estimators": [10, 20]},
)


def test_demo_code_versions_are_unchanged_by_the_spec_redesign():
    from lakeloom.demos import graph

    found = {
        asset.key.to_user_string(): asset.code_versions_by_key[asset.key]
        for asset in graph.DEMO_ASSETS
    }
    assert found == DEMO_CODE_VERSIONS


def test_demo_assets_carry_one_spec_metadata_name_with_the_old_values():
    from lakeloom.demos import graph

    found = {}
    for asset in graph.DEMO_ASSETS:
        metadata = asset.specs_by_key[asset.key].metadata
        assert "lakeloom/spec_hash" not in metadata  # one name: lakeloom/spec_version
        if "lakeloom/spec_version" in metadata:
            found[asset.key.to_user_string()] = metadata["lakeloom/spec_version"]
    assert found == DEMO_SPEC_VERSIONS


def test_spec_digests_are_unchanged_for_non_ascii_text():
    # PredictSpec has always hashed ASCII-escaped JSON, the LLM specs raw UTF-8: both kept.
    assert NON_ASCII_PREDICT.version == "1c6350c400e26777"
    assert NON_ASCII_PREDICT.spec_hash() == NON_ASCII_PREDICT.version
    generate = GenerateSpec(prompt="Résumé: {text}", output=Literal["oui", "non"], model="m")
    assert generate.version == "829625190dbbfddb"
    embed = EmbedSpec(column="text", model="m", dimensions=64, long_text="chunk_mean")
    assert embed.version == "b911505e31363995"


def test_factory_code_versions_are_unchanged_for_keys_prefixes_and_joins():
    labels = generated_asset(
        "lbl",
        ["raw", "src"],
        "Résumé: {text}",
        Literal["oui", "non"],
        key=["a", "b"],
        model="m",
        key_prefix=["x", "y"],
    )
    assert labels.code_versions_by_key[labels.key] == "e9552339a049c773"
    vectors = embedding_asset(
        "vec", "src", "text", key="id", model="m", dimensions=64, long_text="truncate"
    )
    assert vectors.code_versions_by_key[vectors.key] == "3a971a57c101a50d"
    preds = prediction_asset(
        "preds",
        {"a": "src", "b": "other"},
        "model",
        keep=["id", "k"],
        join_on=["id", "k"],
        prediction_column="pred",
    )
    assert preds.code_versions_by_key[preds.key] == "6dac5f17e74582ce"
    cv = cv_report_asset("cv", {"a": "src", "b": "other"}, NON_ASCII_PREDICT, join_on=["id", "k"])
    assert cv.code_versions_by_key[cv.key] == "8b899d6a6f350ae1"
    model = model_asset("mdl", "src", NON_ASCII_PREDICT, model_name="mdl2")
    assert model.code_versions_by_key[model.key] == "4df94410457030c3"
    assert isinstance(model, dg.AssetsDefinition)
