"""A separate process running the engine, so a test can ``kill -9`` it half way.

Usage: ``python -m tests.engine.engine_worker BASE_URL --n 300 --concurrency 4``
(storage and journal come from LAKELOOM_HOME / LAKELOOM_STORAGE_ROOT).
"""

import argparse
import json

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
    args = parser.parse_args()
    storage = Storage.from_env()
    cache = ResponseCache(storage, flush_interval_s=args.flush_interval_s)
    config = ProviderConfig(
        kind="compatible", base_url=args.base_url, max_concurrency=args.concurrency
    )
    engine = Engine(config, limiter=UnlimitedLimiter(), storage=storage, cache=cache)
    run = engine.run_bodies("chat.completions", chat_bodies(args.n))
    print(json.dumps(run.stats.as_metadata()))


if __name__ == "__main__":
    main()
