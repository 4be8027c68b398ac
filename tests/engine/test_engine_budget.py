"""Budget guard and forecast, against real responses from the simulator."""

import polars as pl
import pytest

from lakeloom.engine.cache import ResponseCache
from tests.fixtures.engine import chat_bodies


def test_budget_guard_stops_before_exceeding_and_flushes(sim_engine):
    sim, engine = sim_engine(latency_ms="20", provider_max_concurrency=8)
    bodies = chat_bodies(200, model="sim-priced", max_tokens=8)
    forecast = engine.forecast("chat.completions", bodies)
    per_request_worst = forecast.online_usd / 200
    budget = 40 * per_request_worst
    run = engine.run_bodies("chat.completions", bodies, max_cost_usd=budget)
    res = run.results
    assert res.height == 200 and run.stats.budget_exceeded
    spent = res["cost_usd"].sum()
    assert 0 < spent <= budget
    stopped = res.filter(pl.col("error").str.starts_with("budget exceeded"))
    ok = res.filter(pl.col("status") == "ok")
    assert stopped.height + ok.height == 200
    assert 30 <= ok.height <= 50  # worst cases reserved, real (smaller) costs settled
    assert spent + 2 * per_request_worst > budget  # it used the budget, then stopped
    served = sim.stats()["served"]
    assert served == ok.height  # nothing sent beyond what was admitted, nothing unaccounted
    # every paid response is in the cache: a rerun with more budget sends only the rest
    fresh = ResponseCache(engine.storage).match(ok["key"])  # default namespace: key = cache key
    assert fresh["response"].null_count() == 0
    rerun = engine.run_bodies("chat.completions", bodies)
    assert rerun.stats.cache_hits == ok.height and sim.stats()["served"] == 200


def test_forecast_matches_a_real_run(sim_engine):
    sim, engine = sim_engine(provider_rpm=1200)
    bodies = chat_bodies(50, model="sim-priced", max_tokens=8)
    before = engine.forecast("chat.completions", bodies)
    assert sim.stats()["received"] == 0  # a dry run sends nothing
    assert (before.rows, before.cache_hits, before.to_send) == (50, 0, 50)
    assert before.output_basis == "max_tokens (upper bound)"
    assert before.duration_s == pytest.approx(2.5)  # 50 requests at 1200 rpm
    run = engine.run_bodies("chat.completions", bodies)
    actual_in, actual_out = run.stats.input_tokens, run.stats.output_tokens
    assert before.input_tokens == pytest.approx(actual_in, rel=0.3)  # tiktoken vs the sim's count
    assert before.output_tokens == pytest.approx(actual_out, rel=0.15)
    assert before.online_usd == pytest.approx(run.stats.cost_usd, rel=0.3)
    assert before.batch_usd == pytest.approx(before.online_usd / 2, rel=0.01)
    after = engine.forecast(
        "chat.completions", bodies + chat_bodies(10, model="sim-priced", tag="new")
    )
    assert (after.cache_hits, after.to_send, after.output_basis) == (50, 10, "history")
    assert after.output_tokens == pytest.approx(10 * actual_out / 50, rel=0.15)
    assert "to send" in str(after) and after.as_metadata()["to_send"] == 10
