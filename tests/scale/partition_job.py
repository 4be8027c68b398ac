"""A small partitioned LLM backfill for the executor tests: docs -> doc_labels (simulator).

``partition_job()`` is what run processes and Celery workers rebuild (``dg.reconstructable``);
the simulator URL comes from LAKELOOM_TEST_SIM_URL, the executor from LAKELOOM_EXECUTOR, the
storage from LAKELOOM_STORAGE_*, the shared limiter from LAKELOOM_LIMITER_URL.
"""

import os
from typing import Literal

import dagster as dg
import polars as pl
from pydantic import BaseModel

from lakeloom.assets.factories import generated_asset
from lakeloom.io_managers import DeltaIOManager
from lakeloom.resources.llm import LLMResource
from lakeloom.scale.executors import executor_from_env

PARTS = dg.StaticPartitionsDefinition(["p0", "p1", "p2", "p3"])
ROWS = 25


@dg.asset(partitions_def=PARTS, metadata={"partition_expr": "part"})
def docs(context: dg.AssetExecutionContext) -> pl.DataFrame:
    part = context.partition_key
    ids = [f"{part}-{i}" for i in range(ROWS)]
    return pl.DataFrame({"id": ids, "text": [f"document {i}: fine" for i in ids]})


class Label(BaseModel):
    sentiment: Literal["positive", "negative"]


doc_labels = generated_asset(
    "doc_labels", source=docs, prompt="Label: {text}", output=Label, key="id", model="sim-chat",
    max_tokens=16, retry_policy=None,
)  # fmt: skip


def partition_job() -> dg.JobDefinition:
    defs = dg.Definitions(
        assets=[docs, doc_labels],
        jobs=[dg.define_asset_job("label_docs", selection=[docs, doc_labels])],
        resources={
            "io_manager": DeltaIOManager(),
            "llm": LLMResource(
                base_url=os.environ.get("LAKELOOM_TEST_SIM_URL", "http://127.0.0.1:9"),
                max_concurrency=8,
                max_attempts=4,
                timeout_s=10.0,
                pool="llm-llm",
            ),
        },  # fmt: skip
        executor=executor_from_env(),
    )
    return defs.resolve_job_def("label_docs")
