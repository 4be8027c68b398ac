"""A 100,000-row backfill on the provider simulator: online at the provider's limit vs Batch API.

Both sides answer the same 100k chat requests (model ``sim-priced``: $1 / $4 per 1M tokens
online, $0.50 / $2 through the Batch API), each with a fresh cache, against one simulator process:

  online  Engine.run_bodies at a configured limit (default 120,000 RPM = 2,000 req/s), lognormal
          latency (p50 60 ms, p95 250 ms), the shared limiter pacing under the limit.
  batch   BatchRunner.run_bodies: JSONL chunks of 50,000 requests, upload, create, poll; the
          simulator finishes each batch after --batch-delay-s (a real provider: minutes to 24 h),
          then the output files are downloaded and merged into the cache.

Printed: wall time, requests/s, dollars and errors of each side, the batch/online ratios, and
one JSON line {"online_s", "batch_s", "online_usd", "batch_usd", ...}. The batch side's wall time
is dominated by the simulated completion delay; what it shows is the cost, and that a large
backfill is collected whole with no rate-limit pressure at all.

Usage: .venv/bin/python bench/backfill.py [--rows 100000] [--rpm 120000] [--batch-delay-s 20]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import urllib.request
from typing import Any

from lakeloom.engine.batch.runner import BatchRunner, BatchSettings
from lakeloom.engine.provider import ProviderConfig
from lakeloom.engine.results import EngineRun
from lakeloom.engine.runner import Engine
from lakeloom.sim.launch import start_subprocess
from lakeloom.storage.settings import Storage

MODEL = "sim-priced"
LATENCY = "lognormal:60:250"


def bodies(n: int) -> list[dict[str, Any]]:
    return [
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": f"Label review {i}: a fine, quiet film."}],
            "max_tokens": 8,
        }
        for i in range(n)
    ]


def engine_for(base_url: str, rpm: int, root: str) -> Engine:
    provider = ProviderConfig(
        kind="compatible", base_url=base_url, rpm=rpm, max_concurrency=512, timeout_s=30.0
    )
    return Engine(
        provider,
        limiter_url="memory://",
        storage=Storage(root=root),
        progress=lambda line: print("   ", line, flush=True),
        progress_interval_s=10.0,
    )


def summary(name: str, run: EngineRun, wall: float) -> dict[str, Any]:
    res = run.results
    ok = int((res["status"] == "ok").sum())
    out = {
        "wall_s": round(wall, 2),
        "req_per_s": round(res.height / wall, 1),
        "usd": round(float(res["cost_usd"].sum()), 6),
        "ok": ok,
        "errors": res.height - ok,
        "input_tokens": int(res["input_tokens"].sum()),
        "output_tokens": int(res["output_tokens"].sum()),
    }
    print(
        f"{name:7s} {out['wall_s']:8.1f} s  {out['req_per_s']:9,.0f} req/s  "
        f"${out['usd']:.4f}  ok {ok:,}  errors {out['errors']:,}",
        flush=True,
    )
    return out


def batch_stats(sim: Any) -> dict[str, Any]:
    with urllib.request.urlopen(sim.root_url + "/stats/batches", timeout=30) as resp:
        return json.loads(resp.read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rpm", type=int, default=120_000)
    parser.add_argument("--batch-delay-s", type=float, default=20.0)
    parser.add_argument("--max-requests", type=int, default=50_000)
    args = parser.parse_args()
    items = bodies(args.rows)
    home = tempfile.mkdtemp(prefix="lakeloom-bench-backfill-")
    os.environ["LAKELOOM_HOME"] = home  # journals and limiter state stay out of the project
    print(
        f"{args.rows:,} rows of {MODEL}; online at {args.rpm:,} rpm with {LATENCY} ms latency; "
        f"batch delay {args.batch_delay_s:.0f} s, {args.max_requests:,} requests per batch",
        flush=True,
    )
    sim = start_subprocess(
        rpm=args.rpm,
        tpm=0,
        latency_ms=LATENCY,
        batch_delay_s=args.batch_delay_s,
        batch_max_requests=args.max_requests,
    )
    try:
        print("online:", flush=True)
        engine = engine_for(sim.base_url, args.rpm, f"{home}/online")
        started = time.perf_counter()
        online_run = engine.run_bodies("chat.completions", items)
        online = summary("online", online_run, time.perf_counter() - started)
        limit_s = 60.0 * args.rows / args.rpm
        peak = sim.stats()["peak_requests_1s"]

        print("batch:", flush=True)
        engine = engine_for(sim.base_url, args.rpm, f"{home}/batch")
        runner = BatchRunner(
            engine,
            BatchSettings(
                max_requests=args.max_requests,
                poll_interval_s=1.0,
                poll_max_interval_s=2.0,
                progress_interval_s=10.0,
            ),
        )
        served_before = sim.stats()["served"]
        started = time.perf_counter()
        batch_run = runner.run_bodies("chat.completions", items)
        batch = summary("batch", batch_run, time.perf_counter() - started)
        stats = batch_stats(sim)
        online_during_batch = sim.stats()["served"] - served_before
    finally:
        sim.stop()

    usd_ratio = batch["usd"] / online["usd"] if online["usd"] else None
    time_ratio = batch["wall_s"] / online["wall_s"] if online["wall_s"] else None
    print(
        f"\nbatch / online: cost x{usd_ratio:.3f}, wall time x{time_ratio:.2f} "
        f"(online limit floor {limit_s:.1f} s, peak {peak:,} req in 1 s; batch: "
        f"{stats['batches_created']} batches, {stats['files_uploaded']} uploads, "
        f"{batch['wall_s'] - args.batch_delay_s:.1f} s beyond the simulated delay, "
        f"{online_during_batch} online requests)"
    )
    print(
        json.dumps(
            {
                "rows": args.rows,
                "online_s": online["wall_s"],
                "batch_s": batch["wall_s"],
                "online_usd": online["usd"],
                "batch_usd": batch["usd"],
                "usd_ratio": round(usd_ratio, 4) if usd_ratio else None,
                "time_ratio": round(time_ratio, 3) if time_ratio else None,
                "online_req_per_s": online["req_per_s"],
                "online_limit_floor_s": round(limit_s, 2),
                "online_errors": online["errors"],
                "batch_errors": batch["errors"],
                "batch_delay_s": args.batch_delay_s,
                "batch_overhead_s": round(batch["wall_s"] - args.batch_delay_s, 2),
                "batches": stats["batches_created"],
                "uploads": stats["files_uploaded"],
                "rpm": args.rpm,
            }
        )
    )


if __name__ == "__main__":
    main()
