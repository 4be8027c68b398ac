import asyncio
import os
from typing import Literal

import openai
import pytest
from pydantic import BaseModel, Field

from lakeloom.local.llama_server import LlamaServerConfig, llama_server
from lakeloom.local.process import PortInUseError, free_port, port_is_free

pytestmark = pytest.mark.slow


class Review(BaseModel):
    sentiment: Literal["positive", "negative", "neutral"]
    topic: str = Field(max_length=20)
    stars: int = Field(ge=1, le=5)


def _ask(client, model: str, text: str, **kw):
    return client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": f"Label this review as JSON: {text}"}],
        max_tokens=80,
        temperature=0,
        **kw,
    )


def test_grammar_constrained_json_validates_against_the_schema(local_llm_server):
    _, cfg = local_llm_server
    client = openai.OpenAI(base_url=cfg.base_url, api_key="local", max_retries=0)
    fmt = {"type": "json_object", "schema": Review.model_json_schema()}
    # The second text made the stock grammar emit a raw newline inside "topic" and
    # "stars": 1000000000000002 (see lakeloom.local.llama_entry).
    for text in ("The battery died after two days.", "Lovely, works perfectly!"):
        resp = _ask(client, cfg.served_alias, text, response_format=fmt)
        # A 135M model may be wrong about the content; the shape is enforced by the grammar.
        label = Review.model_validate_json(resp.choices[0].message.content)
        assert label.sentiment in ("positive", "negative", "neutral")
        assert resp.usage.completion_tokens > 0
        assert resp.model == "smollm2-135m-instruct"


def test_json_schema_response_format_is_refused_by_llama_cpp(local_llm_server):
    """Why the resource must declare structured_output="json_object" for this server."""
    _, cfg = local_llm_server
    client = openai.OpenAI(base_url=cfg.base_url, api_key="local", max_retries=0)
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "r", "schema": Review.model_json_schema()},
    }
    with pytest.raises(openai.APIStatusError, match="json_object"):
        _ask(client, cfg.served_alias, "ok", response_format=fmt)


def test_concurrent_clients_all_get_answers(local_llm_server):
    _, cfg = local_llm_server
    fmt = {"type": "json_object", "schema": Review.model_json_schema()}

    async def main():
        client = openai.AsyncOpenAI(base_url=cfg.base_url, api_key="local", max_retries=0)
        return await asyncio.gather(
            *(
                client.chat.completions.create(
                    model=cfg.served_alias,
                    messages=[{"role": "user", "content": f"Review {i}: fine. JSON please."}],
                    max_tokens=64,
                    response_format=fmt,
                )
                for i in range(3)
            )
        )

    for resp in asyncio.run(main()):
        Review.model_validate_json(resp.choices[0].message.content)


def test_start_stop_and_taken_port(tmp_path, local_llm_server):
    taken, _ = local_llm_server
    with pytest.raises(PortInUseError, match=f":{taken.port} is already in use.*LAKELOOM_LLM_PORT"):
        llama_server(LlamaServerConfig(port=taken.port)).start()

    cfg = LlamaServerConfig(port=free_port(), n_ctx=512)
    with llama_server(cfg, tmp_path / "llm.log") as server:
        pid = server.pid
        models = openai.OpenAI(base_url=cfg.base_url, api_key="local").models.list()
        assert [m.id for m in models] == ["smollm2-135m-instruct"]
    assert port_is_free("127.0.0.1", cfg.port)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
