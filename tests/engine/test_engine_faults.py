"""The engine against the real simulator over HTTP: faults, dedupe, both APIs, bookkeeping."""

import asyncio
import json
import socket

import polars as pl
import pytest

from lakeloom.engine.keys import request_key
from lakeloom.engine.ledger import CostLedger
from lakeloom.engine.limiter.base import Admission, UnlimitedLimiter
from lakeloom.engine.provider import ProviderConfig
from lakeloom.engine.runner import Engine
from lakeloom.engine.types import LLMRequest, RunContext
from tests.fixtures.engine import chat_bodies


def test_every_row_ends_ok_or_error_under_heavy_faults(sim_engine):
    sim, engine = sim_engine(
        fail_429=0.10,
        fail_5xx=0.05,
        timeout_rate=0.02,
        malformed_rate=0.05,
        seed=7,
        provider_max_concurrency=32,
        provider_timeout_s=0.5,
    )
    bodies = chat_bodies(300)
    run = engine.run_bodies("chat.completions", bodies)
    res = run.results
    assert res.height == 300  # none missing, none duplicated, in input order
    expected = [request_key("chat.completions", b) for b in bodies]
    assert res["key"].to_list() == expected
    assert set(res["status"]) <= {"ok", "error"}
    errors = res.filter(pl.col("status") == "error")
    assert errors["error"].null_count() == 0  # every error says why
    assert res.filter(pl.col("status") == "ok")["response"].null_count() == 0
    stats = sim.stats()
    assert stats["rejected_429_injected"] > 0 and stats["errors_5xx"] > 0
    assert stats["timeouts"] > 0 and stats["malformed"] > 0
    assert run.stats.retries > 0 and run.stats.rate_limited > 0
    assert run.stats.ok + run.stats.errors == 300
    assert run.stats.ok >= 290  # six attempts beat ~22 % faults almost always
    for text in res.filter(pl.col("status") == "ok")["response"]:
        assert json.loads(text)["choices"][0]["message"]["content"]


def test_identical_requests_are_sent_once_and_fanned_out(sim_engine):
    sim, engine = sim_engine()
    bodies = chat_bodies(20)
    run = engine.run_bodies("chat.completions", bodies + bodies[:5] + bodies)
    assert run.results.height == 45 and sim.stats()["served"] == 20
    first = run.results.head(20)
    repeat = run.results.slice(25, 20)
    assert first["response"].to_list() == repeat["response"].to_list()
    # a repeated key is charged once: the row cost of repeats is zero
    assert (run.results.slice(20)["cost_usd"] == 0).all()


def test_rerun_is_served_from_the_cache(sim_engine):
    sim, engine = sim_engine()
    bodies = chat_bodies(30)
    first = engine.run_bodies("chat.completions", bodies)
    second = engine.run_bodies("chat.completions", bodies + chat_bodies(5, tag="new"))
    assert sim.stats()["served"] == 35
    assert second.stats.cache_hits == 30 and second.stats.sent == 5
    assert second.results.head(30)["from_cache"].all()
    assert second.results.head(30)["response"].to_list() == first.results["response"].to_list()
    assert second.stats.as_metadata()["hit_ratio"] == round(30 / 35, 4)


def test_request_api_returns_llm_results_in_order(sim_engine):
    sim, engine = sim_engine()
    bodies = [{"model": "sim-embed", "input": f"text {i}"} for i in range(10)]
    requests = [LLMRequest(request_key("embeddings", b), "embeddings", b, 0) for b in bodies]
    results = engine.run(requests, context=RunContext(run_id="r1", asset="emb", partition="p"))
    assert [r.key for r in results] == [r.key for r in requests]
    assert all(r.status == "ok" and len(r.response["data"][0]["embedding"]) == 384 for r in results)
    again = engine.run(list(reversed(requests)))
    assert [r.key for r in again] == [r.key for r in reversed(requests)]
    assert all(r.from_cache and r.response["data"] for r in again)
    assert results.stats.sent == 10 and again.stats.cache_hits == 10
    ledger = CostLedger(engine.storage).read()
    assert ledger.filter(pl.col("run_id") == "r1")["requests"].sum() == 10
    assert set(ledger["asset"]) >= {"emb"}


def test_progress_reaches_the_callback(sim_engine):
    lines: list[str] = []
    sim, engine = sim_engine(
        latency_ms="30",
        engine_progress=lines.append,
        engine_progress_interval_s=0.2,
        provider_max_concurrency=4,
    )
    engine.run_bodies("chat.completions", chat_bodies(60))
    assert any(line.startswith("progress:") and "req/s" in line for line in lines)
    assert lines[-1].startswith("finished: 60/60 requests (100%)")


def test_sync_wrapper_works_inside_a_running_loop(sim_engine):
    sim, engine = sim_engine()

    async def notebook_cell():
        return engine.run_bodies("chat.completions", chat_bodies(3))

    run = asyncio.run(notebook_cell())
    assert run.results["status"].to_list() == ["ok"] * 3


def test_bad_key_stops_the_run_after_the_first_refusals(sim_engine):
    sim, engine = sim_engine(api_key="right", provider_api_key="wrong")
    run = engine.run_bodies("chat.completions", chat_bodies(200))
    assert run.results.height == 200 and (run.results["status"] == "error").all()
    assert run.results["error"].str.contains("HTTP 401").sum() >= 1
    assert run.results["error"].str.starts_with("not sent: HTTP 401").sum() > 150
    assert sim.stats()["served"] == 0 and sim.stats()["received"] <= 32


class _GateLimiter(UnlimitedLimiter):
    """Admits the first ``k`` attempts, then holds every later one until the run is cancelled."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.acquired = 0
        self.holding: asyncio.Event | None = None

    async def acquire(self, reserved_tokens: int) -> Admission:
        self.acquired += 1
        if self.acquired > self.k:
            assert self.holding is not None
            self.holding.set()
            await asyncio.Event().wait()  # until cancelled
        return await super().acquire(reserved_tokens)


def _billed_usd(sim) -> float:
    usage = sim.stats()["billed"]["online"]["sim-priced"]
    return (usage["prompt_tokens"] * 1.0 + usage["completion_tokens"] * 4.0) / 1e6


def test_a_cancelled_run_books_what_it_paid_and_the_rerun_counts_hits(sim_engine):
    """Issue 13.6: a cancelled run kept its responses in the cache but wrote no ledger row."""
    k, n = 7, 20
    gate = _GateLimiter(k)
    sim, engine = sim_engine(engine_limiter=gate, provider_max_concurrency=1)
    bodies = chat_bodies(n, model="sim-priced", max_tokens=8)

    async def cancel_after_k() -> None:
        gate.holding = asyncio.Event()
        context = RunContext(run_id="run-cancelled", asset="labels")
        task = asyncio.create_task(engine.arun_bodies("chat.completions", bodies, context=context))
        await gate.holding.wait()  # k answers are in, the (k+1)-th attempt waits: cancel now
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_after_k())
    assert sim.stats()["served"] == k
    ledger = engine.ledger.read()
    cancelled = ledger.filter(pl.col("run_id") == "run-cancelled")
    assert cancelled["sent"].sum() == k and cancelled["ok"].sum() == k
    assert cancelled["cost_usd"].sum() == pytest.approx(_billed_usd(sim))

    rerun_engine = Engine(engine.provider, storage=engine.storage)
    rerun = rerun_engine.run_bodies(
        "chat.completions", bodies, context=RunContext(run_id="run-rerun", asset="labels")
    )
    assert (rerun.stats.cache_hits, rerun.stats.sent) == (k, n - k)
    ledger = rerun_engine.ledger.read()
    again = ledger.filter(pl.col("run_id") == "run-rerun")
    assert again["cache_hits"].sum() == k and again["sent"].sum() == n - k
    assert ledger["cost_usd"].sum() == pytest.approx(_billed_usd(sim))  # the whole bill, once


def test_uncertain_attempts_reach_the_ledger(sim_engine):
    """Issue 13.6: timed-out attempts (maybe billed) never reached the ledger."""
    sim, engine = sim_engine(
        timeout_rate=0.5, seed=3, provider_timeout_s=0.5, provider_max_concurrency=8
    )
    run = engine.run_bodies(
        "chat.completions",
        chat_bodies(16, model="sim-priced", max_tokens=8),
        context=RunContext(run_id="run-uncertain"),
    )
    assert run.results.height == 16 and sim.stats()["timeouts"] > 0
    booked = engine.ledger.read().filter(pl.col("run_id") == "run-uncertain")
    assert booked["uncertain_attempts"].sum() >= sim.stats()["timeouts"] - 8  # hung at the end
    fresh = chat_bodies(1, model="sim-priced", tag="rowx")  # same size, not cached
    worst = engine.forecast("chat.completions", fresh).online_usd
    assert booked["uncertain_usd"].sum() == pytest.approx(
        booked["uncertain_attempts"].sum() * worst, rel=0.2
    )


class _CountingLimiter(UnlimitedLimiter):
    """Counts attempts: every attempt passes the limiter once."""

    def __init__(self) -> None:
        self.acquired = 0

    async def acquire(self, reserved_tokens: int) -> Admission:
        self.acquired += 1
        return await super().acquire(reserved_tokens)


def test_a_provider_refusing_connections_stops_the_run_after_the_threshold(storage):
    """Issue 13.10: a down provider was ground through every row's 6 attempts."""
    with socket.socket() as probe:  # a port nobody listens on: connections are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    threshold, concurrency, n = 20, 8, 600
    config = ProviderConfig(
        kind="compatible",
        base_url=f"http://127.0.0.1:{port}/v1",
        unreachable_after=threshold,
        max_concurrency=concurrency,
        max_attempts=6,
        backoff_base_s=0.01,
        backoff_max_s=0.05,
    )
    counter = _CountingLimiter()
    engine = Engine(config, limiter=counter, storage=storage)
    run = engine.run_bodies("chat.completions", chat_bodies(n, model="sim-priced"))
    assert counter.acquired <= threshold + concurrency
    errors = run.results["error"]
    assert run.results.height == n and (run.results["status"] == "error").all()
    assert errors.str.starts_with("provider unreachable").all()
    not_sent = errors.filter(errors.str.starts_with("provider unreachable: not sent"))
    assert not_sent.len() >= n - concurrency
    assert f"{threshold} consecutive connection failures" in not_sent[0]
    assert "connection error" in not_sent[0]  # why: the last failure, no URL secrets
    assert engine.cache.pending == 0  # flushed
