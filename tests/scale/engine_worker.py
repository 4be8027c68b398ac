"""Run in a subprocess by the scale tests: one engine run against the simulator.

Usage: python -m tests.scale.engine_worker BASE_URL --n 60 --rpm 1200 --limiter-url redis://...
Storage (Delta cache, cost ledger) comes from LAKELOOM_STORAGE_*; the journal from LAKELOOM_HOME.
Prints one JSON line: the run's stats, its distinct error messages and its wall time.
"""

import argparse
import json
import time

from lakeloom.engine.client import ProviderConfig
from lakeloom.engine.runner import Engine
from tests.fixtures.engine import chat_bodies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("base_url")
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rpm", type=int)
    parser.add_argument("--limiter-url", required=True)
    parser.add_argument("--key", default="sim:scale")
    parser.add_argument("--tag", default="row")
    parser.add_argument("--start-at", type=float, default=0.0, help="epoch seconds to start")
    args = parser.parse_args()
    config = ProviderConfig(
        kind="compatible",
        base_url=args.base_url,
        max_concurrency=args.concurrency,
        rpm=args.rpm,
        provider_key=args.key,
        timeout_s=5.0,
    )
    engine = Engine(config, limiter_url=args.limiter_url, progress_interval_s=60)
    time.sleep(max(0.0, args.start_at - time.time()))
    started = time.monotonic()
    run = engine.run_bodies("chat.completions", chat_bodies(args.n, tag=args.tag))
    errors = run.results["error"].drop_nulls().unique().sort().to_list()
    print(json.dumps({**run.stats.as_metadata(), "error_messages": errors,
                      "wall_s": time.monotonic() - started}))  # fmt: skip


if __name__ == "__main__":
    main()
