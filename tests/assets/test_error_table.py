"""Error reports (Delta table of failed rows + markdown summary) and re-running only failed rows,
through real Dagster runs of a factory asset against the provider simulator."""

import dagster as dg
import polars as pl
import pytest
from pydantic import BaseModel

from lakeloom.assets.cli import rerun_command
from lakeloom.assets.error_table import (
    split_for_rerun,
    summary_markdown,
    write_error_report,
)
from lakeloom.assets.factories import generated_asset
from lakeloom.cli import main as lakeloom
from lakeloom.core.row_keys import RowKeyError
from lakeloom.io_managers import DeltaIOManager
from lakeloom.resources.llm import LLMResource
from lakeloom.storage.errors import ERRORS_TABLE, ErrorTable
from lakeloom.storage.settings import Storage
from tests.fixtures.delta_io import read

SHOPS = dg.StaticPartitionsDefinition(["north", "south"])
N = 40


@dg.asset(partitions_def=SHOPS, metadata={"partition_expr": "shop"})
def tickets(context: dg.AssetExecutionContext) -> pl.DataFrame:
    shop = context.partition_key
    return pl.DataFrame(
        {"ticket": [f"{shop}-{i:03d}" for i in range(N)], "shop": shop, "body": "late parcel"}
    ).with_columns(pl.format("{} #{}", "body", pl.int_range(N)).alias("body"))


class Triage(BaseModel):
    urgent: bool


def triage_asset(prompt: str = "Ticket: {body}"):
    return generated_asset(
        "ticket_triage",
        tickets,
        prompt,
        Triage,
        key="ticket",
        model="gpt-4o-mini",
        retry_policy=None,
        min_ok_ratio=0.0,
    )


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as inst:
        yield inst


def materialize(assets, sim, io_manager, instance, *, only_failed=False, selection=None):
    config = {"ops": {"ticket_triage": {"config": {"only_failed": True}}}} if only_failed else None
    return dg.materialize(
        assets,
        selection=selection,
        partition_key="north",
        resources={
            "io_manager": io_manager,
            "llm": LLMResource(base_url=sim.base_url, max_attempts=1),
        },
        instance=instance,
        run_config=config,
        raise_on_error=False,
    )


def test_failed_rows_reported_then_rerun_sends_only_them(sim_server, io_manager, storage, instance):
    faulty = sim_server(fail_5xx=0.35, seed=7)
    labels = triage_asset()
    first = materialize([tickets, labels], faulty, io_manager, instance)
    assert first.success
    table = read(io_manager, "ticket_triage")
    failed_keys = set(table.filter(pl.col("_status") == "error")["ticket"])
    assert 5 <= len(failed_keys) <= 25  # ~35 % of 40

    report = ErrorTable(storage).read(run_id=first.run_id)
    assert set(report["key"]) == {f'{{"ticket": "{k}"}}' for k in failed_keys}
    assert set(report["partition"]) == {"north"} and set(report["asset"]) == {"ticket_triage"}
    assert report["_request_hash"].null_count() == 0
    assert report["_error"].str.contains("50[03]").all()
    md = first.asset_materializations_for_node("ticket_triage")[0].metadata
    text = md["error_report"].value
    assert f"**{len(failed_keys)} of {N} rows failed**" in text
    assert set(report["_reason"]) == {"http_5xx"}  # HTTP 500 and 503: one stable class
    for reason, count in report.group_by("_reason").len().iter_rows():  # reasons with counts
        assert f"| {reason} | {count} |" in text
    assert md["error_report_uri"].value.endswith(ERRORS_TABLE)
    assert md["only_failed"].value is False

    before_ok = table.filter(pl.col("_status") == "ok").sort("ticket")
    clean = sim_server()
    second = materialize(
        [tickets, labels], clean, io_manager, instance, only_failed=True, selection=[labels]
    )
    assert second.success
    assert clean.stats()["served"] == len(failed_keys)  # only the failed rows were sent
    after = read(io_manager, "ticket_triage")
    assert after.height == N and set(after["_status"]) == {"ok"}
    assert after["ticket"].to_list() == [f"north-{i:03d}" for i in range(N)]  # input order
    kept = after.filter(~pl.col("ticket").is_in(failed_keys)).sort("ticket")
    assert kept.select("ticket", "output", "_request_hash").equals(
        before_ok.select("ticket", "output", "_request_hash")
    )
    md2 = second.asset_materializations_for_node("ticket_triage")[0].metadata
    assert md2["rows_ok"].value == N and md2["requests"].value == len(failed_keys)
    assert md2["only_failed"].value is True and "No failed rows" in md2["error_report"].value
    assert ErrorTable(storage).read(run_id=second.run_id).is_empty()
    assert ErrorTable(storage).read().height == len(failed_keys)  # first run's report stays

    third = materialize(
        [tickets, labels], clean, io_manager, instance, only_failed=True, selection=[labels]
    )
    assert third.success and clean.stats()["served"] == len(failed_keys)  # nothing left to send
    assert read(io_manager, "ticket_triage").equals(after)


def test_only_failed_refuses_rows_from_another_prompt(sim_server, io_manager, instance):
    sim = sim_server()
    assert materialize([tickets, triage_asset()], sim, io_manager, instance).success
    changed = triage_asset("Is this ticket urgent? {body}")
    result = materialize(
        [tickets, changed], sim, io_manager, instance, only_failed=True, selection=[changed]
    )
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert "code version" in failure.message and "without only_failed" in failure.message


def test_only_failed_on_a_new_partition_processes_every_row(sim_server, io_manager, instance):
    sim = sim_server()
    result = materialize([tickets, triage_asset()], sim, io_manager, instance, only_failed=True)
    assert result.success and sim.stats()["served"] == N


def test_split_sends_errors_and_unseen_rows_keeps_ok_and_skipped():
    upstream = pl.DataFrame({"id": ["a", "b", "c", "d", "e"], "text": list("vwxyz")})
    previous = pl.DataFrame(
        {
            "id": ["a", "b", "c", "z"],
            "out": ["A", None, None, "Z"],
            "_status": ["ok", "error", "skipped", "ok"],
        }
    )
    to_send, kept = split_for_rerun(upstream, previous, ["id"])
    assert to_send["id"].to_list() == ["b", "d", "e"]  # error + never processed
    assert sorted(kept["id"]) == ["a", "c"]  # z is no longer in the input


def test_split_refuses_keys_that_do_not_identify_rows():
    """Issue 13.4: one stored row per key was copied onto every input row with that key."""
    previous = pl.DataFrame({"id": ["a"], "out": ["A"], "_status": ["ok"]})
    dup = pl.DataFrame({"id": ["a", "a", "b"], "text": ["x", "y", "z"]})
    with pytest.raises(RowKeyError, match=r"'id'.*id=a \(2 rows\)"):
        split_for_rerun(dup, previous, ["id"])
    null = pl.DataFrame({"id": ["a", None], "text": ["x", "y"]})
    with pytest.raises(RowKeyError, match="null key"):
        split_for_rerun(null, previous, ["id"])


def test_summary_groups_by_reason_class_and_keeps_old_labels():
    failed = pl.DataFrame(
        {
            "partition": ["p"] * 4,
            "reason": [
                "invalid output after 3 attempts",
                "invalid output after 1 attempt",
                "HTTP 503",
                "legacy",
            ],
            "_reason": ["invalid_output", "invalid_output", "http_5xx", None],
            "_error": [
                "invalid output after 3 attempts: x",
                "invalid output after 1 attempt: y",
                "HTTP 503: busy",
                "legacy: z",
            ],
        }
    )
    text = summary_markdown(failed, asset="a", run_id="r", total_rows=4)
    assert "| invalid_output | 2 |" in text and "| http_5xx | 1 |" in text
    assert "| legacy | 1 |" in text


def test_report_of_a_retried_step_replaces_its_rows(storage: Storage):
    frame = pl.DataFrame(
        {
            "id": [1, 2, 3],
            "part": ["p", "p", "p"],
            "_status": ["error", "ok", "error"],
            "_error": ["validation: bad json", None, "HTTP 500: upstream"],
            "_request_hash": ["h1", "h2", "h3"],
            "_model": ["m"] * 3,
            "_attempts": [3, 1, 1],
        }
    )
    first = write_error_report(
        frame,
        asset="x",
        run_id="r1",
        keys=["id"],
        partition_columns=["part"],
        errors=ErrorTable(storage),
    )
    assert first.rows == 2 and first.version is not None
    assert "| other | 1 | validation: bad json |" in first.markdown
    assert "| http_5xx | 1 | HTTP 500: upstream |" in first.markdown
    healed = frame.with_columns(pl.lit("ok").alias("_status"))
    again = write_error_report(
        healed,
        asset="x",
        run_id="r1",
        keys=["id"],
        partition_columns=["part"],
        errors=ErrorTable(storage),
    )
    assert again.rows == 0 and ErrorTable(storage).read(run_id="r1").is_empty()
    clean = write_error_report(
        healed,
        asset="y",
        run_id="r2",
        keys=["id"],
        partition_columns=[],
        errors=ErrorTable(storage),
    )
    assert clean.uri is None  # nothing to record, nothing written


def test_errors_cli_prints_reasons_rows_and_the_rerun_command(storage: Storage, capsys):
    frame = pl.DataFrame(
        {
            "ticket": ["t1", "t2", "t3"],
            "shop": ["north"] * 3,
            "_status": ["error", "ok", "error"],
            "_error": ["HTTP 503: busy", None, "HTTP 503: busy"],
            "_request_hash": ["h1", "h2", "h3"],
            "_model": ["m"] * 3,
            "_attempts": [1, 1, 1],
        }
    )
    write_error_report(
        frame,
        asset="ticket_triage",
        run_id="run-1",
        keys=["ticket"],
        partition_columns=["shop"],
        errors=ErrorTable(storage),
    )
    assert lakeloom(["errors", "--run", "run-1"]) == 0
    out = capsys.readouterr().out
    assert "**2 rows failed** in `ticket_triage` (partitions: north)" in out
    assert "| http_5xx | 2 | HTTP 503: busy |" in out and '{"ticket": "t3"}' in out
    assert (
        "dagster asset materialize -m lakeloom.definitions --select ticket_triage "
        "--partition north --config-json "
        '\'{"ops": {"ticket_triage": {"config": {"only_failed": true}}}}\'' in out
    )
    assert lakeloom(["errors", "--run", "nope"]) == 0
    assert "no failed rows" in capsys.readouterr().out
    assert "--partition-range a...c" in rerun_command("x", ["a", "b", "c"])


def test_summary_markdown_escapes_and_caps_reasons():
    failed = pl.DataFrame(
        {
            "partition": ["p"] * 12,
            "reason": [f"r{i % 11}|x" for i in range(12)],
            "_error": ["e\nline"] * 12,
        }
    )
    text = summary_markdown(failed, asset="a", run_id="r", total_rows=20, top=3)
    assert "**12 of 20 rows failed** in `a` (partitions: p)" in text
    assert "r0\\|x | 2 |" in text and "… 8 more reasons" in text and "e line" in text


def test_step_reads_and_records_errors_through_its_io_manager_root(sim_server, tmp_path, instance):
    """Issue 14: the step's extra tables are the IO manager's (read_table, error_table), even
    when its root is not the environment's."""
    io = DeltaIOManager(root=str(tmp_path / "other_root"), storage_options={})
    env = Storage.from_env()
    assert io.storage.root != env.root
    first = materialize([tickets, triage_asset()], sim_server(fail_5xx=0.35, seed=7), io, instance)
    assert first.success
    failed = ErrorTable(io.storage).read(run_id=first.run_id)
    assert failed.height > 0 and not ErrorTable(env).exists()
    md = first.asset_materializations_for_node("ticket_triage")[0].metadata
    assert md["error_report_uri"].value == io.error_table().uri
    clean = sim_server()
    second = materialize(
        [tickets, triage_asset()],
        clean,
        io,
        instance,
        only_failed=True,
        selection=["ticket_triage"],
    )
    assert second.success and clean.stats()["served"] == failed.height  # read io's own table
