"""Issue 13.5 through Dagster, Batch API mode: the second step starts from what the first spent."""

import dagster as dg
import polars as pl
from pydantic import BaseModel

from lakeloom.assets.factories import generated_asset
from lakeloom.engine.batch.runner import BatchSettings
from lakeloom.engine.ledger import CostLedger
from lakeloom.io_managers import DeltaIOManager
from lakeloom.resources.llm import LLMResource
from tests.fixtures.delta_io import read

N = 40
FAST = BatchSettings(poll_interval_s=0.1, poll_max_interval_s=0.3)


class Topic(BaseModel):
    topic: str


@dg.asset
def notes() -> pl.DataFrame:
    return pl.DataFrame(
        {"note_id": [f"n{i}" for i in range(N)], "text": [f"note {i}: call back" for i in range(N)]}
    )


def _labels(name: str, prompt: str) -> dg.AssetsDefinition:
    return generated_asset(
        name, notes, prompt, Topic, key="note_id", model="sim-priced", max_tokens=16,
        mode="batch", batch=FAST,
    )  # fmt: skip


first = _labels("first_labels", "Note: {text}")
second = _labels("second_labels", "Note! {text}")


def _billed(sim) -> float:
    """What the simulator billed through the Batch API (sim-priced: 0.5/2.0 per 1M tokens)."""
    usage = sim.stats()["billed"]["batch"].get("sim-priced") or {}
    return (usage.get("prompt_tokens", 0) * 0.5 + usage.get("completion_tokens", 0) * 2.0) / 1e6


def test_a_batch_mode_step_starts_from_what_the_run_spent(
    sim_server, io_manager, storage, tmp_path, monkeypatch
):
    sim = sim_server(batch_delay_s=0.2)

    def llm(**budget: float) -> LLMResource:
        return LLMResource(kind="compatible", base_url=sim.base_url, max_attempts=3, **budget)

    with monkeypatch.context() as scratch:  # what one step may cost at worst, in a scratch lake
        scratch.setenv("LAKELOOM_STORAGE_ROOT", str(tmp_path / "scratch"))
        other = DeltaIOManager(root=str(tmp_path / "scratch"), storage_options={})
        done = dg.materialize([notes, first], resources={"io_manager": other, "llm": llm()})
        worst = done.asset_materializations_for_node("first_labels")[0].metadata
        worst_usd = float(worst["forecast_batch_usd"].value)
    one_step = _billed(sim)
    assert 0 < one_step < worst_usd
    sim.reset_stats()
    budget = 1.01 * worst_usd  # every line of one step fits at its worst case; two steps do not
    io = {"io_manager": io_manager, "llm": llm(max_cost_usd=budget)}
    # the second step fails its ok_ratio check (rows refused by the budget): its rows are written
    result = dg.materialize([notes, first, second], resources=io, raise_on_error=False)
    spent = _billed(sim)
    booked = CostLedger(storage).read().filter(pl.col("run_id") == result.run_id)
    assert abs(booked["cost_usd"].sum() - spent) < 1e-9
    assert spent <= budget
    stopped = {
        name: read(io_manager, name)
        .filter(pl.col("_error").str.starts_with("budget exceeded"))
        .height
        for name in ("first_labels", "second_labels")
    }
    assert stopped["first_labels"] == 0 and stopped["second_labels"] > 0
