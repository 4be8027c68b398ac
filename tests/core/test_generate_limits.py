"""A chat row over the model's context window is that row's error (issue 13.8), in the core."""

from typing import Literal

import polars as pl

from lakeloom.core.generate import generate_column


def test_one_over_long_row_is_its_error_and_the_partition_proceeds(sim_resource):
    sim, resource = sim_resource()
    texts = ["good mug", "word " * 17000, "bad tea"]  # sim-chat's window: 16,384 tokens
    df = pl.DataFrame({"ticket_id": ["B7", "B8", "B9"], "text": texts})
    out = generate_column(
        df,
        "Review: {text}",
        Literal["pos", "neg"],
        engine=resource.engine(),
        model="sim-chat",
        keep=["ticket_id"],
    )
    assert out.height == 3
    long = out.filter(pl.col("ticket_id") == "B8").row(0, named=True)
    assert long["_status"] == "error" and long["_cost_usd"] == 0.0
    assert long["_error"].startswith("over context window: ")
    assert "> 16,384" in long["_error"]
    assert out.filter(pl.col("ticket_id") != "B8")["_status"].to_list() == ["ok", "ok"]
    assert sim.stats()["received"] == 2  # the long row was never sent, no repair either
