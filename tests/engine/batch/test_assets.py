"""Per-asset mode switch: generated/embedding assets materialized through the Batch API."""

import json
import urllib.request
from typing import Literal

import dagster as dg
import polars as pl
import pytest

from lakeloom.assets.factories import embedding_asset, generated_asset
from lakeloom.engine.batch.runner import BatchSettings
from lakeloom.io_managers import DeltaIOManager
from lakeloom.resources.llm import LLMResource
from tests.fixtures.delta_io import read

PARTS = dg.StaticPartitionsDefinition(["x", "y"])
FAST = BatchSettings(poll_interval_s=0.1, poll_max_interval_s=0.3)


@dg.asset(partitions_def=PARTS, metadata={"partition_expr": "part"})
def notes(context: dg.AssetExecutionContext) -> pl.DataFrame:
    part = context.partition_key
    return pl.DataFrame(
        {"id": [f"{part}{i}" for i in range(300)], "part": part,
         "text": [f"note {part} {i}: {'fine' if i % 3 else 'bad'} service" for i in range(300)]}
    )  # fmt: skip


def labels(**kwargs):
    return generated_asset(
        "note_labels", notes, "Note: {text}", Literal["good", "bad"], key="id",
        model="sim-priced", max_tokens=16, resource_key="llm", **kwargs,
    )  # fmt: skip


def batch_stats(sim) -> dict:
    with urllib.request.urlopen(sim.root_url + "/stats/batches", timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture
def env(sim_server, storage):
    sim = sim_server(batch_delay_s=0.3)
    io = DeltaIOManager(root=storage.root, storage_options={})
    resources = {"io_manager": io, "llm": LLMResource(base_url=sim.base_url, max_attempts=3)}
    for part in ("x", "y"):
        assert dg.materialize([notes], partition_key=part, resources=resources).success
    return sim, io, resources


def run(asset, resources, part, **kwargs):
    result = dg.materialize(
        [notes, asset], selection=[asset.key], partition_key=part, resources=resources, **kwargs
    )
    assert result.success
    return result.asset_materializations_for_node(asset.key.path[-1])[0].metadata


def test_batch_mode_asset_every_row_at_batch_prices(env):
    sim, io, resources = env
    md = run(labels(mode="batch", batch=FAST), resources, "x")
    table = read(io, "note_labels")
    assert table.height == 300 and (table["_status"] == "ok").all()
    assert md["mode"].value == "batch" and len(md["batch_ids"].value) == 1
    assert sim.stats()["served"] == 0 and batch_stats(sim)["lines_ok"] == 300
    assert md["cost_usd"].value == pytest.approx(table["_cost_usd"].sum(), rel=1e-6)
    assert md["cost_usd"].value == pytest.approx(
        (table["_input_tokens"].sum() * 0.5 + table["_output_tokens"].sum() * 2.0) / 1e6, rel=1e-4
    )  # sim-priced batch rates: $0.5 in / $2 out per 1M tokens
    assert md["forecast_to_send"].value == 300 and md["forecast_batch_usd"].value > 0


def test_auto_mode_picks_by_rows_to_send_and_tags_override(env):
    sim, io, resources = env
    auto = labels(mode="auto", batch_min_requests=500, batch_max_wait_s=600, batch=FAST)
    md = run(auto, resources, "x")  # 300 to send < 500: online
    assert md["mode"].value == "online" and sim.stats()["served"] == 300
    md = run(auto, resources, "y", tags={"lakeloom/mode": "batch"})  # a backfill asks for batch
    assert md["mode"].value == "batch" and batch_stats(sim)["lines_ok"] == 300
    assert sim.stats()["served"] == 300 and (read(io, "note_labels")["_status"] == "ok").all()
    md = run(auto, resources, "y")  # everything cached now: nothing to send, online
    assert md["mode"].value == "online" and md["cache_hits"].value == 300


def test_embedding_asset_in_batch_mode(env):
    sim, io, resources = env
    vectors = embedding_asset(
        "note_vectors", notes, "text", key="id", model="sim-embed", batch_size=16,
        resource_key="llm", mode="batch", batch=FAST,
    )  # fmt: skip
    md = run(vectors, resources, "x")
    table = read(io, "note_vectors")
    assert (table["_status"] == "ok").all() and md["mode"].value == "batch"
    assert table["embedding"].list.len().unique().to_list() == [384]
    assert sim.stats()["served"] == 0 and batch_stats(sim)["batches_created"] == 1


def test_auto_mode_needs_an_accepted_wait():
    with pytest.raises(ValueError, match="batch_max_wait_s"):
        labels(mode="auto")
    with pytest.raises(ValueError, match="mode must be one of"):
        labels(mode="fast")
