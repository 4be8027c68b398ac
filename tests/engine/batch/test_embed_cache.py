"""Batch API embeddings are cached once, per input (issue 17): never also as the whole batch.

Online, an embeddings batch naming its inputs' keys is journaled as one entry per input. The
Batch API path used to merge the whole batch answer under the batch's key and then the core
added the per-input entries too: every vector stored twice.
"""

import json

import polars as pl

from lakeloom.core.embed import run_embed
from lakeloom.core.specs import EmbedSpec
from lakeloom.engine.batch.runner import BatchRunner, BatchSettings
from lakeloom.engine.limiter.base import UnlimitedLimiter

FAST = {"poll_interval_s": 0.1, "poll_max_interval_s": 0.3}


def _cache_rows(engine) -> pl.DataFrame:
    engine.cache.flush()
    return pl.read_delta(engine.cache.uri)


def test_batch_api_embedding_run_caches_one_entry_per_distinct_text(sim_engine):
    sim, engine = sim_engine(engine_limiter=UnlimitedLimiter(), batch_delay_s=0.3)
    texts = [f"text number {i % 30} about lakes" for i in range(40)]  # 30 distinct
    df = pl.DataFrame({"id": range(40), "text": texts})
    spec = EmbedSpec(column="text", model="sim-embed", batch_size=8)
    frame, stats = run_embed(df, spec, BatchRunner(engine, BatchSettings(**FAST)), keep=["id"])
    assert (frame["_status"] == "ok").all() and stats.requests > 1

    cached = _cache_rows(engine)
    assert cached.height == 30  # one per distinct text, no whole-batch entries
    assert cached["request_hash"].n_unique() == 30
    # every entry is a single-input answer (the shape of that text sent alone)
    assert all(len(json.loads(r)["data"]) == 1 for r in cached["response"].to_list())

    # regrouped (another batch size, online): all answered from those entries
    received = sim.stats()["received"]
    again, _ = run_embed(df, spec.model_copy(update={"batch_size": 5}), engine, keep=["id"])
    assert (again["_status"] == "ok").all()
    assert sim.stats()["received"] == received
    assert _cache_rows(engine).height == 30
