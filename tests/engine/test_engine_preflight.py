"""Bad input fails before any request leaves: the simulator must have seen nothing."""

import pytest

from lakeloom.engine.client import MissingAPIKeyError, ProviderConfig
from lakeloom.engine.cost import UnknownModelError
from lakeloom.engine.plan import ContextWindowError, EmptyInputError, InvalidRequestError
from lakeloom.engine.runner import Engine
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


def test_prompt_over_the_context_window(sim_engine):
    sim, engine = sim_engine()
    long = {"model": "sim-chat", "messages": [{"role": "user", "content": "word " * 17000}]}
    with pytest.raises(ContextWindowError, match=r"row 2: prompt over the context window.*16,384"):
        engine.run_bodies("chat.completions", [*chat_bodies(2), long])
    fits = {**long, "messages": [{"role": "user", "content": "word " * 16000}]}
    with pytest.raises(ContextWindowError, match="max output"):
        engine.run_bodies("chat.completions", [{**fits, "max_tokens": 1000}])
    assert sim.stats()["received"] == 0


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
    offline = Engine(
        ProviderConfig(kind="openai", base_url="http://127.0.0.1:9/v1"), storage=engine.storage
    )
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert offline.run_bodies("chat.completions", bodies).stats.cache_hits == 4
