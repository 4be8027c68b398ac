import asyncio
import base64
import json

import numpy as np
import pytest

from lakeloom.local.embed_app import MAX_INPUTS, BadRequest, parse_request, render_response

SERVED = {"all-MiniLM-L6-v2"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([1, 2], "must be a JSON object"),
        ({"model": "text-embedding-3-small", "input": "x"}, "not served here"),
        ({"model": "all-MiniLM-L6-v2", "input": []}, "non-empty string or list"),
        ({"model": "all-MiniLM-L6-v2", "input": ["ok", [101, 102]]}, r"input\[1\] is list"),
        ({"model": "all-MiniLM-L6-v2", "input": ["a"] * (MAX_INPUTS + 1)}, "at most 2048"),
        ({"model": "all-MiniLM-L6-v2", "input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"model": "all-MiniLM-L6-v2", "input": "x", "dimensions": 256}, "has 384 dimensions"),
    ],
)
def test_bad_requests_are_rejected_with_the_reason(body, message):
    with pytest.raises(BadRequest, match=message):
        parse_request(body, SERVED, 384)


def test_string_input_and_formats():
    assert parse_request({"model": "all-MiniLM-L6-v2", "input": "hi"}, SERVED, 384) == (
        ["hi"],
        False,
    )
    body = {"model": "all-MiniLM-L6-v2", "input": ["a", "b"], "encoding_format": "base64"}
    assert parse_request(body, SERVED, 384) == (["a", "b"], True)


def test_render_float_and_base64_round_trip_exactly():
    vectors = np.random.default_rng(0).standard_normal((3, 384)).astype(np.float32)
    as_float = json.loads(render_response("m", vectors, [4, 5, 6], as_base64=False))
    assert as_float["usage"] == {"prompt_tokens": 15, "total_tokens": 15}
    assert [d["index"] for d in as_float["data"]] == [0, 1, 2]
    assert np.array_equal(np.array([d["embedding"] for d in as_float["data"]], np.float32), vectors)
    as_b64 = json.loads(render_response("m", vectors, [4, 5, 6], as_base64=True))
    decoded = [np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in as_b64["data"]]
    assert np.array_equal(np.stack(decoded), vectors)


TEXTS = [
    "The battery died after two days.",
    "Best purchase I made this year, works perfectly.",
    "",
    "Le service était lent mais la nourriture excellente.",
]


@pytest.mark.slow
def test_server_vectors_match_in_process_encode(local_embed_server, minilm):
    from openai import AsyncOpenAI

    _, cfg = local_embed_server
    expected = minilm.encode(TEXTS, normalize_embeddings=True)

    async def main():
        client = AsyncOpenAI(base_url=cfg.base_url, api_key="local", max_retries=0)
        default = await client.embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS)
        floats = await client.embeddings.create(
            model="all-MiniLM-L6-v2", input=TEXTS, encoding_format="float"
        )
        # Concurrent requests are coalesced into one encode call and split back in order.
        many = await asyncio.gather(
            *(client.embeddings.create(model="all-MiniLM-L6-v2", input=[t]) for t in TEXTS)
        )
        return default, floats, many

    default, floats, many = asyncio.run(main())
    for resp in (default, floats):
        got = np.array([d.embedding for d in resp.data], dtype=np.float32)
        assert got.shape == (4, 384)
        np.testing.assert_allclose(got, expected, atol=1e-5)
        assert resp.usage.prompt_tokens > len(TEXTS) * 2
        assert resp.model == "all-MiniLM-L6-v2"
    singles = np.array([r.data[0].embedding for r in many], dtype=np.float32)
    np.testing.assert_allclose(singles, expected, atol=1e-5)


@pytest.mark.slow
def test_server_rejects_unknown_model_like_openai(local_embed_server):
    import openai

    _, cfg = local_embed_server
    client = openai.OpenAI(base_url=cfg.base_url, api_key="local", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="not served here"):
        client.embeddings.create(model="text-embedding-3-small", input="x")
    assert [m.id for m in client.models.list()].count("all-MiniLM-L6-v2") == 1
