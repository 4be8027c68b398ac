"""Run one Dagster run per partition, ``workers`` runs at a time, each in its own process.

This is what the Dagster daemon does for a backfill (one run per partition, at most
``max_concurrent_runs`` at once, each launched in a fresh process), for scripts and benchmarks
that run without a daemon. Each run goes through ``dagster.execute_job`` on the instance of
``DAGSTER_HOME`` with the job's executor (see :mod:`lakeloom.scale.executors`): steps run in the
run's
process, in child processes, or on Celery workers. In a deployment, launch backfills from the UI
or the GraphQL API instead and let the daemon queue them (``dagster.yaml``: ``concurrency.runs``).
"""

from __future__ import annotations

import importlib
import multiprocessing
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PartitionRun:
    """The outcome of one partition's run."""

    partition: str
    run_id: str
    success: bool
    seconds: float
    error: str | None = None


def _execute(
    job_ref: str, partition: str, tags: Mapping[str, str], run_config: Mapping[str, Any]
) -> PartitionRun:
    """In a worker process: rebuild the job from ``module:function`` and run one partition."""
    import dagster as dg

    module, _, attr = job_ref.partition(":")
    job_fn = getattr(importlib.import_module(module), attr)
    started = time.monotonic()
    with dg.DagsterInstance.get() as instance:
        result = dg.execute_job(
            dg.reconstructable(job_fn),
            instance,
            tags={**tags, "dagster/partition": partition},
            run_config=dict(run_config),
            raise_on_error=False,
        )
        error = None if result.success else _failure(result.all_events)
        return PartitionRun(
            partition, result.run_id, result.success, time.monotonic() - started, error
        )


def _failure(events: Sequence[object]) -> str:
    """The messages of a failed run's step/run failure events, joined."""
    lines = []
    for event in events:
        if getattr(event, "event_type_value", "") in ("STEP_FAILURE", "RUN_FAILURE"):
            data = getattr(event, "event_specific_data", None)
            err = getattr(data, "error", None)
            text = err.message.strip() if err else getattr(event, "message", "")
            lines.append(f"{getattr(event, 'step_key', None) or 'run'}: {text}")
    return "; ".join(lines) or "run failed"


def _warm(job_ref: str) -> None:
    """Import the job's module once per worker, before the clock of any run starts."""
    importlib.import_module(job_ref.partition(":")[0])


def run_partitions(
    job_ref: str,
    partitions: Sequence[str],
    *,
    workers: int = 2,
    tags: Mapping[str, str] | None = None,
    log_level: str = "INFO",
) -> list[PartitionRun]:
    """Run ``job_ref`` (``"module:function"`` returning a partitioned job) once per partition.

    Runs execute in ``workers`` separate processes (spawned, so each imports the job cleanly);
    results come back in partition order. A failed run is reported, not raised. ``log_level``
    is the runs' console log level.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    import dagster as dg

    with dg.DagsterInstance.get() as instance:  # create its SQLite tables before workers race
        instance.get_runs(limit=1)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        list(pool.map(_warm, [job_ref] * workers))
        config = {"loggers": {"console": {"config": {"log_level": log_level}}}}
        futures = [pool.submit(_execute, job_ref, p, dict(tags or {}), config) for p in partitions]
        return [f.result() for f in futures]
