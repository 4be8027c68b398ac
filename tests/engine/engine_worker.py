"""A separate process running the engine, so a test can kill it at a chosen boundary.

Usage: ``python -m tests.engine.engine_worker BASE_URL --n 300 --concurrency 4`` with
``LAKELOOM_CRASH_AT=<point>[:<n>]`` (see ``lakeloom.engine.crash``) to SIGKILL it right there
(storage and journal come from LAKELOOM_HOME / LAKELOOM_STORAGE_ROOT).
"""

import argparse
import json
import time

from lakeloom.engine.cache.store import ResponseCache
from lakeloom.engine.limiter.base import UnlimitedLimiter
from lakeloom.engine.provider import ProviderConfig
from lakeloom.engine.runner import Engine
from lakeloom.engine.types import RunContext
from lakeloom.storage.settings import Storage
from tests.fixtures.engine import chat_bodies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("base_url")
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--flush-interval-s", type=float, default=60.0)
    parser.add_argument("--flush-every", type=int, default=5000)
    parser.add_argument("--limiter-url", help="share a limiter (default: none)")
    parser.add_argument("--rpm", type=int)
    parser.add_argument("--tag", default="row")
    parser.add_argument("--model", default="sim-chat")
    parser.add_argument("--run-id", help="run id for the cost ledger")
    parser.add_argument("--start-at", type=float, default=0.0, help="epoch seconds to start")
    args = parser.parse_args()
    storage = Storage.from_env()
    cache = ResponseCache(
        storage, flush_interval_s=args.flush_interval_s, flush_every=args.flush_every
    )
    config = ProviderConfig(
        kind="compatible",
        base_url=args.base_url,
        max_concurrency=args.concurrency,
        rpm=args.rpm,
        provider_key="sim:shared",
    )
    limiter = None if args.limiter_url else UnlimitedLimiter()
    engine = Engine(
        config, limiter=limiter, limiter_url=args.limiter_url, storage=storage, cache=cache
    )
    context = RunContext(run_id=args.run_id) if args.run_id else None
    time.sleep(max(0.0, args.start_at - time.time()))
    started = time.monotonic()
    bodies = chat_bodies(args.n, tag=args.tag, model=args.model)
    run = engine.run_bodies("chat.completions", bodies, context=context)
    print(json.dumps({**run.stats.as_metadata(), "wall_s": time.monotonic() - started}))


if __name__ == "__main__":
    main()
