"""Every request body the engine builds, checked against the official SDK's request types.

The bodies are the ones really sent: ``generate_column`` / ``run_embed`` run against the
simulator through a recording wrapper around the real engine (so repair rounds, seeds,
``dimensions`` and both encodings are covered), and the Batch API's input files are read back
from the simulator's Files API. Each body must validate against the SDK's TypedDict
(``CompletionCreateParamsNonStreaming``, ``EmbeddingCreateParams``, ``BatchCreateParams``)
with no unknown key and every required key (``tests/fixtures/sdk_shapes.py``).

One documented exception: the llama.cpp mode sends ``response_format={"type": "json_object",
"schema": ...}``. ``schema`` is llama.cpp's extension (its server rejects ``json_schema``), not
an OpenAI key; the test pins that it is the *only* deviation and that it is never sent in the
default (OpenAI) mode.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Sequence
from typing import Any, Literal

import polars as pl
import pytest
from openai import AsyncOpenAI
from openai.resources.batches import AsyncBatches
from openai.types.batch_create_params import BatchCreateParams
from openai.types.chat.completion_create_params import CompletionCreateParamsNonStreaming
from openai.types.embedding_create_params import EmbeddingCreateParams
from pydantic import BaseModel

from lakeloom.core.embed import run_embed
from lakeloom.core.generate import generate_column
from lakeloom.core.specs import EmbedSpec
from lakeloom.engine.batch.runner import BatchRunner, BatchSettings
from lakeloom.engine.limiter.base import UnlimitedLimiter
from lakeloom.engine.types import LLMRequest
from tests.fixtures.sdk_shapes import request_problems

FAST = {"poll_interval_s": 0.1, "poll_max_interval_s": 0.3}
LLAMA_CPP_EXTENSION = ["$.response_format: unknown key 'schema'"]


class Label(BaseModel):
    sentiment: Literal["positive", "negative"]
    topics: list[str]
    summary: str | None = None


class Recorder:
    """The engine, with every request body it is asked to send written down."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.bodies: list[dict[str, Any]] = []

    def run(self, requests: Sequence[LLMRequest], **kwargs: Any) -> Any:
        self.bodies += [r.body for r in requests]
        return self.inner.run(requests, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def frame(n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {"id": list(range(n)), "text": [f"review {i}: a fine mug" for i in range(n)]}
    )


def assert_chat_bodies(bodies: list[dict[str, Any]], allowed: list[str] | None = None) -> None:
    assert bodies
    for body in bodies:
        problems = request_problems(body, CompletionCreateParamsNonStreaming)
        assert problems == (allowed or []), json.dumps(body)[:1500]


@pytest.mark.parametrize("seed", [None, 11])
def test_chat_bodies_of_generate_with_repairs_are_sdk_chat_params(sim_resource, seed):
    sim, resource = sim_resource(malformed_rate=0.5, seed=3)
    engine = Recorder(resource.engine())
    out = generate_column(
        frame(12), "Review: {text}", Label, engine=engine, model="sim-chat",
        system="You label reviews.", seed=seed, max_repairs=2,
    )  # fmt: skip
    assert out.height == 12
    assert len(engine.bodies) > 12, "the malformed answers must cause repair rounds"
    assert any(m["role"] == "assistant" for b in engine.bodies for m in b["messages"])
    assert all(b["response_format"]["type"] == "json_schema" for b in engine.bodies)
    assert_chat_bodies(engine.bodies)


def test_prompt_only_and_llama_cpp_bodies(sim_resource):
    sim, resource = sim_resource()
    plain = Recorder(resource.engine())
    generate_column(frame(3), "Review: {text}", Label, engine=plain, model="sim-chat",
                    structured_output="none")  # fmt: skip
    assert_chat_bodies(plain.bodies)
    assert all("response_format" not in b for b in plain.bodies)
    llama = Recorder(resource.engine())
    generate_column(frame(3), "Review: {text}", Label, engine=llama, model="sim-chat",
                    structured_output="json_object")  # fmt: skip
    assert_chat_bodies(llama.bodies, LLAMA_CPP_EXTENSION)


@pytest.mark.parametrize(("encoding", "dimensions"), [("float", None), ("base64", 16)])
def test_embedding_bodies_are_sdk_embedding_params(sim_resource, encoding, dimensions):
    sim, resource = sim_resource(embedding_dim=32)
    engine = Recorder(resource.engine())
    spec = EmbedSpec(
        column="text", model="sim-embed", batch_size=4, dimensions=dimensions,
        encoding_format=encoding,
    )  # fmt: skip
    out, _ = run_embed(frame(20), spec, engine)
    assert out["_status"].to_list() == ["ok"] * 20
    assert len(engine.bodies) > 1
    for body in engine.bodies:
        assert request_problems(body, EmbeddingCreateParams) == [], body


def _sim_get(sim: Any, path: str) -> bytes:
    req = urllib.request.Request(sim.root_url + path)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.read()


class InputLine(BaseModel):
    """A Batch API input line
    (https://platform.openai.com/docs/api-reference/batch/request-input)."""

    model_config = {"extra": "forbid"}
    custom_id: str
    method: Literal["POST"]
    url: Literal["/v1/chat/completions", "/v1/embeddings"]
    body: dict[str, Any]


def test_batch_files_and_create_calls_are_sdk_batch_params(sim_engine, monkeypatch):
    created: list[dict[str, Any]] = []
    original = AsyncBatches.create

    async def spy(self: AsyncBatches, **kwargs: Any) -> Any:
        created.append(kwargs)
        return await original(self, **kwargs)

    monkeypatch.setattr(AsyncBatches, "create", spy)
    sim, engine = sim_engine(engine_limiter=UnlimitedLimiter(), batch_delay_s=0.2)
    chat = Recorder(engine)
    generate_column(frame(6), "Review: {text}", Label, engine=chat, model="sim-chat")
    runner = BatchRunner(engine, BatchSettings(**FAST))
    done = runner.run_bodies("chat.completions", [{**b, "seed": 5} for b in chat.bodies])
    assert (done.results["status"] == "ok").all()
    spec = EmbedSpec(column="text", model="sim-embed", batch_size=4)
    out, _ = run_embed(frame(10), spec, BatchRunner(engine, BatchSettings(**FAST)))
    assert out["_status"].to_list() == ["ok"] * 10

    assert len(created) == 2
    for kwargs in created:
        assert request_problems(kwargs, BatchCreateParams) == [], kwargs

    async def uploads() -> list[bytes]:
        async with AsyncOpenAI(base_url=sim.base_url, api_key="k", max_retries=0) as c:
            files = [f async for f in await c.files.list(purpose="batch")]
            return [(await c.files.content(f.id)).content for f in files]

    params = {"/v1/chat/completions": CompletionCreateParamsNonStreaming,
              "/v1/embeddings": EmbeddingCreateParams}  # fmt: skip
    seen = set()
    for data in asyncio.run(uploads()):
        for raw in data.decode().split("\n"):
            if raw:
                line = InputLine.model_validate_json(raw)
                assert request_problems(line.body, params[line.url]) == [], raw
                seen.add(line.url)
    assert seen == set(params)
