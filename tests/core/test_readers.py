"""Source files -> typed frames with precise errors, and the partitioned source asset factory."""

import datetime as dt
import json

import dagster as dg
import polars as pl
import pytest
from deltalake import DeltaTable
from pydantic import BaseModel

from lakeloom.assets.sources import discover_partitions, file_source_asset
from lakeloom.core.readers import SourceError, load_files
from tests.fixtures.delta_io import read

SCHEMA = {"id": pl.Int64, "text": pl.String, "score": pl.Float64, "day": pl.Date}


class Review(BaseModel):
    id: int
    text: str
    score: float | None = None
    day: dt.date


def write_csv(path, rows, header="id,text,score,day"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_loads_csv_jsonl_and_parquet_from_a_folder_and_a_glob(tmp_path):
    write_csv(tmp_path / "in" / "a.csv", ["1,good,0.5,2024-01-01", "2,bad,,2024-01-02"])
    (tmp_path / "in" / "b.jsonl").write_text(
        json.dumps({"id": 3, "text": "ok", "score": 1, "day": "2024-01-03"}) + "\n"
    )
    pl.DataFrame(
        {"id": [4], "text": ["pq"], "score": [2.5], "day": [dt.date(2024, 1, 4)], "extra": [1]}
    ).write_parquet(tmp_path / "in" / "c.parquet")
    for source in [tmp_path / "in", str(tmp_path / "in" / "*.*")]:
        for schema in [SCHEMA, Review]:
            df = load_files(source, schema, key="id")
            assert df.schema == pl.Schema(
                {"id": pl.Int64, "text": pl.String, "score": pl.Float64, "day": pl.Date}
            )
            assert df.sort("id").rows() == [
                (1, "good", 0.5, dt.date(2024, 1, 1)),
                (2, "bad", None, dt.date(2024, 1, 2)),
                (3, "ok", 1.0, dt.date(2024, 1, 3)),
                (4, "pq", 2.5, dt.date(2024, 1, 4)),
            ]


def test_wrong_types_name_file_row_line_and_column(tmp_path):
    bad = write_csv(
        tmp_path / "r.csv", ["1,a,0.1,2024-01-01", "2,b,high,2024-01-02", "3,c,1,May 5"]
    )
    with pytest.raises(SourceError) as err:
        load_files(bad, SCHEMA, key="id")
    message = str(err.value)
    assert f"{bad} row 2, line 3 column 'score': 'high' is not Float64" in message
    assert f"{bad} row 3, line 4 column 'day': 'May 5' is not Date" in message


def test_json_errors_name_the_line_and_fractional_ints(tmp_path):
    broken = tmp_path / "x.jsonl"
    broken.write_text('{"id": 1, "text": "a"}\n{"id": 2, "text": \n')
    with pytest.raises(SourceError, match=r"x.jsonl line 2: cannot read as jsonl"):
        load_files(broken, {"id": pl.Int64, "text": pl.String}, key="id")
    fractional = tmp_path / "y.jsonl"
    fractional.write_text('{"id": 1}\n{"id": 2.5}\n')
    with pytest.raises(SourceError, match=r"y.jsonl row 2 column 'id': 2.5 is not Int64"):
        load_files(fractional, {"id": pl.Int64}, key="id")


def test_missing_and_empty_and_duplicate_keys(tmp_path):
    no_key = write_csv(tmp_path / "k.csv", ["a,0.1,2024-01-01"], header="text,score,day")
    with pytest.raises(SourceError, match=r"k.csv: missing key column 'id'"):
        load_files(no_key, SCHEMA, key="id")
    empty = write_csv(tmp_path / "e.csv", ["1,a,0.1,2024-01-01", ",b,0.2,2024-01-01"])
    with pytest.raises(SourceError, match=r"e.csv row 2, line 3 key column 'id' is empty"):
        load_files(empty, SCHEMA, key="id")
    dup_a = write_csv(tmp_path / "d" / "a.csv", ["1,a,0.1,2024-01-01", "2,b,0.2,2024-01-01"])
    dup_b = write_csv(tmp_path / "d" / "b.csv", ["2,c,0.3,2024-01-01", "2,d,0.4,2024-01-02"])
    with pytest.raises(SourceError) as err:
        load_files(tmp_path / "d", SCHEMA, key="id", partition_column="day")
    assert "duplicate keys within a partition" in str(err.value)
    assert f"appears 2 times: {dup_a} row 2, {dup_b} row 1" in str(err.value)
    # the same key in two partitions is fine
    assert load_files(dup_b, SCHEMA, key="id", partition_column="day").height == 2
    with pytest.raises(SourceError, match="no input files match"):
        load_files(tmp_path / "nothing" / "*.csv", SCHEMA, key="id")


def test_templated_source_asset_partitions_and_all_or_nothing(tmp_path, run, io_manager):
    for month, rows in {
        "2024-01": ["1,a,0.1,2024-01-01"],
        "2024-02": ["1,b,0.2,2024-02-01"],
    }.items():
        write_csv(tmp_path / "reviews" / month / "part.csv", rows)
    parts = dg.StaticPartitionsDefinition(["2024-01", "2024-02", "2024-03"])
    reviews = file_source_asset(
        "reviews",
        str(tmp_path / "reviews" / "{partition}" / "*.csv"),
        SCHEMA,
        key="id",
        partitions_def=parts,
        partition_column="month",
        key_prefix="raw",
    )
    result = run([reviews], partition_range=("2024-01", "2024-02"))
    meta = result.asset_materializations_for_node("raw__reviews")[0].metadata
    assert meta["rows_loaded"].value == 2 and meta["source_files"].value == 2
    table = read(io_manager, "raw", "reviews").sort("month")
    assert table.select("id", "text", "month").rows() == [(1, "a", "2024-01"), (1, "b", "2024-02")]
    assert discover_partitions(tmp_path / "reviews" / "{partition}" / "*.csv") == [
        "2024-01",
        "2024-02",
    ]

    write_csv(tmp_path / "reviews" / "2024-02" / "part.csv", ["1,B,0.9,2024-02-01"])
    write_csv(tmp_path / "reviews" / "2024-03" / "part.csv", ["1,c,oops,2024-03-01"])
    uri = io_manager.table_uri(dg.AssetKey(["raw", "reviews"]))
    version = DeltaTable(uri).version()
    with pytest.raises(SourceError, match="'oops' is not Float64"):
        run([reviews], partition_range=("2024-02", "2024-03"))
    assert DeltaTable(uri).version() == version  # nothing written, not even 2024-02
    assert read(io_manager, "raw", "reviews").filter(pl.col("month") == "2024-02")["text"][0] == "b"


def test_source_asset_filters_rows_by_a_date_column(tmp_path, run, io_manager):
    write_csv(
        tmp_path / "all.csv",
        ["1,a,0.1,2024-01-01", "2,b,0.2,2024-01-02", "3,c,0.3,2024-01-02", "1,d,0.4,2024-01-03"],
    )
    daily = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-04")
    events = file_source_asset(
        "events",
        tmp_path / "all.csv",
        Review,
        key="id",
        partitions_def=daily,
        partition_column="day",
    )
    run([events], partition_key="2024-01-02")
    run([events], partition_key="2024-01-03")
    assert read(io_manager, "events").sort("id").select("id", "day").rows() == [
        (1, dt.date(2024, 1, 3)),
        (2, dt.date(2024, 1, 2)),
        (3, dt.date(2024, 1, 2)),
    ]


def test_unpartitioned_source_asset_and_factory_errors(tmp_path, run, io_manager):
    write_csv(tmp_path / "one.csv", ["1,a,0.1,2024-01-01"])
    plain = file_source_asset("plain", tmp_path / "one.csv", SCHEMA, key="id")
    run([plain])
    assert read(io_manager, "plain").height == 1
    with pytest.raises(ValueError, match="must be in the declared schema"):
        file_source_asset(
            "x",
            tmp_path / "one.csv",
            SCHEMA,
            key="id",
            partitions_def=dg.StaticPartitionsDefinition(["a"]),
        )
