"""Durable record of Batch API jobs, so a restarted run polls its batches instead of paying twice.

One Delta table (``<root>/_lakeloom/batch_jobs``), append-only: each step of a job is one row,
written *before* the step it enables is relied on. ``uploaded`` (the input file id and every
request key of the job) is written right after the upload and before the batch is created;
``created`` (the batch id) right after creation and before the first poll; ``ended`` when the
provider finished it; ``merged`` once every answer is in the response cache. A job whose last
event is not ``merged`` is *open*: a later run whose cache misses overlap its keys resumes it
(polls the recorded batch, or creates the batch from the recorded file), whatever run, asset or
chunking started it. Nothing secret is stored: ids, keys, counts and statuses only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import polars as pl

from lakeloom.engine.types import RunContext
from lakeloom.storage.delta import table_exists, write_table
from lakeloom.storage.settings import Storage

Event = Literal["uploaded", "created", "ended", "merged"]
SCHEMA: dict[str, Any] = {
    "job": pl.String,
    "event": pl.String,
    "provider": pl.String,
    "endpoint": pl.String,
    "model": pl.String,
    "requests": pl.Int64,
    "keys": pl.List(pl.String),
    "input_file_id": pl.String,
    "batch_id": pl.String,
    "status": pl.String,
    "output_file_id": pl.String,
    "error_file_id": pl.String,
    "detail": pl.String,
    "run_id": pl.String,
    "asset": pl.String,
    "partition": pl.String,
    "recorded_at": pl.Datetime("us", "UTC"),
}


def job_id(provider: str, endpoint: str, model: str, keys: Sequence[str]) -> str:
    """Content address of a job: the provider, endpoint, model and its sorted request keys."""
    text = "\n".join([provider, endpoint, model, *sorted(keys)])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(slots=True)
class BatchJob:
    """One batch of requests: its keys and how far it got at the provider."""

    job: str
    provider: str
    endpoint: str
    model: str
    keys: list[str]
    input_file_id: str | None = None
    batch_id: str | None = None
    status: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    detail: str | None = None
    last_event: str | None = None
    resumed: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class BatchStore:
    """Append-only Delta log of batch jobs under ``<root>/_lakeloom/batch_jobs``.

    Examples:
        >>> store = BatchStore(Storage(root="/tmp/lake"))  # doctest: +SKIP
        >>> store.open_jobs("openai:https://api.openai.com/v1", "embeddings")  # doctest: +SKIP
        []
    """

    def __init__(self, storage: Storage | None = None, *, table: str = "batch_jobs") -> None:
        """Point at the table (created by the first record)."""
        self.storage = storage or Storage.from_env()
        self.uri = self.storage.table_uri("_lakeloom", table)

    @property
    def _options(self) -> dict[str, str] | None:
        return self.storage.storage_options or None

    def record(self, job: BatchJob, event: Event, context: RunContext | None = None) -> None:
        """Append one event of ``job`` (keys only with ``uploaded``); durable when it returns."""
        context = context or RunContext()
        row = {
            "job": job.job,
            "event": event,
            "provider": job.provider,
            "endpoint": job.endpoint,
            "model": job.model,
            "requests": len(job.keys),
            "keys": job.keys if event == "uploaded" else None,
            "input_file_id": job.input_file_id,
            "batch_id": job.batch_id,
            "status": job.status,
            "output_file_id": job.output_file_id,
            "error_file_id": job.error_file_id,
            "detail": job.detail,
            "run_id": context.run_id,
            "asset": context.asset,
            "partition": context.partition,
            "recorded_at": dt.datetime.now(dt.UTC),
        }
        write_table(pl.DataFrame([row], schema=SCHEMA), self.uri, storage_options=self._options)
        job.last_event = event

    def read(self) -> pl.DataFrame:
        """Every event (an empty frame with the schema when nothing was recorded)."""
        if not table_exists(self.uri, self._options):
            return pl.DataFrame(schema=SCHEMA)
        return pl.read_delta(self.uri, storage_options=self._options)

    def open_jobs(self, provider: str, endpoint: str) -> list[BatchJob]:
        """Jobs of this provider and endpoint that were uploaded but not yet merged."""
        if not table_exists(self.uri, self._options):
            return []
        events = (
            pl.scan_delta(self.uri, storage_options=self._options)
            .filter((pl.col("provider") == provider) & (pl.col("endpoint") == endpoint))
            .collect()
            .sort("recorded_at", maintain_order=True)
        )
        if events.is_empty():
            return []
        last = events.group_by("job", maintain_order=True).agg(
            pl.col("event").last(),
            *(
                pl.col(c).drop_nulls().last()
                for c in (
                    "model",
                    "input_file_id",
                    "batch_id",
                    "status",
                    "output_file_id",
                    "error_file_id",
                )
            ),
            pl.col("keys").drop_nulls().first(),
        )
        jobs = []
        for row in last.filter(pl.col("event") != "merged").iter_rows(named=True):
            if not row["keys"]:
                continue
            jobs.append(
                BatchJob(
                    job=row["job"],
                    provider=provider,
                    endpoint=endpoint,
                    model=row["model"],
                    keys=list(row["keys"]),
                    input_file_id=row["input_file_id"],
                    batch_id=row["batch_id"],
                    status=row["status"],
                    output_file_id=row["output_file_id"],
                    error_file_id=row["error_file_id"],
                    last_event=row["event"],
                    resumed=True,
                )
            )
        return jobs
