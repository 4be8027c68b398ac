"""Batch API mode on the simulator: backfills, prices, failures, budget, deadlines, embeddings."""

import asyncio
import json
import urllib.request

import numpy as np
import polars as pl
import pytest

from lakeloom.core.embed import run_embed
from lakeloom.core.specs import EmbedSpec
from lakeloom.engine.batch.files import BatchAPI, jsonl_line
from lakeloom.engine.batch.runner import BatchRunner, BatchSettings
from lakeloom.engine.batch.store import BatchJob, BatchStore
from lakeloom.engine.ledger import CostLedger
from lakeloom.engine.limiter.base import UnlimitedLimiter
from lakeloom.engine.plan import request_frame
from lakeloom.engine.runner import Engine
from tests.fixtures.engine import chat_bodies

FAST = {"poll_interval_s": 0.1, "poll_max_interval_s": 0.3}


def batch_stats(sim) -> dict:
    with urllib.request.urlopen(sim.root_url + "/stats/batches", timeout=10) as resp:
        return json.loads(resp.read())


def make(sim_engine, **options):
    return sim_engine(engine_limiter=UnlimitedLimiter(), **{"batch_delay_s": 0.3, **options})


def test_batch_backfill_of_thousands_of_rows_at_batch_prices(sim_engine):
    sim, engine = make(sim_engine, batch_delay_s=0.5)
    bodies = chat_bodies(3000, model="sim-priced", max_tokens=8)
    runner = BatchRunner(engine, BatchSettings(max_requests=1_200, **FAST))
    run = runner.run_bodies("chat.completions", bodies)
    res = run.results

    assert res.height == 3000 and res["key"].n_unique() == 3000
    assert (res["status"] == "ok").all() and not res["from_cache"].any()
    assert sorted(len(job.keys) for job in runner.jobs) == [600, 1200, 1200]
    stats = batch_stats(sim)
    assert (stats["files_uploaded"], stats["batches_created"], stats["lines_ok"]) == (3, 3, 3000)
    assert sim.stats()["served"] == 0  # nothing went online
    price = engine.prices.get("sim-priced")
    tokens = list(zip(res["input_tokens"], res["output_tokens"], strict=True))
    batch_usd = sum(price.batch_cost(input_tokens=i, output_tokens=o) for i, o in tokens)
    online_usd = sum(price.cost(input_tokens=i, output_tokens=o) for i, o in tokens)
    assert res["cost_usd"].sum() == pytest.approx(batch_usd)
    assert run.stats.cost_usd == pytest.approx(online_usd / 2)  # sim-priced: batch = half
    ledger = CostLedger(engine.storage).read()
    assert ledger["endpoint"].to_list() == ["batch:chat.completions"]
    assert (ledger["requests"].item(), ledger["ok"].item()) == (3000, 3000)
    assert ledger["cost_usd"].item() == pytest.approx(batch_usd)

    again = engine.run_bodies("chat.completions", bodies)  # online reuses every batch answer
    assert again.stats.cache_hits == 3000 and sim.stats()["served"] == 0
    assert again.results["response"].to_list() == res["response"].to_list()
    events = BatchStore(engine.storage).read()
    assert events.group_by("event").len().sort("event")["len"].to_list() == [3, 3, 3, 3]


def test_failed_lines_are_retried_online_exactly_once(sim_engine):
    sim, engine = make(sim_engine, batch_fail_rate=0.1, seed=5)
    bodies = chat_bodies(1000, model="sim-priced")
    run = BatchRunner(engine, BatchSettings(**FAST)).run_bodies("chat.completions", bodies)
    res = run.results
    failed = batch_stats(sim)["lines_failed"]
    assert 50 <= failed <= 150
    assert res.height == 1000 and (res["status"] == "ok").all()
    assert sim.stats()["served"] == failed  # exactly the failed lines went online
    ledger = CostLedger(engine.storage).read().sort("endpoint")
    assert ledger["endpoint"].to_list() == ["batch:chat.completions", "chat.completions"]
    assert ledger["sent"].to_list() == [1000 - failed, failed]
    price = engine.prices.get("sim-priced")
    error_file = BatchStore(engine.storage).read()["error_file_id"].drop_nulls().unique().item()
    with urllib.request.urlopen(f"{sim.base_url}/files/{error_file}/content") as resp:
        failed_ids = {json.loads(x)["custom_id"] for x in resp.read().decode().split("\n") if x}
    online_rows = res.filter(pl.col("key").is_in(list(failed_ids)))  # the lines that failed
    assert online_rows.height == failed
    for row in online_rows.head(5).iter_rows(named=True):  # online price for online rows
        assert row["cost_usd"] == pytest.approx(
            price.cost(input_tokens=row["input_tokens"], output_tokens=row["output_tokens"])
        )


def test_failed_lines_are_reported_with_the_providers_reason(sim_engine):
    sim, engine = make(sim_engine, batch_fail_rate=0.2, seed=11)
    bodies = chat_bodies(400, model="sim-priced")
    runner = BatchRunner(engine, BatchSettings(on_failed="error", **FAST))
    res = runner.run_bodies("chat.completions", bodies).results
    job = runner.jobs[0]
    store_row = BatchStore(engine.storage).read().filter(pl.col("event") == "ended")
    error_file = store_row["error_file_id"].item()
    with urllib.request.urlopen(f"{sim.base_url}/files/{error_file}/content") as resp:
        failed_ids = {json.loads(x)["custom_id"] for x in resp.read().decode().splitlines()}
    errors = res.filter(pl.col("status") == "error")
    assert set(errors["key"]) == failed_ids and len(failed_ids) > 40  # exactly those rows
    assert errors["error"].str.starts_with("HTTP 500: The server had an error").all()
    assert res.height == 400 and sim.stats()["served"] == 0 and len(job.keys) == 400


def test_expired_rejected_and_too_big_batches_fall_back_online(sim_engine):
    sim, engine = make(sim_engine, batch_expire_rate=1.0)
    bodies = chat_bodies(300, model="sim-priced")
    res = BatchRunner(engine, BatchSettings(**FAST)).run_bodies("chat.completions", bodies)
    assert (res.results["status"] == "ok").all()
    assert batch_stats(sim)["lines_unprocessed"] == 150 == sim.stats()["served"]

    sim2, engine2 = make(sim_engine, batch_max_requests=100)  # the provider's limit is lower
    more = chat_bodies(150, model="sim-priced", tag="more")
    runner = BatchRunner(engine2, BatchSettings(on_failed="error", **FAST))
    out = runner.run_bodies("chat.completions", more).results
    assert (out["status"] == "error").all()
    assert out["error"].str.contains("too_many_requests: The batch has 150 requests").all()
    split = BatchRunner(engine2, BatchSettings(max_requests=100, **FAST))
    fixed = split.run_bodies("chat.completions", more).results
    assert (fixed["status"] == "ok").all() and len(split.jobs) == 2


def test_budget_caps_what_is_batched(sim_engine):
    sim, engine = make(sim_engine)
    bodies = chat_bodies(200, model="sim-priced", max_tokens=8)
    worst = engine.forecast("chat.completions", bodies).batch_usd / 200
    run = BatchRunner(engine, BatchSettings(**FAST)).run_bodies(
        "chat.completions", bodies, max_cost_usd=50 * worst
    )
    res = run.results
    ok = res.filter(pl.col("status") == "ok")
    assert ok.height == 50 and run.stats.budget_exceeded
    assert res.filter(pl.col("error").str.starts_with("budget exceeded")).height == 150
    assert batch_stats(sim)["lines_ok"] == 50 and 0 < ok["cost_usd"].sum() <= 50 * worst


def test_batch_past_max_wait_is_cancelled_and_the_rest_sent_online(sim_engine):
    # an hour-long batch: only the cancel at max_wait_s ends it, with 30% answered
    sim, engine = make(sim_engine, batch_delay_s=3600, batch_cancel_share=0.3)
    settings = BatchSettings(max_wait_s=0.5, **FAST)
    res = BatchRunner(engine, settings).run_bodies(
        "chat.completions", chat_bodies(200, model="sim-priced")
    )
    stats = batch_stats(sim)
    assert stats["statuses"] == {"cancelled": 1} and stats["batches_cancelled"] == 1
    assert stats["lines_ok"] == 60  # the answers so far are kept
    assert (res.results["status"] == "ok").all()
    assert sim.stats()["served"] == stats["lines_unprocessed"] == 200 - stats["lines_ok"]


async def _upload(engine, bodies, *, create: bool) -> BatchJob:
    """What a run that crashed right after uploading (or after creating) left behind."""
    frame = request_frame("chat.completions", bodies)
    keys = frame["key"].to_list()
    data = b"".join(
        jsonl_line("/v1/chat/completions", k, t) for k, t in zip(keys, frame["body"], strict=True)
    )
    provider = engine.provider.limiter_key
    job = BatchJob("crashed-" + str(create), provider, "chat.completions", "sim-priced", keys)
    async with BatchAPI(engine.provider) as api:
        job.input_file_id = await api.upload("in.jsonl", data)
        BatchStore(engine.storage).record(job, "uploaded")
        if create:  # created at the provider, but the process died before recording it
            await api.create(job.input_file_id, "/v1/chat/completions", {})
    return job


@pytest.mark.parametrize("created", [False, True], ids=["before-create", "before-record"])
def test_resume_after_a_crash_around_batch_creation(sim_engine, created):
    sim, engine = make(sim_engine)
    bodies = chat_bodies(50, model="sim-priced")
    left = asyncio.run(_upload(engine, bodies, create=created))
    runner = BatchRunner(engine, BatchSettings(**FAST))
    res = runner.run_bodies("chat.completions", bodies).results
    assert (res["status"] == "ok").all() and res.height == 50
    assert [j.job for j in runner.jobs] == [left.job] and runner.jobs[0].resumed
    stats = batch_stats(sim)
    assert (stats["files_uploaded"], stats["batches_created"]) == (1, 1)  # nothing twice


def test_embeddings_by_batch_equal_online_vectors(sim_engine):
    sim, engine = make(sim_engine)
    df = pl.DataFrame(
        {"id": range(120), "text": [f"text number {i} about lakes" for i in range(120)]}
    )
    spec = EmbedSpec(column="text", model="sim-embed", batch_size=8)
    batch_frame, stats = run_embed(
        df, spec, BatchRunner(engine, BatchSettings(**FAST)), keep=["id"]
    )
    online = Engine(engine.provider, limiter=UnlimitedLimiter(), cache=False, ledger=False)
    online_frame, _ = run_embed(df, spec, online, keep=["id"])
    assert (batch_frame["_status"] == "ok").all() and stats.requests > 5
    a = np.stack(batch_frame["embedding"].to_numpy())
    b = np.stack(online_frame["embedding"].to_numpy())
    assert a.shape == (120, 384) and np.allclose(a, b, atol=1e-6)
    assert batch_stats(sim)["batches_created"] == 1
