"""One engine call's spend: journaled as results arrive, booked in the cost ledger once.

The journal is a local JSON-lines file per call, one ``write`` per sent result, handed to the OS
before the response enters the cache journal; it is removed once the call's ledger rows are in
Delta. A ``kill -9`` in between leaves it for :meth:`~lakeloom.engine.ledger.CostLedger.recover`.
"""

from __future__ import annotations

import fcntl
import json
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from lakeloom.engine.crash import crash_point
from lakeloom.engine.ledger_rows import base_row, ledger_rows, partition_shares, result_record
from lakeloom.engine.types import LLMResult, RunContext


class SpendLedger(Protocol):
    """Where a journal books its rows (``lakeloom.engine.ledger.CostLedger`` is one).

    A protocol, so that the ledger can import the journal and the journal not the ledger.
    """

    def journal(self, base: Any) -> Any:
        """Open the crash journal of one engine call."""
        ...

    def append(self, rows: Any) -> Any:
        """Book ledger rows."""
        ...


class SpendJournal:
    """One engine call's paid results, one JSON line each, handed to the OS as they arrive."""

    def __init__(self, directory: Path, base: Mapping[str, Any]) -> None:
        """Prepare a segment (created, and ``flock``-ed, by the first line)."""
        self.id = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.path = directory / f"{self.id}.jsonl"
        self.base = dict(base, journal=self.id)
        self._fd: int | None = None

    def add(self, record: Mapping[str, Any]) -> None:
        """Journal one result record (one ``write`` call: survives ``kill -9``)."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(self._fd, (json.dumps(self.base) + "\n").encode())
        os.write(self._fd, (json.dumps(record) + "\n").encode())

    def close(self, *, remove: bool) -> None:
        """Release the segment; ``remove`` once its rows are in the ledger."""
        if self._fd is not None:
            if remove:
                self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None


class CallSpend:
    """One engine call's results as they finish: journaled when sent, booked in the ledger once.

    :meth:`add` runs before the response enters the cache journal, so whatever the cache holds
    has its spend journaled; :meth:`book` (normal end, failure or cancellation alike) writes the
    ledger rows, then drops the journal. A ``kill -9`` in between leaves the journal for
    :meth:`CostLedger.recover`.
    """

    def __init__(
        self, ledger: SpendLedger | None, endpoint: str, context: RunContext, price_table: str
    ) -> None:
        """Bind the call's ledger (None: nothing is written) and who is spending."""
        self.ledger, self.endpoint, self.context = ledger, endpoint, context
        self.price_table = price_table
        self.results: list[LLMResult] = []
        self.uncertain: list[float] = []
        self.booked = False
        base = base_row(endpoint, context, price_table, None)
        self._journal = ledger.journal(base) if ledger is not None else None

    def add(self, result: LLMResult, uncertain_usd: float = 0.0) -> None:
        """Keep one finished result; journal it when it was sent (it may have cost money)."""
        self.results.append(result)
        self.uncertain.append(uncertain_usd)
        if self._journal is not None and result.attempts > 0:
            shares = partition_shares(self.context, result.key)
            self._journal.add(result_record(result, shares, uncertain_usd))

    @property
    def spent_usd(self) -> float:
        """Reported cost + uncertain worst cases of this call so far."""
        return sum(r.cost_usd for r in self.results) + sum(self.uncertain)

    def book(self, hits: pl.DataFrame) -> None:
        """Write this call's ledger rows (once); ``hits``: ``key`` and ``model`` of cache hits."""
        if self.booked:
            return
        self.booked = True
        self.context.spent_usd += self.spent_usd
        if self.ledger is None:
            return
        journal = self._journal
        rows = ledger_rows(
            self.endpoint,
            self.context,
            hits,
            self.results,
            price_table=self.price_table,
            journal=journal.id if journal is not None else None,
            uncertain_usd=self.uncertain,
        )
        crash_point("before_ledger")  # responses durable in the cache, ledger not yet written
        try:
            self.ledger.append(rows)
        except BaseException:
            if journal is not None:
                journal.close(remove=False)  # the next engine books it
            raise
        if journal is not None:
            journal.close(remove=True)
