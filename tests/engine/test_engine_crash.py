"""kill -9 half way through a run, then rerun: nothing paid twice, one result per input."""

import os
import signal
import subprocess
import sys
import time

import polars as pl

from lakeloom.engine.cache import ResponseCache
from lakeloom.engine.limiter import UnlimitedLimiter
from lakeloom.engine.runner import Engine
from tests.fixtures.engine import chat_bodies

N, CONCURRENCY = 300, 4


def test_kill_minus_9_then_rerun_sends_only_what_was_not_paid(sim_engine):
    sim, engine = sim_engine(latency_ms="40", engine_limiter=UnlimitedLimiter(), engine_cache=False)
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.engine.engine_worker",
            sim.base_url,
            "--n",
            str(N),
            "--concurrency",
            str(CONCURRENCY),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while sim.stats()["served"] < N // 2:
            assert worker.poll() is None, "the worker finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == -signal.SIGKILL
    time.sleep(0.3)  # requests in flight at the kill still finish on the server side
    served_first = sim.stats()["served"]
    assert N // 2 <= served_first < N

    cache = ResponseCache(engine.storage)  # replays the dead run's journal into Delta
    assert cache.replayed >= served_first - CONCURRENCY
    rerun_engine = Engine(
        engine.provider, limiter=UnlimitedLimiter(), storage=engine.storage, cache=cache
    )
    rerun = rerun_engine.run_bodies("chat.completions", chat_bodies(N))
    served_rerun = sim.stats()["served"] - served_first

    assert rerun.results.height == N and (rerun.results["status"] == "ok").all()
    assert rerun.results["key"].n_unique() == N
    assert rerun.stats.cache_hits + rerun.stats.sent == N
    assert served_rerun == rerun.stats.sent  # only the misses went out again
    # paid twice = lost in flight at the kill, never a response that was in the journal
    assert served_first + served_rerun - N <= CONCURRENCY
    table = pl.read_delta(cache.uri)
    assert table.height == N and table["request_hash"].n_unique() == N
