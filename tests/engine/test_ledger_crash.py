"""Crash-point matrix, ledger point: SIGKILL after the responses are durable, before the ledger.

The rerun books the dead run's spend (from its spend journal) under the dead run's id and
answers its rows from the cache: the ledger then equals the simulator's bill to the cent.
"""

import os
import signal
import subprocess
import sys

import polars as pl

from lakeloom.engine.limiter.base import UnlimitedLimiter
from lakeloom.engine.runner import Engine
from lakeloom.engine.types import RunContext
from tests.fixtures.engine import chat_bodies

N = 40
PRICE_IN, PRICE_OUT = 1.0, 4.0  # sim-priced, USD per 1M tokens


def _billed_usd(sim) -> float:
    usage = sim.stats()["billed"]["online"]["sim-priced"]
    return (usage["prompt_tokens"] * PRICE_IN + usage["completion_tokens"] * PRICE_OUT) / 1e6


def test_kill_before_the_ledger_write_then_rerun_books_the_bill_to_the_cent(sim_engine):
    sim, engine = sim_engine(engine_limiter=UnlimitedLimiter())
    env = {**os.environ, "LAKELOOM_CRASH_AT": "before_ledger"}
    worker = subprocess.run(
        [sys.executable, "-m", "tests.engine.ledger_worker", sim.base_url, "run-killed"],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert worker.returncode == -signal.SIGKILL, worker.stderr.decode()[-2000:]
    assert sim.stats()["served"] == N  # every response was paid for ...
    assert engine.ledger.read().is_empty()  # ... and none is in the ledger yet

    rerun = engine.run_bodies(
        "chat.completions",
        chat_bodies(N, model="sim-priced"),
        context=RunContext(run_id="run-rerun", asset="labels", partition="2025-03-01"),
    )
    assert rerun.results.height == N and (rerun.results["status"] == "ok").all()
    assert rerun.stats.cache_hits == N and sim.stats()["answered_twice"] == 0
    ledger = engine.ledger.read()
    killed = ledger.filter(pl.col("run_id") == "run-killed")
    assert killed["sent"].sum() == N and killed["partition"].to_list() == ["2025-03-01"]
    assert round(ledger["cost_usd"].sum(), 2) == round(_billed_usd(sim), 2)
    assert abs(ledger["cost_usd"].sum() - _billed_usd(sim)) < 1e-9  # exact, not only to the cent
    assert ledger.filter(pl.col("run_id") == "run-rerun")["cache_hits"].sum() == N
    # a second engine (another rerun) books nothing twice
    Engine(engine.provider, storage=engine.storage).run_bodies(
        "chat.completions", chat_bodies(N, model="sim-priced")
    )
    assert abs(engine.ledger.read()["cost_usd"].sum() - _billed_usd(sim)) < 1e-9
