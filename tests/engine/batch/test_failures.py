"""Issue 13.3: a Batch API download or cancel that fails never pays twice.

Once a batch exists it answers (and bills) its lines whatever happens to our calls. A failed
download of its output file, or a cancel that answers 5xx, must leave the job open and send
nothing online; the next run resumes the same batch, downloads it and pays nothing again.
"""

import json
import urllib.request

import polars as pl
import pytest

from lakeloom.engine.batch.runner import BatchRunner, BatchSettings
from lakeloom.engine.batch.store import BatchStore
from lakeloom.engine.ledger import CostLedger
from lakeloom.engine.limiter.base import UnlimitedLimiter
from lakeloom.engine.runner import Engine
from tests.fixtures.engine import chat_bodies

N = 60
FAST = {"poll_interval_s": 0.1, "poll_max_interval_s": 0.3, "api_retries": 0}


def batch_stats(sim) -> dict:
    with urllib.request.urlopen(sim.root_url + "/stats/batches", timeout=10) as resp:
        return json.loads(resp.read())


def billed_usd(sim, engine) -> float:
    """What the simulator billed, at the engine's prices: online at list, batch lines at batch."""
    billed = sim.stats()["billed"]
    total = 0.0
    for channel, by_model in billed.items():
        for model, usage in by_model.items():
            price = engine.prices.get(model)
            cost = price.batch_cost if channel == "batch" else price.cost
            tokens = {"input_tokens": usage["prompt_tokens"]}
            total += cost(**tokens, output_tokens=usage["completion_tokens"])
    return total


def assert_ledger_is_the_bill(sim, engine) -> None:
    """The cost ledger equals the simulator's billed usage x prices (closer than to the cent)."""
    billed = billed_usd(sim, engine)
    ledger = float(CostLedger(engine.storage).read()["cost_usd"].sum())
    assert billed > 0 and ledger == pytest.approx(billed, rel=1e-9)


def events(engine) -> list[str]:
    return BatchStore(engine.storage).read().sort("recorded_at")["event"].to_list()


def rerun(engine, **settings) -> BatchRunner:
    fresh = Engine(engine.provider, limiter=UnlimitedLimiter(), storage=engine.storage)
    return BatchRunner(fresh, BatchSettings(**{**FAST, **settings}))


DROP = pytest.mark.parametrize("drop", [False, True], ids=["http-500", "connection-dropped"])


@DROP
def test_failed_download_after_the_batch_ended_is_not_resent_and_the_rerun_downloads(
    sim_engine, drop
):
    sim, engine = sim_engine(
        engine_limiter=UnlimitedLimiter(),
        batch_delay_s=0.2,
        batch_download_failures=1,
        batch_fault_drop=drop,
    )
    bodies = chat_bodies(N, model="sim-priced")
    first = BatchRunner(engine, BatchSettings(**FAST))
    res = first.run_bodies("chat.completions", bodies).results
    assert res.height == N and (res["status"] == "error").all()
    assert res["error"].str.contains("Connection error" if drop else "HTTP 500").all()
    assert res["error"].str.contains("left open, not resent").all()
    assert sim.stats()["received"] == 0  # nothing went online
    assert batch_stats(sim)["downloads_failed"] == 1 and events(engine)[-1] == "ended"
    recorded = first.jobs[0].batch_id

    again = rerun(engine)
    out = again.run_bodies("chat.completions", bodies).results
    assert out.height == N and out["key"].n_unique() == N and (out["status"] == "ok").all()
    assert [j.batch_id for j in again.jobs] == [recorded] and again.jobs[0].resumed
    stats, batches = sim.stats(), batch_stats(sim)
    assert (batches["files_uploaded"], batches["batches_created"], batches["lines_ok"]) == (
        1,
        1,
        N,
    )
    assert stats["received"] == 0 and stats["answered_twice"] == 0
    assert events(engine) == ["uploaded", "created", "ended", "merged"]
    assert_ledger_is_the_bill(sim, engine)


@DROP
def test_failed_cancel_leaves_the_batch_open_and_nothing_goes_online(sim_engine, drop):
    # the batch would run for an hour: only our cancel ends it; the first cancel fails
    sim, engine = sim_engine(
        engine_limiter=UnlimitedLimiter(),
        batch_delay_s=3600,
        batch_cancel_failures=1,
        batch_fault_drop=drop,
    )
    bodies = chat_bodies(N, model="sim-priced")
    first = BatchRunner(engine, BatchSettings(max_wait_s=0.2, cancel_wait_s=0, **FAST))
    res = first.run_bodies("chat.completions", bodies).results
    assert res.height == N and (res["status"] == "error").all()
    assert res["error"].str.contains("not resent").all()
    assert sim.stats()["received"] == 0  # the batch still runs: nothing went online
    batches = batch_stats(sim)
    assert batches["cancels_failed"] == 1 and batches["statuses"] == {"in_progress": 1}
    assert "merged" not in events(engine)  # open, not "lost"

    again = rerun(engine, max_wait_s=0.2, cancel_wait_s=600)
    out = again.run_bodies("chat.completions", bodies).results
    assert [j.batch_id for j in again.jobs] == [first.jobs[0].batch_id]
    assert out.height == N and out["key"].n_unique() == N and (out["status"] == "ok").all()
    batches, stats = batch_stats(sim), sim.stats()
    assert batches["statuses"] == {"cancelled": 1} and batches["batches_created"] == 1
    # the cancelled batch answered (nearly) none of them: an hour-long batch, cancelled in
    # seconds; the rest went online once each, and nothing was answered twice
    assert stats["served"] == N - batches["lines_ok"] and batches["lines_unprocessed"] > 0
    assert stats["answered_twice"] == 0
    assert_ledger_is_the_bill(sim, engine)
    ledger = CostLedger(engine.storage).read()
    online = ledger.filter(pl.col("endpoint") == "chat.completions")["requests"].sum()
    assert online == stats["served"]


@DROP
def test_a_create_that_failed_after_creating_the_batch_is_found_not_paid_twice(sim_engine, drop):
    """The provider made the batch but answered 500 (or the connection dropped): find it."""
    sim, engine = sim_engine(
        engine_limiter=UnlimitedLimiter(),
        batch_delay_s=0.2,
        batch_create_failures=1,
        batch_fault_drop=drop,
    )
    runner = BatchRunner(engine, BatchSettings(**FAST))
    res = runner.run_bodies("chat.completions", chat_bodies(N, model="sim-priced")).results
    assert res.height == N and res["key"].n_unique() == N and (res["status"] == "ok").all()
    batches, stats = batch_stats(sim), sim.stats()
    assert (batches["creates_failed"], batches["batches_created"], batches["lines_ok"]) == (1, 1, N)
    assert stats["received"] == 0 and stats["answered_twice"] == 0
    assert_ledger_is_the_bill(sim, engine)
