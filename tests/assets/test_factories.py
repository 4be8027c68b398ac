"""embedding_asset / generated_asset materialized by Dagster with the real Delta IO manager,
partitions, and resources pointed at the provider simulator."""

import enum

import dagster as dg
import polars as pl
import pytest
from pydantic import BaseModel, Field

from lakeloom.assets.factories import embedding_asset, generated_asset
from lakeloom.core.prompt import PromptError
from lakeloom.resources.llm import LLMResource
from tests.fixtures.delta_io import read

CATEGORIES = dg.StaticPartitionsDefinition(["books", "mugs", "tea"])
SOURCE_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("review_id", "string"),
        dg.TableColumn("category", "string"),
        dg.TableColumn("text", "string"),
    ]
)


class Sentiment(enum.Enum):
    POSITIVE = "positive"
    NEGATIVE = "negative"


class Aspect(BaseModel):
    name: str = Field(description="What the review talks about")
    positive: bool


class ReviewLabel(BaseModel):
    """How a review reads."""

    sentiment: Sentiment = Field(description="Overall polarity of the review")
    aspects: list[Aspect] = Field(description="Aspects mentioned")
    summary: str | None = Field(None, description="One-line summary")


LABEL_DTYPE = pl.Struct(
    {
        "sentiment": pl.String,
        "aspects": pl.List(pl.Struct({"name": pl.String, "positive": pl.Boolean})),
        "summary": pl.String,
    }
)


def rows(category: str) -> pl.DataFrame:
    n = {"books": 6, "mugs": 4, "tea": 5}[category]
    texts = [f"{category} review {i}: decent value" for i in range(n)]
    texts[1] = None  # a null text must become a skipped row
    return pl.DataFrame(
        {"review_id": [f"{category}-{i}" for i in range(n)], "category": category, "text": texts},
        schema={"review_id": pl.String, "category": pl.String, "text": pl.String},
    )


@dg.asset(
    partitions_def=CATEGORIES,
    metadata={"partition_expr": "category", "dagster/column_schema": SOURCE_SCHEMA},
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def reviews(context: dg.AssetExecutionContext) -> pl.DataFrame:
    return pl.concat([rows(k) for k in context.partition_keys])


def label_asset(prompt: str = "Review: {text}", **kwargs):
    return generated_asset(
        "review_labels",
        reviews,
        prompt,
        ReviewLabel,
        key="review_id",
        model="sim-chat",
        output_column="label",
        **kwargs,
    )


def vector_asset(**kwargs):
    return embedding_asset(
        "review_vectors",
        reviews,
        "text",
        key="review_id",
        model="sim-embed",
        dimensions=32,
        **kwargs,
    )


@pytest.fixture
def resources(sim_resource, io_manager):
    def make(**sim_options):
        sim, llm = sim_resource(**sim_options, resource_pool="llm-llm")
        embedder = LLMResource(base_url=sim.base_url, pool="llm-embedder")
        return sim, {"io_manager": io_manager, "llm": llm, "embedder": embedder}

    return make


def materialize(assets, resources, **kwargs):
    return dg.materialize(assets, resources=resources, raise_on_error=False, **kwargs)


def test_assets_materialize_partitions_with_checks_and_metadata(resources, io_manager):
    sim, res = resources()
    labels, vectors = label_asset(), vector_asset()
    result = materialize([reviews, labels, vectors], res, partition_key="books")
    assert result.success

    table = read(io_manager, "review_labels")
    assert table.schema["label"] == LABEL_DTYPE
    assert table.columns[:3] == ["review_id", "category", "label"]
    assert table["_status"].to_list().count("skipped") == 1
    ok = table.filter(pl.col("_status") == "ok")
    assert ok.height == 5 and ok["label"].null_count() == 0

    vec = read(io_manager, "review_vectors")
    assert vec.schema["embedding"] == pl.List(pl.Float32)
    assert vec.filter(pl.col("_status") == "ok")["embedding"].list.len().unique().to_list() == [32]

    checks = {
        (e.asset_key.path[-1], e.check_name): e.passed for e in result.get_asset_check_evaluations()
    }
    assert checks == {
        ("review_labels", "ok_ratio"): True,
        ("review_labels", "enum_values"): True,
        ("review_vectors", "ok_ratio"): True,
        ("review_vectors", "embedding_width"): True,
    }
    md = result.asset_materializations_for_node("review_labels")[0].metadata
    assert md["rows_ok"].value == 5 and md["rows_skipped"].value == 1
    assert md["model"].value == "sim-chat" and md["structured_output"].value == "json_schema"
    assert md["requests"].value == 5 and md["delta_version"].value >= 0
    assert md["input_tokens"].value > 0 and "latency_p95_s" in md

    spec = labels.specs_by_key[dg.AssetKey("review_labels")]
    columns = {c.name: c for c in spec.metadata["dagster/column_schema"].columns}
    assert "Overall polarity of the review" in columns["label"].description
    assert "aspects.name" in columns["label"].description
    assert columns["review_id"].type == "string" and "_cost_usd" in columns
    assert spec.metadata["partition_expr"] == "category"
    assert labels.op.pool == "llm-llm" and vectors.op.pool == "llm-embedder"


def test_single_run_backfill_of_many_partitions_and_cached_rerun(resources, io_manager):
    sim, res = resources()
    labels = label_asset()
    tags = {
        "dagster/asset_partition_range_start": "books",
        "dagster/asset_partition_range_end": "tea",
    }
    assert materialize([reviews, labels], res, tags=tags).success
    first = read(io_manager, "review_labels").sort("review_id")
    assert first.group_by("category").len().sort("category")["len"].to_list() == [6, 4, 5]
    served = sim.stats()["served"]
    assert served == 12  # 15 rows, 3 null texts

    rerun = materialize(
        [reviews, labels], res, selection=[labels], partition_key="mugs"
    )  # one partition again: all cached
    assert rerun.success
    md = rerun.asset_materializations_for_node("review_labels")[0].metadata
    assert md["cache_hits"].value == md["requests"].value == 3
    assert md["cost_usd"].value == 0.0
    assert sim.stats()["served"] == served
    again = read(io_manager, "review_labels").sort("review_id")
    assert again.select("review_id", "label").equals(first.select("review_id", "label"))


def test_failing_ok_ratio_blocks_downstream(resources):
    _, res = resources(malformed_rate=1.0)
    labels = label_asset(max_repairs=0)

    @dg.asset(partitions_def=CATEGORIES, deps=[labels])
    def downstream() -> None:
        raise AssertionError("must not run after a failed blocking check")

    result = materialize([reviews, labels, downstream], res, partition_key="tea")
    evals = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert evals["ok_ratio"].passed is False
    assert evals["ok_ratio"].metadata["rows_error"].value == 4
    assert not result.is_node_success("downstream")
    assert "downstream" not in {e.step_key for e in result.get_step_success_events()}


def test_code_version_tracks_prompt_schema_model_and_params_only():
    base = label_asset()
    version = base.code_versions_by_key[dg.AssetKey("review_labels")]
    assert label_asset().code_versions_by_key[base.key] == version
    assert label_asset("Review text: {text}").code_versions_by_key[base.key] != version
    assert label_asset(temperature=0.5).code_versions_by_key[base.key] != version
    assert label_asset(max_tokens=100).code_versions_by_key[base.key] != version
    assert label_asset(pool="other").code_versions_by_key[base.key] == version

    class Narrower(ReviewLabel):
        stars: int

    changed = generated_asset(
        "review_labels",
        reviews,
        "Review: {text}",
        Narrower,
        key="review_id",
        model="sim-chat",
        output_column="label",
    )
    assert changed.code_versions_by_key[base.key] != version
    v = vector_asset().code_versions_by_key[dg.AssetKey("review_vectors")]
    assert vector_asset(batch_size=7).code_versions_by_key[dg.AssetKey("review_vectors")] == v
    other_model = embedding_asset(
        "review_vectors",
        reviews,
        "text",
        key="review_id",
        model="text-embedding-3-small",
        dimensions=32,
    )
    assert other_model.code_versions_by_key[dg.AssetKey("review_vectors")] != v


def test_definition_time_errors_name_the_column():
    with pytest.raises(PromptError, match=r"'body'.*review_id, category, text"):
        label_asset("Review: {body}")
    with pytest.raises(ValueError, match="embedding column 'txt'"):
        embedding_asset("v", reviews, "txt", key="review_id", model="sim-embed")
    with pytest.raises(ValueError, match=r"key column\(s\) \['id'\]"):
        generated_asset("l", reviews, "{text}", str, key="id", model="sim-chat")


def test_pool_mismatch_fails_before_any_request(resources):
    sim, res = resources()
    labels = label_asset(pool="somewhere-else")
    result = materialize([reviews, labels], res, partition_key="books")
    assert not result.success
    failure = result.failure_data_for_node("review_labels")
    assert "pool 'llm-llm'" in str(failure.error)
    retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert not retries  # a config error is not retried
    assert sim.stats()["served"] == 0
