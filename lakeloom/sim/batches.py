"""The simulator's Files + Batches API: JSONL uploads, OpenAI-shaped batches that end after a delay.

Routes: ``POST/GET /v1/files``, ``GET/DELETE /v1/files/{id}``, ``GET /v1/files/{id}/content``,
``POST/GET /v1/batches``, ``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel`` and
``GET /stats/batches`` (uploads, batches, lines; what tests assert on).

A batch goes validating (line format, one model, ``batch_max_requests``) → in_progress for
``batch_delay_s`` (``request_counts.completed`` grows linearly) → finalizing → completed. Or:
failed (validation, or ``batch_reject_rate``), expired (``batch_expire_rate``: half the lines
answered, the rest ``batch_expired`` in the error file), cancelling → cancelled (lines answered so
far kept, the rest ``batch_cancelled``). Lines are answered by the online endpoints' own body
builders, seeded by the canonical body, so a request gets the same reply by batch as online;
``batch_fail_rate`` turns lines into HTTP 500s in the error file; ``batch_download_failures``,
``batch_cancel_failures`` and ``batch_create_failures`` make the first N output-file downloads,
cancels or creations (the batch is created all the same) answer HTTP 500, or drop the connection
with ``batch_fault_drop``.
Every answered line is billed in ``/stats`` (``billed.batch`` by model, ``answered_twice``).
Batches sit outside the online RPM/TPM limits (providers queue them separately). State is in
memory: the simulator is one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from typing import Any

from aiohttp import web

from lakeloom.sim.batch_lines import BatchError, answer_lines, validate_lines
from lakeloom.sim.batch_objects import SimBatch, SimFile, new_id
from lakeloom.sim.server import Simulator, error_body

ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings")
_JSON = "application/json"
STAT_COUNTERS = (
    "files_uploaded", "bytes_uploaded", "uploads_rejected", "batches_created",
    "batches_cancelled", "content_downloads", "downloads_failed", "cancels_failed",
    "creates_failed", "lines_ok", "lines_failed", "lines_unprocessed", "prompt_tokens",
    "completion_tokens",
)  # fmt: skip
"""The counters ``GET /stats/batches`` reports (0 when nothing happened)."""
STAT_SETTINGS = (
    "batch_delay_s", "batch_fail_rate", "batch_expire_rate", "batch_reject_rate",
    "batch_max_requests", "batch_max_bytes", "batch_download_failures", "batch_cancel_failures",
    "batch_create_failures", "batch_fault_drop", "batch_cancel_share",
)  # fmt: skip
"""The batch settings it echoes back, so a test sees which knobs its simulator runs with."""


def _error(
    status: type[web.HTTPException], message: str, code: str | None = None, param: str | None = None
) -> web.HTTPException:
    kind = "invalid_request_error" if status is not web.HTTPInternalServerError else "server_error"
    return status(body=error_body(message, kind, code, param), content_type=_JSON)


class BatchSim:
    """Files and batches of one simulated provider."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.config = sim.config
        self.files: dict[str, SimFile] = {}
        self.batches: dict[str, SimBatch] = {}
        self.counts: Counter[str] = Counter()
        self.rng = random.Random(self.config.seed ^ 0xBA7C4)
        self.tasks: set[asyncio.Task[None]] = set()

    def _auth(self, request: web.Request) -> None:
        expected = self.sim._auth  # noqa: SLF001 - same simulator, same key
        if expected is not None and request.headers.get("Authorization") != expected:
            raise _error(web.HTTPUnauthorized, "Incorrect API key provided.", "invalid_api_key")

    def _reply(self, body: Any, status: int = 200) -> web.Response:
        return web.Response(status=status, body=json.dumps(body).encode(), content_type=_JSON)

    def _inject(self, counter: str, limit: int) -> bool:
        """Count one injected failure while fewer than ``limit`` were injected (then: False)."""
        if self.counts[counter] >= limit:
            return False
        self.counts[counter] += 1
        return True

    def _fault(self, request: web.Request) -> web.HTTPException:
        """An injected failure: HTTP 500, or (``batch_fault_drop``) a dropped connection."""
        if self.config.batch_fault_drop and request.transport is not None:
            request.transport.close()  # the client sees the connection end without an answer
        return _error(web.HTTPInternalServerError, "The server had an error (injected).")

    def _file(self, request: web.Request) -> SimFile:
        file_id = request.match_info["file_id"]
        found = self.files.get(file_id)
        if found is None:
            raise _error(web.HTTPNotFound, f"No such File object: {file_id}", param="id")
        return found

    def _batch(self, request: web.Request) -> SimBatch:
        batch_id = request.match_info["batch_id"]
        found = self.batches.get(batch_id)
        if found is None:
            raise _error(web.HTTPNotFound, f"No batch found with id '{batch_id}'.", "not_found")
        return found

    # -- files ----------------------------------------------------------------------------------
    async def create_file(self, request: web.Request) -> web.Response:
        """``POST /v1/files`` (multipart: ``purpose`` + ``file``)."""
        self._auth(request)
        limit = self.config.batch_max_bytes
        purpose, name, data = None, "upload.jsonl", bytearray()
        try:
            reader = await request.multipart()
        except (AssertionError, ValueError, KeyError):
            raise _error(web.HTTPBadRequest, "expected a multipart/form-data upload") from None
        while (part := await reader.next()) is not None:
            if part.name == "purpose":
                purpose = (await part.text()).strip()  # type: ignore[union-attr]
            elif part.name == "file":
                name = part.filename or name  # type: ignore[union-attr]
                while chunk := await part.read_chunk(1 << 20):  # type: ignore[union-attr]
                    data += chunk
                    if len(data) > limit:
                        self.counts["uploads_rejected"] += 1
                        raise _error(
                            web.HTTPBadRequest,
                            f"File is too large: the maximum size for purpose 'batch' is "
                            f"{limit} bytes.",
                            "file_too_large",
                            "file",
                        )
        if purpose != "batch":
            raise _error(
                web.HTTPBadRequest,
                f"purpose must be 'batch' (the simulator stores batch input files "
                f"only), got {purpose!r}",
                "invalid_purpose",
                "purpose",
            )
        if not data:
            raise _error(web.HTTPBadRequest, "the uploaded file is empty", "empty_file", "file")
        stored = SimFile(new_id("file-"), name, "batch", bytes(data))
        self.files[stored.id] = stored
        self.counts["files_uploaded"] += 1
        self.counts["bytes_uploaded"] += len(data)
        return self._reply(stored.as_json())

    async def list_files(self, request: web.Request) -> web.Response:
        """``GET /v1/files`` (optionally ``?purpose=``)."""
        self._auth(request)
        purpose = request.query.get("purpose")
        data = [f.as_json() for f in self.files.values() if purpose in (None, f.purpose)]
        return self._reply({"object": "list", "data": data, "has_more": False})

    async def get_file(self, request: web.Request) -> web.Response:
        """``GET /v1/files/{id}``."""
        self._auth(request)
        return self._reply(self._file(request).as_json())

    async def file_content(self, request: web.Request) -> web.Response:
        """``GET /v1/files/{id}/content``."""
        self._auth(request)
        stored = self._file(request)
        if stored.purpose == "batch_output" and self._inject(
            "downloads_failed", self.config.batch_download_failures
        ):
            raise self._fault(request)
        self.counts["content_downloads"] += 1
        return web.Response(body=stored.data, content_type="application/octet-stream")

    async def delete_file(self, request: web.Request) -> web.Response:
        """``DELETE /v1/files/{id}``."""
        self._auth(request)
        stored = self._file(request)
        del self.files[stored.id]
        return self._reply({"id": stored.id, "object": "file", "deleted": True})

    # -- batches --------------------------------------------------------------------------------
    async def create_batch(self, request: web.Request) -> web.Response:
        """``POST /v1/batches``."""
        self._auth(request)
        try:
            body = json.loads(await request.read())
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise _error(web.HTTPBadRequest, "request body must be a JSON object")
        file_id, endpoint = body.get("input_file_id"), body.get("endpoint")
        window = body.get("completion_window")
        if endpoint not in ENDPOINTS:
            raise _error(
                web.HTTPBadRequest,
                f"endpoint must be one of {list(ENDPOINTS)}, got {endpoint!r}",
                "invalid_value",
                "endpoint",
            )
        if window != "24h":
            raise _error(
                web.HTTPBadRequest,
                "completion_window must be '24h'",
                "invalid_value",
                "completion_window",
            )
        stored = self.files.get(file_id) if isinstance(file_id, str) else None
        if stored is None or stored.purpose != "batch":
            raise _error(
                web.HTTPBadRequest,
                f"Invalid 'input_file_id': {file_id!r} is not an uploaded batch file.",
                "invalid_value",
                "input_file_id",
            )
        metadata = body.get("metadata")
        batch = SimBatch(
            new_id("batch_"),
            endpoint,
            stored.id,
            window,
            metadata if isinstance(metadata, dict) else None,
        )
        self.batches[batch.id] = batch
        self.counts["batches_created"] += 1
        task = asyncio.get_running_loop().create_task(self._run(batch, stored.data))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        if self._inject("creates_failed", self.config.batch_create_failures):
            raise self._fault(request)  # created all the same: it runs and bills
        return self._reply(batch.as_json(self.config.batch_delay_s))

    async def get_batch(self, request: web.Request) -> web.Response:
        """``GET /v1/batches/{id}``."""
        self._auth(request)
        return self._reply(self._batch(request).as_json(self.config.batch_delay_s))

    async def list_batches(self, request: web.Request) -> web.Response:
        """``GET /v1/batches?limit=&after=`` (newest first, cursor pagination)."""
        self._auth(request)
        try:
            limit = max(1, min(100, int(request.query.get("limit", "20"))))
        except ValueError:
            raise _error(web.HTTPBadRequest, "limit must be an integer", param="limit") from None
        ordered = list(reversed(self.batches.values()))
        after = request.query.get("after")
        if after:
            ids = [b.id for b in ordered]
            ordered = ordered[ids.index(after) + 1 :] if after in ids else []
        page = ordered[:limit]
        delay = self.config.batch_delay_s
        return self._reply(
            {
                "object": "list",
                "data": [b.as_json(delay) for b in page],
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
                "has_more": len(ordered) > limit,
            }
        )

    async def cancel_batch(self, request: web.Request) -> web.Response:
        """``POST /v1/batches/{id}/cancel``."""
        self._auth(request)
        batch = self._batch(request)
        if self._inject("cancels_failed", self.config.batch_cancel_failures):
            raise self._fault(request)
        if batch.status in ("validating", "in_progress"):
            batch.mark("cancelling")
            batch.cancel.set()
            self.counts["batches_cancelled"] += 1
        elif batch.status not in ("cancelling", "cancelled"):
            raise _error(web.HTTPBadRequest, f"Cannot cancel a batch with status '{batch.status}'.")
        return self._reply(batch.as_json(self.config.batch_delay_s))

    async def stats(self, request: web.Request) -> web.Response:
        """``GET /stats/batches``: counters, batch statuses and the batch settings."""
        statuses = Counter(b.status for b in self.batches.values())
        return self._reply(
            {
                **{k: self.counts[k] for k in STAT_COUNTERS},
                "statuses": dict(statuses),
                "billed": {m: dict(u) for m, u in self.sim.stats.billed["batch"].items()},
                "config": self.config.model_dump(include=set(STAT_SETTINGS)),
            }
        )

    # -- lifecycle ------------------------------------------------------------------------------
    async def _run(self, batch: SimBatch, data: bytes) -> None:
        cfg = self.config
        await asyncio.sleep(min(0.05, cfg.batch_delay_s))
        try:
            lines = validate_lines(data, batch.endpoint, cfg.batch_max_requests)
        except BatchError as exc:
            batch.errors = exc.errors
            batch.mark("failed")
            return
        batch.total = len(lines)
        if batch.cancel.is_set():
            await self._finish(batch, lines, 0, "cancelled")
            return
        if self.rng.random() < cfg.batch_reject_rate:
            batch.errors = [
                {
                    "code": "simulated_failure",
                    "line": None,
                    "param": None,
                    "message": "The batch failed validation (injected).",
                }
            ]
            batch.mark("failed")
            return
        batch.mark("in_progress")
        batch.started = time.monotonic()
        expire = self.rng.random() < cfg.batch_expire_rate
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(batch.cancel.wait(), timeout=cfg.batch_delay_s)
        if batch.cancel.is_set():
            share = cfg.batch_cancel_share
            done = batch.answered(cfg.batch_delay_s) if share is None else int(len(lines) * share)
            await self._finish(batch, lines, done, "cancelled")
        elif expire:
            await self._finish(batch, lines, len(lines) // 2, "expired")
        else:
            batch.mark("finalizing")
            await self._finish(batch, lines, len(lines), "completed")

    async def _finish(
        self, batch: SimBatch, lines: list[dict[str, Any]], upto: int, end: str
    ) -> None:
        seed = self.rng.getrandbits(64)
        result = await asyncio.to_thread(
            answer_lines,
            self.sim,
            lines,
            upto,
            end,
            endpoint=batch.endpoint,
            fail_rate=self.config.batch_fail_rate,
            seed=seed,
        )
        if result.output:
            out = SimFile(
                new_id("file-"), f"{batch.id}_output.jsonl", "batch_output", result.output
            )
            self.files[out.id] = out
            batch.output_file_id = out.id
        if result.errors:
            err = SimFile(new_id("file-"), f"{batch.id}_error.jsonl", "batch_output", result.errors)
            self.files[err.id] = err
            batch.error_file_id = err.id
        batch.completed, batch.failed = result.ok, result.failed
        self.counts["lines_ok"] += result.ok
        self.counts["lines_failed"] += result.failed - result.unprocessed
        self.counts["lines_unprocessed"] += result.unprocessed
        self.counts["prompt_tokens"] += result.prompt_tokens
        self.counts["completion_tokens"] += result.completion_tokens
        for model, body, prompt, completion in result.billed:
            self.sim.stats.bill("batch", model, body, prompt, completion)
        batch.mark(end)

    async def close(self, app: web.Application) -> None:
        """Stop the batches still running (on server shutdown)."""
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


BATCHES_KEY = web.AppKey("batches", BatchSim)


def register(app: web.Application, sim: Simulator) -> None:
    """Add the Files and Batches routes to a simulator app (``server.EXTENSIONS``)."""
    batches = BatchSim(sim)
    app[BATCHES_KEY] = batches
    r = app.router
    r.add_post("/v1/files", batches.create_file)
    r.add_get("/v1/files", batches.list_files)
    r.add_get("/v1/files/{file_id}", batches.get_file)
    r.add_delete("/v1/files/{file_id}", batches.delete_file)
    r.add_get("/v1/files/{file_id}/content", batches.file_content)
    r.add_post("/v1/batches", batches.create_batch)
    r.add_get("/v1/batches", batches.list_batches)
    r.add_get("/v1/batches/{batch_id}", batches.get_batch)
    r.add_post("/v1/batches/{batch_id}/cancel", batches.cancel_batch)
    r.add_get("/stats/batches", batches.stats)
    app.on_cleanup.append(batches.close)
