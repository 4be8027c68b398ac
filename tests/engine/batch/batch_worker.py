"""A separate process running a Batch API backfill, so a test can ``kill -9`` it mid-batch.

Usage: ``python -m tests.engine.batch.batch_worker BASE_URL --n 2000``
(storage and journal come from LAKELOOM_HOME / LAKELOOM_STORAGE_ROOT; ``LAKELOOM_CRASH_AT=<point>``
makes it SIGKILL itself at that crash point, see ``lakeloom.engine.crash``).
"""

import argparse
import json

from lakeloom.engine.batch.runner import BatchRunner, BatchSettings
from lakeloom.engine.limiter.base import UnlimitedLimiter
from lakeloom.engine.provider import ProviderConfig
from lakeloom.engine.runner import Engine
from tests.fixtures.engine import chat_bodies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("base_url")
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    engine = Engine(
        ProviderConfig(kind="compatible", base_url=args.base_url), limiter=UnlimitedLimiter()
    )
    runner = BatchRunner(engine, BatchSettings(poll_interval_s=0.2, poll_max_interval_s=0.5))
    run = runner.run_bodies("chat.completions", chat_bodies(args.n, model="sim-priced"))
    print(json.dumps(run.stats.as_metadata()))


if __name__ == "__main__":
    main()
