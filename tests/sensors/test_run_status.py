"""Run-status sensors post one JSON summary per run to a real HTTP receiver on 127.0.0.1.

Runs are real Dagster runs of factory assets against the provider simulator, in a temporary
instance; the sensors are evaluated with ``build_run_status_sensor_context`` on each run's own
RUN_SUCCESS / RUN_FAILURE event, as the daemon would.
"""

import dagster as dg
import polars as pl
import pytest
from pydantic import BaseModel

from lakeloom.assets.factories import generated_asset
from lakeloom.resources.llm import LLMResource
from lakeloom.sensors.notify import WebhookConfig, post_json, redact
from lakeloom.sensors.run_status import OWNER_TAG, run_notification_sensors, summarize_run

TOPICS = dg.StaticPartitionsDefinition(["a", "b", "c"])
SIZES = {"a": 5, "b": 4, "c": 3}


@dg.asset(
    partitions_def=TOPICS,
    metadata={"partition_expr": "topic"},
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def notes(context: dg.AssetExecutionContext) -> pl.DataFrame:
    frames = []
    for key in context.partition_keys:
        texts = [f"{key} note {i}" for i in range(SIZES[key])]
        texts[0] = None  # one skipped row per partition
        ids = [f"{key}{i}" for i in range(SIZES[key])]
        frames.append(pl.DataFrame({"id": ids, "text": texts, "topic": key}))
    return pl.concat(frames)


class Label(BaseModel):
    label: str


labels = generated_asset(
    "note_labels",
    notes,
    "Label: {text}",
    Label,
    key="id",
    model="gpt-4o-mini",
    retry_policy=None,
    min_ok_ratio=0.5,
)


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as inst:
        yield inst


def _run(instance, sim_server, io_manager, tags=None, **sim_options):
    sim = sim_server(**sim_options)
    llm = LLMResource(base_url=sim.base_url, max_attempts=1)
    result = dg.materialize(
        [notes, labels],
        resources={"io_manager": io_manager, "llm": llm},
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": "a",
            "dagster/asset_partition_range_end": "b",
            **(tags or {}),
        },
        raise_on_error=False,
    )
    return sim, result


def _evaluate(instance, run_id, config):
    success, failure = run_notification_sensors(config)
    run = instance.get_run_by_id(run_id)
    wanted = (
        dg.DagsterEventType.RUN_SUCCESS
        if run.status == dg.DagsterRunStatus.SUCCESS
        else dg.DagsterEventType.RUN_FAILURE
    )
    event = instance.get_records_for_run(run_id, of_type=wanted).records[0]
    context = dg.build_run_status_sensor_context(
        sensor_name="test",
        dagster_event=event.event_log_entry.dagster_event,
        dagster_instance=instance,
        dagster_run=run,
    )
    if wanted == dg.DagsterEventType.RUN_SUCCESS:
        return success(context)
    return failure(context.for_run_failure())


def test_success_posts_one_summary_with_counts(
    instance, sim_server, io_manager, webhook_receiver, monkeypatch
):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-do-not-leak-0123456789")
    sim, result = _run(instance, sim_server, io_manager, tags={OWNER_TAG: "team-nlp"})
    assert result.success
    config = WebhookConfig(url=webhook_receiver.url, ui_base_url="http://ui.example:3000")
    _evaluate(instance, result.run_id, config)

    [msg] = webhook_receiver.wait_for(1, 5)
    assert msg["status"] == "SUCCESS" and msg["run_id"] == result.run_id
    assert msg["url"] == f"http://ui.example:3000/runs/{result.run_id}"
    assert msg["owner"] == "team-nlp" and msg["partitions"] == ["a", "b"]
    by_asset = {a["asset"]: a for a in msg["assets"]}
    lab = by_asset["note_labels"]
    # a: 5 rows (1 skipped), b: 4 rows (1 skipped) in one single-run backfill: counted once
    assert (lab["rows_ok"], lab["rows_error"], lab["rows_skipped"]) == (7, 0, 2)
    assert lab["partitions"] == ["a", "b"] and lab["delta_version"] >= 0
    assert lab["requests"] == 7 == sim.stats()["served"]
    assert lab["input_tokens"] > 0 and lab["output_tokens"] > 0 and lab["cost_usd"] > 0
    assert msg["totals"]["rows_ok"] == 7 and msg["totals"]["cost_usd"] == lab["cost_usd"]
    assert by_asset["notes"]["rows"] == 9 and "rows_ok" not in by_asset["notes"]
    assert msg["duration_s"] > 0 and msg["failed_steps"] == [] and msg["failed_checks"] == []
    assert "7 ok / 0 error / 2 skipped" in msg["text"] and "team-nlp" in msg["text"]
    assert webhook_receiver.headers[0]["Idempotency-Key"] == f"{result.run_id}:SUCCESS"
    assert webhook_receiver.attempts == 1


def test_failure_posts_summary_with_error_rows_and_failed_check(
    instance, sim_server, io_manager, webhook_receiver
):
    sim, result = _run(instance, sim_server, io_manager, fail_5xx=1.0)
    assert not result.success
    config = WebhookConfig(url=webhook_receiver.url)
    _evaluate(instance, result.run_id, config)

    [msg] = webhook_receiver.wait_for(1, 5)
    assert msg["status"] == "FAILURE" and msg["run_id"] == result.run_id
    lab = {a["asset"]: a for a in msg["assets"]}["note_labels"]
    assert (lab["rows_ok"], lab["rows_error"], lab["rows_skipped"]) == (0, 7, 2)
    assert lab["cost_usd"] == 0
    assert [c["check"] for c in msg["failed_checks"]] == ["ok_ratio"]
    assert [s["step"] for s in msg["failed_steps"]] == ["note_labels"]
    assert "http_5xx x7" in msg["failed_steps"][0]["error"]  # the run summary names the cause
    assert "FAILED" in msg["text"] and "0 ok / 7 error / 2 skipped" in msg["text"]


def test_no_url_is_a_noop_and_sensor_reports_skip(instance, sim_server, io_manager):
    _, result = _run(instance, sim_server, io_manager)
    skip = _evaluate(instance, result.run_id, WebhookConfig(url=None))
    assert "not set" in skip.skip_message


def test_summary_from_env_without_webhook_still_builds(instance, sim_server, io_manager):
    _, result = _run(instance, sim_server, io_manager)
    summary = summarize_run(instance, instance.get_run_by_id(result.run_id))
    assert summary["url"].startswith("http://127.0.0.1:3000/runs/")
    assert summary["totals"]["rows_ok"] == 7


def test_webhook_retries_5xx_then_delivers_once(webhook_receiver):
    webhook_receiver.fail_next = 2
    config = WebhookConfig(url=webhook_receiver.url, backoff_s=0.01, max_attempts=3)
    assert post_json(config, {"x": 1})
    assert webhook_receiver.attempts == 3 and webhook_receiver.messages == [{"x": 1}]


def test_webhook_gives_up_quickly_on_dead_host():
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = WebhookConfig(url=f"http://127.0.0.1:{port}/x", backoff_s=0.01, timeout_s=1)
    assert post_json(config, {"x": 1}) is False


def test_payload_never_carries_secrets(webhook_receiver, monkeypatch):
    monkeypatch.setenv("MY_PROVIDER_API_KEY", "abcd1234efgh5678")
    text = (
        "boom: key abcd1234efgh5678, Authorization: Bearer xyzxyzxyz123, "
        "sk-proj-AAAAAAAAAAAAAAAAAAAA, https://h/p?api_key=s3cr3t&x=1"
    )
    post_json(WebhookConfig(url=webhook_receiver.url), {"error": text, "nested": [text]})
    [msg] = webhook_receiver.wait_for(1, 5)
    raw = str(msg)
    for secret in ("abcd1234efgh5678", "xyzxyzxyz123", "sk-proj-AAAA", "s3cr3t"):
        assert secret not in raw
    assert "api_key=***" in msg["error"] and "x=1" in msg["error"]
    assert redact("nothing secret here") == "nothing secret here"


def test_webhook_credentials_and_urls_in_errors_never_leave_the_process(
    instance, io_manager, webhook_receiver, caplog
):
    """Issue 13.11: the webhook's user:pass@ and ?token=, and URLs inside step errors."""
    import logging

    @dg.asset
    def leaky() -> pl.DataFrame:
        raise RuntimeError(
            "cannot reach redis://:s3cr3t-STEP@127.0.0.1:6379/0 nor https://h.example/x?sig=SIG9"
        )

    result = dg.materialize(
        [leaky], resources={"io_manager": io_manager}, instance=instance, raise_on_error=False
    )
    assert not result.success
    port = webhook_receiver.url.split(":")[2].split("/")[0]
    url = f"http://user:pa55-HOOK@127.0.0.1:{port}/hook?token=abc-HOOK-token"
    config = WebhookConfig(url=url, ui_base_url="http://ui:UI-PASS@ui.example:3000")
    caplog.set_level(logging.DEBUG)
    caplog.clear()  # what the run logged is the asset's own exception; the sensor's starts here
    skip = _evaluate(instance, result.run_id, config)

    [msg] = webhook_receiver.wait_for(1, 5)
    assert config.host == f"127.0.0.1:{port}" and config.host in skip.skip_message
    error = msg["failed_steps"][0]["error"]
    assert "redis://***@127.0.0.1:6379/0" in error and "sig=***" in error
    assert msg["url"].startswith("http://***@ui.example:3000/runs/")
    texts = [caplog.text, skip.skip_message, str(msg), repr(config), str(config)]
    for secret in ("pa55-HOOK", "abc-HOOK-token", "s3cr3t-STEP", "SIG9", "UI-PASS"):
        assert all(secret not in text for text in texts), secret
