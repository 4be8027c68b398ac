"""Every shape the simulator serves, checked against the official ``openai`` SDK's own models.

Our simulator is our belief about the provider; the SDK's generated types are the provider's
published contract (``openai==2.54.0``, generated from OpenAI's OpenAPI spec). Each payload is
read raw off the wire and checked strictly (``tests/fixtures/sdk_shapes.py``: required fields
present, no field the SDK does not declare, recursively), and the SDK must also parse it
through its own client (``AsyncOpenAI(base_url=sim)``).

The Batch API's output/error *lines* have no SDK type; their shape is OpenAI's "request output
object" (https://platform.openai.com/docs/api-reference/batch/request-output), written out
below as ``BatchOutputLine``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import openai
import pydantic
import pytest
from openai import AsyncOpenAI
from openai.types import Batch, BatchError, CreateEmbeddingResponse, FileObject, Model
from openai.types.batch_request_counts import BatchRequestCounts
from openai.types.chat import ChatCompletion
from openai.types.shared import ErrorObject

from lakeloom.sim.launch import ThreadSim, start_thread
from tests.fixtures.sdk_shapes import response_problems

CHAT, EMBED = "/v1/chat/completions", "/v1/embeddings"


class ErrorBody(pydantic.BaseModel):
    """``{"error": {...}}``: the body ``openai.APIStatusError`` reads ``code/param/type`` from."""

    error: ErrorObject


class LineResponse(pydantic.BaseModel):
    """``response`` of a Batch API output line."""

    status_code: int
    request_id: str
    body: dict[str, Any]


class LineError(pydantic.BaseModel):
    """``error`` of a Batch API line that got no response (expired, cancelled)."""

    code: str
    message: str


class BatchOutputLine(pydantic.BaseModel):
    """One line of a batch output or error file (OpenAI's request output object)."""

    id: str
    custom_id: str
    response: LineResponse | None
    error: LineError | None


class ModelList(pydantic.BaseModel):
    """``GET /v1/models`` (the SDK pages over ``data``; ``object`` is always ``list``)."""

    object: str
    data: list[Model]


class BatchList(pydantic.BaseModel):
    """``GET /v1/batches``: OpenAI's list object with cursor fields."""

    object: str
    data: list[Batch]
    first_id: str | None
    last_id: str | None
    has_more: bool


def assert_conforms(payload: Any, model: type[pydantic.BaseModel]) -> None:
    problems = response_problems(payload, model)
    assert not problems, f"{model.__name__}: {problems}\n{json.dumps(payload)[:2000]}"


@pytest.fixture(scope="module")
def sim() -> Iterator[ThreadSim]:
    with start_thread(batch_delay_s=0.3, embedding_dim=32, api_key="sk-conformance") as handle:
        yield handle


def client(sim: ThreadSim, key: str = "sk-conformance") -> AsyncOpenAI:
    return AsyncOpenAI(base_url=sim.base_url, api_key=key, max_retries=0)


class Answer(pydantic.BaseModel):
    label: str
    score: int = pydantic.Field(ge=0, le=10)
    tags: list[str]
    note: str | None


MSGS = [{"role": "user", "content": "Label this row."}]


def test_chat_completions_plain_schema_and_json_object_match_chat_completion(sim):
    schema = Answer.model_json_schema()
    fmt_schema = {
        "type": "json_schema",
        "json_schema": {"name": "Answer", "schema": schema, "strict": True},
    }
    fmt_object = {"type": "json_object", "schema": schema}  # llama.cpp style

    async def run() -> list[Any]:
        async with client(sim) as c:
            raws = [
                await c.chat.completions.with_raw_response.create(model="m", messages=MSGS),
                await c.chat.completions.with_raw_response.create(
                    model="m", messages=MSGS, response_format=fmt_schema, max_tokens=200
                ),
                await c.chat.completions.with_raw_response.create(
                    model="m",
                    messages=MSGS,
                    response_format=fmt_object,
                    n=2,  # type: ignore[arg-type]
                ),
                await c.chat.completions.with_raw_response.create(
                    model="m",
                    messages=MSGS,
                    max_tokens=1,  # finish_reason "length"
                ),
            ]
            parsed = await c.chat.completions.parse(
                model="m", messages=MSGS, response_format=Answer
            )
            return [r.http_response.json() for r in raws] + [r.parse() for r in raws] + [parsed]

    out = asyncio.run(run())
    payloads, sdk, parsed = out[:4], out[4:8], out[8]
    for payload in payloads:
        assert_conforms(payload, ChatCompletion)
    assert all(isinstance(x, ChatCompletion) for x in sdk)
    Answer.model_validate_json(sdk[1].choices[0].message.content)
    assert len(sdk[2].choices) == 2
    assert sdk[3].choices[0].finish_reason == "length"
    assert isinstance(parsed.choices[0].message.parsed, Answer)


def test_embeddings_float_and_base64_match_create_embedding_response(sim):
    async def run() -> tuple[Any, ...]:
        async with client(sim) as c:
            floats = await c.embeddings.with_raw_response.create(
                model="e", input=["a red apple", "blue sky"], encoding_format="float"
            )
            b64 = await c.embeddings.with_raw_response.create(
                model="e", input=["a red apple", "blue sky"], encoding_format="base64"
            )
            default = await c.embeddings.create(model="e", input="a red apple")  # SDK: base64
            return floats.http_response.json(), b64.http_response.json(), floats.parse(), default

    floats, b64, parsed, default = asyncio.run(run())
    assert_conforms(floats, CreateEmbeddingResponse)
    # base64 is the same object with each vector as little-endian float32 bytes (the SDK
    # decodes it this way when it asks for base64 itself): decode, then check strictly
    for item in b64["data"]:
        assert isinstance(item["embedding"], str)
        item["embedding"] = np.frombuffer(base64.b64decode(item["embedding"]), "<f4").tolist()
    assert_conforms(b64, CreateEmbeddingResponse)
    assert np.allclose(b64["data"][0]["embedding"], floats["data"][0]["embedding"], atol=1e-5)
    assert np.allclose(default.data[0].embedding, parsed.data[0].embedding, atol=1e-5)


def test_models_list_matches_model(sim):
    async def run() -> tuple[Any, list[Any]]:
        async with client(sim) as c:
            raw = await c.models.with_raw_response.list()
            return raw.http_response.json(), [m async for m in await c.models.list()]

    payload, models = asyncio.run(run())
    assert_conforms(payload, ModelList)
    assert models and all(isinstance(m, Model) for m in models)


def _raw(sim: ThreadSim, method: str, path: str, body: Any = None, key: str = "sk-conformance"):
    req = urllib.request.Request(
        sim.root_url + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


@pytest.mark.parametrize(
    ("method", "path", "body", "key", "status"),
    [
        ("POST", "/v1/chat/completions", {"model": "m", "messages": []}, None, 400),
        ("POST", "/v1/chat/completions", {"model": "m", "messages": MSGS}, "wrong", 401),
        ("POST", "/v1/embeddings", {"model": "e", "input": "x"}, "wrong", 401),
        ("GET", "/v1/batches", None, "wrong", 401),
        ("GET", "/v1/batches/batch_nope", None, None, 404),
        ("GET", "/v1/files/file-nope", None, None, 404),
        ("GET", "/v1/no-such-endpoint", None, None, 404),
        ("GET", "/v1/models", None, "wrong", 401),
        ("POST", "/v1/models", {}, None, 404),  # OpenAI: "Invalid URL (POST /v1/models)"
    ],
)
def test_error_bodies_are_openai_error_objects(sim, method, path, body, key, status):
    got, _, raw = _raw(sim, method, path, body, key or "sk-conformance")
    assert got == status
    assert_conforms(json.loads(raw), ErrorBody)


def test_rate_limit_and_server_errors_raise_the_sdk_exceptions():
    """429 (limit and injected) and 5xx: the SDK's exception class, status and retry-after."""
    with (
        start_thread(rpm=2, burst_s=30) as limited,  # a bucket of 1 request, refilled in 30 s
        start_thread(fail_429=1.0, retry_after_429_s=2.0) as injected,
        start_thread(fail_5xx=1.0) as failing,
    ):

        async def run() -> list[openai.APIStatusError]:
            errors = []
            async with client(limited, "k") as c:
                await c.chat.completions.create(model="m", messages=MSGS, max_tokens=5)
                with pytest.raises(openai.RateLimitError) as limit:
                    await c.chat.completions.create(model="m", messages=MSGS, max_tokens=5)
                errors.append(limit.value)
            async with client(injected, "k") as c:
                with pytest.raises(openai.RateLimitError) as inj:
                    await c.embeddings.create(model="e", input="x")
                errors.append(inj.value)
            async with client(failing, "k") as c:
                for _ in range(4):  # 500 or 503, drawn per request
                    with pytest.raises(openai.InternalServerError) as err:
                        await c.chat.completions.create(model="m", messages=MSGS, max_tokens=5)
                    errors.append(err.value)
            async with client(limited, "k") as c:
                with pytest.raises(openai.BadRequestError) as bad:
                    await c.chat.completions.create(model="m", messages=MSGS, n=99)
                errors.append(bad.value)
            return errors

        errors = asyncio.run(run())
    limit, inj, *fives, bad = errors
    for exc in errors:
        assert_conforms(exc.response.json(), ErrorBody)
        assert exc.type and exc.message
    assert limit.status_code == inj.status_code == 429
    assert limit.code == inj.code == "rate_limit_exceeded"
    assert int(limit.response.headers["retry-after"]) >= 1
    assert inj.response.headers["retry-after"] == "2"
    assert inj.response.headers["retry-after-ms"] == "2000"
    assert {e.status_code for e in fives} <= {500, 503} and all(
        e.type == "server_error" for e in fives
    )
    assert bad.status_code == 400 and bad.param == "n"


def chat_line(cid: str, **extra: Any) -> dict:
    body = {"model": "m", "messages": [{"role": "user", "content": f"row {cid}"}], **extra}
    return {"custom_id": cid, "method": "POST", "url": CHAT, "body": {"max_tokens": 8, **body}}


def embed_line(cid: str) -> dict:
    return {"custom_id": cid, "method": "POST", "url": EMBED, "body": {"model": "e", "input": cid}}


def jsonl(lines: list[dict]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


async def _until_ended(c: AsyncOpenAI, batch_id: str) -> Any:
    """Poll until the batch ends; the deadline only bounds a hang."""
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        raw = await c.batches.with_raw_response.retrieve(batch_id)
        batch = raw.parse()
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return raw.http_response.json(), batch
        assert asyncio.get_running_loop().time() < deadline, batch.status
        await asyncio.sleep(0.05)


def check_lines(text: str, body_model: type[pydantic.BaseModel] | None) -> list[BatchOutputLine]:
    lines = []
    for raw in text.split("\n"):
        if not raw:
            continue
        payload = json.loads(raw)
        assert_conforms(payload, BatchOutputLine)
        line = BatchOutputLine.model_validate(payload)
        if line.response is not None:
            model = body_model if line.response.status_code == 200 else ErrorBody
            assert model is not None, payload
            assert_conforms(line.response.body, model)
        lines.append(line)
    return lines


def test_files_and_batches_match_file_object_and_batch(sim):
    chat = jsonl([chat_line(f"c{i}") for i in range(5)] + [chat_line("bad", n=99)])
    embeds = jsonl([embed_line(f"e{i}") for i in range(3)])
    invalid = jsonl([{**chat_line("x"), "url": EMBED}])

    async def run() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with client(sim) as c:
            up = await c.files.with_raw_response.create(file=("in.jsonl", chat), purpose="batch")
            file_id = up.parse().id
            got = await c.files.with_raw_response.retrieve(file_id)
            out["files"] = [up.http_response.json(), got.http_response.json()]
            assert (await c.files.content(file_id)).content == chat
            ids = {}
            plan = [("chat", chat, CHAT), ("embed", embeds, EMBED), ("invalid", invalid, CHAT)]
            for name, data, url in [*plan, ("cancel", chat, CHAT)]:
                fid = (await c.files.create(file=(f"{name}.jsonl", data), purpose="batch")).id
                created = await c.batches.with_raw_response.create(
                    input_file_id=fid, endpoint=url, completion_window="24h",  # type: ignore[arg-type]
                    metadata={"run": name},
                )  # fmt: skip
                out.setdefault("batches", []).append(created.http_response.json())
                ids[name] = created.parse().id
            cancel = await c.batches.with_raw_response.cancel(ids["cancel"])
            out["batches"].append(cancel.http_response.json())
            ended = {name: await _until_ended(c, bid) for name, bid in ids.items()}
            out["batches"] += [payload for payload, _ in ended.values()]
            listed = await c.batches.with_raw_response.list(limit=2)
            out["list"] = listed.http_response.json()
            out["paged"] = [b.id async for b in await c.batches.list(limit=2)]
            out["ended"] = {name: batch for name, (_, batch) in ended.items()}
            out["content"] = {}
            for name, batch in out["ended"].items():
                for kind in ("output_file_id", "error_file_id"):
                    fid = getattr(batch, kind)
                    if fid:
                        meta = await c.files.with_raw_response.retrieve(fid)
                        out["files"].append(meta.http_response.json())
                        out["content"][name, kind] = (await c.files.content(fid)).text
            out["ids"] = ids
        return out

    out = asyncio.run(run())
    for payload in out["files"]:
        assert_conforms(payload, FileObject)
    for payload in out["batches"]:
        assert_conforms(payload, Batch)
        assert_conforms(payload["request_counts"], BatchRequestCounts)
        for err in (payload.get("errors") or {}).get("data") or []:
            assert_conforms(err, BatchError)
    assert_conforms(out["list"], BatchList)
    assert set(out["paged"]) == set(out["ids"].values())  # the SDK follows the cursor
    ended = out["ended"]
    assert ended["chat"].status == "completed" and ended["embed"].status == "completed"
    assert ended["invalid"].status == "failed" and ended["invalid"].errors.data
    assert ended["cancel"].status == "cancelled"
    content = out["content"]
    ok = check_lines(content["chat", "output_file_id"], ChatCompletion)
    errs = check_lines(content["chat", "error_file_id"], None)
    assert len(ok) == 5 and [e.custom_id for e in errs] == ["bad"]
    assert errs[0].response is not None and errs[0].response.status_code == 400
    assert len(check_lines(content["embed", "output_file_id"], CreateEmbeddingResponse)) == 3
    unprocessed = check_lines(content["cancel", "error_file_id"], ChatCompletion)
    assert unprocessed and all(u.error is not None for u in unprocessed if u.response is None)
