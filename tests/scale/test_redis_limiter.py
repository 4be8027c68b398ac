"""Engine processes sharing the Redis limiter: one provider limit together; a Redis outage fails
the run fast, with every paid response kept in the cache (storage on S3, like a real scale-out).
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

from lakeloom.engine.cache.store import ResponseCache
from lakeloom.engine.provider import ProviderConfig
from lakeloom.engine.runner import Engine
from tests.fixtures.engine import chat_bodies
from tests.fixtures.pacing import assert_paced, slots_from_json
from tests.fixtures.together import release

REPO = Path(__file__).resolve().parents[2]


def worker(base_url: str, *args: str | int | float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.scale.engine_worker", base_url, *map(str, args)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )


def result(proc: subprocess.Popen, timeout: float = 90) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def test_two_engine_processes_share_one_limit_through_redis(
    s3_root, sim_server, redis_url, tmp_path
):
    sim = sim_server(rpm=1200, burst_s=1.0)  # 20 requests/s for both processes together
    barrier = tmp_path / "go"
    barrier.mkdir()
    common = ["--n", 60, "--rpm", 1200, "--limiter-url", redis_url, "--key", "sim:two-procs",
              "--barrier", barrier]  # fmt: skip
    procs = [worker(sim.base_url, *common, "--tag", tag) for tag in ("a", "b")]
    try:
        release(barrier, procs)
        runs = [result(p) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    stats = sim.stats()
    assert [r["ok"] for r in runs] == [60, 60] and stats["served"] == 120
    assert stats["rejected_429_limit"] <= 2
    assert stats["peak_requests_1s"] <= 40  # the simulator's own 1 s window: never over
    # shared, not serialized: one schedule for both processes, paced at 0.985 x 20/s, never
    # slower than the limit (times the multiplier) while requests waited; both took part in it
    both = [slot for r in runs for slot in slots_from_json(r["slots"])]
    assert_paced(both, gap=1 / (0.985 * 20), bucket=5)
    assert min(s.multiplier for s in both) >= 0.7**2  # at most two cuts, for the 429s allowed
    first_a, last_a = min(s[0] for s in runs[0]["slots"]), max(s[0] for s in runs[0]["slots"])
    assert any(first_a < s[0] < last_a for s in runs[1]["slots"])  # interleaved, not in turn
    cached = pl.read_delta(ResponseCache(s3_root).uri, storage_options=s3_root.storage_options)
    assert cached.height == 120  # both processes' responses, in one Delta cache on S3


def test_redis_outage_mid_run_fails_fast_and_keeps_every_paid_response(
    s3_root, sim_server, redis_factory
):
    n = 80
    sim = sim_server(rpm=600, burst_s=1.0, latency_ms="20")  # 10 requests/s: an 8 s run
    redis = redis_factory()
    proc = worker(sim.base_url, "--n", n, "--rpm", 600, "--limiter-url", redis.url,
                  "--concurrency", 8)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while sim.stats()["served"] < 20:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        redis.stop()  # the outage: SIGTERM to redis-server's PID, mid-run
        run = result(proc, timeout=60)  # only bounds a hang
    finally:
        if proc.poll() is None:
            proc.kill()
    served = sim.stats()["served"]
    assert 20 <= served < n
    # fails fast: each of the 8 concurrent requests gives up on its first exchange that cannot
    # reach Redis (8 measured), no retry loop waiting for a limiter that is gone (the 60 unsent
    # rows would each try again)
    assert 1 <= run["failed_exchanges"] <= 2 * 8
    assert run["ok"] == served and run["errors"] == n - served  # nothing sent without a limit
    assert run["error_messages"], "the unsent rows say why"
    assert all("limiter unavailable" in e for e in run["error_messages"])
    assert any("LAKELOOM_LIMITER_URL" in e or "redis" in e.lower() for e in run["error_messages"])

    cache = ResponseCache(s3_root)  # every paid response is in the Delta cache on S3
    cached = pl.read_delta(cache.uri, storage_options=s3_root.storage_options)
    assert cached.height == served and cached["request_hash"].n_unique() == served

    redis_back = redis_factory()  # Redis is back: the rerun pays only for what was not sent
    config = ProviderConfig(kind="compatible", base_url=sim.base_url, rpm=600,
                            provider_key="sim:scale")  # fmt: skip
    rerun = Engine(config, limiter_url=redis_back.url, cache=cache, progress_interval_s=60)
    again = rerun.run_bodies("chat.completions", chat_bodies(n))
    assert (again.results["status"] == "ok").all()
    assert again.stats.cache_hits == served and again.stats.sent == n - served
    assert sim.stats()["served"] == n  # nothing paid twice
