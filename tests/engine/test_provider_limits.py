"""Provider limits as data (issue 13): published values with their sources, per-resource overrides,
and the planner checking embeddings per input, not per batch."""

import json
from pathlib import Path

import pytest

import lakeloom.engine.provider_limits as provider_limits
from lakeloom.engine.cost import PriceTable
from lakeloom.engine.keys import request_key
from lakeloom.engine.plan import plan, requests_frame
from lakeloom.engine.provider import ProviderConfig
from lakeloom.engine.provider_limits import bundled_limits, resolve_limits
from lakeloom.engine.types import LLMRequest
from lakeloom.resources.llm import LLMResource

OPENAI_EMBEDDINGS = ("text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002")
PROVIDER = ProviderConfig(kind="compatible", base_url="http://127.0.0.1:9/v1")


@pytest.mark.parametrize("model", OPENAI_EMBEDDINGS)
def test_openai_embedding_limits_match_the_api_reference(model):
    # OpenAI API reference, Embeddings > Create (checked 2026-12-04): at most 2,048 inputs per
    # request, 8,191 tokens per input, 300,000 tokens summed over one request.
    limits = bundled_limits(model)
    assert (limits.max_inputs, limits.max_input_tokens, limits.max_request_tokens) == (
        2048,
        8191,
        300_000,
    )
    assert limits.context_window is None  # the window of an embedding model is per input
    assert any("api-reference/embeddings" in s for s in limits.sources)


def test_every_bundled_value_names_a_known_source():
    raw = json.loads(Path(provider_limits.__file__).with_name("provider_limits.json").read_text())
    for model, entry in raw["models"].items():
        for name, (value, source) in entry.items():
            assert name in provider_limits.LIMIT_FIELDS, (model, name)
            assert isinstance(value, int) and value > 0, (model, name)
            assert source in raw["sources"], (model, name, source)


def test_chat_limits_resolve_dated_snapshots_to_their_family():
    limits = bundled_limits("gpt-4o-mini-2024-07-18")
    assert (limits.context_window, limits.max_output) == (128_000, 16_384)
    assert bundled_limits("mystery-llm").context_window is None


def test_overrides_per_model_and_for_every_model():
    limits = resolve_limits(
        "text-embedding-3-small",
        overrides={"*": {"max_inputs": 100}, "text-embedding-3-small": {"max_request_tokens": 9}},
    )
    assert (limits.max_inputs, limits.max_request_tokens, limits.max_input_tokens) == (100, 9, 8191)
    # a price-table entry's own context_window still counts (tables written before the module)
    price = PriceTable({"local-x": {"input": 0, "output": 0, "context_window": 100}}).get("local-x")
    assert resolve_limits("local-x", price=price).context_window == 100
    with pytest.raises(ValueError, match="unknown limit"):
        resolve_limits("gpt-4o", overrides={"gpt-4o": {"window": 5}})


def test_llm_resource_passes_limits_to_the_provider():
    resource = LLMResource(base_url="http://127.0.0.1:9/v1", limits={"*": {"max_inputs": 8}})
    assert resource.provider_config().limits == {"*": {"max_inputs": 8}}


def _embed_request(texts: list[str], tokens: list[int], model: str) -> LLMRequest:
    body = {"model": model, "input": texts}
    return LLMRequest(
        request_key("embeddings", body),
        "embeddings",
        body,
        sum(tokens),
        input_tokens=tuple(tokens),
    )


def _plan(requests: list[LLMRequest], provider: ProviderConfig = PROVIDER):
    frame = requests_frame(requests)
    return plan(
        "embeddings",
        frame,
        provider=provider,
        prices=PriceTable(),
        given={r.key: r for r in requests},
    )


def test_a_realistic_openai_embeddings_batch_is_not_checked_against_a_summed_window():
    """Issue 13.1: 200 inputs of ~100 tokens were refused (summed 20k > 8,191): it fits."""
    request = _embed_request(
        [f"text {i}" for i in range(200)], [100] * 200, "text-embedding-3-small"
    )
    planned = _plan([request])
    assert planned.rejected == [] and len(planned.requests) == 1


@pytest.mark.parametrize(
    ("count", "tokens", "message"),
    [
        (3, [10, 9000, 10], "over context window: 9,000 tokens > 8,191"),
        (2049, [1] * 2049, "too many inputs: 2,049 > 2,048 per request"),
        (40, [8000] * 40, "over the request token limit: 320,000 tokens > 300,000"),
    ],
)
def test_an_embeddings_request_over_a_limit_is_rejected_not_raised(count, tokens, message):
    ok = _embed_request(["fine"], [1], "text-embedding-3-small")
    bad = _embed_request([f"t{i}" for i in range(count)], tokens, "text-embedding-3-small")
    planned = _plan([bad, ok])
    assert [r.key for r in planned.requests] == [ok.key]
    assert len(planned.rejected) == 1 and planned.rejected[0].key == bad.key
    assert message in planned.rejected[0].error
    assert planned.rows == [1] and len(planned.worst_usd) == 1  # lists stay aligned


def test_provider_override_tightens_the_planner():
    provider = PROVIDER.model_copy(update={"limits": {"*": {"max_inputs": 2}}})
    planned = _plan([_embed_request(["a", "b", "c"], [1, 1, 1], "sim-embed")], provider)
    assert "too many inputs: 3 > 2" in planned.rejected[0].error
    # counted by the planner when the request does not carry per-input counts
    body = {"model": "text-embedding-3-small", "input": ["word " * 9000, "short"]}
    frame = requests_frame([LLMRequest(request_key("embeddings", body), "embeddings", body, 0)])
    planned = plan("embeddings", frame, provider=PROVIDER, prices=PriceTable())
    assert planned.rejected[0].error.startswith("over context window: 9,001 tokens > 8,191")
    assert "(input 0 of 2)" in planned.rejected[0].error
