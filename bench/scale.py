"""Scale-out figures on real local services: moto S3, redis-server, the provider simulator.

S1  Rows/s of a simulated-latency backfill (chat requests, latency lognormal p50 150 ms /
    p95 400 ms, 8 in flight per worker process) with 1 and then 2 worker processes sharing one
    provider limit (RPM_LIMIT) through the Redis limiter; the response cache and cost ledger are
    Delta tables on S3. Each side gets a fresh simulator and the same ROWS rows, split evenly;
    the clock starts when every worker has imported everything (a common start instant) and
    stops when the last one ends. One worker is bound by latency x concurrency, two by the
    limit: limit_use_2_workers is the served requests/s of the two-worker side over the limit
    (from the simulator's /stats), and the simulator's peak second and limit 429s show that the
    shared limit held.
S2  Limiter decisions/s through Redis from one process (40 tasks acquiring at once, a limit far
    above the rate so nothing waits), beside the same loop on the default SQLite store.

The last line is one JSON object with the figures.

Usage: .venv/bin/python bench/scale.py [--rows 600]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RPM_LIMIT = 3600  # 60 requests/s shared by every worker
CONCURRENCY = 8  # per worker: ~8 / 0.18 s ≈ 45 requests/s for one worker
LATENCY = "lognormal:150:400"
DECISIONS = 20_000


def worker(args: argparse.Namespace) -> None:
    """One worker process: run the engine over its rows, print one JSON line."""
    from lakeloom.engine.provider import ProviderConfig
    from lakeloom.engine.runner import Engine

    config = ProviderConfig(kind="compatible", base_url=args.base_url, rpm=RPM_LIMIT,
                            max_concurrency=CONCURRENCY, provider_key="bench:scale")  # fmt: skip
    engine = Engine(config, limiter_url=args.limiter_url, progress_interval_s=3600)
    bodies = [
        {"model": "sim-chat", "max_tokens": 8,
         "messages": [{"role": "user", "content": f"Label review {args.tag}-{i}: fine."}]}
        for i in range(args.rows)
    ]  # fmt: skip
    time.sleep(max(0.0, args.start_at - time.time()))
    run = engine.run_bodies("chat.completions", bodies)
    print(json.dumps({"ok": run.stats.ok, "end": time.time()}))


def backfill(workers: int, rows: int, redis_url: str, env: dict[str, str]) -> dict[str, float]:
    """S1 for one worker count: a fresh simulator, ``rows`` rows split over ``workers``."""
    from lakeloom.sim.launch import start_subprocess

    sim = start_subprocess(host="127.0.0.1", rpm=RPM_LIMIT, burst_s=1.0, latency_ms=LATENCY)
    try:
        start_at = time.time() + 8.0  # every worker has imported the engine by then
        share = rows // workers
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    "--base-url",
                    sim.base_url,
                    "--limiter-url",
                    redis_url,
                    "--rows",
                    str(share),
                    "--tag",
                    f"w{workers}-{i}",
                    "--start-at",
                    str(start_at),
                ],
                stdout=subprocess.PIPE,
                env=env,
                text=True,
            )  # fmt: skip
            for i in range(workers)
        ]
        outs = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in procs]
        elapsed = max(o["end"] for o in outs) - start_at
        stats = sim.stats()
    finally:
        sim.stop()
    ok = sum(o["ok"] for o in outs)
    return {
        "rows_s": ok / elapsed,
        "limit_use": stats["served"] / elapsed / (RPM_LIMIT / 60),
        "peak_1s": stats["peak_requests_1s"],
        "limit_429s": stats["rejected_429_limit"],
        "ok": ok,
        "elapsed_s": elapsed,
    }


async def _decisions(limiter: object, total: int) -> float:
    async def task(n: int) -> None:
        for _ in range(n):
            await limiter.acquire(1)  # type: ignore[attr-defined]

    await asyncio.gather(*(task(total // 40) for _ in range(5)))  # warm-up
    started = time.perf_counter()
    await asyncio.gather(*(task(total // 40) for _ in range(40)))
    return total / (time.perf_counter() - started)


def decisions_per_s(url: str) -> float:
    """S2: acquire() calls per second from one process on the store at ``url``."""
    from lakeloom.engine.limiter.factory import make_limiter

    limiter = make_limiter(f"bench:decisions:{time.time()}", rpm=600_000_000, url=url)
    try:
        return asyncio.run(_decisions(limiter, DECISIONS))
    finally:
        limiter.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1200)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--limiter-url", help=argparse.SUPPRESS)
    parser.add_argument("--tag", help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    from lakeloom.scale.services import moto_server, redis_server

    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lakeloom-bench-")))
        s3 = stack.enter_context(moto_server())
        redis = stack.enter_context(redis_server(workdir=tmp))
        env = {**os.environ, "LAKELOOM_HOME": str(tmp / "home"),
               "LAKELOOM_STORAGE_ROOT": s3.create_bucket("bench") + "/lake",
               "LAKELOOM_STORAGE_OPTIONS": json.dumps(s3.storage_options())}  # fmt: skip
        limit = f"{RPM_LIMIT / 60:.0f} req/s"
        print(f"S1: {args.rows} rows, latency {LATENCY} ms, {CONCURRENCY} in flight per worker, "
              f"one limit of {limit} through Redis, cache on S3 (moto)")  # fmt: skip
        results = {}
        for workers in (1, 2):
            r = results[workers] = backfill(workers, args.rows, redis.url, env)
            print(f"  {workers} worker(s): {r['rows_s']:.1f} rows/s ({r['ok']} ok in "
                  f"{r['elapsed_s']:.1f}s), limit use {r['limit_use']:.3f}, peak "
                  f"{r['peak_1s']} req in 1 s, {r['limit_429s']} limit 429s")  # fmt: skip
        print(f"  2 workers / 1 worker: {results[2]['rows_s'] / results[1]['rows_s']:.2f}x")
        os.environ["LAKELOOM_HOME"] = str(tmp / "home")
        redis_rate = decisions_per_s(redis.url)
        sqlite_rate = decisions_per_s(f"sqlite:///{tmp / 'limiter.sqlite'}")
        ratio = redis_rate / sqlite_rate
        print(f"S2: limiter decisions/s from one process: Redis {redis_rate:,.0f}, SQLite "
              f"{sqlite_rate:,.0f} (Redis/SQLite {ratio:.2f}x; goal 5,000)")  # fmt: skip
    figures = {
        "workers_1_rows_s": round(results[1]["rows_s"], 1),
        "workers_2_rows_s": round(results[2]["rows_s"], 1),
        "limit_use_2_workers": round(results[2]["limit_use"], 3),
        "redis_decisions_s": round(redis_rate, 0),
    }
    sys.stdout.write(json.dumps(figures) + "\n")


if __name__ == "__main__":
    main()
