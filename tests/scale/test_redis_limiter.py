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

from lakeloom.engine.cache import ResponseCache
from lakeloom.engine.client import ProviderConfig
from lakeloom.engine.runner import Engine
from tests.fixtures.engine import chat_bodies

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


def test_two_engine_processes_share_one_limit_through_redis(s3_root, sim_server, redis_url):
    sim = sim_server(rpm=1200, burst_s=1.0)  # 20 requests/s for both processes together
    start_at = time.time() + 3.0
    common = ["--n", 60, "--rpm", 1200, "--limiter-url", redis_url, "--key", "sim:two-procs",
              "--start-at", start_at]  # fmt: skip
    procs = [worker(sim.base_url, *common, "--tag", tag) for tag in ("a", "b")]
    runs = [result(p) for p in procs]
    stats = sim.stats()
    assert [r["ok"] for r in runs] == [60, 60] and stats["served"] == 120
    assert stats["rejected_429_limit"] <= 2
    elapsed = max(r["wall_s"] for r in runs)
    assert stats["served"] <= 20 + 20 * elapsed  # bucket + rate x time: never over the limit
    assert stats["peak_requests_1s"] <= 40
    assert elapsed < 15  # ~5 s at the limit: shared, not serialized
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
        killed_at = time.monotonic()
        run = result(proc, timeout=60)
        ended_after_s = time.monotonic() - killed_at
    finally:
        if proc.poll() is None:
            proc.kill()
    served = sim.stats()["served"]
    assert 20 <= served < n
    assert ended_after_s < 10  # fails fast: no waiting for a limiter that is gone
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
