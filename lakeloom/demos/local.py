"""``make demo``: start the local models, materialize the demo graph, print SQL over the outputs.

Runs land in the project's Dagster instance (``DAGSTER_HOME``), so ``make ui`` shows them
afterwards. Set ``LAKELOOM_LLM_BASE_URL`` / ``LAKELOOM_EMBED_BASE_URL`` to use servers that are
already running instead of starting the local ones.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator

import dagster as dg

from lakeloom.definitions import defs
from lakeloom.demos import graph as demo
from lakeloom.demos.graph import DEMO_ASSETS, DEMO_QUERY, SOURCES
from lakeloom.local.embed_server import EmbedServerConfig, embed_server
from lakeloom.local.llama_server import LlamaServerConfig, llama_server
from lakeloom.storage.catalog import Catalog
from lakeloom.storage.settings import Storage, data_dir

CV_QUERY = """
SELECT kind, fold, n_test, round(accuracy, 3) AS accuracy, round(f1_macro, 3) AS f1_macro,
       round(roc_auc, 3) AS roc_auc, best_params
FROM sentiment_cv ORDER BY fold NULLS FIRST, kind
""".strip()


@contextlib.contextmanager
def local_models() -> Iterator[None]:
    """Start the local LLM and embeddings servers unless base URLs point elsewhere."""
    with contextlib.ExitStack() as stack:
        logs = data_dir() / "logs"
        if "LAKELOOM_EMBED_BASE_URL" not in os.environ:
            print("starting the local embeddings server (all-MiniLM-L6-v2) ...", flush=True)
            stack.enter_context(embed_server(EmbedServerConfig(), logs / "embed_server.log"))
        if "LAKELOOM_LLM_BASE_URL" not in os.environ:
            print("starting the local llama.cpp server (SmolLM2-135M-Instruct) ...", flush=True)
            stack.enter_context(llama_server(LlamaServerConfig(), logs / "llama_server.log"))
        yield


def _materialize(selection: list, instance: dg.DagsterInstance, *, partitioned: bool) -> None:
    """One run for the selection; partitioned selections cover every source in that one run."""
    tags = (
        {
            "dagster/asset_partition_range_start": SOURCES[0],
            "dagster/asset_partition_range_end": SOURCES[-1],
        }
        if partitioned
        else {}
    )
    names = ", ".join(a.key.to_user_string() for a in selection)
    started = time.monotonic()
    result = dg.materialize(
        DEMO_ASSETS,
        selection=selection,
        resources=defs.resources,
        instance=instance,
        tags=tags,
        run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
        raise_on_error=True,
    )
    print(f"materialized {names} in {time.monotonic() - started:.1f}s (run {result.run_id})")


def _stop_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so the local servers are stopped on the way out."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def main() -> int:
    """Run the whole demo and print the SQL result."""
    _stop_on_sigterm()
    instance = dg.DagsterInstance.get()
    with local_models():
        _materialize(
            [demo.reviews, demo.review_embeddings, demo.review_labels], instance, partitioned=True
        )
        _materialize([demo.sentiment_cv, demo.sentiment_model], instance, partitioned=False)
        _materialize([demo.sentiment_predictions], instance, partitioned=True)
    con = Catalog(Storage.from_env()).connect()
    print("\nNested CV of the sentiment model (unbiased estimate; mean/std over outer folds):\n")
    con.sql(CV_QUERY).show(max_width=250)
    print(f"\n{DEMO_QUERY}\n")
    con.sql(DEMO_QUERY).show(max_width=250)
    print(
        "model_positive is in-sample where the model was trained on the row (_in_training); "
        "its honest score is the nested-CV table above."
    )
    print('Explore: `make ui` (Dagster UI), `.venv/bin/lakeloom sql "SELECT ..."`.')
    return 0


if __name__ == "__main__":
    sys.exit(main())
