"""Budget guard and forecast, against real responses from the simulator."""

import polars as pl
import pytest

from lakeloom.engine.cache.store import ResponseCache
from lakeloom.engine.keys import cache_keys
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
    ckeys = cache_keys(ok["key"], engine.provider.cache_namespace)  # the provider's namespace
    fresh = ResponseCache(engine.storage).match(ckeys)
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


def billed_usd(sim, prices: dict[str, tuple[float, float]]) -> float:
    """What the simulator billed online (its own counters) at USD per 1M tokens."""
    total = 0.0
    for model, usage in sim.stats()["billed"]["online"].items():
        price_in, price_out = prices[model]
        total += usage["prompt_tokens"] * price_in + usage["completion_tokens"] * price_out
    return total / 1e6


def worst_usd(engine, body) -> float:
    """One attempt's worst case, as the engine plans it (prompt + max output at list price)."""
    return engine.forecast("chat.completions", [body]).online_usd


def test_budget_counts_every_attempt_when_timeouts_and_repairs_pile_up(sim_engine):
    """Issue 13.5: one worst case per request let retries after timeouts overspend."""
    from typing import Literal

    from lakeloom.core.generate import generate_column
    from lakeloom.engine.types import RunContext

    sim, engine = sim_engine(
        timeout_rate=0.5,
        malformed_rate=0.5,
        seed=7,
        provider_timeout_s=0.5,
        provider_max_concurrency=4,
        provider_max_attempts=6,
    )
    df = pl.DataFrame({"id": list(range(40)), "text": [f"review {i}: fine" for i in range(40)]})
    one = chat_bodies(1, model="sim-priced", max_tokens=16)[0]
    worst = worst_usd(engine, one)
    engine.max_cost_usd = budget = 12 * worst
    out = generate_column(
        df,
        "Review: {text}",
        Literal["positive", "negative"],
        engine=engine,
        model="sim-priced",
        max_tokens=16,
        keep=["id"],
        context=RunContext(run_id="run-attempts", asset="labels"),
    )
    assert out.height == 40
    timeouts = sim.stats()["timeouts"]
    assert timeouts > 0  # the faults happened
    # everything the provider may have billed: answered requests + every timed-out attempt
    may_have_billed = billed_usd(sim, {"sim-priced": (1.0, 4.0)}) + timeouts * worst * 1.05
    assert may_have_billed <= budget * 1.05 + 1e-12  # prompt estimates vs the sim's count
    booked = engine.ledger.read().filter(pl.col("run_id") == "run-attempts")
    assert booked["cost_usd"].sum() + booked["uncertain_usd"].sum() <= budget + 1e-12
    assert booked["uncertain_attempts"].sum() > 0
    assert out.filter(pl.col("_error").str.contains("budget exceeded")).height > 0


def test_a_body_without_max_tokens_is_budgeted_at_its_worst_output(sim_engine):
    """Issue 13.5: no max_tokens and no max_output in the price table reserved 0 output."""
    prices = {"sim-unbounded": {"input": 1.0, "output": 4.0}}
    sim, engine = sim_engine(engine_prices=prices, provider_max_concurrency=8)
    bodies = chat_bodies(60, model="sim-unbounded")
    for body in bodies:
        del body["max_tokens"]
    worst = worst_usd(engine, bodies[0])
    assert worst >= 16_000 * 4 / 1e6  # the model may write up to 16,384 tokens
    budget = 0.0005  # under that worst case, over the 60 requests' real bill
    run = engine.run_bodies("chat.completions", bodies, max_cost_usd=budget)
    assert billed_usd(sim, {"sim-unbounded": (1.0, 4.0)}) <= budget
    assert run.stats.budget_exceeded and sim.stats()["received"] == 0


def test_a_step_retry_of_the_same_run_starts_from_what_the_run_spent(sim_engine):
    """Issue 13.5: each step retry (a new process, same run id) got a fresh budget."""
    from lakeloom.engine.runner import Engine
    from lakeloom.engine.types import RunContext

    sim, engine = sim_engine(provider_max_concurrency=4)
    first = chat_bodies(30, model="sim-priced", max_tokens=8, tag="first")
    budget = 30 * worst_usd(engine, first[0])
    context = RunContext(run_id="run-retried", asset="labels")
    engine.run_bodies("chat.completions", first, context=context, max_cost_usd=budget)
    spent = billed_usd(sim, {"sim-priced": (1.0, 4.0)})
    assert spent > budget / 2
    # the step fails after the engine returned; Dagster retries it in a fresh process
    retry = Engine(engine.provider, storage=engine.storage, max_cost_usd=budget)
    again = chat_bodies(30, model="sim-priced", max_tokens=8, tag="second")
    run = retry.run_bodies("chat.completions", again, context=RunContext(run_id="run-retried"))
    assert run.stats.budget_exceeded
    assert billed_usd(sim, {"sim-priced": (1.0, 4.0)}) <= budget + 1e-12
    booked = retry.ledger.read().filter(pl.col("run_id") == "run-retried")
    assert booked["cost_usd"].sum() == pytest.approx(billed_usd(sim, {"sim-priced": (1.0, 4.0)}))
