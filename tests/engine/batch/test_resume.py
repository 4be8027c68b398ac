"""kill -9 a Batch API backfill once its batch is logged, rerun: the same batch is collected."""

import json
import os
import signal
import subprocess
import sys
import urllib.request

import polars as pl

from lakeloom.engine.batch.runner import BatchRunner, BatchSettings
from lakeloom.engine.batch.store import BatchStore
from lakeloom.engine.ledger import CostLedger
from lakeloom.engine.limiter.base import UnlimitedLimiter
from lakeloom.engine.runner import Engine
from tests.fixtures.engine import chat_bodies

N = 2000


def batch_stats(sim) -> dict:
    with urllib.request.urlopen(sim.root_url + "/stats/batches", timeout=10) as resp:
        return json.loads(resp.read())


def test_kill_minus_9_mid_batch_then_rerun_resumes_the_same_batch(sim_engine):
    sim, engine = sim_engine(batch_delay_s=2.0, engine_limiter=UnlimitedLimiter())
    worker = subprocess.run(  # SIGKILLs itself right after logging its batch (no watcher race)
        [sys.executable, "-m", "tests.engine.batch.batch_worker", sim.base_url, "--n", str(N)],
        env={**os.environ, "LAKELOOM_CRASH_AT": "batch_submitted"},
        stdout=subprocess.PIPE,
        timeout=300,
        check=False,
    )
    assert worker.returncode == -signal.SIGKILL
    store = BatchStore(engine.storage)
    before = batch_stats(sim)
    assert (before["files_uploaded"], before["batches_created"]) == (1, 1)
    assert before["content_downloads"] == 0  # killed before it ever polled
    recorded = store.read().filter(pl.col("event") == "created")["batch_id"].item()

    rerun = BatchRunner(
        Engine(engine.provider, limiter=UnlimitedLimiter(), storage=engine.storage),
        BatchSettings(poll_interval_s=0.2, poll_max_interval_s=0.5),
    )
    run = rerun.run_bodies("chat.completions", chat_bodies(N, model="sim-priced"))

    res = run.results
    assert res.height == N and res["key"].n_unique() == N and (res["status"] == "ok").all()
    assert [j.batch_id for j in rerun.jobs] == [recorded] and rerun.jobs[0].resumed
    after = batch_stats(sim)
    assert (after["files_uploaded"], after["batches_created"]) == (1, 1)  # no second upload
    assert after["lines_ok"] == N and sim.stats()["served"] == 0
    assert sim.stats()["answered_twice"] == 0  # nothing paid twice
    ledger = CostLedger(engine.storage).read()  # the killed run recorded no spend; the rerun did
    assert ledger["requests"].sum() == N and ledger["cost_usd"].sum() > 0
    events = store.read().sort("recorded_at")["event"].to_list()
    assert events == ["uploaded", "created", "ended", "merged"]
