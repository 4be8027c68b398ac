"""Issue 13.5 through Dagster: ``max_cost_usd`` is one budget per run, shared by its steps."""

import dagster as dg
import polars as pl
from pydantic import BaseModel

from lakeloom.assets.factories import generated_asset
from lakeloom.engine.ledger import CostLedger
from lakeloom.io_managers import DeltaIOManager
from lakeloom.resources.llm import LLMResource
from tests.fixtures.delta_io import read

N = 20


class Topic(BaseModel):
    topic: str


@dg.asset
def notes() -> pl.DataFrame:
    return pl.DataFrame(
        {"note_id": [f"n{i}" for i in range(N)], "text": [f"note {i}: call back" for i in range(N)]}
    )


def _labels(name: str, prompt: str) -> dg.AssetsDefinition:
    return generated_asset(
        name, notes, prompt, Topic, key="note_id", model="sim-priced", max_tokens=16
    )


first = _labels("first_labels", "Note: {text}")
second = _labels("second_labels", "Label this note: {text}")


def _billed(sim) -> float:
    usage = sim.stats()["billed"]["online"]["sim-priced"]
    return (usage["prompt_tokens"] * 1.0 + usage["completion_tokens"] * 4.0) / 1e6


def test_the_second_step_of_a_run_starts_from_what_the_first_spent(
    sim_resource, io_manager, storage, tmp_path, monkeypatch
):
    sim, _ = sim_resource()

    def llm(**budget: float) -> LLMResource:
        return LLMResource(
            kind="compatible", base_url=sim.base_url, pool="llm-llm", max_concurrency=2, **budget
        )

    with monkeypatch.context() as scratch:  # what one step costs, in a scratch lake
        scratch.setenv("LAKELOOM_STORAGE_ROOT", str(tmp_path / "scratch"))
        other = DeltaIOManager(root=str(tmp_path / "scratch"), storage_options={})
        assert dg.materialize([notes, first], resources={"io_manager": other, "llm": llm()}).success
    one_step = _billed(sim)
    sim.reset_stats()
    budget = 1.3 * one_step  # one step fits with room for its requests in flight; two do not
    io = {"io_manager": io_manager, "llm": llm(max_cost_usd=budget)}
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
    assert stopped["first_labels"] == 0 and stopped["second_labels"] > N // 2
