"""Where limiter state lives: in this process, or in a SQLite file shared by processes.

A store runs ``limiter_core.decide`` atomically on one provider's row. The SQLite store does it
in a ``BEGIN IMMEDIATE`` transaction (WAL mode, so readers never block), which serializes the
read-modify-write across every process on the machine; one transaction admits a whole batch of
waiting requests. Its clock is ``time.time()``, common to all processes.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Protocol

from lakeloom.engine.limiter.core import STATE_FIELDS, Decision, Feedback, State, Tuning, decide
from lakeloom.storage.redact import strip_url_secrets


def store_key(key: str) -> str:
    """The name a provider's state is stored under: its key with no URL credentials in it.

    ``ProviderConfig.limiter_key`` is already clean; this guards keys built elsewhere (a
    ``provider_key`` or a caller of ``make_limiter``) before they reach a table or Redis.
    """
    return strip_url_secrets(key)


class LimiterUnavailable(RuntimeError):
    """The shared limiter state cannot be reached (the run must stop rather than overrun)."""


class LimiterStore(Protocol):
    """Atomically applies feedback and reserves slots for one provider key."""

    url: str

    async def exchange(
        self,
        key: str,
        costs: list[int],
        fb: Feedback,
        tuning: Tuning,
        rpm: float | None,
        tpm: float | None,
    ) -> Decision:
        """Run ``decide`` on ``key``'s state and persist it."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


_MEMORY: dict[str, State] = {}
_MEMORY_LOCK = threading.Lock()


class MemoryStore:
    """State in this process only (``memory://``): for tests and single-process tools."""

    url = "memory://"

    async def exchange(
        self,
        key: str,
        costs: list[int],
        fb: Feedback,
        tuning: Tuning,
        rpm: float | None,
        tpm: float | None,
    ) -> Decision:
        """Run ``decide`` under a process-wide lock."""
        with _MEMORY_LOCK:
            state = _MEMORY.setdefault(store_key(key), State())
            return decide(state, time.time(), costs, fb, tuning, rpm, tpm)

    def close(self) -> None:
        """Nothing to release."""


_COLUMNS = ", ".join(STATE_FIELDS)
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS limiter_state (key TEXT PRIMARY KEY, "
    + ", ".join(f"{name} REAL NOT NULL" for name in STATE_FIELDS)
    + ")"
)
_SELECT = f"SELECT {_COLUMNS} FROM limiter_state WHERE key = ?"
_UPSERT = (
    f"INSERT OR REPLACE INTO limiter_state (key, {_COLUMNS}) "
    f"VALUES (?, {', '.join('?' * len(STATE_FIELDS))})"
)


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """Upgrade a state file written by an older lakeloom (new fields get their defaults)."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(limiter_state)")}
    defaults = State()
    for name in STATE_FIELDS:
        if name not in have:
            try:
                conn.execute(
                    f"ALTER TABLE limiter_state ADD COLUMN {name} REAL NOT NULL "
                    f"DEFAULT {float(getattr(defaults, name))!r}"
                )
            except sqlite3.OperationalError as exc:  # another process added it first
                if "duplicate column" not in str(exc):
                    raise


def _enable_wal(conn: sqlite3.Connection, attempts: int = 200) -> None:
    """Switch the file to WAL, retrying while another process holds the lock.

    Changing the journal mode needs an exclusive lock, and SQLite answers ``database is
    locked`` at once (its busy handler is skipped) when two processes open a new file together.
    """
    for attempt in range(attempts):
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.005 * (1 + attempt % 10))


class SQLiteStore:
    """State in one SQLite file, one row per provider key, shared by every local process."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self._local = threading.local()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._conn()
            conn.execute(_SCHEMA)
            _add_missing_columns(conn)
        except (OSError, sqlite3.Error) as exc:
            raise LimiterUnavailable(f"cannot open limiter state {self.path}: {exc}") from exc

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            _enable_wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")  # state is advisory: no fsync per commit
            self._local.conn = conn
        return conn

    async def exchange(
        self,
        key: str,
        costs: list[int],
        fb: Feedback,
        tuning: Tuning,
        rpm: float | None,
        tpm: float | None,
    ) -> Decision:
        """One ``BEGIN IMMEDIATE`` transaction (a few tens of microseconds, no thread hop)."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                name = store_key(key)
                row = conn.execute(_SELECT, (name,)).fetchone()
                state = State(*row) if row else State()
                decision = decide(state, time.time(), costs, fb, tuning, rpm, tpm)
                conn.execute(_UPSERT, (name, *state.as_row()))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise LimiterUnavailable(f"limiter state {self.path} failed: {exc}") from exc
        return decision

    def read(self, key: str) -> State | None:
        """Return the stored state of ``key`` (for inspection and tests)."""
        row = self._conn().execute(_SELECT, (store_key(key),)).fetchone()
        return State(*row) if row else None

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
