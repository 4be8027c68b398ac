"""Time-window partitions: Date columns for daily, Datetime for hourly, ranges and mappings."""

import datetime as dt

import dagster as dg
import polars as pl
import pytest
from deltalake import DeltaTable

from lakeloom.io_managers import MissingUpstreamError
from lakeloom.io_managers.partitions import PartitionColumnError
from tests.fixtures.delta_io import mat_metadata, read

DAILY = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-08")
WEEKLY = dg.WeeklyPartitionsDefinition(start_date="2024-01-07", end_date="2024-01-21")
HOURLY = dg.HourlyPartitionsDefinition(start_date="2024-01-01-00:00", end_date="2024-01-01-06:00")


@dg.asset(
    partitions_def=DAILY,
    metadata={"partition_expr": "day"},
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def events(context: dg.AssetExecutionContext) -> pl.DataFrame:
    window = context.partition_time_window
    days = pl.date_range(window.start.date(), window.end.date(), closed="left", eager=True)
    return pl.DataFrame({"day": days}).join(pl.DataFrame({"n": [1, 2, 3]}), how="cross")


@dg.asset(partitions_def=DAILY)
def plain_daily() -> pl.DataFrame:
    return pl.DataFrame({"n": [1, 2]})


@dg.asset(partitions_def=DAILY, metadata={"partition_expr": "day"})
def daily_total(events: pl.LazyFrame) -> pl.LazyFrame:
    return events.group_by("day").agg(total=pl.col("n").sum())


@dg.asset(
    partitions_def=DAILY,
    ins={"events": dg.AssetIn(partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-1))},
)
def two_day_window(events: pl.DataFrame) -> pl.DataFrame:
    return pl.DataFrame({"days": [events["day"].n_unique()], "rows": [events.height]})


def test_daily_partition_writes_a_date_column_and_range_predicate(run, io_manager):
    result = run([events], partition_key="2024-01-03")
    meta = mat_metadata(result, "events")
    assert meta["partition_predicate"].value == "\"day\" >= '2024-01-03' AND \"day\" < '2024-01-04'"
    table = read(io_manager, "events")
    assert table.schema["day"] == pl.Date and table.height == 3
    uri = io_manager.table_uri(dg.AssetKey("events"))
    assert DeltaTable(uri).metadata().partition_columns == ["day"]


def test_io_manager_fills_the_window_start_as_a_date(run, io_manager):
    run([plain_daily], partition_key="2024-01-05")
    table = read(io_manager, "plain_daily")
    assert table["partition"].to_list() == [dt.date(2024, 1, 5)] * 2


def test_daily_single_run_backfill_matches_separate_runs(run, io_manager, tmp_path):
    from lakeloom.io_managers import DeltaIOManager

    for day in DAILY.get_partition_keys():
        run([events], partition_key=day)
    separate = read(io_manager, "events")
    other = DeltaIOManager(root=str(tmp_path / "single"), storage_options={})
    result = dg.materialize(
        [events],
        tags={
            "dagster/asset_partition_range_start": "2024-01-01",
            "dagster/asset_partition_range_end": "2024-01-07",
        },
        resources={"io_manager": other},
    )
    meta = mat_metadata(result, "events")
    assert meta["partition_predicate"].value == "\"day\" >= '2024-01-01' AND \"day\" < '2024-01-08'"
    single = pl.read_delta(other.table_uri(dg.AssetKey("events")))
    assert single.schema == separate.schema
    assert single.sort("day", "n").equals(separate.sort("day", "n"))


def test_lazy_input_and_output_and_time_mapping(run, io_manager):
    for day in ["2024-01-02", "2024-01-03"]:
        run([events], partition_key=day)
    run([events, daily_total], selection=[daily_total], partition_key="2024-01-03")
    assert read(io_manager, "daily_total").rows() == [(dt.date(2024, 1, 3), 6)]
    run([events, two_day_window], selection=[two_day_window], partition_key="2024-01-03")
    assert read(io_manager, "two_day_window").select("days", "rows").rows() == [(2, 6)]
    with pytest.raises(
        MissingUpstreamError, match=r"\['2024-01-04', '2024-01-05'\] of asset events"
    ):
        run([events, two_day_window], selection=[two_day_window], partition_key="2024-01-05")


def test_weekly_downstream_reads_seven_daily_upstream_partitions(run, io_manager):
    @dg.asset(partitions_def=WEEKLY, metadata={"partition_expr": "week"})
    def weekly(events: pl.DataFrame) -> pl.DataFrame:
        return pl.DataFrame({"rows": [events.height]})

    days = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-21")

    @dg.asset(partitions_def=days, metadata={"partition_expr": "day"}, name="events")
    def events_3w(context: dg.AssetExecutionContext) -> pl.DataFrame:
        return pl.DataFrame({"n": [1, 2]})

    for day in days.get_partition_keys()[6:13]:  # the week starting Sunday 2024-01-07
        run([events_3w], partition_key=day)
    result = run([events_3w, weekly], selection=[weekly], partition_key="2024-01-07")
    assert read(io_manager, "weekly")["rows"].to_list() == [14]
    [up] = mat_metadata(result, "weekly")["upstream"].data
    assert sorted(up["partitions"]) == days.get_partition_keys()[6:13]


def test_hourly_partitions_use_a_utc_datetime_column(run, io_manager):
    @dg.asset(partitions_def=HOURLY)
    def ticks() -> pl.DataFrame:
        return pl.DataFrame({"v": [1.0]})

    for hour in ["2024-01-01-01:00", "2024-01-01-02:00", "2024-01-01-01:00"]:
        run([ticks], partition_key=hour)
    table = read(io_manager, "ticks").sort("partition")
    assert table.schema["partition"] == pl.Datetime("us", "UTC")
    assert [t.hour for t in table["partition"]] == [1, 2]


def test_a_string_column_for_daily_partitions_is_refused(run):
    @dg.asset(partitions_def=DAILY)
    def wrong() -> pl.DataFrame:
        return pl.DataFrame({"partition": ["2024-01-01"]})

    with pytest.raises(PartitionColumnError, match="must be Date or Datetime, not String"):
        run([wrong], partition_key="2024-01-01")
