"""The simulator's files and batches as OpenAI objects (``FileObject``, ``Batch``)."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

_WINDOW_S = 24 * 3600


def new_id(prefix: str) -> str:
    """An OpenAI-looking id: ``file-…``, ``batch_…``."""
    return prefix + uuid.uuid4().hex[:24]


@dataclass(slots=True)
class SimFile:
    """One stored file (an upload, or a batch's output/error file)."""

    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int = field(default_factory=lambda: int(time.time()))

    def as_json(self) -> dict[str, Any]:
        """The OpenAI file object."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
            "expires_at": None,
        }


@dataclass(slots=True)
class SimBatch:
    """One batch and its lifecycle timestamps."""

    id: str
    endpoint: str
    input_file_id: str
    completion_window: str
    metadata: dict[str, str] | None
    created_at: int = field(default_factory=lambda: int(time.time()))
    status: str = "validating"
    total: int = 0
    completed: int = 0
    failed: int = 0
    started: float | None = None  # monotonic time in_progress began
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[dict[str, Any]] | None = None
    times: dict[str, int] = field(default_factory=dict)
    cancel: asyncio.Event = field(default_factory=asyncio.Event)

    def answered(self, delay_s: float) -> int:
        """Lines answered so far: they are answered at an even pace over ``delay_s``."""
        if self.started is None:
            return 0
        share = 1.0 if delay_s <= 0 else (time.monotonic() - self.started) / delay_s
        return int(self.total * min(1.0, share))

    def counts(self, delay_s: float) -> dict[str, int]:
        """``request_counts``: exact once ended, a linear estimate while running."""
        if self.status in ("in_progress", "finalizing", "cancelling") and self.started:
            return {"total": self.total, "completed": self.answered(delay_s), "failed": 0}
        return {"total": self.total, "completed": self.completed, "failed": self.failed}

    def as_json(self, delay_s: float) -> dict[str, Any]:
        """The OpenAI batch object."""
        t = self.times
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "in_progress_at": t.get("in_progress"),
            "expires_at": self.created_at + _WINDOW_S,
            "finalizing_at": t.get("finalizing"),
            "completed_at": t.get("completed"),
            "failed_at": t.get("failed"),
            "expired_at": t.get("expired"),
            "cancelling_at": t.get("cancelling"),
            "cancelled_at": t.get("cancelled"),
            "request_counts": self.counts(delay_s),
            "metadata": self.metadata,
        }

    def mark(self, status: str) -> None:
        """Move to ``status`` and stamp its time."""
        self.status = status
        self.times[status] = int(time.time())
