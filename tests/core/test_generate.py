"""generate_column over real HTTP to the provider simulator (json_schema and json_object modes)."""

import enum
from typing import Literal

import polars as pl
import pytest
from pydantic import BaseModel, Field

from lakeloom.core.generate import generate_column, run_generate
from lakeloom.core.prompt import PromptError
from lakeloom.core.specs import GenerateSpec
from lakeloom.storage.delta import read_table, write_table


class Sentiment(enum.Enum):
    POSITIVE = "positive"
    NEGATIVE = "negative"


class Topic(BaseModel):
    name: str = Field(description="Short topic name")
    weight: float


class Label(BaseModel):
    """A review's label."""

    sentiment: Sentiment
    topics: list[Topic]
    summary: str | None = None
    language: Literal["en", "fr"]


LABEL_DTYPE = pl.Struct(
    {
        "sentiment": pl.String,
        "topics": pl.List(pl.Struct({"name": pl.String, "weight": pl.Float64})),
        "summary": pl.String,
        "language": pl.String,
    }
)


def reviews(n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "id": list(range(n)),
            "day": ["2024-01-01"] * n,
            "text": [f"review number {i}: solid mug, {i % 7} stars" for i in range(n)],
        }
    )


def test_nested_schema_round_trips_through_delta(sim_resource, tmp_path):
    sim, resource = sim_resource()
    df = reviews(20)
    out = generate_column(
        df,
        "Review: {text}",
        Label,
        engine=resource.engine(),
        model="sim-chat",
        column="label",
        keep=["id", "day"],
    )
    assert out.columns[:3] == ["id", "day", "label"]
    assert out["id"].to_list() == df["id"].to_list()
    assert out.schema["label"] == LABEL_DTYPE
    assert out["_status"].to_list() == ["ok"] * 20
    assert out["_input_tokens"].min() > 0 and out["_output_tokens"].min() > 0
    assert {v["sentiment"] for v in out["label"].to_list()} <= {"positive", "negative"}
    uri = str(tmp_path / "labels")
    write_table(out, uri)
    back = read_table(uri).sort("id")
    assert back.schema["label"] == LABEL_DTYPE
    assert back["label"].to_list() == out["label"].to_list()
    assert sim.stats()["served"] == 20


def test_llamacpp_style_json_object_schema(sim_resource):
    _, resource = sim_resource(resource_structured_output="json_object")
    out = generate_column(
        reviews(5),
        "Review: {text}",
        Sentiment,
        engine=resource.engine(),
        model="sim-chat",
        structured_output=resource.structured_output,
    )
    assert out["_status"].to_list() == ["ok"] * 5
    assert set(out["output"].to_list()) <= {"positive", "negative"}


def test_schema_violations_are_repaired_or_become_error_rows(sim_resource):
    sim, resource = sim_resource(malformed_rate=0.4, seed=7)
    spec = GenerateSpec(
        prompt="Review: {text}",
        output=Label,
        model="sim-chat",
        max_repairs=2,
        output_column="label",
    )
    out, stats = run_generate(reviews(60), spec, resource.engine(), keep=["id"])
    assert out.height == 60 and out["id"].to_list() == list(range(60))
    assert set(out["_status"].to_list()) <= {"ok", "error"}
    repaired = out.filter((pl.col("_status") == "ok") & (pl.col("_attempts") > 1))
    assert repaired.height > 0, "some malformed answers must be repaired by the re-ask"
    errors = out.filter(pl.col("_status") == "error")
    assert errors["_error"].str.starts_with("invalid output after 3 attempts").all()
    assert out.filter(pl.col("_status") == "ok")["label"].null_count() == 0
    assert errors["label"].null_count() == errors.height
    # every attempt is one request, and each repair's tokens land on its row
    assert stats.requests == int(out["_attempts"].sum()) == 60 + stats.repairs
    assert stats.input_tokens == int(out["_input_tokens"].sum())
    assert sim.stats()["served"] == stats.requests
    first_try = out.filter(pl.col("_attempts") == 1)["_input_tokens"].max()
    assert repaired["_input_tokens"].min() > first_try  # the re-ask carries the conversation


def test_all_answers_invalid_gives_error_rows_with_reason(sim_resource):
    _, resource = sim_resource(malformed_rate=1.0)
    out = generate_column(
        reviews(4),
        "Review: {text}",
        Label,
        engine=resource.engine(),
        model="sim-chat",
        max_repairs=1,
    )
    assert out["_status"].to_list() == ["error"] * 4
    assert out["_attempts"].to_list() == [2] * 4
    assert all("invalid output after 2 attempts" in e for e in out["_error"].to_list())
    assert out.schema["output"] == LABEL_DTYPE  # the declared type, even with no value at all


def test_nulls_and_blanks_are_skipped_not_sent(sim_resource):
    sim, resource = sim_resource()
    df = pl.DataFrame({"id": [1, 2, 3, 4], "text": ["fine", None, "   ", "great"]})
    out = generate_column(
        df, "Review: {text}", Sentiment, engine=resource.engine(), model="sim-chat"
    )
    assert out["_status"].to_list() == ["ok", "skipped", "skipped", "ok"]
    assert out["_error"].to_list()[1:3] == ["null in column 'text'", "empty value in column 'text'"]
    assert out["_attempts"].to_list() == [1, 0, 0, 1]
    assert sim.stats()["served"] == 2


def test_missing_column_fails_before_any_request(sim_resource):
    sim, resource = sim_resource()
    with pytest.raises(PromptError, match="'body'"):
        generate_column(
            reviews(3), "Review: {body}", str, engine=resource.engine(), model="sim-chat"
        )
    assert sim.stats()["served"] == 0


def test_identical_prompts_are_sent_once_and_charged_once(sim_resource):
    sim, resource = sim_resource()
    df = pl.DataFrame({"id": [1, 2, 3], "text": ["same", "same", "other"]})
    out = generate_column(df, "{text}", Sentiment, engine=resource.engine(), model="sim-chat")
    assert sim.stats()["served"] == 2
    assert out["_request_hash"][0] == out["_request_hash"][1] != out["_request_hash"][2]
    assert out["output"][0] == out["output"][1]
    assert out["_input_tokens"][1] == 0 and out["_input_tokens"][0] > 0


def test_empty_frame_sends_nothing(sim_resource):
    sim, resource = sim_resource()
    out = generate_column(reviews(0), "{text}", Label, engine=resource.engine(), model="sim-chat")
    assert out.height == 0 and out.schema["output"] == LABEL_DTYPE
    assert sim.stats()["served"] == 0


def test_budget_holds_across_repair_rounds(sim_resource):
    sim, resource = sim_resource(malformed_rate=1.0, resource_max_cost_usd=0.004)
    spec = GenerateSpec(prompt="Review: {text}", output=Label, model="sim-priced", max_tokens=200)
    out, stats = run_generate(reviews(12), spec, resource.engine(), keep=["id"])
    assert out.height == 12 and set(out["_status"].to_list()) == {"error"}
    assert stats.budget_exceeded
    assert 0 < stats.cost_usd <= 0.004 + 1e-9
    assert abs(float(out["_cost_usd"].sum()) - stats.cost_usd) < 1e-9
    assert out["_error"].str.contains("budget exceeded").any()
    assert sim.stats()["served"] == stats.requests - out["_error"].str.contains("not sent").sum()


def test_engine_input_errors_name_rows_by_key_not_position(sim_resource):
    """Issue 17.6: 'rows 0, 1' were positions in the round's request list."""
    sim, resource = sim_resource()
    df = pl.DataFrame({"ticket_id": ["B9", "C1", "B9x"], "text": ["late", "lost", "late"]})
    with pytest.raises(ValueError, match="no-such-model") as caught:
        generate_column(
            df, "{text}", str, engine=resource.engine(), model="no-such-model", keep=["ticket_id"]
        )
    message = str(caught.value)
    assert "ticket_id=B9 (+1 identical rows)" in message and "ticket_id=C1" in message
    assert "rows 0" not in message and "row 0" not in message
    assert sim.stats()["served"] == 0


def test_reason_class_beside_every_error(sim_resource):
    _, resource = sim_resource(malformed_rate=1.0)
    df = pl.DataFrame({"id": [1, 2, 3], "text": ["a", None, "c"]})
    out = generate_column(
        df, "{text}", Label, engine=resource.engine(), model="sim-chat", max_repairs=0
    )
    assert out.columns.index("_reason") == out.columns.index("_error") + 1
    assert out["_reason"].to_list() == ["invalid_output", "skipped_null", "invalid_output"]


def test_superseding_a_cached_invalid_answer_asks_again(sim_resource):
    """Issue 17.1 in the core: the cache replays an invalid answer to the same request; a row
    that supersedes it is asked again under a key of its own."""
    spec = GenerateSpec(prompt="Review: {text}", output=Label, model="sim-chat", max_repairs=1)
    _, broken = sim_resource(malformed_rate=1.0, resource_cache_namespace="one-provider")
    first, _ = run_generate(reviews(5), spec, broken.engine(), keep=["id"])
    assert set(first["_reason"]) == {"invalid_output"}
    healthy_sim, healthy = sim_resource(resource_cache_namespace="one-provider")
    replay, _ = run_generate(reviews(5), spec, healthy.engine(), keep=["id"])
    assert healthy_sim.stats()["served"] == 0 and set(replay["_status"]) == {"error"}
    old = first["_request_hash"].to_list()
    again, stats = run_generate(
        reviews(5), spec, healthy.engine(), keep=["id"], supersedes=[*old[:4], None]
    )
    assert again["_status"].to_list() == ["ok"] * 4 + ["error"]  # the last was not superseded
    assert healthy_sim.stats()["served"] == 4 == stats.requests - stats.cache_hits
    assert again["_supersedes"].to_list() == [*old[:4], None]
    assert not set(again["_request_hash"][:4]) & set(old)
    retried, _ = run_generate(  # a step retry of the same re-run: answered from the cache
        reviews(5), spec, healthy.engine(), keep=["id"], supersedes=[*old[:4], None]
    )
    assert healthy_sim.stats()["served"] == 4
    assert retried["output"].to_list()[:4] == again["output"].to_list()[:4]
