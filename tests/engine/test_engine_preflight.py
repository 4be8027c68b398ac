"""Bad input fails before any request leaves: the simulator must have seen nothing."""

import pytest

from lakeloom.engine.cost import UnknownModelError
from lakeloom.engine.keys import request_key
from lakeloom.engine.plan import EmptyInputError, InvalidRequestError
from lakeloom.engine.provider import MissingAPIKeyError, ProviderConfig
from lakeloom.engine.runner import Engine
from lakeloom.engine.types import LLMRequest
from tests.fixtures.engine import chat_bodies


def test_missing_api_key(sim_server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    sim = sim_server()
    engine = Engine(ProviderConfig(kind="openai", base_url=sim.base_url))
    with pytest.raises(MissingAPIKeyError, match="OPENAI_API_KEY"):
        engine.run_bodies("chat.completions", chat_bodies(3))
    assert sim.stats()["received"] == 0


def test_unknown_model_names_the_model_and_rows(sim_engine):
    sim, engine = sim_engine()
    bodies = chat_bodies(3) + chat_bodies(2, model="mystery-llm")
    with pytest.raises(UnknownModelError, match=r"'mystery-llm' has no price.*rows 3, 4"):
        engine.run_bodies("chat.completions", bodies)
    assert sim.stats()["received"] == 0
    # an explicit price makes it sendable
    sim2, priced = sim_engine(engine_prices={"mystery-llm": {"input": 0, "output": 0}})
    assert priced.run_bodies("chat.completions", bodies).stats.ok == 5


def test_over_long_chat_row_is_that_rows_error_and_the_rest_proceeds(sim_engine):
    """Issue 13.8: one over-long row no longer fails the whole partition (it raised before)."""
    sim, engine = sim_engine()
    long = {"model": "sim-chat", "messages": [{"role": "user", "content": "word " * 17000}]}
    run = engine.run_bodies("chat.completions", [*chat_bodies(2), long])
    assert run.results["status"].to_list() == ["ok", "ok", "error"]
    error = run.results["error"][2]
    assert error.startswith("over context window: ") and "> 16,384" in error
    assert run.results["attempts"][2] == 0 and run.results["cost_usd"][2] == 0.0
    assert run.stats.ok == 2 and run.stats.sent == 2
    assert sim.stats()["received"] == 2  # the long row never left

    fits = {**long, "messages": [{"role": "user", "content": "word " * 16000}]}
    run = engine.run_bodies("chat.completions", [{**fits, "max_tokens": 1000}])
    assert "max output" in run.results["error"][0]
    assert sim.stats()["received"] == 2


def test_over_long_chat_request_in_run_is_its_error_and_reserves_nothing(sim_engine):
    """The LLMRequest path too; a rejected row is not reserved from the budget."""
    sim, engine = sim_engine()
    body = {"model": "sim-priced", "messages": [{"role": "user", "content": "hi"}]}
    long = {**body, "messages": [{"role": "user", "content": "word " * 17000}]}
    ok = LLMRequest(request_key("chat.completions", body), "chat.completions", body, 0, 0)
    bad = LLMRequest(request_key("chat.completions", long), "chat.completions", long, 0, 0)
    # the budget holds one short request's worst case (4,096 output tokens at $4/M), not more
    results = engine.run([bad, ok], max_cost_usd=0.0170)
    assert [r.status for r in results] == ["error", "ok"]
    assert results[0].error.startswith("over context window: ")
    assert not results.stats.budget_exceeded
    assert sim.stats()["received"] == 1


def test_empty_input_and_bodies_without_model(sim_engine):
    sim, engine = sim_engine()
    with pytest.raises(EmptyInputError, match="0 rows"):
        engine.run_bodies("chat.completions", [])
    with pytest.raises(EmptyInputError):
        engine.run([])
    with pytest.raises(InvalidRequestError, match="row 1: request body needs a string 'model'"):
        engine.run_bodies("chat.completions", [chat_bodies(1)[0], {"messages": []}])
    assert sim.stats()["received"] == 0


def test_all_cached_needs_no_key(sim_engine, monkeypatch):
    sim, engine = sim_engine()
    bodies = chat_bodies(4)
    engine.run_bodies("chat.completions", bodies)
    # another provider shares this cache only by choice (issue 17.11): same namespace
    shared = engine.provider.cache_namespace
    offline = Engine(
        ProviderConfig(kind="openai", base_url="http://127.0.0.1:9/v1", cache_namespace=shared),
        storage=engine.storage,
    )
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert offline.run_bodies("chat.completions", bodies).stats.cache_hits == 4
