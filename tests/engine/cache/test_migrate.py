"""Caches written before per-provider namespaces: still readable with '', re-keyed on demand."""

import json

import polars as pl
import pytest

from lakeloom.cli import main
from lakeloom.engine.cache.namespace import migrate_namespace, provider_namespace
from lakeloom.engine.cache.store import ResponseCache
from lakeloom.engine.keys import cache_keys
from lakeloom.engine.provider import ProviderConfig
from lakeloom.engine.runner import Engine
from tests.fixtures.engine import chat_bodies


def test_provider_namespace_is_normalized_and_carries_no_secret():
    spellings = [
        "http://127.0.0.1:8377/v1",
        "HTTP://127.0.0.1:8377/v1/",
        "http://user:sk-secret@127.0.0.1:8377/v1?api-key=sk-secret#frag",
    ]
    assert {provider_namespace("compatible", u) for u in spellings} == {
        "compatible:http://127.0.0.1:8377/v1"
    }
    assert provider_namespace("openai", "https://API.OpenAI.com:443/v1") == (
        "openai:https://api.openai.com/v1"
    )
    assert provider_namespace("compatible", "http://h:8000/v1") != provider_namespace(
        "compatible", "http://h:8001/v1"
    )
    assert provider_namespace("azure", "https://x.openai.azure.com") != provider_namespace(
        "compatible", "https://x.openai.azure.com"
    )


def test_an_old_cache_is_read_with_the_empty_namespace_and_migrated_once(
    sim_server, storage, capsys
):
    sim = sim_server()
    old = ProviderConfig(kind="compatible", base_url=sim.base_url, cache_namespace="")
    first = Engine(old, storage=storage).run_bodies("chat.completions", chat_bodies(6))
    assert first.stats.sent == 6  # a cache as the old default ('' namespace) wrote it

    default = ProviderConfig(kind="compatible", base_url=sim.base_url)
    assert default.cache_namespace == provider_namespace("compatible", sim.base_url)
    before = Engine(default, storage=storage).match(
        pl.DataFrame({"cache_key": cache_keys(first.results["key"], default.cache_namespace)})
    )
    assert before["response"].null_count() == 6  # the new default does not see old entries
    assert (
        Engine(old, storage=storage).run_bodies("chat.completions", chat_bodies(6)).stats.cache_hits
        == 6
    )  # cache_namespace="" still reads them

    code = main(["cache", "migrate", "--kind", "compatible", "--base-url", sim.base_url + "/"])
    assert code == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {
        "to_namespace": default.cache_namespace,
        "added": 6,
    }
    rerun = Engine(default, storage=storage).run_bodies("chat.completions", chat_bodies(6))
    assert rerun.stats.cache_hits == 6 and sim.stats()["served"] == 6  # nothing paid again
    assert migrate_namespace(ResponseCache(storage), default.cache_namespace) == 0  # idempotent


def test_migrating_from_a_hashed_namespace_is_refused_with_the_reason(storage):
    with pytest.raises(ValueError, match="only entries of the old default namespace"):
        migrate_namespace(ResponseCache(storage), "b", from_namespace="a")
    assert main(["cache", "migrate", "--from-namespace", "a", "--to-namespace", "b"]) == 2
