"""A separate process running the engine, so a test can ``kill -9`` it half way.

Usage: ``python -m tests.engine.engine_worker BASE_URL --n 300 --concurrency 4``
(storage and journal come from LAKELOOM_HOME / LAKELOOM_STORAGE_ROOT).
"""

import argparse
import json
import time

from lakeloom.engine.cache import ResponseCache
from lakeloom.engine.client import ProviderConfig
from lakeloom.engine.limiter import UnlimitedLimiter
from lakeloom.engine.runner import Engine
from lakeloom.settings import Storage
from tests.fixtures.engine import chat_bodies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("base_url")
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--flush-interval-s", type=float, default=60.0)
    parser.add_argument("--limiter-url", help="share a limiter (default: none)")
    parser.add_argument("--rpm", type=int)
    parser.add_argument("--tag", default="row")
    parser.add_argument("--start-at", type=float, default=0.0, help="epoch seconds to start")
    args = parser.parse_args()
    storage = Storage.from_env()
    cache = ResponseCache(storage, flush_interval_s=args.flush_interval_s)
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
    time.sleep(max(0.0, args.start_at - time.time()))
    started = time.monotonic()
    run = engine.run_bodies("chat.completions", chat_bodies(args.n, tag=args.tag))
    print(json.dumps({**run.stats.as_metadata(), "wall_s": time.monotonic() - started}))


if __name__ == "__main__":
    main()
