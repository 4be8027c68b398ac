"""Static partitions: overwrite isolation, idempotency, single-run backfill equivalence, errors."""

import dagster as dg
import polars as pl
import pytest
from deltalake import DeltaTable

from lakeloom.io_managers import DeltaIOManager, MissingUpstreamError
from lakeloom.io_managers.partitions import PartitionColumnError
from lakeloom.storage.delta import table_exists
from lakeloom.storage.lineage import CommitLineage
from tests.fixtures.delta_io import mat_metadata, read

KEYS = ["a", "b", "c", "d"]
PARTS = dg.StaticPartitionsDefinition(KEYS)


def rows_for(key: str, salt: int = 0) -> pl.DataFrame:
    n = 3 + KEYS.index(key)
    return pl.DataFrame(
        {
            "id": [f"{key}{i}" for i in range(n)],
            "value": [float(i + salt) for i in range(n)],
            "partition": [key] * n,
        }
    )


def make_source(salt: int = 0):
    @dg.asset(partitions_def=PARTS, backfill_policy=dg.BackfillPolicy.single_run())
    def source(context: dg.AssetExecutionContext) -> pl.DataFrame:
        return pl.concat([rows_for(k, salt) for k in context.partition_keys])

    return source


@dg.asset(partitions_def=PARTS, backfill_policy=dg.BackfillPolicy.single_run())
def doubled(source: pl.DataFrame) -> pl.DataFrame:
    return source.with_columns(value=pl.col("value") * 2)


@dg.asset
def summary(source: pl.DataFrame) -> pl.DataFrame:
    return source.group_by("partition").agg(n=pl.len()).sort("partition")


def test_overwrite_of_one_partition_leaves_the_others_intact(run, io_manager):
    for key in KEYS:
        run([make_source()], partition_key=key)
    run([make_source(salt=100)], partition_key="b")
    table = read(io_manager, "source")
    assert table.filter(pl.col("partition") == "b")["value"].min() == 100.0
    others = table.filter(pl.col("partition") != "b").sort("id")
    assert others.equals(pl.concat([rows_for(k) for k in "acd"]).sort("id"))


def test_rematerializing_a_partition_does_not_duplicate_rows(run, io_manager):
    for _ in range(3):
        run([make_source()], partition_key="c")
    table = read(io_manager, "source")
    assert table.height == rows_for("c").height
    assert table["id"].n_unique() == table.height


def test_single_run_backfill_equals_separate_runs(run, io_manager, storage, tmp_path):
    for key in KEYS:
        run([make_source()], partition_key=key)
        run([make_source(), doubled], selection=[doubled], partition_key=key)
    separate_src, separate_dbl = read(io_manager, "source"), read(io_manager, "doubled")

    other = DeltaIOManager(root=str(tmp_path / "other_root"), storage_options={})
    resources = {"io_manager": other}
    tags = {"dagster/asset_partition_range_start": "a", "dagster/asset_partition_range_end": "d"}
    result = dg.materialize([make_source(), doubled], tags=tags, resources=resources)
    assert result.success
    assert len(result.asset_materializations_for_node("source")) == 4
    single_src = pl.read_delta(other.table_uri(dg.AssetKey("source")))
    single_dbl = pl.read_delta(other.table_uri(dg.AssetKey("doubled")))

    for separate, single in [(separate_src, single_src), (separate_dbl, single_dbl)]:
        assert separate.schema == single.schema
        assert separate.sort("id").equals(single.sort("id"))
    assert DeltaTable(other.table_uri(dg.AssetKey("source"))).version() == 0  # one commit


def test_missing_upstream_partition_names_asset_and_partition(run):
    run([make_source()], partition_key="a")
    with pytest.raises(MissingUpstreamError, match=r"partition\(s\) \['b'\] of asset source"):
        run([make_source(), doubled], selection=[doubled], partition_key="b")


def test_missing_upstream_table_names_the_uri(run, io_manager):
    with pytest.raises(MissingUpstreamError, match="no Delta table exists at .*assets/source"):
        run([make_source(), doubled], selection=[doubled], partition_key="a")


def test_unpartitioned_asset_reads_the_whole_partitioned_upstream(run, io_manager):
    for key in ["a", "c"]:
        run([make_source()], partition_key=key)
    result = run([make_source(), summary], selection=[summary])
    assert read(io_manager, "summary").rows() == [("a", 3), ("c", 5)]
    upstream = mat_metadata(result, "summary")["upstream"].data
    assert upstream == [
        {
            "asset_key": ["source"],
            "uri": io_manager.table_uri(dg.AssetKey("source")),
            "version": 1,
            "partitions": None,
        }
    ]


def test_materialization_metadata_and_commit_lineage(run, io_manager):
    run([make_source()], partition_key="a")
    run([make_source()], partition_key="b")
    result = run([make_source(), doubled], selection=[doubled], partition_key="b")
    meta = mat_metadata(result, "doubled")
    uri = io_manager.table_uri(dg.AssetKey("doubled"))
    assert meta["table_uri"].value == uri
    assert meta["delta_version"].value == 0
    assert meta["dagster/row_count"].value == 4
    assert meta["dagster/partition_row_count"].value == 4
    assert meta["size_bytes"].value > 0
    assert meta["partition_predicate"].value == "\"partition\" = 'b'"
    columns = {c.name: c.type for c in meta["dagster/column_schema"].schema.columns}
    assert columns == {"id": "String", "value": "Float64", "partition": "String"}
    [up] = meta["upstream"].data
    assert up["asset_key"] == ["source"] and up["version"] == 1
    assert up["partitions"]["b"] == [
        {"column": "partition", "op": "=", "value": "b", "kind": "str"}
    ]

    lineage = CommitLineage.from_history_entry(DeltaTable(uri).history(limit=1)[0])
    assert lineage is not None and lineage.asset_key == ("doubled",)
    assert list(lineage.partitions) == ["b"] and lineage.upstream[0].version == 1


def test_rows_outside_the_run_partition_are_refused_before_writing(run, io_manager):
    @dg.asset(partitions_def=PARTS, name="source")
    def bad(context) -> pl.DataFrame:
        return rows_for("a").with_columns(pl.lit("z").alias("partition"))

    with pytest.raises(PartitionColumnError, match=r"3 row\(s\) have partition values outside"):
        run([bad], partition_key="a")
    assert not table_exists(io_manager.table_uri(dg.AssetKey("source")))


def test_the_io_manager_adds_the_partition_column_with_metadata_name(run, io_manager):
    @dg.asset(partitions_def=PARTS, metadata={"partition_expr": "shard"})
    def plain() -> pl.DataFrame:
        return pl.DataFrame({"id": [1, 2]})

    run([plain], partition_key="d")
    run([plain], partition_key="a")
    assert read(io_manager, "plain").sort("shard", "id").rows() == [
        (1, "a"),
        (2, "a"),
        (1, "d"),
        (2, "d"),
    ]


def test_an_empty_partition_dagster_materialized_is_not_missing(run, io_manager):
    instance = dg.DagsterInstance.ephemeral()

    @dg.asset(partitions_def=PARTS, name="source")
    def empty_source() -> pl.DataFrame:
        return rows_for("a").clear()

    run([empty_source], partition_key="a", instance=instance)
    result = run([empty_source, doubled], selection=[doubled], partition_key="a", instance=instance)
    assert result.success and read(io_manager, "doubled").height == 0
    with pytest.raises(MissingUpstreamError, match=r"\['b'\]"):  # never materialized
        run([empty_source, doubled], selection=[doubled], partition_key="b", instance=instance)


def test_column_schema_keeps_declared_descriptions(run):
    declared = dg.TableSchema(
        columns=[dg.TableColumn("id", "int", description="row key"), dg.TableColumn("x", "int")]
    )

    @dg.asset(metadata={"dagster/column_schema": declared})
    def described() -> pl.DataFrame:
        return pl.DataFrame({"id": [1, 2], "x": [3, 4], "extra": ["a", "b"]})

    meta = mat_metadata(run([described]), "described")
    schema = meta["dagster/column_schema"].schema
    columns = {c.name: (c.type, c.description) for c in schema.columns}
    assert columns == {"id": ("Int64", "row key"), "x": ("Int64", None), "extra": ("String", None)}
