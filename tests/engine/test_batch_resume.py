"""kill -9 a Batch API backfill while its batch is in flight, rerun: the same batch is collected."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import polars as pl

from lakeloom.engine.batch_api import BatchRunner, BatchSettings
from lakeloom.engine.batch_store import BatchStore
from lakeloom.engine.ledger import CostLedger
from lakeloom.engine.limiter import UnlimitedLimiter
from lakeloom.engine.runner import Engine
from tests.fixtures.engine import chat_bodies

N = 2000


def batch_stats(sim) -> dict:
    with urllib.request.urlopen(sim.root_url + "/stats/batches", timeout=10) as resp:
        return json.loads(resp.read())


def test_kill_minus_9_mid_batch_then_rerun_resumes_the_same_batch(sim_engine):
    sim, engine = sim_engine(batch_delay_s=5.0, engine_limiter=UnlimitedLimiter())
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.engine.batch_worker", sim.base_url, "--n", str(N)],
        stdout=subprocess.PIPE,
    )
    store = BatchStore(engine.storage)
    try:
        deadline = time.monotonic() + 60
        while store.read().filter(pl.col("event") == "created").is_empty():
            assert worker.poll() is None, "the worker ended before its batch was recorded"
            assert time.monotonic() < deadline
            time.sleep(0.1)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == -signal.SIGKILL
    before = batch_stats(sim)
    assert (before["files_uploaded"], before["batches_created"]) == (1, 1)
    assert before["statuses"] == {"in_progress": 1}  # killed while the batch was in flight
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
    ledger = CostLedger(engine.storage).read()  # the killed run recorded no spend; the rerun did
    assert ledger["requests"].sum() == N and ledger["cost_usd"].sum() > 0
    events = store.read().sort("recorded_at")["event"].to_list()
    assert events == ["uploaded", "created", "ended", "merged"]
