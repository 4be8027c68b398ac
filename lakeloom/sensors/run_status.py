"""Run-status sensors: one JSON summary per finished run, posted to a webhook.

The summary is built from what the run recorded in the Dagster instance: its materializations'
metadata (the LLM factories record rows by status, tokens and cost; the IO manager the Delta
version), its failed steps and failed checks, its tags (``lakeloom/owner``, partitions,
backfill) and its start/end times. Notifications are off until ``LAKELOOM_WEBHOOK_URL`` is set
in the environment of the code location (read at every evaluation, so no reload is needed).

Examples:
    >>> defs = dg.Definitions(assets=[...], sensors=run_notification_sensors())  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import dagster as dg
from dagster import DagsterEventType

from lakeloom.assets.datasets import DATASET_TAG, OWNER_TAG, owners
from lakeloom.sensors.notify import WebhookConfig, post_json

COUNTS = ("rows_ok", "rows_error", "rows_skipped", "input_tokens", "output_tokens", "requests")
_REPORTED_TAGS = (
    OWNER_TAG,
    DATASET_TAG,
    "dagster/partition",
    "dagster/asset_partition_range_start",
    "dagster/asset_partition_range_end",
    "dagster/backfill",
)
_EVENT_TYPES = {
    DagsterEventType.ASSET_MATERIALIZATION,
    DagsterEventType.STEP_FAILURE,
    DagsterEventType.ASSET_CHECK_EVALUATION,
}
_PAGE = 1000


def _value(entry: Any) -> Any:
    """The plain value of a metadata entry (``MetadataValue.value``) or the raw value."""
    return getattr(entry, "value", entry)


def _asset_summary(asset: str, metadata: Mapping[str, Any], partitions: set[str]) -> dict:
    """Counts of one asset in one run; LLM counts only where the asset records them."""
    md = {k: _value(v) for k, v in metadata.items()}
    out: dict[str, Any] = {"asset": asset, "partitions": sorted(partitions)}
    rows = md.get("dagster/partition_row_count", md.get("dagster/row_count"))
    if rows is not None:
        out["rows"] = int(rows)
    for name in COUNTS:
        if name in md:
            out[name] = int(md[name])
    if "cost_usd" in md:
        out["cost_usd"] = round(float(md["cost_usd"]), 6)
    for name in ("delta_version", "model", "error_report_uri"):
        if name in md:
            out[name] = md[name]
    return out


def summarize_run(
    instance: dg.DagsterInstance, run: dg.DagsterRun, config: WebhookConfig | None = None
) -> dict[str, Any]:
    """Build the JSON summary of ``run`` from the instance's event log.

    A single-run backfill logs one materialization per partition, each carrying the step's
    metadata, so counts are taken once per asset (from its last materialization) while the
    partitions are the union over all of them.
    """
    config = config or WebhookConfig.from_env()
    per_asset: dict[str, tuple[Mapping[str, Any], set[str]]] = {}
    failed_steps: list[dict[str, str]] = []
    failed_checks: list[dict[str, Any]] = []
    for record in _records(instance, run.run_id):
        entry = record.event_log_entry
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
            mat = event.step_materialization_data.materialization
            key = mat.asset_key.to_user_string()
            partitions = per_asset.get(key, ({}, set()))[1]
            if mat.partition:
                partitions.add(str(mat.partition))
            per_asset[key] = (mat.metadata, partitions)
        elif event.event_type == DagsterEventType.STEP_FAILURE:
            error = event.step_failure_data.error
            message = _error_text(error) if error else (entry.user_message or "")
            failed_steps.append({"step": event.step_key or "", "error": message[:2000]})
        else:
            evaluation = event.asset_check_evaluation_data
            if not evaluation.passed:
                failed_checks.append(
                    {
                        "asset": evaluation.asset_key.to_user_string(),
                        "check": evaluation.check_name,
                        "metadata": {
                            k: _json_safe(_value(v)) for k, v in evaluation.metadata.items()
                        },
                    }
                )
    assets = [_asset_summary(k, md, parts) for k, (md, parts) in sorted(per_asset.items())]
    totals: dict[str, Any] = {
        name: sum(a.get(name, 0) for a in assets) for name in ("rows", *COUNTS)
    }
    totals["cost_usd"] = round(sum(a.get("cost_usd", 0.0) for a in assets), 6)
    totals["materializations"] = len(assets)
    record = instance.get_run_record_by_id(run.run_id)
    start = record.start_time if record else None
    end = record.end_time if record else None
    tags = {k: v for k, v in run.tags.items() if k in _REPORTED_TAGS}
    partitions = sorted({p for a in assets for p in a["partitions"]})
    summary: dict[str, Any] = {
        "kind": "lakeloom.run",
        "status": run.status.value,
        "run_id": run.run_id,
        "job": run.job_name,
        "url": config.run_url(run.run_id),
        "owner": run.tags.get(OWNER_TAG) or _dataset_owner(instance, partitions),
        "assets": assets,
        "partitions": partitions,
        "totals": totals,
        "started_at": start,
        "ended_at": end,
        "duration_s": round(end - start, 3) if start and end else None,
        "tags": tags,
        "failed_steps": failed_steps,
        "failed_checks": failed_checks,
    }
    summary["text"] = _headline(summary)
    return summary


def _dataset_owner(instance: dg.DagsterInstance, partitions: list[str]) -> str | None:
    """The registered owner of the run's dataset partitions, when they share one."""
    found = {o for o in owners(instance, partitions[:100]).values() if o}
    return found.pop() if len(found) == 1 else None


def _records(instance: dg.DagsterInstance, run_id: str) -> Iterable[Any]:
    """Every materialization, step failure and check evaluation of a run, page by page."""
    cursor = None
    while True:
        page = instance.get_records_for_run(
            run_id, cursor=cursor, of_type=_EVENT_TYPES, limit=_PAGE
        )
        yield from page.records
        if not page.has_more:
            return
        cursor = page.cursor


def _error_text(error: Any) -> str:
    """A step error's message and its causes' (Dagster wraps the asset's own exception).

    The text may quote connection strings: ``post_json`` redacts every string it sends.
    """
    parts, seen = [], 0
    while error is not None and seen < 5:
        parts.append(error.message.strip())
        error, seen = error.cause, seen + 1
    return "\n".join(p for p in parts if p)


def _json_safe(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, Mapping | list):
        return value
    return str(value)


def _headline(summary: Mapping[str, Any]) -> str:
    """One human line (the ``text`` field chat webhooks such as Slack display)."""
    t = summary["totals"]
    verbs = {"SUCCESS": "succeeded", "FAILURE": "FAILED", "CANCELED": "was canceled"}
    verb = verbs.get(summary["status"], summary["status"].lower())
    assets = ", ".join(a["asset"] for a in summary["assets"]) or "no materializations"
    parts = summary["partitions"]
    where = f" [{parts[0]}{f' +{len(parts) - 1}' if len(parts) > 1 else ''}]" if parts else ""
    took = f", {summary['duration_s']:.1f} s" if summary["duration_s"] is not None else ""
    owner = f" ({summary['owner']})" if summary["owner"] else ""
    return (
        f"lakeloom run {summary['run_id'][:8]}{owner} {verb}: {assets}{where}; "
        f"{t['rows_ok']} ok / {t['rows_error']} error / {t['rows_skipped']} skipped, "
        f"${t['cost_usd']:.4f}{took} — {summary['url']}"
    )


def notify_run(
    instance: dg.DagsterInstance, run: dg.DagsterRun, config: WebhookConfig | None = None
) -> dict[str, Any] | None:
    """Post the summary of ``run``; return it, or ``None`` when notifications are off."""
    config = config or WebhookConfig.from_env()
    if not config.enabled:
        return None
    summary = summarize_run(instance, run, config)
    summary["delivered"] = post_json(
        config, summary, idempotency_key=f"{run.run_id}:{run.status.value}"
    )
    return summary


def _evaluate(context: dg.RunStatusSensorContext, config: WebhookConfig | None) -> dg.SkipReason:
    config = config or WebhookConfig.from_env()
    if not config.enabled:
        return dg.SkipReason("LAKELOOM_WEBHOOK_URL is not set: notifications are off")
    summary = notify_run(context.instance, context.dagster_run, config)
    assert summary is not None
    outcome = "posted" if summary["delivered"] else "NOT delivered"
    context.log.info(f"run {context.dagster_run.run_id}: summary {outcome} to {config.host}")
    return dg.SkipReason(f"summary {outcome} to {config.host}")


def run_notification_sensors(
    config: WebhookConfig | None = None,
    *,
    minimum_interval_seconds: int = 10,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
) -> list[dg.SensorDefinition]:
    """A success and a failure sensor posting one summary per run of this code location.

    ``config=None`` reads the webhook from the environment at each evaluation. The sensors run
    by default (the daemon of ``dagster dev`` evaluates them) and do nothing without a URL.
    """

    @dg.run_status_sensor(
        run_status=dg.DagsterRunStatus.SUCCESS,
        name="lakeloom_notify_success",
        description="Posts a JSON summary of each successful run to LAKELOOM_WEBHOOK_URL.",
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
    )
    def notify_success(context: dg.RunStatusSensorContext) -> dg.SkipReason:
        return _evaluate(context, config)

    @dg.run_failure_sensor(
        name="lakeloom_notify_failure",
        description="Posts a JSON summary of each failed run to LAKELOOM_WEBHOOK_URL.",
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
    )
    def notify_failure(context: dg.RunFailureSensorContext) -> dg.SkipReason:
        return _evaluate(context, config)

    return [notify_success, notify_failure]
