import dagster as dg

from lakeloom.definitions import defs


def test_definitions_load_and_name_the_demo_graph():
    dg.Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    assert keys == {
        "reviews",
        "review_embeddings",
        "review_labels",
        "sentiment_cv",
        "sentiment_model",
        "sentiment_predictions",
    }


def test_llm_assets_run_in_their_provider_pools():
    graph = defs.resolve_asset_graph()
    pools = {
        key.to_user_string(): graph.get(key).pools
        for key in graph.get_all_asset_keys()
        if key.to_user_string() in {"review_embeddings", "review_labels"}
    }
    assert pools == {"review_embeddings": {"llm-embedder"}, "review_labels": {"llm-llm"}}
