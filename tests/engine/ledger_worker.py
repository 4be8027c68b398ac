"""A separate process that runs the engine to the end and books its spend, or dies trying.

Usage: ``python -m tests.engine.ledger_worker BASE_URL RUN_ID --n 40`` with
``LAKELOOM_CRASH_AT=before_ledger`` to SIGKILL it after the responses are durable in the cache
and before the ledger is written (storage comes from LAKELOOM_HOME / LAKELOOM_STORAGE_ROOT).
"""

import argparse

from lakeloom.engine.limiter.base import UnlimitedLimiter
from lakeloom.engine.provider import ProviderConfig
from lakeloom.engine.runner import Engine
from lakeloom.engine.types import RunContext
from lakeloom.storage.settings import Storage
from tests.fixtures.engine import chat_bodies


def main() -> None:
    """Run ``--n`` priced chat requests under ``RUN_ID``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("base_url")
    parser.add_argument("run_id")
    parser.add_argument("--n", type=int, default=40)
    args = parser.parse_args()
    config = ProviderConfig(kind="compatible", base_url=args.base_url, max_concurrency=4)
    engine = Engine(config, limiter=UnlimitedLimiter(), storage=Storage.from_env())
    context = RunContext(run_id=args.run_id, asset="labels", partition="2025-03-01")
    engine.run_bodies("chat.completions", chat_bodies(args.n, model="sim-priced"), context=context)


if __name__ == "__main__":
    main()
