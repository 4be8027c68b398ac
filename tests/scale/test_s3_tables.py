"""Every lakeloom table on an S3 endpoint (moto on loopback) behaves as on local disk."""

import io
import json
import sys

import dagster as dg
import polars as pl
from deltalake import DeltaTable

from lakeloom.cli import build_parser
from lakeloom.core.predict import fit, predict
from lakeloom.core.specs import PredictSpec
from lakeloom.engine.cache.store import ResponseCache
from lakeloom.engine.limiter.base import UnlimitedLimiter
from lakeloom.engine.provider import ProviderConfig
from lakeloom.engine.runner import Engine
from lakeloom.io_managers import DeltaIOManager
from lakeloom.models import ModelStore
from lakeloom.storage.catalog import Catalog
from lakeloom.storage.cli import run_sql as sql_run
from lakeloom.storage.ref import ref
from lakeloom.storage.settings import Storage
from tests.fixtures.engine import chat_bodies

PARTS = dg.StaticPartitionsDefinition(["amazon", "movies", "nyt"])


def scores_asset(version: str):
    @dg.asset(partitions_def=PARTS, name="scores", metadata={"partition_expr": "source"})
    def scores(context: dg.AssetExecutionContext) -> pl.DataFrame:
        n = {"amazon": 3, "movies": 4, "nyt": 2}[context.partition_key]
        return pl.DataFrame(
            {"id": [f"{context.partition_key}-{i}" for i in range(n)], "v": [version] * n}
        )

    return scores


def build_history(io_manager: DeltaIOManager) -> pl.DataFrame:
    """Write every partition, overwrite one with a new version, read the table back."""
    for key in PARTS.get_partition_keys():
        dg.materialize(
            [scores_asset("v1")], partition_key=key, resources={"io_manager": io_manager}
        )
    dg.materialize(
        [scores_asset("v2")], partition_key="movies", resources={"io_manager": io_manager}
    )
    uri = io_manager.table_uri(dg.AssetKey("scores"))
    options = io_manager.storage.storage_options or None
    assert DeltaTable(uri, storage_options=options).version() == 3
    return pl.read_delta(uri, storage_options=options).sort("id")


def test_partitioned_asset_on_s3_equals_local_disk(s3_root, tmp_path):
    on_s3 = build_history(DeltaIOManager())  # root and options from the environment (s3_root)
    on_disk = build_history(DeltaIOManager(root=str(tmp_path / "disk"), storage_options={}))
    assert on_s3.equals(on_disk)
    assert on_s3.filter(pl.col("source") == "movies")["v"].to_list() == ["v2"] * 4
    assert on_s3.filter(pl.col("source") != "movies")["v"].unique().to_list() == ["v1"]

    con = Catalog(s3_root, database=":memory:").connect()
    rows = con.sql("SELECT source, count(*), min(v) FROM scores GROUP BY 1 ORDER BY 1").fetchall()
    assert rows == [("amazon", 3, "v1"), ("movies", 4, "v2"), ("nyt", 2, "v1")]

    r = ref("scores", "movies")
    assert r.uri.startswith("s3://") and "AWS_SECRET_ACCESS_KEY" in r.storage_option_names
    assert s3_root.storage_options["AWS_SECRET_ACCESS_KEY"] not in r.to_json()
    assert r.lazy().collect()["v"].to_list() == ["v2"] * 4


def test_lakeloom_sql_reads_s3(s3_root, capsys, monkeypatch):
    build_history(DeltaIOManager())
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    args = build_parser().parse_args(
        ["sql", "SELECT count(*) AS n FROM scores", "--format", "json", "--database", ":memory:"]
    )
    assert args.func is sql_run and sql_run(args) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 9}]


def test_cache_ledger_and_model_store_on_s3(s3_root, sim_server, digits_embedded):
    sim = sim_server()
    provider = ProviderConfig(kind="compatible", base_url=sim.base_url, max_concurrency=8)
    engine = Engine(provider, limiter=UnlimitedLimiter(), progress_interval_s=60)
    assert engine.storage.root == s3_root.root
    first = engine.run_bodies("chat.completions", chat_bodies(20))
    again = engine.run_bodies("chat.completions", chat_bodies(20))
    assert (first.results["status"] == "ok").all() and first.stats.sent == 20
    assert again.stats.cache_hits == 20 and again.stats.sent == 0
    assert sim.stats()["served"] == 20
    cache_uri = ResponseCache(s3_root).uri
    assert cache_uri == f"{s3_root.root}/_lakeloom/cache"
    assert pl.read_delta(cache_uri, storage_options=s3_root.storage_options).height == 20
    ledger = engine.ledger.read()
    assert ledger["requests"].sum() == 40 and ledger["cache_hits"].sum() == 20

    spec = PredictSpec(
        features=("embedding", "ink"),
        target="labels.digit",
        param_grid={"n_estimators": (20,), "num_leaves": (7,)},
        outer_folds=2,
        inner_folds=2,
    )
    model = fit(digits_embedded, spec)
    store = ModelStore()  # root from the environment: the bucket
    refs = [store.save(model, "digits"), store.save(model, "digits")]
    assert [r.version for r in refs] == [1, 2]
    assert refs[1].uri == f"{s3_root.root}/_lakeloom/models/digits/v2"
    assert store.names() == ["digits"] and store.versions("digits") == [1, 2]
    loaded = ModelStore(Storage.from_env()).load("digits", check=digits_embedded)
    frame = digits_embedded.drop("labels")
    assert loaded.info["version"] == 2
    assert predict(loaded, frame).equals(predict(model, frame))
