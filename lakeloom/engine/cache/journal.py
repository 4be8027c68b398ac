"""The response cache's journal files: locked before visible, written through, handed over.

Lines are written through to the OS; a dead writer's segments are handed over to a replayer.

A segment is created under a hidden staging name (``.<pid>-<id>.new``), locked with ``flock``,
then renamed to ``<pid>-<id>.jsonl``: a replayer only ever sees segments that are locked while
their writer lives (the lock belongs to the open file and survives the rename). A replayer takes
a segment only if it gets the lock and the name still names the file it opened (not one
already replayed and removed by another process). A staging file whose creator died is empty
(lines are written only after the rename) and is removed; one whose creator lives is kept.
"""

from __future__ import annotations

import fcntl
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def open_segment(directory: Path) -> tuple[int, Path]:
    """Create, lock, then publish a new segment; returns its descriptor and visible path."""
    name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    staging = directory / f".{name}.new"  # not *.jsonl: invisible to replay
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
    fd = os.open(staging, flags, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        path = directory / f"{name}.jsonl"
        os.rename(staging, path)  # the lock travels with the open file
    except BaseException:
        os.close(fd)
        staging.unlink(missing_ok=True)
        raise
    return fd, path


def encode(row: list[Any]) -> bytes:
    """One journal line (compact JSON, raw UTF-8)."""
    return (json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def write_through(fd: int, data: bytes, *, fsync: bool) -> None:
    """Hand ``data`` to the OS now (unbuffered ``write``); ``fsync`` also waits for the disk."""
    view = memoryview(data)
    while view:  # one write() for a regular file; loop in case it is ever partial
        view = view[os.write(fd, view) :]
    if fsync:
        os.fsync(fd)


def parse(line: str) -> list[Any] | None:
    """A journal row, or None for a line cut short by a crash."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, list) and len(row) == 7 else None


@contextmanager
def orphan(path: Path) -> Iterator[IO[str] | None]:
    """The segment at ``path`` opened and locked if its writer is gone, else None."""
    try:
        handle = open(path, encoding="utf-8")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        yield None
        return
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None  # a live writer owns it
            return
        # replayed and removed by another process meanwhile: not ours to replay again
        yield handle if _same_file(path, handle.fileno()) else None


def clear_stale(directory: Path) -> None:
    """Remove staging segments whose creator died before publishing them.

    Their name carries the creator's pid: while that process lives the file is kept, since it
    may sit between its create and its lock right now (a reused pid only delays the cleanup).
    """
    for staging in directory.glob(".*.new"):
        pid = staging.name[1:].partition("-")[0]
        if pid.isdigit() and _alive(int(pid)):
            continue
        staging.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    """True when process ``pid`` exists on this machine (journals are local files)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _same_file(path: Path, fd: int) -> bool:
    """True while ``path`` still names the open file ``fd`` (not unlinked or replaced)."""
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False
