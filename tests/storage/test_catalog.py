"""DuckDB catalog: views over every asset table, latest versions, pins, pruning, resource, CLI."""

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest
from deltalake import DeltaTable

from lakeloom.cli import main
from lakeloom.resources.duckdb import DuckDBCatalogResource
from lakeloom.storage.catalog import Catalog
from lakeloom.storage.delta import write_table


@pytest.fixture
def lake(storage):
    """Two asset tables: raw/reviews (partitioned by a string) and labels (by a date)."""
    reviews = pl.DataFrame(
        {"id": [1, 2, 3, 4], "text": ["good", "bad", "meh", "fine"], "partition": list("aabb")}
    )
    labels = pl.DataFrame(
        {"id": [1, 2, 3], "label": ["pos", "neg", "neu"], "day": [dt.date(2024, 1, 1)] * 3}
    )
    write_table(
        reviews,
        storage.table_uri("assets", "raw", "reviews"),
        mode="overwrite",
        partition_by=["partition"],
    )
    write_table(
        labels, storage.table_uri("assets", "labels"), mode="overwrite", partition_by=["day"]
    )
    return storage


def test_views_are_named_after_asset_keys_and_join(lake, tmp_path):
    catalog = Catalog(lake, database=tmp_path / "c.duckdb")
    assert [(t.name, t.asset_key) for t in catalog.tables()] == [
        ("labels", ("labels",)),
        ("raw__reviews", ("raw", "reviews")),
    ]
    con = catalog.connect()
    rows = con.sql(
        "SELECT id, text, label, day FROM raw__reviews JOIN labels USING (id) ORDER BY id"
    ).fetchall()
    assert rows == [
        (1, "good", "pos", dt.date(2024, 1, 1)),
        (2, "bad", "neg", dt.date(2024, 1, 1)),
        (3, "meh", "neu", dt.date(2024, 1, 1)),
    ]
    assert con.sql("SELECT current_setting('autoinstall_known_extensions')").fetchall() == [
        (False,)
    ]
    columns = [c[0] for c in con.sql("DESCRIBE raw__reviews").fetchall()]
    assert columns == ["id", "text", "partition"]  # the Delta schema's order, partitions typed


def test_views_follow_the_latest_version_and_as_of_pins(lake, tmp_path):
    uri = lake.table_uri("assets", "raw", "reviews")
    catalog = Catalog(lake, database=tmp_path / "c.duckdb")
    catalog.connect().close()
    write_table(
        pl.DataFrame({"id": [9], "text": ["new"], "partition": ["b"]}),
        uri,
        mode="overwrite",
        predicate="\"partition\" = 'b'",
    )
    latest = catalog.connect()
    assert latest.sql("SELECT id FROM raw__reviews ORDER BY id").fetchall() == [(1,), (2,), (9,)]
    latest.close()
    pinned = catalog.connect(as_of={"raw/reviews": 0})
    assert pinned.sql("SELECT count(*) FROM raw__reviews").fetchall() == [(4,)]
    with pytest.raises(ValueError, match="unknown tables \\['nope'\\]"):
        catalog.connect(as_of={"nope": 1})


def test_the_persisted_file_opens_in_plain_duckdb(lake, tmp_path):
    database = tmp_path / "c.duckdb"
    Catalog(lake, database=database).connect().close()
    con = duckdb.connect(str(database), read_only=True)
    assert con.sql("SELECT count(*) FROM raw__reviews").fetchall() == [(4,)]


def test_partition_filters_prune_files(lake):
    uri = lake.table_uri("assets", "raw", "reviews")
    con = Catalog(lake, database=":memory:").connect()
    files = DeltaTable(uri).file_uris()
    kept = "a" if "partition=a" in files[0] else "b"  # the first file also gives the schema
    for path in files:
        if f"partition={kept}" not in path:
            Path(path).write_bytes(b"not parquet")  # opening it would fail the query
    query = f"SELECT count(*) FROM raw__reviews WHERE partition = '{kept}'"
    assert con.sql(query).fetchall() == [(2,)]
    with pytest.raises(duckdb.Error, match="parquet|magic"):
        con.sql("SELECT count(*) FROM raw__reviews").fetchall()


def test_schema_evolution_and_empty_and_vanished_tables(lake, tmp_path):
    uri = lake.table_uri("assets", "labels")
    evolved = pl.DataFrame(
        {"id": [7], "label": ["pos"], "day": [dt.date(2024, 1, 2)], "score": [0.5]}
    )
    write_table(evolved, uri, mode="overwrite", predicate="day = '2024-01-02'", schema_mode="merge")
    write_table(
        pl.DataFrame({"id": [1]}).clear(), lake.table_uri("assets", "empty"), mode="overwrite"
    )
    database = tmp_path / "c.duckdb"
    con = Catalog(lake, database=database).connect()
    assert con.sql("SELECT id, score FROM labels ORDER BY id").fetchall() == [
        (1, None),
        (2, None),
        (3, None),
        (7, 0.5),
    ]
    assert con.sql("SELECT count(*) FROM empty").fetchall() == [(0,)]
    con.close()
    import shutil

    shutil.rmtree(lake.table_uri("assets", "raw", "reviews"))
    con = Catalog(lake, database=database).connect()
    names = {
        r[0] for r in con.sql("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
    }
    assert "raw__reviews" not in names and {"labels", "empty"} <= names


def test_resource_gives_connections_with_views(lake, tmp_path):
    @dg.asset
    def report(catalog: DuckDBCatalogResource) -> dg.MaterializeResult:
        with catalog.get_connection() as con:
            n = con.sql("SELECT count(*) FROM raw__reviews JOIN labels USING (id)").fetchall()[0][0]
        return dg.MaterializeResult(metadata={"joined": n})

    resource = DuckDBCatalogResource(database=str(tmp_path / "r.duckdb"), root=lake.root)
    result = dg.materialize([report], resources={"catalog": resource})
    assert result.asset_materializations_for_node("report")[0].metadata["joined"].value == 3
    with resource.get_connection(as_of={"labels": 0}) as con:
        assert con.sql("SELECT count(*) FROM labels").fetchall() == [(3,)]


def test_cli_query_formats_and_errors(lake, capsys, monkeypatch):
    assert (
        main(
            [
                "sql",
                "--database",
                ":memory:",
                "--format",
                "json",
                "SELECT id, label FROM labels ORDER BY id LIMIT 2",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out) == [
        {"id": 1, "label": "pos"},
        {"id": 2, "label": "neg"},
    ]
    assert (
        main(
            [
                "sql",
                "--database",
                ":memory:",
                "--format",
                "csv",
                "--as-of",
                "raw__reviews=0",
                "SELECT count(*) AS n FROM raw__reviews",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out == "n\n4\n"
    assert main(["sql", "--database", ":memory:", "SELECT * FROM missing_table"]) == 1
    assert "missing_table" in capsys.readouterr().err
    assert main(["sql", "--database", ":memory:", "--as-of", "labels", "SELECT 1"]) == 2
    assert "ASSET=VERSION" in capsys.readouterr().err


def test_cli_reads_sql_from_stdin_in_a_real_process(lake):
    proc = subprocess.run(
        [sys.executable, "-m", "lakeloom.cli", "sql"],
        input="SELECT label, count(*) AS n FROM labels GROUP BY label ORDER BY label;",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "neg" in proc.stdout and "(3 rows)" in proc.stdout


def test_cli_interactive_shell(lake, monkeypatch, capsys):
    from lakeloom.storage import cli as catalog_cli

    lines = iter(["SELECT count(*) AS n", "FROM raw__reviews;", ".tables", ".quit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    con = Catalog(lake, database=":memory:").connect()
    assert catalog_cli.shell(con, "csv", 10) == 0
    out = capsys.readouterr().out
    assert "n\n4\n" in out and "raw__reviews" in out


def test_object_store_fallback_filters_string_view_files(storage):
    """The object-store path (a polars scan): string filters work on string_view files."""
    from lakeloom.storage.catalog import register_frame

    uri = storage.table_uri("assets", "flat")
    write_table(pl.DataFrame({"id": [1, 2], "label": ["x", "y"]}), uri, mode="overwrite")
    write_table(pl.DataFrame({"id": [3], "label": ["x"]}), uri, mode="append")
    delta = DeltaTable(uri)
    plain = duckdb.connect()
    plain.register("flat", delta.to_pyarrow_dataset())
    with pytest.raises(duckdb.Error, match="string_view"):  # why the pyarrow dataset is not used
        plain.sql("SELECT id FROM flat WHERE label = 'x'").fetchall()
    plain.close()
    con = duckdb.connect()
    register_frame(con, "flat", uri, version=0)
    assert con.sql("SELECT id FROM flat WHERE label = 'x'").fetchall() == [(1,)]
    con.close()


@pytest.fixture
def nested_lake(storage):
    """Tables shaped like the demo's outputs: a generated struct, an embedding, nested lists."""
    labels = pl.DataFrame(
        {
            "id": [1, 2, 3],
            "llm": [
                {"sentiment": "positive", "topic": "film"},
                {"sentiment": "negative", "topic": "product"},
                None,  # a failed row keeps its key and has no value
            ],
            "_status": ["ok", "ok", "error"],
        }
    )
    vectors = pl.DataFrame(
        {"id": [1, 2, 3], "embedding": [[0.5, -1.0], [0.25, 2.0], None]},
        schema={"id": pl.Int64, "embedding": pl.List(pl.Float32)},
    )
    tickets = pl.DataFrame(
        {
            "id": [1, 2],
            "output": [
                {"triage": {"urgency": "high", "tags": ["billing", 'say "hi"']}, "score": 0.5},
                {"triage": {"urgency": "low", "tags": []}, "score": None},
            ],
            "steps": [[{"n": 1, "ok": True}], [{"n": 2, "ok": False}, {"n": 3, "ok": True}]],
        }
    )
    for name, frame in {"labels": labels, "vectors": vectors, "tickets": tickets}.items():
        write_table(frame, storage.table_uri("assets", name), mode="overwrite")
    return storage


NESTED_QUERIES = {
    "labels": "SELECT * FROM labels ORDER BY id",
    "vectors": "SELECT * FROM vectors ORDER BY id",
    "tickets": "SELECT * FROM tickets ORDER BY id",
    "joined": "SELECT l.id, l.llm, v.embedding FROM labels l JOIN vectors v USING (id) ORDER BY 1",
}


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
@pytest.mark.parametrize("table", sorted(NESTED_QUERIES))
def test_sql_every_format_on_struct_embedding_and_nested_tables(nested_lake, capsys, fmt, table):
    """Issue 17.8: --format csv crashed with 'CSV format does not support nested data'."""
    code = main(["sql", "--database", ":memory:", "--format", fmt, NESTED_QUERIES[table]])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.strip() and "does not support nested" not in captured.err


def test_sql_csv_flattens_structs_to_dotted_columns_and_lists_to_json(nested_lake, capsys):
    import csv
    import io

    def csv_rows(sql: str) -> list[dict[str, str]]:
        assert main(["sql", "--database", ":memory:", "--format", "csv", sql]) == 0
        return list(csv.DictReader(io.StringIO(capsys.readouterr().out)))

    labels = csv_rows(NESTED_QUERIES["labels"])
    assert list(labels[0]) == ["id", "llm.sentiment", "llm.topic", "_status"]
    assert labels[0]["llm.topic"] == "film" and labels[2]["llm.topic"] == ""
    vectors = csv_rows(NESTED_QUERIES["vectors"])
    assert [json.loads(r["embedding"]) if r["embedding"] else None for r in vectors] == [
        [0.5, -1.0],
        [0.25, 2.0],
        None,
    ]
    tickets = csv_rows(NESTED_QUERIES["tickets"])
    assert list(tickets[0]) == [
        "id",
        "output.triage.urgency",
        "output.triage.tags",
        "output.score",
        "steps",
    ]
    assert json.loads(tickets[0]["output.triage.tags"]) == ["billing", 'say "hi"']
    assert json.loads(tickets[1]["output.triage.tags"]) == []
    assert json.loads(tickets[1]["steps"]) == [{"n": 2, "ok": False}, {"n": 3, "ok": True}]
    # json keeps the nesting as it is
    sql = NESTED_QUERIES["tickets"]
    assert main(["sql", "--database", ":memory:", "--format", "json", sql]) == 0
    first = json.loads(capsys.readouterr().out)[0]
    assert first["output"]["triage"]["tags"] == ["billing", 'say "hi"']
