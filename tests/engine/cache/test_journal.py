"""The journal keeps every received response across a kill (issue 13.7).

A response is written through to the OS when it is appended (not at the end of an event-loop
turn, not at segment close), and a segment is locked before it becomes visible, so another
process's orphan replay can never take a live segment away.
"""

import fcntl
import hashlib
import json
import os
import subprocess
import sys
import textwrap

from lakeloom.engine.cache import journal as journal_module
from lakeloom.engine.cache.store import ResponseCache

RESPONSE = json.dumps({"choices": [{"message": {"content": "hi"}}]})


def key(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()[:32]


def test_responses_appended_inside_an_event_loop_survive_a_kill_before_any_commit(storage):
    n = 50
    script = textwrap.dedent(
        f"""
        import asyncio, hashlib, os, signal
        from lakeloom.engine.cache.store import ResponseCache
        from lakeloom.storage.settings import Storage

        async def main():
            cache = ResponseCache(
                Storage(root={storage.root!r}), flush_every=10**9, flush_interval_s=3600
            )
            for i in range({n}):  # responses arriving in one loop turn, as the engine gets them
                key = hashlib.sha256(str(i).encode()).hexdigest()[:32]
                cache.append(key, "m", "chat.completions", {RESPONSE!r}, 3, 1)
            os.kill(os.getpid(), signal.SIGKILL)  # before the loop turn ends, before any commit

        asyncio.run(main())
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], timeout=120)
    assert proc.returncode == -9
    cache = ResponseCache(storage)  # replays the dead writer's journal
    assert cache.replayed == n
    assert cache.match([key(i) for i in range(n)])["response"].null_count() == 0


def test_replay_racing_segment_creation_never_removes_the_live_segment(storage, monkeypatch):
    writer = ResponseCache(storage, flush_every=10**9)
    replayer = ResponseCache(storage)
    real_flock = fcntl.flock
    armed = [True]
    raced: list[int] = []

    def flock_after_a_replay(fd: int, operation: int) -> None:
        # The writer's first lock call is its new segment's: run the other process's replay
        # right there, at the worst moment (file created, lock not yet taken).
        if armed[0]:
            armed[0] = False
            raced.append(replayer.replay_orphans())
        real_flock(fd, operation)

    monkeypatch.setattr(journal_module.fcntl, "flock", flock_after_a_replay)
    writer.append(key(1), "m", "chat.completions", RESPONSE, 1, 1)
    monkeypatch.setattr(journal_module.fcntl, "flock", real_flock)
    assert raced == [0]
    live = writer._segment_path
    assert live is not None and live.exists()  # still there, under its visible name
    assert [p for p in writer.journal_dir.glob("*.jsonl")] == [live]
    assert key(1) in live.read_text()
    assert ResponseCache(storage).replayed == 0  # locked: left alone
    writer.close()
    assert ResponseCache(storage).match([key(1)])["response"].null_count() == 0


def test_a_segment_whose_creator_died_before_publishing_it_is_cleared(storage):
    cache = ResponseCache(storage)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    stale = cache.journal_dir / f".{dead.stdout.strip()}-deadbeef0000.new"  # never published
    stale.write_text("")
    being_created = cache.journal_dir / f".{os.getpid()}-0123456789ab.new"  # a live creator's
    being_created.write_text("")
    assert ResponseCache(storage).replayed == 0
    assert not stale.exists() and being_created.exists()
