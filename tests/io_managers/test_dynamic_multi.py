"""Dynamic and multi-dimensional partitions."""

import datetime as dt

import dagster as dg
import polars as pl
import pytest

from lakeloom.io_managers import MissingUpstreamError
from tests.fixtures.delta_io import mat_metadata, read

DATASETS = dg.DynamicPartitionsDefinition(name="datasets")
MULTI = dg.MultiPartitionsDefinition(
    {
        "date": dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-04"),
        "region": dg.StaticPartitionsDefinition(["eu", "us"]),
    }
)


@dg.asset(partitions_def=DATASETS)
def uploads(context: dg.AssetExecutionContext) -> pl.DataFrame:
    return pl.DataFrame({"id": [1, 2, 3], "name": [context.partition_key] * 3})


@dg.asset(partitions_def=DATASETS)
def upload_counts(uploads: pl.DataFrame) -> pl.DataFrame:
    return pl.DataFrame({"rows": [uploads.height]})


@dg.asset(
    partitions_def=MULTI,
    metadata={"partition_expr": {"date": "day"}},
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def sales(context: dg.AssetExecutionContext) -> pl.DataFrame:
    key = context.partition_key.keys_by_dimension
    return pl.DataFrame({"amount": [10.0, 20.0], "note": [key["region"]] * 2})


@dg.asset(partitions_def=MULTI, metadata={"partition_expr": {"date": "day"}})
def sales_x2(sales: pl.DataFrame) -> pl.DataFrame:
    return sales.with_columns(amount=pl.col("amount") * 2)


@dg.asset
def all_sales(sales: pl.DataFrame) -> pl.DataFrame:
    return sales.group_by("region").agg(total=pl.col("amount").sum()).sort("region")


def test_dynamic_partitions_overwrite_their_own_key(run, io_manager):
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("datasets", ["alpha", "beta"])
    for key in ["alpha", "beta", "alpha"]:
        run([uploads], partition_key=key, instance=instance)
    table = read(io_manager, "uploads")
    assert table.group_by("partition").len().sort("partition").rows() == [("alpha", 3), ("beta", 3)]
    run([uploads, upload_counts], [upload_counts], partition_key="beta", instance=instance)
    assert read(io_manager, "upload_counts").select("rows", "partition").rows() == [(3, "beta")]


def test_dynamic_missing_partition_error(run):
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("datasets", ["alpha", "gamma"])
    run([uploads], partition_key="alpha", instance=instance)
    with pytest.raises(MissingUpstreamError, match=r"\['gamma'\] of asset uploads"):
        run([uploads, upload_counts], [upload_counts], partition_key="gamma", instance=instance)


def test_multi_partitions_use_one_column_per_dimension(run, io_manager):
    key = dg.MultiPartitionKey({"date": "2024-01-02", "region": "eu"})
    result = run([sales], partition_key=key)
    assert mat_metadata(result, "sales")["partition_predicate"].value == (
        "\"day\" >= '2024-01-02' AND \"day\" < '2024-01-03' AND \"region\" = 'eu'"
    )
    run([sales], partition_key=dg.MultiPartitionKey({"date": "2024-01-02", "region": "us"}))
    run([sales], partition_key=key)
    table = read(io_manager, "sales").sort("region")
    assert table.select("day", "region", "note").rows() == [
        (dt.date(2024, 1, 2), "eu", "eu"),
        (dt.date(2024, 1, 2), "eu", "eu"),
        (dt.date(2024, 1, 2), "us", "us"),
        (dt.date(2024, 1, 2), "us", "us"),
    ]
    run([sales, sales_x2], [sales_x2], partition_key=key)
    assert read(io_manager, "sales_x2")["amount"].to_list() == [20.0, 40.0]
    missing = dg.MultiPartitionKey({"date": "2024-01-03", "region": "eu"})
    with pytest.raises(MissingUpstreamError, match=r"2024-01-03\|eu"):
        run([sales, sales_x2], [sales_x2], partition_key=missing)


def test_unpartitioned_asset_reads_every_multi_partition(run, io_manager):
    for region in ["eu", "us"]:
        for day in ["2024-01-01", "2024-01-02"]:
            key = dg.MultiPartitionKey({"date": day, "region": region})
            run([sales], partition_key=key)
    run([sales, all_sales], [all_sales])
    assert read(io_manager, "all_sales").rows() == [("eu", 60.0), ("us", 60.0)]
