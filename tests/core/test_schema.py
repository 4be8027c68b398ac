"""Output types → polars/Delta types, strict JSON schemas and parsing."""

import datetime as dt
import enum
from typing import Literal

import polars as pl
import pytest
from pydantic import BaseModel, Field, ValidationError

from lakeloom.core.schema import OutputSchema, UnsupportedOutputType, inline_refs, polars_dtype
from lakeloom.storage.delta import read_table, write_table


class Sentiment(enum.Enum):
    POSITIVE = "positive"
    NEGATIVE = "negative"
    MIXED = "mixed"


class Topic(BaseModel):
    name: str = Field(description="Short topic name")
    weight: float


class Review(BaseModel):
    """What a review says."""

    sentiment: Sentiment = Field(description="Overall polarity")
    topics: list[Topic]
    summary: str | None = None
    stars: Literal[1, 2, 3, 4, 5]
    tags: list[str]


REVIEW_DTYPE = pl.Struct(
    {
        "sentiment": pl.String,
        "topics": pl.List(pl.Struct({"name": pl.String, "weight": pl.Float64})),
        "summary": pl.String,
        "stars": pl.Int64,
        "tags": pl.List(pl.String),
    }
)


def test_nested_model_maps_to_nested_struct():
    assert OutputSchema(Review).dtype == REVIEW_DTYPE
    assert polars_dtype(dt.datetime) == pl.Datetime("us", "UTC")
    assert polars_dtype(dt.date) == pl.Date
    assert polars_dtype(bool) == pl.Boolean


def test_enum_literal_and_str_outputs():
    assert OutputSchema(Sentiment).dtype == pl.String
    assert OutputSchema(Sentiment).allowed == {"": ["positive", "negative", "mixed"]}
    assert OutputSchema(Literal["a", "b"]).parse('{"value": "b"}') == "b"
    assert OutputSchema(str).parse("  hello \n") == "hello"
    assert OutputSchema(str).json_schema is None
    assert OutputSchema(Review).allowed == {
        "sentiment": ["positive", "negative", "mixed"],
        "stars": [1, 2, 3, 4, 5],
    }


def test_strict_json_schema_requires_every_key_and_forbids_extras():
    schema = OutputSchema(Review).json_schema
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"sentiment", "topics", "summary", "stars", "tags"}
    assert schema["$defs"]["Topic"]["additionalProperties"] is False
    wrapped = OutputSchema(Sentiment).json_schema
    assert wrapped["required"] == ["value"]
    inlined = inline_refs(schema)
    assert "$defs" not in inlined
    assert inlined["properties"]["topics"]["items"]["properties"]["name"]["type"] == "string"


@pytest.mark.parametrize(
    ("tp", "needle"),
    [(dict[str, int], "not supported"), (int | str, "several non-null types"), (object, "output")],
)
def test_unsupported_types_fail_with_the_reason(tp, needle):
    with pytest.raises(UnsupportedOutputType, match=needle):

        class Bad(BaseModel):
            x: tp  # type: ignore[valid-type]

        OutputSchema(Bad)


def test_parse_validates_and_reports_the_field():
    schema = OutputSchema(Review)
    good = (
        '```json\n{"sentiment": "mixed", "topics": [{"name": "fit", "weight": 0.5}], '
        '"summary": null, "stars": 3, "tags": ["a"]}\n```'
    )
    value = schema.parse(good)
    assert value == {
        "sentiment": "mixed",
        "topics": [{"name": "fit", "weight": 0.5}],
        "summary": None,
        "stars": 3,
        "tags": ["a"],
    }
    with pytest.raises(ValidationError, match="sentiment"):
        schema.parse(
            '{"sentiment": "great", "topics": [], "summary": null, "stars": 3, "tags": []}'
        )
    with pytest.raises(ValueError, match="no message content"):
        schema.parse(None)


def test_schema_round_trips_through_delta_even_when_all_rows_failed(tmp_path):
    schema = OutputSchema(Review)
    value = schema.parse(
        '{"sentiment": "positive", "topics": [{"name": "price", "weight": 1}], '
        '"summary": "ok", "stars": 5, "tags": []}'
    )
    ok = pl.DataFrame({"id": [1, 2]}).with_columns(schema.series("label", [value, None]))
    failed = pl.DataFrame({"id": [3]}).with_columns(schema.series("label", [None]))
    uri = str(tmp_path / "labels")
    write_table(failed, uri)  # the table is created by a partition with only failures
    write_table(ok, uri)
    back = read_table(uri).sort("id")
    assert back.schema["label"] == REVIEW_DTYPE
    assert back["label"].to_list() == [value, None, None]
