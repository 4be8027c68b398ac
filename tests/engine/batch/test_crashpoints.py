"""Crash-point matrix, Batch API part (issue 13): SIGKILL at each durable boundary, then rerun.

A worker process runs a Batch API backfill with ``LAKELOOM_CRASH_AT=<point>`` and kills itself
with SIGKILL exactly there (``lakeloom.engine.crash``: no sleeps, no watcher racing it):

- ``batch_created``: the batch exists at the provider, its job is not logged ``created``;
- ``batch_ended``: the job is logged ``ended``, nothing downloaded;
- ``batch_download``: the first 64 KiB of the output file received, the rest not;
- ``batch_merged``: the answers are in the response cache and the job logged ``merged``, the
  ledger not written (the spend journal, written before the cache, must book them).

After each kill a rerun must give rows out = rows in with no duplicate keys, find the same batch
again (for ``batch_created`` the orphan, by listing the provider's batches) instead of paying
for a second one, answer nothing twice (``answered_twice`` counts identical requests answered
again, online or as batch lines; nothing was in flight online at these kills, so 0) and book a
cost ledger equal to the simulator's billed usage x prices.
"""

import json
import os
import signal
import subprocess
import sys
import urllib.request

import pytest

from lakeloom.engine.batch.runner import BatchRunner, BatchSettings
from lakeloom.engine.batch.store import BatchStore
from lakeloom.engine.ledger import CostLedger
from lakeloom.engine.limiter.base import UnlimitedLimiter
from lakeloom.engine.runner import Engine
from tests.fixtures.engine import chat_bodies

N = 300  # output file ~180 KB: more than one 64 KiB read, so batch_download is mid-file

LEFT = {  # what the killed run left in the job log, and whether the output was downloaded
    "batch_created": (["uploaded"], 0),
    "batch_ended": (["uploaded", "created", "ended"], 0),
    "batch_download": (["uploaded", "created", "ended"], 1),
    "batch_merged": (["uploaded", "created", "ended", "merged"], 1),
}


def _get(sim, path: str) -> dict:
    with urllib.request.urlopen(sim.root_url + path, timeout=10) as resp:
        return json.loads(resp.read())


def _billed_usd(sim, engine) -> float:
    total = 0.0
    for channel, by_model in sim.stats()["billed"].items():
        for model, usage in by_model.items():
            price = engine.prices.get(model)
            cost = price.batch_cost if channel == "batch" else price.cost
            total += cost(
                input_tokens=usage["prompt_tokens"], output_tokens=usage["completion_tokens"]
            )
    return total


@pytest.mark.parametrize("point", list(LEFT))
def test_sigkill_at_a_batch_crash_point_then_rerun_pays_once(sim_engine, point):
    sim, engine = sim_engine(batch_delay_s=0.2, engine_limiter=UnlimitedLimiter())
    worker = subprocess.run(
        [sys.executable, "-m", "tests.engine.batch.batch_worker", sim.base_url, "--n", str(N)],
        env={**os.environ, "LAKELOOM_CRASH_AT": point},
        stdout=subprocess.PIPE,
        timeout=300,
        check=False,
    )
    assert worker.returncode == -signal.SIGKILL, worker.stdout  # it died at the point, not after

    store = BatchStore(engine.storage)
    logged, downloads = LEFT[point]
    assert store.read().sort("recorded_at")["event"].to_list() == logged
    listed = _get(sim, "/v1/batches?limit=100")["data"]
    assert len(listed) == 1  # one batch at the provider, running or done, billing either way
    orphan = listed[0]["id"]
    batches = _get(sim, "/stats/batches")
    assert (batches["batches_created"], batches["content_downloads"]) == (1, downloads)
    if point == "batch_download":
        sizes = [f["bytes"] for f in _get(sim, "/v1/files")["data"] if f["purpose"] != "batch"]
        assert sizes and max(sizes) > 1 << 16  # killed with the file partly read
    assert not CostLedger(engine.storage).read().height  # the killed run booked nothing

    rerun = BatchRunner(
        Engine(engine.provider, limiter=UnlimitedLimiter(), storage=engine.storage),
        BatchSettings(poll_interval_s=0.1, poll_max_interval_s=0.3),
    )
    res = rerun.run_bodies("chat.completions", chat_bodies(N, model="sim-priced")).results
    assert res.height == N and res["key"].n_unique() == N and (res["status"] == "ok").all()
    if point == "batch_merged":  # every answer in the cache already: nothing to resume
        assert rerun.jobs == [] and res["from_cache"].all()
    else:
        assert [j.batch_id for j in rerun.jobs] == [orphan] and rerun.jobs[0].resumed
    batches, stats = _get(sim, "/stats/batches"), sim.stats()
    assert (batches["files_uploaded"], batches["batches_created"]) == (1, 1)  # nothing twice
    assert batches["lines_ok"] == N and stats["received"] == 0  # nothing went online
    assert stats["answered_twice"] == 0 and stats["answered_unique"] == N
    assert store.read().sort("recorded_at")["event"].to_list()[-1] == "merged"
    ledger = float(CostLedger(engine.storage).read()["cost_usd"].sum())
    billed = _billed_usd(sim, engine)
    assert billed > 0 and ledger == pytest.approx(billed, rel=1e-9)  # the bill, to the cent
