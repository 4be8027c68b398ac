"""The one Definitions object Dagster loads (``dagster dev -m lakeloom.definitions``).

Resources point at the embedded default (local llama.cpp and MiniLM servers started by
``lakeloom local up``); set ``LAKELOOM_LLM_BASE_URL`` / ``LAKELOOM_EMBED_BASE_URL`` (and the models)
to run the same graph against vLLM, TEI, OpenAI or the simulator.
"""

from __future__ import annotations

import os

import dagster as dg

from lakeloom.demos.graph import DEMO_ASSETS, EMBEDDING_MODEL, LLM_MODEL
from lakeloom.io_managers import DeltaIOManager
from lakeloom.local.embed_server import DEFAULT_EMBED_PORT
from lakeloom.local.llama_server import DEFAULT_LLM_PORT
from lakeloom.resources.duckdb import DuckDBCatalogResource
from lakeloom.resources.llm import LLMResource
from lakeloom.resources.modal import ModalResource
from lakeloom.scale.executors import executor_from_env
from lakeloom.sensors.run_status import run_notification_sensors

_LLM_URL = os.environ.get("LAKELOOM_LLM_BASE_URL", f"http://127.0.0.1:{DEFAULT_LLM_PORT}/v1")
_EMBED_URL = os.environ.get("LAKELOOM_EMBED_BASE_URL", f"http://127.0.0.1:{DEFAULT_EMBED_PORT}/v1")

defs = dg.Definitions(
    assets=DEMO_ASSETS,
    # one JSON summary per finished run to LAKELOOM_WEBHOOK_URL (no-op when unset)
    sensors=run_notification_sensors(),
    # LAKELOOM_EXECUTOR=in_process | multiprocess | celery | k8s (lakeloom.scale.executors)
    executor=executor_from_env(),
    resources={
        "io_manager": DeltaIOManager(),
        "catalog": DuckDBCatalogResource(),
        "llm": LLMResource(
            kind="compatible",
            base_url=_LLM_URL,
            # llama.cpp takes {"type": "json_object", "schema": ...}, not "json_schema".
            structured_output=os.environ.get("LAKELOOM_LLM_STRUCTURED_OUTPUT", "json_object"),
            max_concurrency=4,
            timeout_s=120.0,
            pool="llm-llm",
            price_model=os.environ.get("LAKELOOM_LLM_PRICE_MODEL", LLM_MODEL),
        ),
        "embedder": LLMResource(
            kind="compatible",
            base_url=_EMBED_URL,
            structured_output="none",
            max_concurrency=4,
            pool="llm-embedder",
            price_model=os.environ.get("LAKELOOM_EMBED_PRICE_MODEL", EMBEDDING_MODEL),
        ),
        "modal": ModalResource(),
    },
)
