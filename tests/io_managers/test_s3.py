"""The IO manager, the catalog and references on an S3-compatible store (moto on loopback)."""

import dagster as dg
import polars as pl

from lakeloom.io_managers import DeltaIOManager
from lakeloom.storage.catalog import Catalog
from lakeloom.storage.ref import ref

PARTS = dg.StaticPartitionsDefinition(["a", "b"])


def make_items(tag: str):
    @dg.asset(partitions_def=PARTS, name="items", key_prefix="raw")
    def items(context: dg.AssetExecutionContext) -> pl.DataFrame:
        return pl.DataFrame({"id": [1, 2], "tag": [tag] * 2})

    return items


@dg.asset(partitions_def=PARTS, ins={"items": dg.AssetIn(key=["raw", "items"])})
def labels(items: pl.DataFrame) -> pl.DataFrame:
    return items.select("id", label=pl.col("tag") + "!")


@dg.asset
def label_counts(labels: pl.DataFrame) -> pl.DataFrame:
    return labels.group_by("label").len().sort("label")


def test_partitioned_assets_catalog_and_refs_on_s3(s3_storage):
    io = DeltaIOManager()  # root and options from LAKELOOM_STORAGE_* (the fixture's bucket)
    resources = {"io_manager": io}
    for key in ["a", "b"]:
        dg.materialize([make_items("v1")], partition_key=key, resources=resources)
    dg.materialize([make_items("v2")], partition_key="b", resources=resources)
    result = dg.materialize(
        [make_items("v2"), labels],
        selection=[labels],
        partition_key="b",
        resources=resources,
    )
    dg.materialize(
        [make_items("v2"), labels, label_counts], selection=[label_counts], resources=resources
    )
    meta = result.asset_materializations_for_node("labels")[0].metadata
    assert meta["table_uri"].value == "s3://lake/lakeloom/assets/labels"

    uri = io.table_uri(dg.AssetKey(["raw", "items"]))
    table = pl.read_delta(uri, storage_options=s3_storage.storage_options)
    assert table.sort("partition", "id")["tag"].to_list() == ["v1", "v1", "v2", "v2"]

    con = Catalog(s3_storage, database=":memory:").connect()
    assert [t.name for t in Catalog(s3_storage, database=":memory:").tables()] == [
        "label_counts",
        "labels",
        "raw__items",
    ]
    # an unpartitioned table read through a pyarrow dataset, filtered on a string column
    assert con.sql("SELECT len FROM label_counts WHERE label = 'v2!'").fetchall() == [(2,)]
    rows = con.sql(
        "SELECT i.partition, l.label FROM raw__items i JOIN labels l USING (id, partition) "
        "WHERE i.partition = 'b' AND l.label = 'v2!' AND i.tag = 'v2' ORDER BY id"
    ).fetchall()
    assert rows == [("b", "v2!"), ("b", "v2!")]

    r = ref("labels", "b")
    assert "not-a-real-secret" not in r.to_json()
    assert "AWS_SECRET_ACCESS_KEY" in r.storage_option_names
    assert r.lazy().collect()["label"].to_list() == ["v2!", "v2!"]
    assert r.duckdb().aggregate("count(*)").fetchall() == [(2,)]
    [parent] = r.upstream()
    assert parent.asset_key == ("raw", "items") and parent.partition == "b"
    assert parent.lazy().collect()["tag"].to_list() == ["v2", "v2"]
