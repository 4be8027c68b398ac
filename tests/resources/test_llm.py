"""LLMResource: env-var keys (never leaked), clear errors before any request, engine wiring."""

import os
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from lakeloom.assets.factories import generated_asset
from lakeloom.engine.provider import MissingAPIKeyError
from lakeloom.resources.llm import LLMResource

SECRET = "sk-lakeloom-test-7f3a9c1e5b"


@dg.asset(
    metadata={
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn("id", "int"), dg.TableColumn("text", "string")]
        )
    }
)
def notes() -> pl.DataFrame:
    return pl.DataFrame({"id": [1, 2, 3], "text": ["hello", "tea is good", "mug broke"]})


labels = generated_asset("note_labels", notes, "Note: {text}", str, key="id", model="sim-chat")


def test_missing_key_names_the_env_var_before_anything_is_sent(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(MissingAPIKeyError, match="OPENAI_API_KEY"):
        LLMResource(kind="openai").provider_config()
    with pytest.raises(MissingAPIKeyError, match="MY_TEAM_KEY"):
        LLMResource(
            kind="azure",
            base_url="https://x.openai.azure.com",
            api_version="2024-10-21",
            api_key_env="MY_TEAM_KEY",
        ).provider_config()
    assert LLMResource(kind="compatible", base_url="http://127.0.0.1:1/v1").provider_config()


def test_missing_env_var_fails_the_run_at_resource_setup(monkeypatch, sim_server, io_manager):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    sim = sim_server()
    result = dg.materialize(
        [notes, labels],
        resources={
            "io_manager": io_manager,
            "llm": LLMResource(kind="openai", base_url=sim.base_url),
        },
        raise_on_error=False,
    )
    assert not result.success
    failures = [e for e in result.all_events if e.is_failure]
    assert any("OPENAI_API_KEY" in repr(e.event_specific_data) for e in failures)
    assert sim.stats()["received"] == 0


def test_key_from_envvar_is_used_and_never_stored(monkeypatch, sim_server, io_manager):
    monkeypatch.setenv("LAKELOOM_TEST_KEY", SECRET)
    sim = sim_server(api_key=SECRET)  # the simulator rejects requests without this key
    llm = LLMResource(base_url=sim.base_url, api_key=dg.EnvVar("LAKELOOM_TEST_KEY"))
    result = dg.materialize([notes, labels], resources={"io_manager": io_manager, "llm": llm})
    assert result.success
    assert sim.stats()["served"] == 3 and sim.stats()["unauthorized"] == 0
    events = "\n".join(repr(e) for e in result.all_events)
    assert SECRET not in events
    home = Path(os.environ["LAKELOOM_HOME"])
    files = [p for p in home.rglob("*") if p.is_file()]
    assert any("note_labels" in str(p) for p in files)
    assert not [p for p in files if SECRET.encode() in p.read_bytes()]


def test_resource_builds_an_engine_with_its_capability_and_budget():
    llm = LLMResource(
        base_url="http://127.0.0.1:9/v1",
        structured_output="json_object",
        max_cost_usd=1.5,
        rpm=100,
        cache=False,
    )
    engine = llm.engine()
    assert engine.structured_output == "json_object"
    assert engine.max_cost_usd == 1.5
    assert engine.cache is None
    assert engine.provider.rpm == 100


def test_cache_namespace_separates_providers_that_share_a_model_name(sim_resource):
    from lakeloom.core.embed import run_embed
    from lakeloom.core.specs import EmbedSpec

    sim, resource = sim_resource()
    df = pl.DataFrame({"id": [1, 2], "text": ["green tea", "black tea"]})
    spec = EmbedSpec(column="text", model="sim-embed")
    served = []
    for namespace in ("", "", "staging", "staging"):
        llm = resource.model_copy(update={"cache_namespace": namespace})
        out, _ = run_embed(df, spec, llm.engine(), keep=["id"])
        assert out["_status"].to_list() == ["ok", "ok"]
        served.append(sim.stats()["served"])
    assert served == [1, 1, 2, 2]  # a new namespace pays once, then hits its own cache
