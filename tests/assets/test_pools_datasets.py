"""Dataset partitions and owners: the ``lakeloom dataset`` CLI, owner tags, the datasets sensor,
and the owner in run summaries."""

import json

import dagster as dg
import pytest

from lakeloom.assets.datasets import (
    DATASET_TAG,
    DATASETS_NAME,
    OWNER_TAG,
    DatasetNameError,
    add_dataset,
    datasets_sensor,
    list_datasets,
    owner_tags,
)
from lakeloom.cli import main as lakeloom
from lakeloom.sensors.notify import WebhookConfig
from lakeloom.sensors.run_status import summarize_run


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def test_cli_adds_lists_and_removes_datasets(home, capsys):
    assert lakeloom(["dataset", "add", "tickets-eu", "--owner", "team-cx"]) == 0
    assert "lakeloom/owner=team-cx" in capsys.readouterr().out
    assert lakeloom(["dataset", "add", "docs", "--owner", "team-search"]) == 0
    assert lakeloom(["dataset", "add", "docs", "--owner", "team-legal"]) == 0  # new owner
    capsys.readouterr()
    assert lakeloom(["dataset", "list", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows == [
        {"dataset": "tickets-eu", "owner": "team-cx"},
        {"dataset": "docs", "owner": "team-legal"},
    ]
    with dg.DagsterInstance.from_config(str(home)) as instance:  # the same instance
        assert instance.get_dynamic_partitions(DATASETS_NAME) == ["tickets-eu", "docs"]
    assert lakeloom(["dataset", "remove", "docs"]) == 0
    assert lakeloom(["dataset", "remove", "docs"]) == 1
    assert lakeloom(["dataset", "add", "Bad Name", "--owner", "x"]) == 2
    assert "dataset name 'Bad Name'" in capsys.readouterr().err


def test_owner_tags_validate_names():
    assert owner_tags("team-a", "ds1") == {OWNER_TAG: "team-a", DATASET_TAG: "ds1"}
    with pytest.raises(DatasetNameError, match="owner name"):
        owner_tags("Team A")


def test_sensor_launches_each_new_dataset_once_with_its_owner(home):
    @dg.asset(partitions_def=dg.DynamicPartitionsDefinition(name=DATASETS_NAME))
    def docs() -> None: ...

    sensor = datasets_sensor([docs])
    with dg.DagsterInstance.from_config(str(home)) as instance:
        add_dataset(instance, "d1", owner="team-a")
        add_dataset(instance, "d2", owner="team-b")
        first = sensor(dg.build_sensor_context(instance=instance))
        assert [(r.partition_key, r.tags[OWNER_TAG]) for r in first.run_requests] == [
            ("d1", "team-a"),
            ("d2", "team-b"),
        ]
        again = sensor(dg.build_sensor_context(instance=instance, cursor=first.cursor))
        assert isinstance(again, dg.SkipReason)
        add_dataset(instance, "d3", owner="team-a")
        third = sensor(dg.build_sensor_context(instance=instance, cursor=first.cursor))
        assert [r.partition_key for r in third.run_requests] == ["d3"]
        assert [d.name for d in list_datasets(instance)] == ["d1", "d2", "d3"]


def test_summary_names_the_dataset_owner_when_the_run_has_no_owner_tag(home):
    parts = dg.DynamicPartitionsDefinition(name=DATASETS_NAME)

    @dg.asset(partitions_def=parts)
    def docs() -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"rows_ok": 3})

    with dg.DagsterInstance.from_config(str(home)) as instance:
        add_dataset(instance, "d1", owner="team-a")
        result = dg.materialize([docs], instance=instance, partition_key="d1")
        run = instance.get_run_by_id(result.run_id)
        summary = summarize_run(instance, run, WebhookConfig())
    assert summary["owner"] == "team-a" and summary["partitions"] == ["d1"]
    assert summary["totals"]["rows_ok"] == 3
