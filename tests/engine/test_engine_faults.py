"""The engine against the real simulator over HTTP: faults, dedupe, both APIs, bookkeeping."""

import asyncio
import json

import polars as pl

from lakeloom.core.hashing import request_key
from lakeloom.engine.ledger import CostLedger
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
