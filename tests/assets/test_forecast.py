"""``lakeloom forecast`` and dry runs: the numbers of a run that has not happened, sending nothing.

The module's ``defs`` are what the CLI loads (``-m tests.assets.test_forecast:defs``); the
provider's URL
comes from an env var that each test points at its own simulator.
"""

import json
import urllib.request
from typing import Literal

import dagster as dg
import polars as pl
import pytest

from lakeloom.assets.factories import embedding_asset, generated_asset
from lakeloom.assets.forecast import forecast_asset
from lakeloom.cli import main
from lakeloom.io_managers import DeltaIOManager
from lakeloom.resources.llm import LLMResource
from lakeloom.storage.delta import table_exists

URL_ENV = "LAKELOOM_TEST_FORECAST_SIM_URL"
PARTS = dg.StaticPartitionsDefinition(["a", "b"])
SCHEMA = dg.TableSchema(
    columns=[dg.TableColumn("id", "string"), dg.TableColumn("part", "string"),
             dg.TableColumn("text", "string")]
)  # fmt: skip


def rows(part: str) -> pl.DataFrame:
    texts = [f"{part} review {i}: the tea was {'great' if i % 2 else 'awful'}" for i in range(40)]
    texts[3] = None
    return pl.DataFrame(
        {"id": [f"{part}{i}" for i in range(40)], "part": part, "text": texts},
        schema={"id": pl.String, "part": pl.String, "text": pl.String},
    )


@dg.asset(
    partitions_def=PARTS,
    metadata={"partition_expr": "part", "dagster/column_schema": SCHEMA},
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def docs(context: dg.AssetExecutionContext) -> pl.DataFrame:
    return pl.concat([rows(k) for k in context.partition_keys])


labels = generated_asset(
    "labels",
    docs,
    "Review: {text}",
    Literal["positive", "negative"],
    key="id",
    model="sim-priced",
    max_tokens=16,
    resource_key="llm",
)
vectors = embedding_asset(
    "vectors", docs, "text", key="id", model="sim-embed", batch_size=8, resource_key="llm"
)
RESOURCES = {
    "io_manager": DeltaIOManager(),
    "llm": LLMResource(base_url=dg.EnvVar(URL_ENV), rpm=1200, max_attempts=3, pool="llm-llm"),
}
defs = dg.Definitions(assets=[docs, labels, vectors], resources=RESOURCES)


@pytest.fixture
def sim(sim_server, monkeypatch):
    server = sim_server()
    monkeypatch.setenv(URL_ENV, server.base_url)
    for part in ("a", "b"):
        assert dg.materialize([docs], partition_key=part, resources=RESOURCES).success
    return server


def files_uploaded(server) -> int:
    with urllib.request.urlopen(server.root_url + "/stats/batches", timeout=10) as resp:
        return json.loads(resp.read())["files_uploaded"]


def materialize(part: str, **kwargs):
    return dg.materialize(
        [docs, labels], selection=[labels.key], partition_key=part, resources=RESOURCES, **kwargs
    )


def test_forecast_sends_nothing_and_matches_real_runs(sim):
    first = forecast_asset(defs, "labels", partitions=["a"])
    assert sim.stats()["received"] == 0 and files_uploaded(sim) == 0  # sent nothing at all
    fc = first.forecast
    assert (first.rows, first.rows_skipped, first.rows_cached) == (40, 1, 0)
    assert (fc.rows, fc.cache_hits, fc.to_send) == (39, 0, 39)
    assert fc.output_basis == "max_tokens (upper bound)" and fc.output_tokens == 39 * 16
    assert fc.duration_s == pytest.approx(60 * 39 / 1200) and first.limits == "configured"
    assert fc.batch_usd == pytest.approx(fc.online_usd / 2, rel=1e-6)

    result = materialize("a")
    md = result.asset_materializations_for_node("labels")[0].metadata
    assert md["requests"].value == 39 == sim.stats()["served"]
    assert md["forecast_to_send"].value == 39 and md["mode"].value == "online"
    assert first.input_basis == "tokenizer estimate"  # (schema included; the sim omits it)

    both = forecast_asset(defs, "labels", partitions=["a", "b"])
    fc2 = both.forecast
    assert (both.rows, both.rows_cached, fc2.cache_hits, fc2.to_send) == (80, 39, 39, 39)
    assert fc2.output_basis == "history"  # the mean of what partition a really returned
    assert both.input_basis.startswith("calibrated on 39 cached answers")
    assert sim.stats()["received"] == 39  # the second forecast sent nothing either
    md_b = materialize("b").asset_materializations_for_node("labels")[0].metadata
    assert fc2.input_tokens == pytest.approx(md_b["input_tokens"].value, rel=0.1)
    assert fc2.output_tokens == pytest.approx(md_b["output_tokens"].value, rel=0.2)
    assert fc2.online_usd == pytest.approx(md_b["cost_usd"].value, rel=0.3)


def test_cli_prints_the_forecast_and_names_bad_input(sim, capsys):
    assert main(["forecast", "labels", "-m", "tests.assets.test_forecast:defs", "--partitions", "a",
                 "--json"]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert (out["rows"], out["requests_to_send"], out["mode"]) == (40, 39, "online")
    assert out["online_usd"] > out["batch_usd"] > 0 and out["partitions"] == ["a"]
    assert main(["forecast", "vectors", "-m", "tests.assets.test_forecast", "--all"]) == 0
    text = capsys.readouterr().out
    assert "rows                           80" in text and "nothing was sent." in text
    assert main(["forecast", "nope", "-m", "tests.assets.test_forecast"]) == 2
    assert "LLM assets here: labels, vectors" in capsys.readouterr().err
    assert (
        main(["forecast", "labels", "-m", "tests.assets.test_forecast", "--partitions", "zz"]) == 2
    )
    assert "unknown partition(s) ['zz']" in capsys.readouterr().err
    assert sim.stats()["received"] == 0 and files_uploaded(sim) == 0


def test_dry_run_tag_reports_the_forecast_and_materializes_nothing(sim, storage):
    result = materialize("a", tags={"lakeloom/dry_run": "true"}, raise_on_error=False)
    assert result.success
    assert result.asset_materializations_for_node("labels") == []
    observed = result.asset_observations_for_node("labels")[0].metadata
    assert observed["dry_run"].value is True and observed["forecast_to_send"].value == 39
    assert observed["forecast_online_usd"].value > 0
    checks = result.get_asset_check_evaluations()
    assert checks and all(not c.passed and c.severity == dg.AssetCheckSeverity.WARN for c in checks)
    assert sim.stats()["received"] == 0
    assert not table_exists(storage.table_uri("assets", "labels"))
