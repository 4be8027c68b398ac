import json
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from lakeloom.local.llama_entry import apply_fixes, integer_rule


class Label(BaseModel):
    sentiment: Literal["positive", "negative"]
    stars: int = Field(ge=1, le=5)
    count: int = Field(ge=0)
    topic: str = Field(max_length=8)


@pytest.fixture
def grammar_for():
    from llama_cpp import llama_grammar

    saved_char = llama_grammar.PRIMITIVE_RULES["char"]
    saved_visit = llama_grammar.SchemaConverter.visit
    apply_fixes()
    yield lambda model: llama_grammar.json_schema_to_gbnf(json.dumps(model.model_json_schema()))
    llama_grammar.PRIMITIVE_RULES["char"] = saved_char
    llama_grammar.SchemaConverter.visit = saved_visit


def test_fixed_grammar_bounds_integers_and_excludes_control_characters(grammar_for):
    from llama_cpp.llama_grammar import LlamaGrammar

    gbnf = grammar_for(Label)
    rules = dict(line.split(" ::= ", 1) for line in gbnf.splitlines())
    assert rules["stars"] == '("1" | "2" | "3" | "4" | "5") space'
    assert rules["count"] == "integral-part space"
    assert rules["char"].startswith(r'[^"\\\x7F\x00-\x1F]')
    LlamaGrammar.from_string(gbnf, verbose=False)  # llama.cpp's parser accepts it


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "integer", "minimum": -1, "maximum": 1}, '("-1" | "0" | "1") space'),
        ({"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 3}, '("1" | "2") space'),
        ({"type": "integer", "minimum": 0, "maximum": 10_000}, None),  # too wide to enumerate
        ({"type": "integer", "maximum": 3}, None),
        ({"type": "integer"}, None),
    ],
)
def test_integer_rule(schema, expected):
    assert integer_rule(schema) == expected
