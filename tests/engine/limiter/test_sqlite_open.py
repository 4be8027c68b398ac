"""Processes that open one new limiter state file at the same moment all get a store."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from lakeloom.engine.limiter.stores import SQLiteStore


def _open(path: str, barrier: mp.synchronize.Barrier, out: mp.Queue) -> None:
    barrier.wait()
    try:
        store = SQLiteStore(path)
        mode = store._conn().execute("PRAGMA journal_mode").fetchone()[0]
        out.put(("ok", mode))
    except Exception as exc:  # reported to the test, not swallowed
        out.put(("error", repr(exc)))


def test_processes_opening_a_new_state_file_together_all_succeed(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    for round_ in range(3):
        path = str(tmp_path / f"limiter-{round_}.sqlite")
        n = 6
        barrier, out = ctx.Barrier(n), ctx.Queue()
        procs = [ctx.Process(target=_open, args=(path, barrier, out)) for _ in range(n)]
        for p in procs:
            p.start()
        results = [out.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        assert results == [("ok", "wal")] * n, results
