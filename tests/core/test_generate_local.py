"""The embedded default for generation: SmolLM2-135M behind llama.cpp's server, grammar-constrained
JSON (``{"type": "json_object", "schema": ...}``), validated by Pydantic. Real model, slow."""

import enum

import polars as pl
import pytest
from pydantic import BaseModel, Field

from lakeloom.core.generate import run_generate
from lakeloom.core.specs import GenerateSpec
from lakeloom.local.llama_server import LlamaServerConfig, llama_server
from lakeloom.local.process import free_port
from lakeloom.resources.llm import LLMResource

pytestmark = pytest.mark.slow


class Sentiment(enum.Enum):
    POSITIVE = "positive"
    NEGATIVE = "negative"


class Review(BaseModel):
    sentiment: Sentiment = Field(description="Is the review positive or negative?")
    topic: str = Field(description="One word for what the review is about")


@pytest.fixture(scope="module")
def local_llm():
    config = LlamaServerConfig(port=free_port(), n_ctx=1024)
    with llama_server(config) as server:
        assert server.is_running()
        yield config.base_url, config.served_alias


def test_smollm2_structured_output_is_valid_and_typed(local_llm):
    base_url, model = local_llm
    llm = LLMResource(base_url=base_url, structured_output="json_object", max_concurrency=1)
    df = pl.DataFrame(
        {
            "id": [1, 2, 3, 4],
            "text": [
                "I love this mug, the tea stays hot for hours.",
                "Terrible book. Boring plot and the pages fell out.",
                None,
                "Great headphones, amazing sound for the price.",
            ],
        }
    )
    spec = GenerateSpec(
        prompt="Classify this product review.\nReview: {text}",
        output=Review,
        model=model,
        max_tokens=64,
        max_repairs=1,
    )
    out, stats = run_generate(
        df, spec, llm.engine(), keep=["id"], structured_output=llm.structured_output
    )
    assert out.schema["output"] == pl.Struct({"sentiment": pl.String, "topic": pl.String})
    assert out["_status"].to_list()[2] == "skipped"
    ok = out.filter(pl.col("_status") == "ok")
    assert ok.height >= 2, out.select("_status", "_error").to_dicts()
    for value in ok["output"].to_list():
        assert value["sentiment"] in {"positive", "negative"}
        assert isinstance(value["topic"], str)
    errors = out.filter(pl.col("_status") == "error")["_error"].to_list()
    assert all(e for e in errors)  # a failure always says why
    assert stats.output_tokens > 0 and stats.requests >= 3
