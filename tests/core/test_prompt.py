"""Prompt templates: rendering, definition-time validation, skip reasons."""

import polars as pl
import pytest

from lakeloom.core.prompt import PromptError, PromptTemplate
from lakeloom.core.specs import GenerateSpec


def test_renders_vectorized_and_matches_python_render():
    t = PromptTemplate("Product {product} ({stars} stars): {text} {{json}}")
    df = pl.DataFrame({"product": ["mug"], "stars": [4], "text": ["solid"]})
    rendered = df.select(t.expr())["prompt"].to_list()
    assert rendered == ["Product mug (4 stars): solid {json}"]
    assert rendered[0] == t.render(df.row(0, named=True))
    assert t.fields == ("product", "stars", "text")


def test_missing_column_fails_at_definition_time_naming_it():
    spec = GenerateSpec(prompt="Review: {txt}", output=str, model="m")
    with pytest.raises(PromptError, match=r"'txt' \(did you mean 'text'\?\).*id, text"):
        spec.validate_input({"id": pl.Int64, "text": pl.String}, where="asset reviews")


@pytest.mark.parametrize(
    ("template", "needle"),
    [
        ("{}", "empty field"),
        ("{text:>10}", "format specs"),
        ("{text!r}", "conversions"),
        ("{text", "bad prompt template"),
        ("  ", "non-empty"),
    ],
)
def test_bad_templates_are_refused(template, needle):
    with pytest.raises(PromptError, match=needle):
        PromptTemplate(template)


def test_nested_columns_cannot_be_rendered():
    t = PromptTemplate("{meta}")
    with pytest.raises(PromptError, match="'meta' is Struct"):
        t.validate({"meta": pl.Struct({"a": pl.Int64})})


def test_skip_reason_names_null_and_blank_columns():
    t = PromptTemplate("{title}: {text}")
    df = pl.DataFrame({"title": ["a", None, "c", "d"], "text": ["x", "y", "  ", "z"]})
    reasons = df.select(t.skip_reason())["_skip_reason"].to_list()
    assert reasons == [None, "null in column 'title'", "empty value in column 'text'", None]


def test_system_message_is_constant():
    with pytest.raises(ValueError, match="constant text"):
        GenerateSpec(prompt="{text}", system="You label {text}", output=str, model="m")
