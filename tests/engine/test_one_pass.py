"""One pass through the engine (issue 14): a run prepares once, forecasts from it, sends from it.

Before: ``ModeRunner`` forecast the requests (cache match + plan), calibrated the forecast (a
second cache match), then ``Engine.run`` matched and planned again: three cache lookups and two
plans per run. The counts below are of the real cache's lookups and of the plan's token and limit
checks (``plan._count_and_check``, once per plan), spied on, not replaced.
"""

import json
import urllib.request

import pytest

from lakeloom.engine import plan as plan_module
from lakeloom.engine.batch.runner import BatchSettings
from lakeloom.engine.cache.store import ResponseCache
from lakeloom.engine.estimate import forecast
from lakeloom.engine.keys import request_key
from lakeloom.engine.limiter.base import UnlimitedLimiter
from lakeloom.engine.modes import ModeRunner
from lakeloom.engine.types import LLMRequest
from tests.fixtures.engine import chat_bodies

FAST = BatchSettings(poll_interval_s=0.1, poll_max_interval_s=0.3)


def requests_of(bodies: list[dict]) -> list[LLMRequest]:
    endpoint = "chat.completions"
    return [LLMRequest(request_key(endpoint, b), endpoint, b, 0, b["max_tokens"]) for b in bodies]


@pytest.fixture
def counts(monkeypatch) -> dict[str, int]:
    """Cache lookups and plans (token counts and limit checks) of everything that runs."""
    seen = {"match": 0, "plan": 0}
    match, check = ResponseCache.match, plan_module._count_and_check

    def counted_match(self, *args, **kwargs):
        seen["match"] += 1
        return match(self, *args, **kwargs)

    def counted_check(*args, **kwargs):
        seen["plan"] += 1
        return check(*args, **kwargs)

    monkeypatch.setattr(ResponseCache, "match", counted_match)
    monkeypatch.setattr(plan_module, "_count_and_check", counted_check)
    return seen


def test_a_forecast_online_run_matches_the_cache_once_and_plans_once(sim_engine, counts):
    sim, engine = sim_engine()
    lines: list[str] = []
    runner = ModeRunner(engine, mode="online", on_forecast=lines.append)
    results = runner.run(requests_of(chat_bodies(30, model="sim-priced")))
    assert [r.status for r in results] == ["ok"] * 30 and sim.stats()["served"] == 30
    assert runner.forecast is not None and runner.forecast.to_send == 30 and len(lines) == 1
    assert counts == {"match": 1, "plan": 1}  # before: 3 lookups, 2 plans


def test_auto_chooses_batch_once_and_the_batch_runner_sends_the_same_preparation(
    sim_engine, counts
):
    sim, engine = sim_engine(engine_limiter=UnlimitedLimiter(), batch_delay_s=0.2)
    runner = ModeRunner(engine, mode="auto", batch=FAST, batch_min_requests=10)
    results = runner.run(requests_of(chat_bodies(12, model="sim-priced")))
    assert [r.status for r in results] == ["ok"] * 12
    assert (runner.chosen, runner.decision) == ("batch", "batch")
    assert counts == {"match": 1, "plan": 1}  # the batch runner planned nothing again
    with urllib.request.urlopen(sim.root_url + "/stats/batches", timeout=10) as resp:
        assert json.loads(resp.read())["files_uploaded"] == 1
    assert sim.stats()["served"] == 0  # all 12 through the Batch API
    # a later call (a repair round) goes online: the choice was made once, by the first call
    again = runner.run(requests_of(chat_bodies(3, model="sim-priced", tag="repair")))
    assert [r.status for r in again] == ["ok"] * 3 and sim.stats()["served"] == 3
    assert runner.chosen == "batch"


def test_a_dry_run_prepares_once_and_sends_nothing(sim_engine, counts):
    sim, engine = sim_engine()
    runner = ModeRunner(engine, mode="auto", batch_min_requests=5, dry_run=True)
    results = runner.run(requests_of(chat_bodies(8, model="sim-priced")))
    assert {r.error for r in results} == {"dry run: not sent"}
    assert (runner.chosen, runner.decision) == ("dry_run", "batch")
    assert counts == {"match": 1, "plan": 1} and sim.stats()["received"] == 0


def test_the_forecast_is_a_pure_function_of_the_preparation(sim_engine):
    """It reads nothing: a run sent between preparation and forecast does not change it."""
    sim, engine = sim_engine()
    requests = requests_of(chat_bodies(20, model="sim-priced", max_tokens=8))
    prepared = engine.prepare_requests(requests)
    before = forecast(prepared, rpm=600)
    engine.run_prepared(prepared)  # fills the cache with all 20 answers
    after = forecast(prepared, rpm=600)
    assert after == before and (before.cache_hits, before.to_send) == (0, 20)
    assert before.output_basis == "max_tokens (upper bound)" and before.duration_s == 2.0
    fresh = engine.forecast_requests(requests)  # a new preparation sees the cache now
    assert (fresh.cache_hits, fresh.to_send) == (20, 0) and sim.stats()["served"] == 20
