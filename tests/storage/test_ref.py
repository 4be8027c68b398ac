"""Remote dataframe references: resolve, serialize, open lazily, follow lineage."""

import datetime as dt
import json
import subprocess
import sys

import dagster as dg
import duckdb
import polars as pl
import pytest

import lakeloom
from lakeloom.storage.ref import Ref, RefError, ref

PARTS = dg.StaticPartitionsDefinition(["a", "b"])
DAILY = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-05")


def make_up(scale: int = 1):
    @dg.asset(partitions_def=PARTS, name="up")
    def up(context: dg.AssetExecutionContext) -> pl.DataFrame:
        key = context.partition_key
        return pl.DataFrame(
            {"id": [1, 2, 3], "x": [scale * i for i in (1, 2, 3)], "partition": key}
        )

    return up


@dg.asset(partitions_def=PARTS)
def down(up: pl.DataFrame) -> pl.DataFrame:
    return up.with_columns(y=pl.col("x") + 1)


@dg.asset
def total(up: pl.DataFrame) -> pl.DataFrame:
    return up.select(pl.col("x").sum())


@dg.asset(partitions_def=DAILY, metadata={"partition_expr": "day"})
def days() -> pl.DataFrame:
    return pl.DataFrame({"v": [1.0, 2.0]})


@pytest.fixture
def graph(run):
    for key in ["a", "b"]:
        run([make_up()], partition_key=key)
    run([make_up(), down], [down], partition_key="a")
    return run


def test_ref_opens_one_partition_lazily_and_in_duckdb(graph):
    r = lakeloom.ref("down", partition="a")
    assert r.asset_key == ("down",) and r.version == 0
    frame = r.lazy().collect().sort("id")
    assert frame.select("id", "y", "partition").rows() == [(1, 2, "a"), (2, 3, "a"), (3, 4, "a")]
    con = duckdb.connect()
    assert r.duckdb(con).aggregate("sum(y)").fetchall() == [(9,)]
    whole = ref(["up"])
    assert whole.partition is None and whole.lazy().collect().height == 6
    assert whole.duckdb().aggregate("count(*)").fetchall() == [(6,)]


def test_ref_round_trips_through_json_and_opens_in_another_process(graph):
    r = ref("up", "b")
    text = r.to_json()
    assert Ref.from_json(text) == r
    assert json.loads(text)["bounds"] == [
        {"column": "partition", "op": "=", "value": "b", "kind": "str"}
    ]
    code = (
        "import sys, lakeloom; print(lakeloom.Ref.from_json(sys.argv[1]).lazy().collect().height)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, text], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "3"


def test_version_pins_the_rows_seen(graph):
    old = ref("up", "a")
    graph([make_up(scale=10)], partition_key="a")
    new = ref("up", "a")
    assert new.version == old.version + 1
    assert old.lazy().collect()["x"].sum() == 6
    assert new.lazy().collect()["x"].sum() == 60
    assert ref("up", "a", version=old.version) == old


def test_upstream_lists_what_the_partition_was_computed_from(graph):
    up_a = ref("up", "a")
    [parent] = ref("down", "a").upstream()
    assert parent == up_a  # same key, partition, URI, version and bounds
    assert parent.lazy().collect().height == 3
    assert up_a.upstream() == []  # a source


def test_unpartitioned_reader_lineage_is_the_whole_upstream_table(graph):
    graph([make_up(), total], [total])
    [parent] = ref("total").upstream()
    assert parent.asset_key == ("up",) and parent.partition is None and parent.bounds == ()
    assert parent.version == ref("up").version


def test_time_window_partition_ref_filters_by_date_range(run):
    for day in ["2024-01-02", "2024-01-03"]:
        run([days], partition_key=day)
    r = ref("days", "2024-01-03")
    assert [b.kind for b in r.bounds] == ["date", "date"]
    assert r.lazy().collect()["day"].to_list() == [dt.date(2024, 1, 3)] * 2
    assert r.duckdb().aggregate("count(*)").fetchall() == [(2,)]


def test_clear_errors_and_no_secret_values(graph, monkeypatch):
    with pytest.raises(RefError, match="no Delta table"):
        ref("nothing")
    with pytest.raises(RefError, match="no partition 'b' at version 0"):
        ref("down", "b")
    monkeypatch.setenv("LAKELOOM_STORAGE_OPTIONS", json.dumps({"SOME_TOKEN": "s3cr3t-value"}))
    r = ref("up", "a")
    assert r.storage_option_names == ("SOME_TOKEN",) and "s3cr3t" not in r.to_json()
    monkeypatch.setenv("LAKELOOM_STORAGE_OPTIONS", "{}")
    with pytest.raises(RefError, match=r"needs storage options \['SOME_TOKEN'\]"):
        r.lazy()
