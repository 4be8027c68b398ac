"""A chat ``max_tokens`` over the model's max output is that row's error, never sent (issue 13).

OpenAI answers such a request with HTTP 400 ("max_tokens is too large ... supports at most N
completion tokens"): nothing is paid, but each row fails at the provider and spends a request
slot. Our simulator does not model that 400 (it would answer), so "received == 0" for those
rows is exactly what the pre-send check buys.
"""

import json
import urllib.request
from typing import Literal

import polars as pl

from lakeloom.core.generate import generate_column
from lakeloom.core.reasons import reason_class
from lakeloom.engine.batch.runner import BatchRunner, BatchSettings
from lakeloom.engine.keys import request_key
from lakeloom.engine.limiter.base import UnlimitedLimiter
from lakeloom.engine.types import LLMRequest
from tests.fixtures.engine import chat_bodies


def test_max_tokens_over_max_output_is_rejected_before_sending(sim_engine):
    sim, engine = sim_engine()
    over = {**chat_bodies(1, tag="over")[0], "max_tokens": 5000}  # sim-chat: max output 4,096
    newer = {**chat_bodies(1, tag="newer")[0], "max_completion_tokens": 4097}
    del newer["max_tokens"]
    run = engine.run_bodies("chat.completions", [*chat_bodies(2), over, newer])
    assert run.results["status"].to_list() == ["ok", "ok", "error", "error"]
    errors = run.results["error"].to_list()
    assert errors[2] == "max_tokens 5,000 > max output 4,096 for 'sim-chat'; lower max_tokens"
    assert errors[3].startswith("max_completion_tokens 4,097 > max output 4,096 for 'sim-chat'")
    assert [reason_class("error", e) for e in errors[2:]] == ["over_limit", "over_limit"]
    assert run.results["attempts"].to_list()[2:] == [0, 0]
    assert run.results["cost_usd"].to_list()[2:] == [0.0, 0.0]
    assert sim.stats()["received"] == 2  # only the rows that fit were served


def test_max_tokens_at_max_output_is_sent(sim_engine):
    sim, engine = sim_engine()
    run = engine.run_bodies("chat.completions", chat_bodies(1, max_tokens=4096))
    assert run.results["status"].to_list() == ["ok"]
    assert sim.stats()["received"] == 1


def test_over_max_output_row_reserves_nothing_from_the_budget(sim_engine):
    """The budget holds one fitting request's worst case: the rejected row must not take it."""
    sim, engine = sim_engine()
    body = {"model": "sim-priced", "messages": [{"role": "user", "content": "hi"}]}
    bad_body = {**body, "messages": [{"role": "user", "content": "ho"}], "max_tokens": 100_000}
    ok = LLMRequest(request_key("chat.completions", body), "chat.completions", body, 0, 0)
    bad = LLMRequest(
        request_key("chat.completions", bad_body), "chat.completions", bad_body, 0, 100_000
    )
    results = engine.run([bad, ok], max_cost_usd=0.0170)  # 4,096 output tokens at $4/M fit
    assert [r.status for r in results] == ["error", "ok"]
    assert results[0].error.startswith("max_tokens 100,000 > max output 4,096 for 'sim-priced'")
    assert not results.stats.budget_exceeded
    assert sim.stats()["received"] == 1


def test_provider_limits_override_lowers_max_output(sim_engine):
    sim, engine = sim_engine(provider_limits={"sim-chat": {"max_output": 16}})
    run = engine.run_bodies(
        "chat.completions", [*chat_bodies(1), *chat_bodies(1, tag="b", max_tokens=17)]
    )
    assert run.results["status"].to_list() == ["ok", "error"]
    assert run.results["error"][1].startswith("max_tokens 17 > max output 16 for 'sim-chat'")
    assert sim.stats()["received"] == 1


def test_generate_column_max_tokens_over_max_output_is_each_rows_error(sim_resource):
    """In the core every row of the column carries the error and the ``over_limit`` reason."""
    sim, resource = sim_resource()
    df = pl.DataFrame({"ticket_id": ["B7", "B8"], "text": ["good mug", "bad tea"]})
    out = generate_column(
        df,
        "Review: {text}",
        Literal["pos", "neg"],
        engine=resource.engine(),
        model="sim-chat",
        max_tokens=5000,
        keep=["ticket_id"],
    )
    assert out["_status"].to_list() == ["error", "error"]
    assert (
        out["_error"][0] == "max_tokens 5,000 > max output 4,096 for 'sim-chat'; lower max_tokens"
    )
    assert out["_reason"].to_list() == ["over_limit", "over_limit"]
    assert sim.stats()["received"] == 0


def test_batch_api_over_max_output_row_is_not_uploaded(sim_engine):
    sim, engine = sim_engine(engine_limiter=UnlimitedLimiter(), batch_delay_s=0.3)
    settings = BatchSettings(poll_interval_s=0.1, poll_max_interval_s=0.3)
    bodies = [*chat_bodies(3), *chat_bodies(1, tag="over", max_tokens=5000)]
    run = BatchRunner(engine, settings).run_bodies("chat.completions", bodies)
    assert run.results["status"].to_list() == ["ok", "ok", "ok", "error"]
    assert run.results["error"][3].startswith("max_tokens 5,000 > max output 4,096")
    assert sim.stats()["received"] == 0  # nothing online either
    with urllib.request.urlopen(sim.root_url + "/stats/batches", timeout=10) as resp:
        batches = json.loads(resp.read())
    assert (batches["lines_ok"], batches["lines_failed"]) == (3, 0)  # the row was not uploaded
