"""The simulator's Files + Batches API over real HTTP, driven by the official openai SDK."""

import asyncio
import json

import httpx
import openai
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion

from lakeloom.cli import build_parser
from lakeloom.sim.cli import config_from_args
from lakeloom.sim.launch import start_thread

CHAT = "/v1/chat/completions"


def chat_line(i: int, *, model: str = "sim-chat", url: str = CHAT, cid: str | None = None) -> str:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": f"Say something about row {i}."}],
        "max_tokens": 12,
    }
    return json.dumps({"custom_id": cid or f"r{i}", "method": "POST", "url": url, "body": body})


def jsonl(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def batch_sim():
    started = []

    def start(**options):
        sim = start_thread(**{"batch_delay_s": 0.3, **options})
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


def stats(sim) -> dict:
    import urllib.request

    with urllib.request.urlopen(sim.root_url + "/stats/batches", timeout=10) as resp:
        return json.loads(resp.read())


async def wait(client: AsyncOpenAI, batch_id: str, timeout: float = 10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        batch = await client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch
        assert asyncio.get_running_loop().time() < deadline, f"batch stuck in {batch.status}"
        await asyncio.sleep(0.05)


async def wait_running(client: AsyncOpenAI, batch_id: str, timeout: float = 10.0):
    """Poll until the batch left ``validating`` (a state, not a sleep)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (batch := await client.batches.retrieve(batch_id)).status == "validating":
        assert asyncio.get_running_loop().time() < deadline, "batch stuck in validating"
        await asyncio.sleep(0.02)
    return batch


async def submit(client, lines, endpoint=CHAT):
    uploaded = await client.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
    return await client.batches.create(
        input_file_id=uploaded.id, endpoint=endpoint, completion_window="24h"
    )


def test_batch_lifecycle_output_matches_online_answers(batch_sim):
    sim = batch_sim(batch_delay_s=1.0)

    async def run():
        async with AsyncOpenAI(base_url=sim.base_url, api_key="k", max_retries=0) as client:
            created = await submit(client, [chat_line(i) for i in range(30)])
            assert created.status == "validating" and created.request_counts.total == 0
            running = await wait_running(client, created.id)
            assert running.status == "in_progress" and running.request_counts.total == 30
            done = await wait(client, created.id)
            with pytest.raises(openai.BadRequestError):
                await client.batches.cancel(done.id)  # a completed batch cannot be cancelled
            output = (await client.files.content(done.output_file_id)).text
            body = json.loads(chat_line(7))[
                "body"
            ]  # sent online as canonical bytes, like the engine
            raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
            async with httpx.AsyncClient() as http:
                reply = await http.post(
                    sim.base_url + "/chat/completions",
                    content=raw,
                    headers={"Content-Type": "application/json"},
                )
            online = ChatCompletion.model_validate(reply.json())
            listed = await client.batches.list(limit=10)
            return done, output, online, listed

    done, output, online, listed = asyncio.run(run())
    assert done.status == "completed" and done.error_file_id is None
    assert (done.request_counts.completed, done.request_counts.failed) == (30, 0)
    assert done.completed_at >= done.in_progress_at >= done.created_at
    lines = [json.loads(x) for x in output.splitlines()]
    assert sorted(x["custom_id"] for x in lines) == sorted(f"r{i}" for i in range(30))
    assert all(x["response"]["status_code"] == 200 and x["error"] is None for x in lines)
    by_id = {x["custom_id"]: x["response"]["body"] for x in lines}
    # the same request gets the same answer by batch as online (seeded by the canonical body)
    assert by_id["r7"]["choices"][0]["message"]["content"] == online.choices[0].message.content
    assert by_id["r7"]["usage"]["prompt_tokens"] == online.usage.prompt_tokens
    assert [b.id for b in listed.data] == [done.id]
    s = stats(sim)
    assert (s["files_uploaded"], s["batches_created"], s["lines_ok"]) == (1, 1, 30)
    assert sim.stats()["served"] == 1  # only the online call: batches bypass the online counters


def test_line_failures_land_in_the_error_file(batch_sim):
    sim = batch_sim(batch_fail_rate=0.25, seed=3)
    lines = [chat_line(i) for i in range(200)]
    too_long = json.loads(chat_line(999, cid="huge"))
    too_long["body"]["max_tokens"] = 10**6  # over the context window: a 400 for this line only
    lines.append(json.dumps(too_long))

    async def run():
        async with AsyncOpenAI(base_url=sim.base_url, api_key="k", max_retries=0) as client:
            done = await wait(client, (await submit(client, lines)).id)
            out = (await client.files.content(done.output_file_id)).text.splitlines()
            err = (await client.files.content(done.error_file_id)).text.splitlines()
            return done, [json.loads(x) for x in out], [json.loads(x) for x in err]

    done, out, err = asyncio.run(run())
    assert done.status == "completed"
    assert done.request_counts.completed == len(out) and done.request_counts.failed == len(err)
    assert len(out) + len(err) == 201
    assert 30 <= len(err) <= 75  # ~25 % of 200, plus the one bad line
    ids = {x["custom_id"] for x in out} | {x["custom_id"] for x in err}
    assert len(ids) == 201  # every line exactly once
    codes = {x["custom_id"]: x["response"]["status_code"] for x in err}
    assert codes.pop("huge") == 400
    assert set(codes.values()) == {500}
    huge = next(x for x in err if x["custom_id"] == "huge")
    assert huge["response"]["body"]["error"]["code"] == "context_length_exceeded"


def test_expired_and_rejected_batches(batch_sim):
    expiring = batch_sim(batch_expire_rate=1.0)
    rejecting = batch_sim(batch_reject_rate=1.0)

    async def run(sim):
        async with AsyncOpenAI(base_url=sim.base_url, api_key="k", max_retries=0) as client:
            done = await wait(client, (await submit(client, [chat_line(i) for i in range(40)])).id)
            err = None
            if done.error_file_id:
                err = (await client.files.content(done.error_file_id)).text.splitlines()
            return done, err

    expired, err = asyncio.run(run(expiring))
    assert expired.status == "expired" and expired.expired_at is not None
    assert (expired.request_counts.completed, expired.request_counts.failed) == (20, 20)
    assert {json.loads(x)["error"]["code"] for x in err} == {"batch_expired"}
    failed, _ = asyncio.run(run(rejecting))
    assert failed.status == "failed" and failed.output_file_id is None
    assert failed.errors.data[0].code == "simulated_failure"


def test_limits_and_validation_errors_are_openai_shaped(batch_sim):
    sim = batch_sim(batch_max_requests=10, batch_max_bytes=4000)

    async def run():
        async with AsyncOpenAI(base_url=sim.base_url, api_key="k", max_retries=0) as client:
            with pytest.raises(openai.BadRequestError) as too_big:
                await client.files.create(
                    file=("big.jsonl", jsonl([chat_line(i) for i in range(40)])), purpose="batch"
                )
            outcomes = {}
            cases = {
                "too_many_requests": [chat_line(i) for i in range(11)],
                "duplicate_custom_id": [chat_line(1), chat_line(2, cid="r1")],
                "invalid_url": [chat_line(1, url="/v1/embeddings")],
                "mismatched_model": [chat_line(1), chat_line(2, model="other")],
            }
            for name, lines in cases.items():
                outcomes[name] = await wait(client, (await submit(client, lines)).id)
            with pytest.raises(openai.BadRequestError, match="completion_window"):
                uploaded = await client.files.create(
                    file=("ok.jsonl", jsonl([chat_line(1)])), purpose="batch"
                )
                await client.batches.create(
                    input_file_id=uploaded.id, endpoint=CHAT, completion_window="1h"
                )
            with pytest.raises(openai.NotFoundError):
                await client.batches.retrieve("batch_missing")
            return too_big.value, outcomes

    too_big, outcomes = asyncio.run(run())
    assert too_big.code == "file_too_large" and "4000 bytes" in too_big.message
    for code, batch in outcomes.items():
        assert batch.status == "failed", code
        assert batch.errors.data[0].code == code
    assert outcomes["duplicate_custom_id"].errors.data[0].line == 2
    assert stats(sim)["uploads_rejected"] == 1


def test_cancel_keeps_answers_so_far(batch_sim):
    # an hour-long batch, cancelled once running: half its lines answered (batch_cancel_share)
    sim = batch_sim(batch_delay_s=3600, batch_cancel_share=0.5)

    async def run():
        async with AsyncOpenAI(base_url=sim.base_url, api_key="k", max_retries=0) as client:
            created = await submit(client, [chat_line(i) for i in range(100)])
            assert (await wait_running(client, created.id)).status == "in_progress"
            cancelling = await client.batches.cancel(created.id)
            done = await wait(client, created.id)
            out = (await client.files.content(done.output_file_id)).text.splitlines()
            err = (await client.files.content(done.error_file_id)).text.splitlines()
            return cancelling, done, out, err

    cancelling, done, out, err = asyncio.run(run())
    assert cancelling.status == "cancelling" and done.status == "cancelled"
    assert len(out) == 50 and len(err) == 50
    assert {json.loads(x)["error"]["code"] for x in err} == {"batch_cancelled"}


def test_api_key_and_cli_flags(batch_sim):
    sim = batch_sim(api_key="secret")

    async def run():
        async with AsyncOpenAI(base_url=sim.base_url, api_key="wrong", max_retries=0) as client:
            with pytest.raises(openai.AuthenticationError):
                await client.files.create(file=("in.jsonl", jsonl([chat_line(1)])), purpose="batch")
            with pytest.raises(openai.AuthenticationError):
                await client.batches.list()

    asyncio.run(run())
    args = build_parser().parse_args(
        ["sim", "--batch-delay-s", "30", "--batch-fail-rate", "0.1", "--batch-expire-rate", "0.2",
         "--batch-reject-rate", "0.05", "--batch-max-requests", "1000", "--batch-max-bytes", "5000"]
    )  # fmt: skip
    cfg = config_from_args(args)
    assert (cfg.batch_delay_s, cfg.batch_fail_rate, cfg.batch_expire_rate) == (30, 0.1, 0.2)
    assert (cfg.batch_reject_rate, cfg.batch_max_requests, cfg.batch_max_bytes) == (
        0.05,
        1000,
        5000,
    )


def test_input_lines_holding_raw_line_separators_are_one_line_each(batch_sim):
    """JSON Lines end at "\\n" only: U+2028/U+2029/U+0085 inside a string do not cut a line."""
    sim = batch_sim()
    texts = [f"row {i} says a{ch}b" for i, ch in enumerate(["\u2028", "\u2029", "\x85"])]
    lines = [
        json.dumps(
            {
                "custom_id": f"r{i}",
                "method": "POST",
                "url": CHAT,
                "body": {"model": "sim-chat", "messages": [{"role": "user", "content": t}]},
            },
            ensure_ascii=False,
        )
        for i, t in enumerate(texts)
    ]

    async def go():
        async with AsyncOpenAI(base_url=sim.base_url, api_key="k", max_retries=0) as client:
            f = await client.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
            b = await client.batches.create(
                input_file_id=f.id, endpoint=CHAT, completion_window="24h"
            )
            return await wait(client, b.id)

    batch = asyncio.run(go())
    assert batch.status == "completed" and batch.request_counts.completed == 3


def test_billed_usage_and_answered_twice_count_online_and_batch_answers(batch_sim):
    """/stats bills every answer by channel and model and counts identical requests paid twice."""
    sim = batch_sim()
    body = {"model": "sim-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}

    async def go():
        async with AsyncOpenAI(base_url=sim.base_url, api_key="k", max_retries=0) as client:
            await client.chat.completions.create(**body)
            line = json.dumps({"custom_id": "a", "method": "POST", "url": CHAT, "body": body})
            f = await client.files.create(file=("in.jsonl", jsonl([line])), purpose="batch")
            b = await client.batches.create(
                input_file_id=f.id, endpoint=CHAT, completion_window="24h"
            )
            await wait(client, b.id)
            await client.chat.completions.create(**{**body, "max_tokens": 6})  # another request

    asyncio.run(go())
    s = sim.stats()
    assert s["answered_twice"] == 1 and s["answered_unique"] == 2  # online + batch line: twice
    online, batch = s["billed"]["online"]["sim-chat"], s["billed"]["batch"]["sim-chat"]
    assert (online["requests"], batch["requests"]) == (2, 1)
    assert online["prompt_tokens"] == 2 * batch["prompt_tokens"] > 0
    assert (
        online["prompt_tokens"] + batch["prompt_tokens"]
        == s["prompt_tokens"] + stats(sim)["prompt_tokens"]
    )


def test_injected_download_and_cancel_failures_are_500s_then_pass(batch_sim):
    sim = batch_sim(batch_delay_s=3600, batch_download_failures=1, batch_cancel_failures=2)

    async def go():
        async with AsyncOpenAI(base_url=sim.base_url, api_key="k", max_retries=0) as client:
            f = await client.files.create(file=("in.jsonl", jsonl([chat_line(1)])), purpose="batch")
            b = await client.batches.create(
                input_file_id=f.id, endpoint=CHAT, completion_window="24h"
            )
            for _ in range(2):
                with pytest.raises(openai.InternalServerError):
                    await client.batches.cancel(b.id)
            assert (await client.batches.retrieve(b.id)).status in ("validating", "in_progress")
            await client.batches.cancel(b.id)
            done = await wait(client, b.id)
            assert (await client.files.content(f.id)).content  # input files never fail
            with pytest.raises(openai.InternalServerError):
                await client.files.content(done.error_file_id)
            return await client.files.content(done.error_file_id)

    content = asyncio.run(go())
    assert json.loads(content.text)["error"]["code"] == "batch_cancelled"
    s = stats(sim)
    assert (s["downloads_failed"], s["cancels_failed"], s["batches_cancelled"]) == (1, 2, 1)
