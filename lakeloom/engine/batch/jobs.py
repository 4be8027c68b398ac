"""One Batch API job, from upload to answers merged into the response cache.

Order matters for "never pay twice": the input file id is recorded before the batch is created,
the batch id before the first poll, and the job is marked ``merged`` only after its answers are
committed to the cache. A batch that outlives ``max_wait_s`` is cancelled (answers so far are
kept); if it is still not cancelled after ``cancel_wait_s``, its lines are reported, not resent,
and the job stays open so that a later run collects it.

Once a batch exists, a failing call (a poll, a cancel, a download: 5xx, 429, a dropped
connection, even 401) never sends its lines online: the batch answers and bills them anyway. The
job stays open and the next run resumes the same batch and downloads its files. Only a batch or
file the provider no longer knows (404) closes the job as ``lost`` and lets its lines be resent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import openai
import polars as pl

from lakeloom.engine.batch.files import (
    TERMINAL,
    URLS,
    BatchAPI,
    LineOutcome,
    batch_errors,
    jsonl_line,
    parse_file,
)
from lakeloom.engine.batch.store import BatchJob, BatchStore
from lakeloom.engine.cache.store import ResponseCache
from lakeloom.engine.crash import crash_point
from lakeloom.engine.embed_inputs import per_input_entries
from lakeloom.engine.keys import cache_keys
from lakeloom.engine.types import LLMRequest, LLMResult, RunContext


class JobLostError(RuntimeError):
    """The provider no longer knows a recorded batch or file (another account, or purged)."""


class BatchUnknownError(RuntimeError):
    """Whether a job's batch exists cannot be told now (creating or listing it failed)."""


@dataclass(slots=True)
class JobOutcome:
    """Every key of a job with the provider's answer or error; ``open`` = collect it later."""

    job: BatchJob
    lines: dict[str, LineOutcome] = field(default_factory=dict)
    seconds: float = 0.0
    still_open: bool = False


@dataclass(slots=True)
class JobTiming:
    """Polling and waiting knobs (from ``BatchSettings``)."""

    poll_interval_s: float
    poll_max_interval_s: float
    max_wait_s: float
    cancel_wait_s: float
    progress_interval_s: float = 30.0


class JobRunner:
    """Runs jobs of one endpoint against one provider; shared by every job of a run."""

    def __init__(
        self,
        api: BatchAPI,
        store: BatchStore,
        cache: ResponseCache | None,
        *,
        endpoint: str,
        namespace: str,
        timing: JobTiming,
        context: RunContext,
        progress: Callable[[str], object] | None = None,
        on_answers: Callable[[BatchJob, Mapping[str, LineOutcome], float], None] | None = None,
        inputs: Mapping[str, LLMRequest] | None = None,
    ) -> None:
        """Bind the provider API, the job log, the cache and the run's context.

        ``on_answers`` sees a job's lines before its answers enter the cache (the spend journal).
        ``inputs`` holds the embeddings requests that name their inputs' keys: their answers are
        cached per input (``engine.embed_inputs``), as online; their keys go to ``per_input``.
        """
        self.api = api
        self.store = store
        self.cache = cache
        self.endpoint = endpoint
        self.namespace = namespace
        self.timing = timing
        self.context = context
        self.progress = progress
        self.on_answers = on_answers
        self.inputs = inputs or {}
        self.per_input: set[str] = set()
        self._reported: dict[str, float] = {}

    async def _record(self, job: BatchJob, event: Any) -> None:
        await asyncio.to_thread(self.store.record, job, event, self.context)

    def _say(self, job: BatchJob, text: str, *, force: bool = False) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        if force or now - self._reported.get(job.job, -1e9) >= self.timing.progress_interval_s:
            self._reported[job.job] = now
            self.progress(
                f"batch {job.batch_id or job.job} ({job.model}, {len(job.keys):,}): {text}"
            )

    async def submit(self, job: BatchJob, texts: Mapping[str, str]) -> None:
        """Upload the job's JSONL (unless recorded already) and create its batch."""
        if job.input_file_id is None:
            url = URLS[self.endpoint]
            data = b"".join(jsonl_line(url, key, texts[key]) for key in job.keys)
            job.input_file_id = await self.api.upload(f"lakeloom-{job.job}.jsonl", data)
            await self._record(job, "uploaded")
        if job.batch_id is None:
            batch = await self._find(job) if job.resumed else None
            if batch is None:
                try:
                    batch = await self.api.create(
                        job.input_file_id, URLS[self.endpoint], {"lakeloom_job": job.job}
                    )
                except (openai.APIConnectionError, openai.InternalServerError) as exc:
                    batch = await self._find(job, exc)  # created after all?
                    if batch is None:
                        raise
            crash_point("batch_created")
            job.batch_id, job.status = batch.id, batch.status
            await self._record(job, "created")
            crash_point("batch_submitted")
            self._say(job, f"submitted ({batch.status})", force=True)

    async def _find(self, job: BatchJob, failed: Exception | None = None) -> Any | None:
        """The batch that a crash (or a create that failed) may have left running, or None.

        Raises :class:`BatchUnknownError` when the provider cannot be asked: such a batch may
        exist and bill, so its lines must not be sent again.
        """
        try:
            return await self.api.find(job.input_file_id or "", job.job)
        except (openai.APIConnectionError, openai.APIStatusError) as exc:
            what = f"creating it failed ({_reason(failed)})" if failed else "a run may have made it"
            raise BatchUnknownError(f"{what}, and listing batches failed ({_reason(exc)})") from exc

    async def _poll(self, job: BatchJob) -> Any | None:
        """Poll with backoff until the batch ends; cancel it past ``max_wait_s``."""
        t = self.timing
        started = time.monotonic()
        deadline, give_up, cancelled = started + t.max_wait_s, None, False
        interval, batch = t.poll_interval_s, None
        while True:
            try:
                batch = await self.api.retrieve(job.batch_id or "")
            except openai.NotFoundError as exc:
                raise JobLostError(f"batch {job.batch_id} not found at the provider") from exc
            except (openai.APIConnectionError, openai.InternalServerError, openai.RateLimitError):
                pass  # the SDK retried already; keep polling until the deadline
            if batch is not None:
                counts = batch.request_counts
                done = f" {counts.completed:,}/{counts.total:,}" if counts else ""
                self._say(job, f"{batch.status}{done} after {time.monotonic() - started:,.0f}s")
                if batch.status in TERMINAL:
                    return batch
            now = time.monotonic()
            if give_up is not None and now >= give_up:
                return None
            if now >= deadline and not cancelled:
                if give_up is None:
                    self._say(job, f"not done after max_wait_s={t.max_wait_s:,.0f}s: cancelling")
                    give_up = now + t.cancel_wait_s
                cancelled = await self._cancel(job)
            await asyncio.sleep(max(0.05, min(interval, (give_up or deadline) - now)))
            interval = min(interval * 1.5, t.poll_max_interval_s)

    async def _cancel(self, job: BatchJob) -> bool:
        """Ask for a cancel; False when the call failed (the batch still runs: ask again)."""
        try:
            await self.api.cancel(job.batch_id or "")
        except openai.BadRequestError:  # ended meanwhile
            return True
        except openai.NotFoundError as exc:
            raise JobLostError(f"batch {job.batch_id} not found at the provider") from exc
        except (openai.APIConnectionError, openai.APIStatusError) as exc:
            self._say(job, f"cancel failed ({_reason(exc)}); the batch runs on, asking again")
            return False
        return True

    async def _download(self, file_id: str) -> str:
        """A result file's text; a file the provider no longer has loses the job's answers."""
        try:
            return await self.api.content(file_id)
        except openai.NotFoundError as exc:
            raise JobLostError(f"result file {file_id} not found at the provider") from exc

    async def collect(self, job: BatchJob) -> JobOutcome:
        """Wait for the job's batch, download its files, merge answers into the cache."""
        started = time.monotonic()
        batch = await self._poll(job)
        if batch is None:  # still cancelling: never resend what may still be billed
            reason = (
                f"batch {job.batch_id} still running after max_wait_s + cancel_wait_s; "
                "not resent (a later run collects it)"
            )
            lines = {k: LineOutcome(k, error=reason) for k in job.keys}
            return JobOutcome(job, lines, time.monotonic() - started, still_open=True)
        job.status = batch.status
        job.output_file_id, job.error_file_id = batch.output_file_id, batch.error_file_id
        job.detail = batch_errors(batch) if batch.status == "failed" else None
        if job.last_event != "ended":  # a resumed job whose download failed logged it already
            await self._record(job, "ended")
        crash_point("batch_ended")
        lines: dict[str, LineOutcome] = {}
        for file_id in (batch.error_file_id, batch.output_file_id):  # answers win over errors
            if file_id:  # a failed download leaves the job open (see run): never resent
                lines.update(parse_file(self.endpoint, await self._download(file_id)))
        missing = f"batch {batch.status}" + (f": {job.detail}" if job.detail else "")
        for key in job.keys:
            lines.setdefault(key, LineOutcome(key, error=f"{missing}: no result", retryable=True))
        if self.on_answers is not None:
            self.on_answers(job, lines, time.monotonic() - started)
        await asyncio.to_thread(self._merge, job, lines)
        await self._record(job, "merged")
        crash_point("batch_merged")
        ok = sum(o.text is not None for o in lines.values())
        self._say(job, f"{batch.status}: {ok:,} answers, {len(lines) - ok:,} errors", force=True)
        return JobOutcome(job, lines, time.monotonic() - started)

    def _merge(self, job: BatchJob, lines: Mapping[str, LineOutcome]) -> None:
        """Commit every answer of the job to the response cache (same keys as online)."""
        if self.cache is None:
            return
        good, parts = self._split([o for o in lines.values() if o.text is not None])
        if not good and not parts:
            return
        keys = pl.Series("key", [o.key for o in good], dtype=pl.String)
        usage = [(o.body or {}).get("usage") or {} for o in good]
        self.cache.put(
            pl.DataFrame(
                {
                    "request_hash": [*cache_keys(keys, self.namespace), *(p[0] for p in parts)],
                    "model": [job.model] * (len(good) + len(parts)),
                    "endpoint": [self.endpoint] * (len(good) + len(parts)),
                    "response": [*(o.text for o in good), *(p[1] for p in parts)],
                    "input_tokens": [
                        *(int(u.get("prompt_tokens") or 0) for u in usage),
                        *(p[2] for p in parts),
                    ],
                    "output_tokens": [
                        *(int(u.get("completion_tokens") or 0) for u in usage),
                        *([0] * len(parts)),
                    ],
                },
                schema_overrides={"input_tokens": pl.Int64, "output_tokens": pl.Int64},
            )
        )

    def _split(
        self, good: list[LineOutcome]
    ) -> tuple[list[LineOutcome], list[tuple[str, str, int]]]:
        """Answers to keep whole, and (key, answer, tokens) per input of the ``inputs`` ones."""
        whole: list[LineOutcome] = []
        parts: list[tuple[str, str, int]] = []
        for o in good:
            request = self.inputs.get(o.key)
            usage = (o.body or {}).get("usage") or {}
            answer = LLMResult(
                o.key, "ok", response=o.body, input_tokens=int(usage.get("prompt_tokens") or 0)
            )
            entries = per_input_entries(request, answer, self.namespace) if request else None
            if entries is None:
                whole.append(o)
            else:
                parts.extend(entries)
                self.per_input.add(o.key)
        return whole, parts

    async def run(self, job: BatchJob, texts: Mapping[str, str]) -> JobOutcome:
        """Submit (or resume) and collect one job; provider errors become line errors."""
        started = time.monotonic()
        try:
            await self.submit(job, texts)
            return await self.collect(job)
        except openai.APIStatusError as exc:
            fatal = exc.status_code in (401, 403)
            reason = f"batch {job.last_event or 'submission'} failed: {_reason(exc)}"
        except openai.APIConnectionError as exc:
            fatal, reason = False, f"batch {job.last_event or 'submission'} failed: {exc}"
        except BatchUnknownError as exc:
            reason = f"batch of job {job.job} may exist: {exc}; not resent (a later run looks)"
            return self._failed(job, reason, started, still_open=True)
        except JobLostError as exc:
            fatal, reason = False, f"batch failed: {exc}"
            job.status, job.detail = "lost", reason  # closed: its keys are settled below
            await self._record(job, "merged")
            return self._failed(job, reason, started, retryable=True)
        if job.batch_id is not None:  # the batch runs (and bills) on: collect it later
            reason += f"; batch {job.batch_id} left open, not resent (a later run collects it)"
            return self._failed(job, reason, started, fatal=fatal, still_open=True)
        return self._failed(job, reason, started, retryable=not fatal, fatal=fatal)

    @staticmethod
    def _failed(
        job: BatchJob,
        reason: str,
        started: float,
        *,
        retryable: bool = False,
        fatal: bool = False,
        still_open: bool = False,
    ) -> JobOutcome:
        """Every key of ``job`` failed with ``reason``."""
        lines = {
            k: LineOutcome(k, error=reason, retryable=retryable, fatal=fatal) for k in job.keys
        }
        return JobOutcome(job, lines, time.monotonic() - started, still_open=still_open)


def _reason(exc: Exception | None) -> str:
    """``HTTP 500: message`` (or the connection error), short."""
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: " + str(getattr(exc, "message", exc))[:300]
    return str(exc)[:300]
