"""Schema-driven JSON generation: valid for what Pydantic emits, deterministic, breakable."""

import random
from enum import StrEnum
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field, ValidationError, conlist

from lakeloom.sim import schema_fill


class Color(StrEnum):
    RED = "red"
    BLUE = "blue"


class Address(BaseModel):
    street: str = Field(min_length=3, max_length=20)
    zip_code: int = Field(ge=10000, le=99999)
    country: Literal["DE", "FR", "US"]


class Node(BaseModel):
    """Recursive: the filler must stop descending."""

    label: str
    children: list["Node"] = []
    parent: "Node | None" = None


class Review(BaseModel):
    title: str
    stars: int = Field(ge=1, le=5)
    score: float = Field(gt=0, lt=1)
    ratio: float = Field(multiple_of=0.5, ge=0, le=10)
    verified: bool
    color: Color
    tags: conlist(str, min_length=2, max_length=4)
    home: Address
    previous: list[Address]
    nickname: str | None
    maybe_address: Address | None = None
    weights: dict[str, float]
    code: Annotated[str, Field(pattern=r"^[a-z ]+$")]
    tree: Node


def test_fill_validates_nested_pydantic_schema_for_many_seeds():
    schema = Review.model_json_schema()
    assert "$defs" in schema  # the case that matters: refs into $defs
    seen_null = seen_value = False
    for seed in range(200):
        value = schema_fill.fill(schema, random.Random(seed))
        review = Review.model_validate(value)
        seen_null |= review.nickname is None
        seen_value |= review.nickname is not None
        assert 2 <= len(review.tags) <= 4
    assert seen_null and seen_value  # nullable fields take both branches


def test_fill_is_deterministic_per_seed():
    schema = Review.model_json_schema()
    a = schema_fill.fill(schema, random.Random(42))
    b = schema_fill.fill(schema, random.Random(42))
    c = schema_fill.fill(schema, random.Random(43))
    assert a == b
    assert a != c


def test_formats_and_allof_and_const():
    schema = {
        "type": "object",
        "properties": {
            "when": {"type": "string", "format": "date-time"},
            "day": {"type": "string", "format": "date"},
            "id": {"type": "string", "format": "uuid"},
            "kind": {"const": "fixed"},
            "merged": {
                "allOf": [{"$ref": "#/$defs/A"}, {"properties": {"y": {"type": "integer"}}}]
            },
            "either": {"type": ["integer", "null"]},
        },
        "$defs": {"A": {"type": "object", "properties": {"x": {"type": "boolean"}}}},
    }
    value = schema_fill.fill(schema, random.Random(1))
    assert value["kind"] == "fixed"
    assert set(value["merged"]) == {"x", "y"}
    assert len(value["id"]) == 36 and value["id"][14] == "4"
    assert value["day"].startswith("2026-") and "T" in value["when"]


def test_violate_breaks_the_schema():
    schema = Address.model_json_schema()
    for seed in range(20):
        bad = schema_fill.violate(schema, random.Random(seed))
        with pytest.raises(ValidationError):
            Address.model_validate(bad)


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"$ref": "#/$defs/Missing"}, "unresolvable"),
        ({"$ref": "http://example.com/s.json"}, "only local"),
        ({"enum": []}, "empty enum"),
        ({"type": "integer", "minimum": 5, "maximum": 1}, "empty range"),
        ({"type": "frobnicate"}, "unsupported type"),
    ],
)
def test_impossible_schemas_raise_clear_errors(schema, message):
    with pytest.raises(schema_fill.SchemaError, match=message):
        schema_fill.fill(schema, random.Random(0))
