"""Embeddings are cached per input (issue 17.4): regrouped rows are never paid for again."""

import json

import numpy as np
import polars as pl

from lakeloom.core.embed import embed_body, input_keys, run_embed
from lakeloom.core.specs import EmbedSpec
from lakeloom.engine.batch.runner import BatchRunner, BatchSettings
from lakeloom.engine.cache import store as cache_module
from lakeloom.engine.cache.store import ResponseCache
from lakeloom.engine.keys import cache_keys, request_key
from lakeloom.engine.modes import ModeRunner
from lakeloom.engine.types import LLMRequest
from lakeloom.storage.settings import Storage
from tests.fixtures.recording_proxy import recording_proxy  # noqa: F401 - fixture


def tickets(start: int, n: int) -> pl.DataFrame:
    ids = list(range(start, start + n))
    return pl.DataFrame({"id": ids, "text": [f"ticket {i}: the mug leaked tea" for i in ids]})


def _inputs(body: dict) -> list[str]:
    return [body["input"]] if isinstance(body["input"], str) else body["input"]


def _spec(batch_size: int) -> EmbedSpec:
    return EmbedSpec(column="text", model="sim-embed", batch_size=batch_size)


def test_partitions_embedded_alone_answer_a_regrouped_backfill(sim_resource):
    """Before: the cache key was the whole batch request, so another grouping missed."""
    sim, resource = sim_resource(embedding_dim=32)
    alone = [run_embed(tickets(100 * p, 100), _spec(16), resource.engine())[0] for p in range(3)]
    paid = sim.stats()["served"]
    assert paid > 3
    sim.reset_stats()
    every = pl.concat([tickets(100 * p, 100) for p in range(3)])
    out, stats = run_embed(every, _spec(64), resource.engine())
    assert sim.stats()["served"] == 0  # 0 new embedding inputs: all 300 from the cache
    assert stats.cache_hits == 300 and stats.cost_usd == 0.0
    assert out["_status"].unique().to_list() == ["ok"]
    before = np.asarray(pl.concat(alone)["embedding"].to_list())
    assert np.array_equal(np.asarray(out["embedding"].to_list()), before)
    assert out["_request_hash"].to_list() == pl.concat(alone)["_request_hash"].to_list()


def test_a_backfill_answers_a_partition_alone_with_another_batch_size(sim_resource):
    sim, resource = sim_resource(embedding_dim=32)
    run_embed(pl.concat([tickets(0, 150), tickets(150, 150)]), _spec(128), resource.engine())
    sim.reset_stats()
    out, stats = run_embed(tickets(150, 150), _spec(8), resource.engine())
    assert sim.stats()["served"] == 0 and stats.cache_hits == 150
    assert out["_status"].unique().to_list() == ["ok"]


def test_only_the_inputs_not_cached_are_sent(sim_resource, recording_proxy):  # noqa: F811
    sim, resource = sim_resource(embedding_dim=32)
    proxy = recording_proxy(sim.base_url)
    engine = resource.model_copy(update={"base_url": proxy.base_url}).engine()
    first, _ = run_embed(tickets(0, 100), _spec(16), engine)
    tokens_first = sim.stats()["prompt_tokens"]
    assert int(first["_input_tokens"].sum()) == tokens_first  # usage split over the rows exactly
    proxy.bodies.clear()
    out, stats = run_embed(tickets(0, 120), _spec(32), engine)
    sent = [t for b in proxy.bodies for t in _inputs(b)]
    assert sorted(sent) == sorted(tickets(100, 20)["text"].to_list())
    assert stats.cache_hits == 100 and out["_status"].unique().to_list() == ["ok"]
    # cached rows keep the tokens they were paid for, at no cost this time
    assert out["_input_tokens"][:100].to_list() == first["_input_tokens"].to_list()
    assert out["_cost_usd"][:100].sum() == 0.0
    assert int(out["_input_tokens"][100:].sum()) == sim.stats()["prompt_tokens"] - tokens_first


def test_the_engine_caches_a_batch_answer_per_input_when_it_arrives(sim_engine):
    """The split happens in the engine's worker (through the journal): nothing paid is lost."""
    sim, engine = sim_engine(embedding_dim=16)
    spec = _spec(16)
    texts = ["red mug", "blue mug", "green mug"]
    keys = input_keys(spec, texts)
    assert keys == [request_key("embeddings", embed_body(spec, t)) for t in texts]
    body = embed_body(spec, texts)
    batch = LLMRequest(
        request_key("embeddings", body),
        "embeddings",
        body,
        6,
        input_keys=tuple(keys),
        input_tokens=(2, 2, 2),
    )
    [result] = engine.run([batch])
    assert result.status == "ok" and result.inputs_cached
    cache, namespace = engine.cache, engine.provider.cache_namespace
    assert cache.lookup(cache_keys(pl.Series([batch.key]), namespace)).height == 0  # not whole
    found = cache.lookup(cache_keys(pl.Series(keys), namespace))
    assert found.height == 3 and int(found["input_tokens"].sum()) == result.input_tokens
    by_key = dict(zip(found["request_hash"], found["response"], strict=True))
    for pos, key in enumerate(cache_keys(pl.Series(keys), namespace).to_list()):
        single = json.loads(by_key[key])
        assert single["data"][0]["index"] == 0
        assert single["data"][0]["embedding"] == result.response["data"][pos]["embedding"]
    # the single-input body is answered from the cache: same key scheme as the engine's
    alone = engine.run_bodies("embeddings", [embed_body(spec, "blue mug")])
    assert alone.stats.cache_hits == 1 and sim.stats()["served"] == 1


def test_forecast_counts_rows_not_requests(sim_resource):
    """Before: ``forecast: 3 rows`` for a 100-row partition (it counted batch requests)."""
    sim, resource = sim_resource(embedding_dim=16)
    lines: list[str] = []
    runner = ModeRunner(resource.engine(), on_forecast=lines.append)
    run_embed(tickets(0, 40), _spec(16), runner)
    runner = ModeRunner(resource.engine(), on_forecast=lines.append)
    run_embed(tickets(0, 100), _spec(16), runner)
    assert lines[0].startswith("forecast (online mode): 40 rows: 0 cached, 40 to send in ")
    assert lines[1].startswith("forecast (online mode): 100 rows: 40 cached, 60 to send in ")
    assert runner.forecast is not None and runner.forecast.rows == 100


def test_progress_lines_count_rows_not_requests(sim_resource):
    sim, resource = sim_resource(embedding_dim=16)
    run_embed(tickets(0, 40), _spec(16), resource.engine())
    before = sim.stats()["served"]
    lines: list[str] = []
    run_embed(tickets(0, 100), _spec(16), resource.engine(progress=lines.append))
    requests = 40 + sim.stats()["served"] - before  # 40 cached rows answered alone + batches
    assert lines[-1].startswith(f"finished: 100/100 rows (100%) in {requests}/{requests} requests")


def test_batch_api_answers_are_cached_per_input_too(sim_engine):
    """Batch API lines are cached whole by the job runner; the core adds per-input entries."""
    sim, engine = sim_engine(embedding_dim=16, batch_delay_s=0.2)
    settings = BatchSettings(poll_interval_s=0.1, poll_max_interval_s=0.3)
    first, _ = run_embed(tickets(0, 60), _spec(8), BatchRunner(engine, settings))
    assert first["_status"].unique().to_list() == ["ok"]
    sim.reset_stats()
    out, stats = run_embed(tickets(0, 60), _spec(64), engine)  # online, another grouping
    assert sim.stats()["served"] == 0 and stats.cache_hits == 60
    assert np.array_equal(
        np.asarray(out["embedding"].to_list()), np.asarray(first["embedding"].to_list())
    )


def test_a_batch_answer_is_journaled_per_input_in_one_write(tmp_path, monkeypatch):
    """All per-input entries of one paid answer are on the OS at its first crash point."""
    cache = ResponseCache(Storage(root=str(tmp_path / "lake")), flush_every=10**6)
    seen: list[int] = []

    def crash_point(name: str) -> None:  # what a SIGKILL right here would leave
        if name == "journal_append":
            seen.append(cache._segment_path.read_bytes().count(b"\n"))

    monkeypatch.setattr(cache_module, "crash_point", crash_point)
    keys = [f"{i:032x}" for i in range(5)]
    cache.append_many([(k, "m", "embeddings", "{}", 1, 0) for k in keys])
    assert seen == [5] and cache.pending == 5
    cache.flush()
    assert cache.lookup(pl.Series(keys)).height == 5
