"""Issue 17.5: the cost ledger records spend per partition, whatever the run shape."""

import datetime as dt

import dagster as dg
import polars as pl
from pydantic import BaseModel

from lakeloom.assets.factories import generated_asset
from lakeloom.engine.ledger import CostLedger
from tests.fixtures.delta_io import read

DAYS = dg.DailyPartitionsDefinition(start_date="2025-03-01", end_date="2025-03-04")
ROWS = {"2025-03-01": 5, "2025-03-02": 3, "2025-03-03": 4}


class Ticket(BaseModel):
    urgency: str
    product: str


@dg.asset(
    partitions_def=DAYS,
    metadata={"partition_expr": "day"},
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def tickets(context: dg.AssetExecutionContext) -> pl.DataFrame:
    frames = [
        pl.DataFrame(
            {
                "ticket_id": [f"{key}-{i}" for i in range(ROWS[key])],
                "day": [dt.date.fromisoformat(key)] * ROWS[key],
                "body": [f"ticket {i} of {key}: the mug broke" for i in range(ROWS[key])],
            }
        )
        for key in context.partition_keys
    ]
    return pl.concat(frames)


labels = generated_asset(
    "ticket_labels",
    tickets,
    "Ticket: {body}",
    Ticket,
    key="ticket_id",
    model="sim-priced",
    max_tokens=32,
)


def test_a_three_partition_single_run_books_spend_per_partition(
    sim_resource, io_manager, storage, capsys
):
    sim, llm = sim_resource(resource_pool="llm-llm")
    tags = {
        "dagster/asset_partition_range_start": "2025-03-01",
        "dagster/asset_partition_range_end": "2025-03-03",
    }
    result = dg.materialize(
        [tickets, labels], resources={"io_manager": io_manager, "llm": llm}, tags=tags
    )
    assert result.success
    out = read(io_manager, "ticket_labels")
    assert out.height == sum(ROWS.values())
    spent = (
        out.group_by(pl.col("day").cast(pl.String).alias("partition"))
        .agg(pl.col("_cost_usd").sum())
        .sort("partition")
    )
    ledger = CostLedger(storage).read()
    booked = (
        ledger.group_by("partition").agg(pl.col("cost_usd").sum(), pl.col("requests").sum())
    ).sort("partition")
    assert booked["partition"].to_list() == list(ROWS)  # no null, no "a..b (3)" label
    assert booked["requests"].to_list() == list(ROWS.values())
    for want, got in zip(spent["_cost_usd"], booked["cost_usd"], strict=True):
        assert abs(want - got) < 1e-12 and got > 0

    from lakeloom.cli import main

    capsys.readouterr()
    assert main(["cost", "--partition", "2025-03-01", "--json"]) == 0
    text = capsys.readouterr().out
    assert "no spend recorded" not in text and '"cost_usd"' in text

    again = dg.materialize(
        [tickets, labels],
        resources={"io_manager": io_manager, "llm": llm},
        selection=[labels],
        partition_key="2025-03-02",
    )  # one partition: booked to its key, not to null
    assert again.success
    run = CostLedger(storage).read().filter(pl.col("run_id") == again.run_id)
    assert run["partition"].to_list() == ["2025-03-02"]
    assert run["cache_hits"].sum() == ROWS["2025-03-02"]
