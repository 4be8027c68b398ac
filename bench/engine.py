"""The engine against the provider simulator, side by side with a plain baseline, in one run.

P1  Throughput at a provider's limit. The simulator enforces RPM and TPM (prompt + max_tokens),
    latency lognormal (p50 300 ms, p95 900 ms). Each side gets a fresh simulator, an endless
    supply of requests, 5 s of warm-up, then a measured window (default 20 s) read from the
    simulator's own /stats: requests and counted tokens per second as a fraction of the binding
    limit, and limit 429s per successful response.
      lakeloom: Engine with its shared limiter learning the limits from x-ratelimit headers.
      baseline: asyncio.Semaphore(16) over AsyncOpenAI.chat.completions.create, naive retries
                (sleep Retry-After or 1 s, 6 attempts), the SDK's default client. 16 in flight
                is about limit x latency, i.e. a script tuned by hand. The same loop with 64 in
                flight (lakeloom's concurrency) is shown too: it tends to fall into a retry
                storm, as rejected requests count against the limit.
P2  Requests/s with zero latency and no limits (simulator in another process).
      lakeloom: Engine (cache journal, budget, progress, ledger and all; no limiter: the
                provider has no limits) and, beside it, with the shared SQLite limiter.
      baseline: the same Semaphore(64) loop over AsyncOpenAI; plus a raw aiohttp loop as the
                ceiling of this machine.
P3  Rows/s of a fully cached re-run of 1,000,000 rows, end to end: render the canonical bodies
    from a polars frame, hash them, join the cache (a Delta table of 1 M responses), build the
    results frame in input order.
P3 big  The same re-run of 1 M rows against a cache of 5 M responses (1 M of them hit), in a
    child process: rows/s and the child's peak RSS (VmHWM), so memory shows it follows the
    partition, not the cache. The 5 M cache is written straight to Delta with the cache's schema.

The last line is one JSON object with the figures.

Usage: .venv/bin/python bench/engine.py [--window-s 20] [--p3-rows 1000000]
       [--p3-big-cached 5000000] [--p3-big-rows 1000000] [--only p1,p2,p3,p3big]
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
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import openai
import polars as pl

from lakeloom.engine.cache.store import SCHEMA, ResponseCache
from lakeloom.engine.keys import cache_keys, canonical_bodies, request_keys
from lakeloom.engine.limiter.base import UnlimitedLimiter
from lakeloom.engine.provider import ProviderConfig
from lakeloom.engine.runner import Engine
from lakeloom.sim.launch import start_subprocess
from lakeloom.storage.delta import write_table
from lakeloom.storage.settings import Storage

RPM, TPM = 3000, 120_000  # 50 req/s; 2,000 tokens/s => 60-token requests bind on TPM (~33/s)
MAX_TOKENS = 40
CONCURRENCY = 64
WARMUP_S = 5.0


def bodies(n: int, tag: str) -> list[dict[str, Any]]:
    return [
        {
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "user", "content": f"Label the sentiment of review {tag}-{i}: fine film."}
            ],
            "max_tokens": MAX_TOKENS,
        }
        for i in range(n)
    ]


# -- the baseline ---------------------------------------------------------------------------


async def baseline(
    base_url: str, items: list[dict[str, Any]], counter: list[int], concurrency: int = CONCURRENCY
) -> None:
    """Semaphore loop over AsyncOpenAI with naive retries (what most scripts do)."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key="sim", max_retries=0)
    sem = asyncio.Semaphore(concurrency)

    async def one(body: dict[str, Any]) -> None:
        async with sem:
            for _ in range(6):
                try:
                    await client.chat.completions.create(**body)
                    counter[0] += 1
                    return
                except openai.RateLimitError as exc:
                    retry = exc.response.headers.get("retry-after")
                    await asyncio.sleep(float(retry) if retry else 1.0)
                except openai.APIError:
                    await asyncio.sleep(1.0)

    try:
        await asyncio.gather(*(one(b) for b in items))
    finally:
        await client.close()


async def raw_aiohttp(base_url: str, n: int) -> None:
    """The ceiling: bare aiohttp posts, no SDK, no bookkeeping."""
    payload = [json.dumps(b).encode() for b in bodies(n, "raw")]
    url = base_url + "/chat/completions"
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sim"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as session:
        sem = asyncio.Semaphore(CONCURRENCY)

        async def one(data: bytes) -> None:
            async with sem, session.post(url, data=data, headers=headers) as response:
                await response.read()

        await asyncio.gather(*(one(p) for p in payload))


# -- helpers --------------------------------------------------------------------------------


class Background:
    """Run a coroutine on its own loop in a thread; cancel it when the window is over."""

    def __init__(self, make: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        self.loop = asyncio.new_event_loop()
        self.task: asyncio.Task[Any] | None = None
        self.thread = threading.Thread(target=self._run, args=(make,), daemon=True)
        self.thread.start()

    def _run(self, make: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        asyncio.set_event_loop(self.loop)
        self.task = self.loop.create_task(make())
        with contextlib.suppress(BaseException):  # cancelled at the end of the window
            self.loop.run_until_complete(self.task)

    def stop(self) -> None:
        while self.task is None:
            time.sleep(0.01)
        self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(30)


def measure_window(sim: Any, warmup_s: float, window_s: float) -> dict[str, float]:
    time.sleep(warmup_s)
    a = sim.stats()
    t0 = time.monotonic()
    time.sleep(window_s)
    b = sim.stats()
    dt = time.monotonic() - t0
    served = b["served"] - a["served"]
    tokens = b["counted_tokens"] - a["counted_tokens"]
    rejected = b["rejected_429_limit"] - a["rejected_429_limit"]
    use = max(served / dt / (RPM / 60), tokens / dt / (TPM / 60))
    return {
        "req_s": served / dt,
        "tokens_s": tokens / dt,
        "limit_use": use,
        "429_per_ok": rejected / max(served, 1),
        "served": served,
        "rejected_429": rejected,
    }


def p1(window_s: float, baseline_concurrency: int) -> dict[str, dict[str, float]]:
    out = {}
    latency = "lognormal:300:900"
    with start_subprocess(rpm=RPM, tpm=TPM, latency_ms=latency, seed=1) as sim:
        config = ProviderConfig(
            kind="compatible",
            base_url=sim.base_url,
            max_concurrency=CONCURRENCY,
            provider_key=f"bench-p1-{os.getpid()}",
        )
        engine = Engine(config)
        n = int(60 * (window_s + 10))
        job = Background(lambda: engine.arun_bodies("chat.completions", bodies(n, "p1")))
        out["lakeloom"] = measure_window(sim, WARMUP_S, window_s)
        job.stop()
    n = int(60 * (window_s + 10))
    for name, concurrency in (("baseline", baseline_concurrency), ("baseline_c64", CONCURRENCY)):
        with start_subprocess(rpm=RPM, tpm=TPM, latency_ms=latency, seed=1) as sim:
            job = Background(
                lambda url=sim.base_url, c=concurrency: baseline(url, bodies(n, "b"), [0], c)
            )
            out[name] = measure_window(sim, WARMUP_S, window_s)
            job.stop()
    return out


def timed(fn: Callable[[], Any], n: int) -> float:
    t = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t)


def p2(n_engine: int, n_sdk: int, repeats: int) -> dict[str, float]:
    """Interleaved repeats, best of each side (the machine is shared with other work)."""
    best: dict[str, float] = {}
    with start_subprocess() as sim:
        url = sim.base_url
        config = ProviderConfig(kind="compatible", base_url=url, max_concurrency=CONCURRENCY)
        fast = Engine(config, limiter=UnlimitedLimiter())
        shared = Engine(config.model_copy(update={"provider_key": f"bench-p2-{os.getpid()}"}))
        for r in range(repeats):
            runs = {
                "raw_aiohttp": (lambda: asyncio.run(raw_aiohttp(url, n_engine)), n_engine),
                "sdk_baseline": (
                    lambda r=r: asyncio.run(baseline(url, bodies(n_sdk, f"b{r}"), [0])),
                    n_sdk,
                ),
                "lakeloom": (
                    lambda r=r: fast.run_bodies("chat.completions", bodies(n_engine, f"e{r}")),
                    n_engine,
                ),
                "lakeloom_shared_limiter": (
                    lambda r=r: shared.run_bodies("chat.completions", bodies(n_engine, f"s{r}")),
                    n_engine,
                ),
            }
            for name, (fn, n) in runs.items():
                best[name] = max(best.get(name, 0.0), timed(fn, n))
        assert sim.stats()["served"] == repeats * (3 * n_engine + n_sdk)
    return best


P3_PROVIDER = ProviderConfig(kind="compatible", base_url="http://127.0.0.1:9/v1")  # never called
P3_TEMPLATE = {
    "model": "gpt-4o-mini",
    "max_tokens": MAX_TOKENS,
    "messages": [{"role": "user", "content": pl.format("Label: {}", pl.col("text"))}],
}


def p3_frame(rows: int, tag: str = "review") -> pl.DataFrame:
    return pl.DataFrame({"i": pl.int_range(0, rows, eager=True)}).select(
        pl.format("{} {}: the film was fine, the ending weak", pl.lit(tag), pl.col("i")).alias(
            "text"
        )
    )


def p3_entries(df: pl.DataFrame) -> pl.DataFrame:
    """Cache rows (the cache's schema) answering every row of ``df`` under the P3 provider."""
    keys = request_keys("chat.completions", canonical_bodies(df, P3_TEMPLATE))
    answer = pl.format(
        '{{"id":"c{}","object":"chat.completion","model":"gpt-4o-mini","choices":[{{"index":0,'
        '"message":{{"role":"assistant","content":"label {}"}},"finish_reason":"stop"}}],'
        '"usage":{{"prompt_tokens":18,"completion_tokens":3,"total_tokens":21}}}}',
        pl.col("i"),
        pl.col("i"),
    )
    return (
        pl.DataFrame({"request_hash": cache_keys(keys, P3_PROVIDER.cache_namespace)})
        .with_row_index("i")
        .with_columns(
            model=pl.lit("gpt-4o-mini"),
            endpoint=pl.lit("chat.completions"),
            response=answer,
            input_tokens=pl.lit(18, dtype=pl.Int64),
            output_tokens=pl.lit(3, dtype=pl.Int64),
            created_at=pl.lit(0).cast(pl.Datetime("us", "UTC")),
        )
        .select(list(SCHEMA))
    )


def p3(rows: int) -> dict[str, float]:
    storage = Storage.from_env()
    df = p3_frame(rows)
    template = P3_TEMPLATE
    t = time.perf_counter()
    added = ResponseCache(storage).put(p3_entries(df))
    seed_s = time.perf_counter() - t
    engine = Engine(P3_PROVIDER, limiter=UnlimitedLimiter(), storage=storage)
    rates = []
    for _ in range(2):
        t = time.perf_counter()
        run = engine.run_bodies("chat.completions", canonical_bodies(df, template))
        rates.append(rows / (time.perf_counter() - t))
        assert run.stats.cache_hits == rows and run.results.height == rows
    return {"rows_s": max(rates), "first_rows_s": rates[0], "seeded": added, "seed_s": seed_s}


def p3_big(cached: int, rows: int) -> dict[str, float]:
    """Write a cache of ``cached`` responses (``rows`` of them answer the re-run) straight to
    Delta in 1 M-row appends, then time the re-run in a child process that reports its VmHWM."""
    home = Path(os.environ["LAKELOOM_HOME"]) / "p3big"
    storage = Storage(root=str(home / "delta"))
    uri = storage.table_uri("_lakeloom", "cache")
    t = time.perf_counter()
    chunks = [p3_frame(rows)]
    chunks += [
        p3_frame(min(1_000_000, cached - rows - start), tag=f"other-{start}")
        for start in range(0, max(0, cached - rows), 1_000_000)
    ]
    for df in chunks:
        write_table(p3_entries(df).sort("request_hash"), uri, partition_by=["model"])
        del df
    build_s = time.perf_counter() - t
    del chunks
    env = {**os.environ, "LAKELOOM_HOME": str(home), "LAKELOOM_STORAGE_ROOT": str(home / "delta")}
    child = subprocess.run(
        [sys.executable, __file__, "--p3-big-child", str(rows)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if child.returncode != 0:
        raise RuntimeError(f"P3 big child failed: {child.stderr[-3000:]}")
    out = json.loads(child.stdout.strip().splitlines()[-1])
    return {**out, "build_s": build_s, "cached": cached}


def _peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def p3_big_child(rows: int) -> None:
    """The re-run side of P3 big: two fully cached passes, then one JSON line."""
    engine = Engine(P3_PROVIDER, limiter=UnlimitedLimiter(), storage=Storage.from_env())
    df = p3_frame(rows)
    rates = []
    for _ in range(2):
        t = time.perf_counter()
        run = engine.run_bodies("chat.completions", canonical_bodies(df, P3_TEMPLATE))
        rates.append(rows / (time.perf_counter() - t))
        assert run.stats.cache_hits == rows and run.results.height == rows
        del run
    scans = engine.cache.scan_stats if engine.cache is not None else None
    figures = {
        "rows_s": max(rates),
        "first_rows_s": rates[0],
        "peak_rss_mb": _peak_rss_mb(),
        "rows_read_per_lookup": scans.rows_read / max(scans.lookups, 1) if scans else None,
        "files_read_per_lookup": scans.files_read / max(scans.lookups, 1) if scans else None,
    }
    print(json.dumps(figures), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--window-s", type=float, default=20.0)
    parser.add_argument(
        "--p1-baseline-concurrency",
        type=int,
        default=16,
        help="semaphore size of the P1 baseline (16 ~ limit x latency: a tuned script)",
    )
    parser.add_argument("--p2-requests", type=int, default=10_000)
    parser.add_argument("--p2-sdk-requests", type=int, default=1_000)
    parser.add_argument("--p2-repeats", type=int, default=2)
    parser.add_argument("--p3-rows", type=int, default=1_000_000)
    parser.add_argument("--p3-big-cached", type=int, default=5_000_000)
    parser.add_argument("--p3-big-rows", type=int, default=1_000_000)
    parser.add_argument(
        "--only", default="p1,p2,p3,p3big", help="comma-separated subset (the JSON has their keys)"
    )
    parser.add_argument("--p3-big-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.p3_big_child:
        p3_big_child(args.p3_big_child)
        return
    only = set(args.only.split(","))
    home = tempfile.mkdtemp(prefix="lakeloom-bench-")
    os.environ["LAKELOOM_HOME"] = home
    os.environ["LAKELOOM_STORAGE_ROOT"] = str(Path(home) / "delta")
    started = time.perf_counter()
    figures: dict[str, float] = {}
    if "p1" in only:
        figures.update(run_p1(args))
    if "p2" in only:
        figures.update(run_p2(args))
    if "p3" in only:
        three = p3(args.p3_rows)
        print(
            f"P3: fully cached re-run of {args.p3_rows:,} rows: {three['rows_s']:,.0f} rows/s "
            f"(first pass {three['first_rows_s']:,.0f}; cache seeded in {three['seed_s']:.1f} s)",
            flush=True,
        )
        figures["p3_rows_s"] = round(three["rows_s"], 0)
    if "p3big" in only:
        big = p3_big(args.p3_big_cached, args.p3_big_rows)
        print(
            f"P3 big: fully cached re-run of {args.p3_big_rows:,} rows against a cache of "
            f"{big['cached']:,}: {big['rows_s']:,.0f} rows/s (first pass "
            f"{big['first_rows_s']:,.0f}), peak RSS {big['peak_rss_mb']:,.0f} MB; "
            f"{big['rows_read_per_lookup']:,.0f} rows and {big['files_read_per_lookup']:.0f} "
            f"files read per lookup; cache written in {big['build_s']:.1f} s",
            flush=True,
        )
        figures["p3_big_rows_s"] = round(big["rows_s"], 0)
        figures["p3_big_peak_rss_mb"] = round(big["peak_rss_mb"], 0)
    print(f"total {time.perf_counter() - started:.0f} s", flush=True)
    sys.stdout.write(json.dumps(figures) + "\n")


def run_p1(args: argparse.Namespace) -> dict[str, float]:
    print(
        f"P1: limits {RPM} rpm / {TPM:,} tpm, {MAX_TOKENS} max_tokens, "
        f"{args.window_s:.0f} s window after {WARMUP_S:.0f} s warm-up",
        flush=True,
    )
    one = p1(args.window_s, args.p1_baseline_concurrency)
    for side in ("lakeloom", "baseline", "baseline_c64"):
        f = one[side]
        print(
            f"  {side:12s} {f['req_s']:6.1f} req/s {f['tokens_s']:7.0f} tok/s  "
            f"limit use {f['limit_use']:6.1%}  429s/ok {f['429_per_ok']:.4f} "
            f"({f['rejected_429']} of {f['served']})",
            flush=True,
        )
    return {
        "p1_limit_use": round(one["lakeloom"]["limit_use"], 4),
        "p1_429_per_ok": round(one["lakeloom"]["429_per_ok"], 5),
        "p1_vs_baseline": round(one["lakeloom"]["req_s"] / max(one["baseline"]["req_s"], 1e-9), 3),
        "p1_baseline_limit_use": round(one["baseline"]["limit_use"], 4),
        "p1_baseline_429_per_ok": round(one["baseline"]["429_per_ok"], 5),
        "p1_baseline_c64_limit_use": round(one["baseline_c64"]["limit_use"], 4),
        "p1_baseline_c64_429_per_ok": round(one["baseline_c64"]["429_per_ok"], 5),
    }


def run_p2(args: argparse.Namespace) -> dict[str, float]:
    two = p2(args.p2_requests, args.p2_sdk_requests, args.p2_repeats)
    print(
        f"P2: zero latency, no limits (req/s, best of {args.p2_repeats} interleaved runs)",
        flush=True,
    )
    for name, value in two.items():
        print(f"  {name:24s} {value:8.0f}", flush=True)
    return {
        "p2_req_s": round(two["lakeloom"], 1),
        "p2_vs_raw": round(two["lakeloom"] / two["sdk_baseline"], 3),
        "p2_baseline_req_s": round(two["sdk_baseline"], 1),
        "p2_shared_limiter_req_s": round(two["lakeloom_shared_limiter"], 1),
        "p2_aiohttp_ceiling_req_s": round(two["raw_aiohttp"], 1),
    }


if __name__ == "__main__":
    main()
