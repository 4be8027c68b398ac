"""The simulator over real HTTP, driven by the official openai SDK."""

import asyncio
import base64
import json
import urllib.error
import urllib.request

import numpy as np
import openai
import pytest
from openai import AsyncOpenAI
from pydantic import BaseModel, Field

from lakeloom.sim.launch import start_thread


class Ingredient(BaseModel):
    name: str
    grams: float = Field(ge=0)
    optional: bool


class Recipe(BaseModel):
    title: str
    servings: int = Field(ge=1, le=12)
    cuisine: str | None
    ingredients: list[Ingredient]
    steps: list[str] = Field(min_length=1)


def client(sim, key="sim-key", **kw):
    return AsyncOpenAI(base_url=sim.base_url, api_key=key, max_retries=0, **kw)


def post(sim, path, body, headers=None):
    req = urllib.request.Request(
        sim.base_url + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read())


def test_chat_json_schema_is_valid_and_deterministic(sim_server):
    sim = sim_server()

    async def run():
        async with client(sim) as c:
            msgs = [{"role": "user", "content": "Invent a recipe for soup."}]
            first = await c.chat.completions.parse(
                model="gpt-4o-mini", messages=msgs, response_format=Recipe
            )
            again = await c.chat.completions.parse(
                model="gpt-4o-mini", messages=msgs, response_format=Recipe
            )
            other = await c.chat.completions.parse(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "Another one."}],
                response_format=Recipe,
            )
            return first, again, other

    first, again, other = asyncio.run(run())
    recipe = first.choices[0].message.parsed
    assert isinstance(recipe, Recipe) and recipe.ingredients is not None
    assert first.choices[0].message.content == again.choices[0].message.content
    assert other.choices[0].message.content != first.choices[0].message.content
    usage = first.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_llama_cpp_style_json_object_schema_and_plain_text():
    with start_thread() as sim:
        schema = Recipe.model_json_schema()
        status, _, body = post(
            sim,
            "/chat/completions",
            {
                "model": "sim-chat",
                "messages": [{"role": "user", "content": "x"}],
                "response_format": {"type": "json_object", "schema": schema},
            },
        )
        assert status == 200
        Recipe.model_validate_json(body["choices"][0]["message"]["content"])
        status, _, body = post(
            sim,
            "/chat/completions",
            {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        )
        text = body["choices"][0]["message"]["content"]
        assert status == 200 and text.endswith(".") and len(text.split()) >= 8
        assert body["usage"]["completion_tokens"] >= 1


def test_embeddings_dimension_determinism_and_encodings(sim_server):
    sim = sim_server(embedding_dim=64)

    async def run():
        async with client(sim) as c:
            a = await c.embeddings.create(model="sim-embed", input=["red apple pie", "blue sky"])
            b = await c.embeddings.create(model="sim-embed", input="red apple pie")
            short = await c.embeddings.create(model="sim-embed", input="red apple", dimensions=16)
            with pytest.raises(openai.BadRequestError, match="dimensions"):
                await c.embeddings.create(model="sim-embed", input="x", dimensions=65)
            return a, b, short

    a, b, short = asyncio.run(run())
    v0, v1 = (np.array(d.embedding) for d in a.data)
    assert v0.shape == (64,) and np.linalg.norm(v0) == pytest.approx(1, abs=1e-5)
    # the same text gets the same vector in any batch (the SDK asked for base64 here)
    assert np.allclose(v0, b.data[0].embedding, atol=1e-6)
    assert not np.allclose(v0, v1)
    assert len(short.data[0].embedding) == 16
    assert a.usage.prompt_tokens == a.usage.total_tokens > 0
    # float encoding returns the same numbers as base64
    _, _, body = post(sim, "/embeddings", {"model": "e", "input": "red apple pie"})
    assert np.allclose(body["data"][0]["embedding"], v0, atol=1e-5)
    _, _, body = post(
        sim, "/embeddings", {"model": "e", "input": "red apple pie", "encoding_format": "base64"}
    )
    decoded = np.frombuffer(base64.b64decode(body["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, v0, atol=1e-6)


def test_shared_words_give_similar_vectors():
    with start_thread(embedding_dim=384) as sim:
        _, _, body = post(
            sim,
            "/embeddings",
            {"model": "e", "input": ["great fun movie", "great fun film", "tax law audit"]},
        )
    a, b, c = (np.array(d["embedding"]) for d in body["data"])
    assert a @ b > 0.3 > abs(a @ c)


def test_api_key_required_when_configured(sim_server):
    sim = sim_server(api_key="s3cret")

    async def run(key):
        async with client(sim, key=key) as c:
            return await c.models.list(), await c.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}]
            )

    with pytest.raises(openai.AuthenticationError):
        asyncio.run(run("wrong"))
    models, reply = asyncio.run(run("s3cret"))
    assert "gpt-4o-mini" in [m.id for m in models.data]
    assert reply.choices[0].message.content
    assert sim.stats()["unauthorized"] == 1


def test_bad_requests_are_400_before_any_limit_is_charged():
    with start_thread(rpm=60, context_window=1000) as sim:
        cases = [
            ({"model": "m", "messages": []}, "messages"),
            ({"model": "m", "messages": [{"role": "user", "content": "x" * 5000}]}, "context"),
            (
                {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True},
                "stream",
            ),
            (
                {
                    "model": "m",
                    "messages": [{"role": "user", "content": "x"}],
                    "response_format": {"type": "json_schema", "json_schema": {"name": "x"}},
                },
                "schema",
            ),
        ]
        for body, word in cases:
            status, _, err = post(sim, "/chat/completions", body)
            assert status == 400 and word in err["error"]["message"], err
        stats = sim.stats()
    assert stats["bad_requests"] == 4 and stats["admitted"] == 0


def test_limits_enforced_with_openai_headers(sim_server):
    sim = sim_server(rpm=120, tpm=100_000, burst_s=3)  # request bucket: 6
    body = {"model": "m", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 100}
    replies = [post(sim, "/chat/completions", body) for _ in range(7)]
    statuses = [r[0] for r in replies]
    assert statuses == [200] * 6 + [429]
    status, headers, err = replies[-1]
    headers = {k.lower(): v for k, v in headers.items()}
    assert err["error"]["type"] == "requests" and err["error"]["code"] == "rate_limit_exceeded"
    assert int(headers["retry-after"]) >= 1 and 0 < int(headers["retry-after-ms"]) <= 1000
    assert headers["x-ratelimit-limit-requests"] == "120"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-limit-tokens"] == "100000"
    first = {k.lower(): v for k, v in replies[0][1].items()}
    assert first["x-ratelimit-remaining-requests"] == "5"
    assert first["x-ratelimit-reset-requests"] in ("500ms", "499ms", "501ms")
    # 5000 tokens of bucket minus (prompt: 3 + 3 per message + 2 for "hello") + 100 max tokens
    assert int(first["x-ratelimit-remaining-tokens"]) == 5000 - (8 + 100)
    stats = sim.stats()
    assert stats["rejected_429_limit"] == 1 and stats["served"] == 6
    assert stats["peak_requests_1s"] == 6


def test_token_limit_counts_prompt_plus_max_tokens():
    with start_thread(tpm=60_000) as sim:  # bucket: 1000 tokens
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 400}
        statuses = [post(sim, "/chat/completions", body)[0] for _ in range(3)]
        _, headers, err = post(sim, "/chat/completions", body)
    assert statuses == [200, 200, 429]
    assert err["error"]["type"] == "tokens"


def test_fault_rates_roughly_as_configured(sim_server):
    sim = sim_server(fail_429=0.2, fail_5xx=0.1, malformed_rate=0.2, timeout_rate=0.05, hang_s=0.2)
    n = 400

    async def run():
        async with client(sim, timeout=5) as c:
            sem = asyncio.Semaphore(32)

            async def one(i):
                async with sem:
                    try:
                        r = await c.chat.completions.create(
                            model="m",
                            messages=[{"role": "user", "content": f"row {i}"}],
                            response_format={"type": "json_object"},
                        )
                    except openai.APIStatusError as exc:
                        return exc.status_code
                    try:
                        json.loads(r.choices[0].message.content)
                        return 200
                    except ValueError:
                        return "malformed"

            return await asyncio.gather(*(one(i) for i in range(n)))

    outcomes = asyncio.run(run())
    share = {k: outcomes.count(k) / n for k in (429, 500, 503, 504, "malformed", 200)}
    assert 0.13 < share[429] < 0.27
    assert 0.05 < share[500] + share[503] < 0.16 and share[500] > 0 and share[503] > 0
    assert 0.01 < share[504] < 0.10
    assert 0.13 < share["malformed"] < 0.27
    stats = sim.stats()
    assert stats["rejected_429_injected"] == outcomes.count(429)
    assert stats["errors_5xx"] == outcomes.count(500) + outcomes.count(503)
    assert stats["timeouts"] == outcomes.count(504)
    assert stats["malformed"] == outcomes.count("malformed")
    assert stats["served"] == outcomes.count(200) + outcomes.count("malformed")


def test_latency_is_added_and_stats_reset():
    with start_thread(latency_ms="150") as sim:

        async def run():
            async with client(sim) as c:
                loop = asyncio.get_running_loop()

                async def timed():
                    t0 = loop.time()
                    await c.embeddings.create(model="e", input="x")
                    return loop.time() - t0

                return await asyncio.gather(*(timed() for _ in range(20)))

        times = asyncio.run(run())
        assert min(times) >= 0.15
        stats = sim.stats()
        assert stats["endpoints"] == {"embeddings": 20} and stats["peak_requests_1s"] == 20
        sim.reset_stats()
        assert sim.stats()["received"] == 0
