"""Crash-point matrix, cache part: SIGKILL at each durable boundary of the response cache.

A worker process runs the engine with ``LAKELOOM_CRASH_AT=<point>`` and kills itself right
at that boundary (no sleep-then-kill timing): after a journal append, just before a flush
commits to Delta, and after the commit before the journal segment is removed. Each is followed
by a rerun. After each: rows out = rows in, one row per key, nothing received paid twice (the
simulator's ``answered_twice`` counts only requests in flight at the kill), the cache table
holds each response once, and the ledger books every received response once.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from lakeloom.engine.cache.store import ResponseCache
from lakeloom.engine.keys import cache_keys, canonical_json, request_keys
from lakeloom.engine.limiter.base import UnlimitedLimiter
from lakeloom.engine.runner import Engine
from lakeloom.engine.types import RunContext
from tests.fixtures.engine import chat_bodies

N, CONCURRENCY, MODEL = 300, 4, "sim-priced"
PRICE_IN, PRICE_OUT = 1.0, 4.0  # sim-priced, USD per 1M tokens

POINTS = {
    "journal_append": ("journal_append:150", []),  # the 150th response is journaled
    "cache_commit": ("cache_commit:1", ["--flush-every", "100"]),  # first flush, before commit
    "cache_committed": ("cache_committed:1", ["--flush-every", "100"]),  # committed, journal kept
}


def _billed(sim) -> tuple[int, float]:
    usage = sim.stats()["billed"]["online"][MODEL]
    usd = (usage["prompt_tokens"] * PRICE_IN + usage["completion_tokens"] * PRICE_OUT) / 1e6
    return usage["requests"], usd


def _leave_uncommitted_files(engine) -> None:
    """What a kill inside ``write_deltalake`` leaves: data files written, no commit for them."""
    keys = request_keys(
        "chat.completions", [canonical_json(b) for b in chat_bodies(N, model=MODEL)]
    )
    rows = pl.DataFrame(
        {
            "request_hash": cache_keys(keys, engine.provider.cache_namespace),
            "endpoint": "chat.completions",
            "response": "stray: never committed",
            "input_tokens": 0,
            "output_tokens": 0,
        }
    )
    folder = Path(engine.storage.table_uri("_lakeloom", "cache")) / f"model={MODEL}"
    folder.mkdir(parents=True, exist_ok=True)
    rows.write_parquet(folder / "part-00000-uncommitted-c000.snappy.parquet")


@pytest.mark.parametrize("point", list(POINTS))
def test_sigkill_at_a_cache_boundary_then_rerun_pays_nothing_received_twice(sim_engine, point):
    sim, engine = sim_engine(engine_limiter=UnlimitedLimiter(), engine_cache=False)
    crash_at, extra = POINTS[point]
    worker = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.engine.engine_worker",
            sim.base_url,
            "--n",
            str(N),
            "--concurrency",
            str(CONCURRENCY),
            "--model",
            MODEL,
            "--run-id",
            "run-killed",
            *extra,
        ],
        env={**os.environ, "LAKELOOM_CRASH_AT": crash_at},
        capture_output=True,
        timeout=300,
    )
    assert worker.returncode == -signal.SIGKILL, worker.stderr.decode()[-2000:]

    if point == "cache_commit":
        _leave_uncommitted_files(engine)
    cache = ResponseCache(engine.storage)  # replays the dead run's journal into Delta
    stored = pl.read_delta(cache.uri)
    assert stored["request_hash"].n_unique() == stored.height  # a replay adds no duplicate
    received = stored.height
    if point == "journal_append":
        assert received == 150 and cache.replayed == 150
    else:
        assert received >= 100  # the flushed 100, plus what arrived during the flush
    rerun_engine = Engine(
        engine.provider, limiter=UnlimitedLimiter(), storage=engine.storage, cache=cache
    )
    rerun = rerun_engine.run_bodies(
        "chat.completions", chat_bodies(N, model=MODEL), context=RunContext(run_id="run-rerun")
    )

    results = rerun.results
    assert results.height == N and (results["status"] == "ok").all()
    assert results["key"].n_unique() == N
    assert rerun.stats.cache_hits == received and rerun.stats.sent == N - received
    stats = sim.stats()
    # paid twice = answered while in flight at the kill, never a response that was received
    assert stats["answered_twice"] <= CONCURRENCY
    assert stats["answered_unique"] == N
    table = pl.read_delta(cache.uri)
    assert table.height == N and table["request_hash"].n_unique() == N
    assert not table["response"].str.starts_with("stray").any()  # uncommitted files unseen

    billed_requests, billed_usd = _billed(sim)
    assert billed_requests == N + stats["answered_twice"]
    ledger = engine.ledger.read()
    # the dead run's spend journal books what it received; a response received in the last
    # instant (spend journaled, not yet in the cache journal) was in flight: paid again, booked
    # again, and counted in answered_twice
    killed = ledger.filter(pl.col("run_id") == "run-killed")["sent"].sum()
    assert received <= killed <= received + stats["answered_twice"]
    assert ledger["sent"].sum() == killed + rerun.stats.sent
    unbooked = billed_usd - ledger["cost_usd"].sum()  # only the answers nobody received
    per_request = billed_usd / billed_requests
    assert -1e-9 <= unbooked <= stats["answered_twice"] * per_request * 1.5 + 1e-9
