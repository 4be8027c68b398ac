"""Issue 13.5 in Batch API mode: ``max_cost_usd`` is one budget per run, batch and online alike.

Counters only: what the simulator billed (``/stats``), what the ledger booked, which rows ended
``budget exceeded``; never times.
"""

import polars as pl
import pytest

from lakeloom.core.reasons import reason_class
from lakeloom.engine.batch.runner import BatchRunner, BatchSettings
from lakeloom.engine.limiter.base import UnlimitedLimiter
from lakeloom.engine.runner import Engine
from lakeloom.engine.types import RunContext
from tests.fixtures.engine import chat_bodies

FAST = {"poll_interval_s": 0.1, "poll_max_interval_s": 0.3}


def make(sim_engine, **options):
    return sim_engine(engine_limiter=UnlimitedLimiter(), **{"batch_delay_s": 0.2, **options})


def billed_usd(sim, engine) -> float:
    """What the simulator billed, at the engine's prices: online at list, batch at batch."""
    total = 0.0
    for channel, by_model in sim.stats()["billed"].items():
        for model, usage in by_model.items():
            price = engine.prices.get(model)
            cost = price.batch_cost if channel == "batch" else price.cost
            total += cost(
                input_tokens=usage["prompt_tokens"], output_tokens=usage["completion_tokens"]
            )
    return total


def batch_worst(engine, bodies) -> float:
    """One line's worst case at batch prices, as the engine plans it."""
    return engine.forecast("chat.completions", bodies).batch_usd / len(bodies)


def test_a_batch_run_sends_only_the_lines_its_budget_fits(sim_engine):
    sim, engine = make(sim_engine)
    bodies = chat_bodies(100, model="sim-priced", max_tokens=8)
    budget = 30 * batch_worst(engine, bodies)
    run = BatchRunner(engine, BatchSettings(**FAST)).run_bodies(
        "chat.completions", bodies, max_cost_usd=budget, context=RunContext(run_id="b-part")
    )
    res = run.results
    assert run.stats.budget_exceeded
    assert (res["status"] == "ok").sum() == 30
    refused = res.filter(pl.col("status") == "error")
    assert refused.height == 70
    assert refused["error"].str.starts_with("budget exceeded: not sent (").all()
    assert {reason_class("error", e) for e in refused["error"]} == {"not_sent_budget"}
    assert sim.stats()["billed"]["batch"]["sim-priced"]["requests"] == 30
    assert billed_usd(sim, engine) <= budget + 1e-12


def test_a_second_batch_call_of_the_same_run_starts_from_what_the_first_spent(sim_engine):
    """Each BatchRunner call started its budget at 0: a step retry got a fresh budget."""
    sim, engine = make(sim_engine)
    first = chat_bodies(40, model="sim-priced", max_tokens=8, tag="first")
    budget = 40 * batch_worst(engine, first)
    BatchRunner(engine, BatchSettings(**FAST)).run_bodies(
        "chat.completions", first, max_cost_usd=budget, context=RunContext(run_id="b-retried")
    )
    spent = billed_usd(sim, engine)
    assert spent > budget / 2
    # the step is retried in a fresh process: new engine, same run id
    retry = Engine(engine.provider, storage=engine.storage, limiter=UnlimitedLimiter())
    again = chat_bodies(40, model="sim-priced", max_tokens=8, tag="second")
    run = BatchRunner(retry, BatchSettings(**FAST)).run_bodies(
        "chat.completions", again, max_cost_usd=budget, context=RunContext(run_id="b-retried")
    )
    assert run.stats.budget_exceeded
    assert billed_usd(sim, engine) <= budget + 1e-12
    booked = retry.ledger.read().filter(pl.col("run_id") == "b-retried")
    assert booked["cost_usd"].sum() + booked["uncertain_usd"].sum() <= budget + 1e-12


def test_an_online_then_batch_call_of_one_run_share_the_budget(sim_engine):
    """A batch step after an online step of the same run counts the online spend."""
    sim, engine = make(sim_engine)
    first = chat_bodies(40, model="sim-priced", max_tokens=8, tag="online")
    budget = 40 * 2 * batch_worst(engine, first)  # online costs twice the batch price
    context = RunContext(run_id="b-mixed", asset="first")
    engine.run_bodies("chat.completions", first, context=context, max_cost_usd=budget)
    assert billed_usd(sim, engine) > budget / 2
    again = chat_bodies(40, model="sim-priced", max_tokens=8, tag="batch")
    run = BatchRunner(engine, BatchSettings(**FAST)).run_bodies(
        "chat.completions", again, max_cost_usd=budget, context=RunContext(run_id="b-mixed")
    )
    assert run.stats.budget_exceeded
    assert billed_usd(sim, engine) <= budget + 1e-12


def test_the_online_resend_of_failed_lines_subtracts_the_run_prior_spend_once(sim_engine):
    """The online fallback shares the batch call's budget: prior spend is not counted twice."""
    sim, engine = make(sim_engine, batch_fail_rate=0.2, seed=5)
    context = RunContext(run_id="b-fallback", asset="labels")
    prior = chat_bodies(300, model="sim-priced", max_tokens=8, tag="prior")
    engine.run_bodies("chat.completions", prior, context=context)
    spent_before = billed_usd(sim, engine)
    bodies = chat_bodies(100, model="sim-priced", max_tokens=8, tag="batched")
    wb = batch_worst(engine, bodies)
    room = 100 * wb + 2 * 40 * wb  # every line at batch worst + 40 resends at online worst
    assert spent_before > room  # subtracting the prior twice would refuse every resend
    budget = spent_before + room
    run = BatchRunner(engine, BatchSettings(**FAST)).run_bodies(
        "chat.completions", bodies, max_cost_usd=budget, context=RunContext(run_id="b-fallback")
    )
    res = run.results
    assert 0 < sim.stats()["served"] - 300 <= 40  # some failed lines went online
    assert (res["status"] == "ok").all() and not run.stats.budget_exceeded
    assert billed_usd(sim, engine) <= budget + 1e-12


def test_the_online_resend_of_failed_lines_stays_in_the_run_budget(sim_engine):
    """Online resends are admitted only within what the batch left of the run's budget."""
    sim, engine = make(sim_engine, batch_fail_rate=0.3, seed=3)
    context = RunContext(run_id="b-tight", asset="labels")
    prior = chat_bodies(20, model="sim-priced", max_tokens=8, tag="prior")
    engine.run_bodies("chat.completions", prior, context=context)
    bodies = chat_bodies(100, model="sim-priced", max_tokens=8, tag="batched")
    budget = billed_usd(sim, engine) + 100 * batch_worst(engine, bodies)
    run = BatchRunner(engine, BatchSettings(**FAST)).run_bodies(
        "chat.completions", bodies, max_cost_usd=budget, context=RunContext(run_id="b-tight")
    )
    assert billed_usd(sim, engine) <= budget + 1e-12
    booked = engine.ledger.read().filter(pl.col("run_id") == "b-tight")
    assert booked["cost_usd"].sum() + booked["uncertain_usd"].sum() <= budget + 1e-12
    assert run.results.height == 100


def test_lines_of_a_batch_still_running_stay_in_the_run_budget_at_their_worst_case(sim_engine):
    """A batch whose cancel failed answers and bills later: the run's next call counts it."""
    sim, engine = make(sim_engine, batch_delay_s=3600, batch_cancel_failures=1)
    settings = BatchSettings(max_wait_s=0.2, cancel_wait_s=0, api_retries=0, **FAST)
    first = chat_bodies(30, model="sim-priced", max_tokens=8, tag="open")
    wb = batch_worst(engine, first)
    budget = 30 * wb * 1.5
    res = (
        BatchRunner(engine, settings)
        .run_bodies(
            "chat.completions", first, max_cost_usd=budget, context=RunContext(run_id="b-open")
        )
        .results
    )
    assert res["error"].str.contains("not resent").all() and sim.stats()["received"] == 0
    booked = engine.ledger.read().filter(pl.col("run_id") == "b-open")
    assert booked["uncertain_usd"].sum() == pytest.approx(30 * wb)  # may still be billed
    assert booked["cost_usd"].sum() == 0
    # the step is retried: only half the lines' worst case is left of the run's budget
    retry = Engine(engine.provider, storage=engine.storage, limiter=UnlimitedLimiter())
    again = chat_bodies(30, model="sim-priced", max_tokens=8, tag="retried")
    run = BatchRunner(retry, settings).run_bodies(
        "chat.completions", again, max_cost_usd=budget, context=RunContext(run_id="b-open")
    )
    refused = run.results.filter(pl.col("error").str.starts_with("budget exceeded"))
    assert run.stats.budget_exceeded and refused.height >= 15
    assert billed_usd(sim, engine) + 30 * wb <= budget + 1e-12  # the open batch's lines counted
