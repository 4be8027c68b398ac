"""Run in a subprocess by the scale tests: one engine run against the simulator.

Usage: python -m tests.scale.engine_worker BASE_URL --n 60 --rpm 1200 --limiter-url redis://...
Storage (Delta cache, cost ledger) comes from LAKELOOM_STORAGE_*; the journal from LAKELOOM_HOME.
Prints one JSON line: the run's stats, its distinct error messages and every slot the shared
limiter's store reserved (``tests.fixtures.pacing``: what pacing is asserted on). ``--barrier
DIR`` starts several workers together without a clock (``tests.fixtures.together``).
"""

import argparse
import json
from pathlib import Path

from lakeloom.engine.provider import ProviderConfig
from lakeloom.engine.runner import Engine
from tests.fixtures.engine import chat_bodies
from tests.fixtures.pacing import Schedule
from tests.fixtures.together import wait_for_go


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("base_url")
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rpm", type=int)
    parser.add_argument("--limiter-url", required=True)
    parser.add_argument("--key", default="sim:scale")
    parser.add_argument("--tag", default="row")
    parser.add_argument("--barrier", type=Path, default=None, help="start together")
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
    schedule = Schedule(engine.limiter.store)
    if args.barrier is not None:
        wait_for_go(args.barrier)
    run = engine.run_bodies("chat.completions", chat_bodies(args.n, tag=args.tag))
    errors = run.results["error"].drop_nulls().unique().sort().to_list()
    print(json.dumps({**run.stats.as_metadata(), "error_messages": errors,
                      "slots": schedule.as_json(),
                      "failed_exchanges": schedule.failed_exchanges}))  # fmt: skip


if __name__ == "__main__":
    main()
