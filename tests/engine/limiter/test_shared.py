"""The shared limiter in one process (no HTTP): pacing, learning, pauses, fast path."""

import asyncio
import time

import pytest

from lakeloom.engine.limiter.base import UnlimitedLimiter
from lakeloom.engine.limiter.core import Tuning
from lakeloom.engine.limiter.factory import make_limiter, open_store
from lakeloom.engine.limiter.shared import SharedLimiter
from lakeloom.engine.limiter.stores import LimiterUnavailable, MemoryStore, SQLiteStore
from tests.fixtures.pacing import Schedule, admit_n, assert_paced, paced_gaps


class CountingStore(MemoryStore):
    """The real in-memory store, counting round trips."""

    def __init__(self):
        self.calls = 0

    async def exchange(self, *args, **kwargs):
        self.calls += 1
        return await super().exchange(*args, **kwargs)


def test_paces_requests_at_the_limit_with_many_tasks(request):
    store = MemoryStore()
    schedule = Schedule(store)
    limiter = SharedLimiter(request.node.name, store, rpm=1200)  # 20/s
    granted = asyncio.run(admit_n(limiter, 40))
    assert len(granted) == 40 and len(schedule.slots) == 40
    # local bucket 0.25 s = 5, then 0.985 * 20/s
    assert_paced(schedule.slots, gap=1 / (0.985 * 20), bucket=5)
    assert sum(not s.waited for s in schedule.slots) <= 5 + 2  # the bucket, no more


def test_paces_tokens(request):
    store = MemoryStore()
    schedule = Schedule(store)
    limiter = SharedLimiter(request.node.name, store, tpm=60_000)  # 1000 tokens/s
    asyncio.run(admit_n(limiter, 14, tokens=100))
    assert_paced(schedule.slots, gap=100 / 985, bucket=2.5)


def test_unknown_limits_cost_no_store_round_trip():
    store = CountingStore()
    limiter = SharedLimiter("free", store)

    async def burst():
        first = await limiter.acquire(100)
        limiter.record(first, status_code=200, headers={}, used_tokens=10)  # no limit headers
        admitted = [await limiter.acquire(100) for _ in range(2000)]
        return admitted

    sleeps = []
    real_sleep = asyncio.sleep

    async def counting_sleep(delay, *args):
        sleeps.append(delay)
        return await real_sleep(delay, *args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(asyncio, "sleep", counting_sleep)
        admitted = asyncio.run(burst())
    assert len(admitted) == 2000
    assert sleeps == []  # nobody waited: the fast path
    assert store.calls <= 2  # the first look and one refresh at most


def test_probe_before_the_first_answer_when_limits_are_unknown():
    limiter = SharedLimiter("probe", MemoryStore(), probe=3, probe_wait_s=120.0)

    async def run():
        early = [await limiter.acquire(1) for _ in range(3)]  # the probe goes at once
        waiting = asyncio.ensure_future(limiter.acquire(1))
        for _ in range(20):  # it polls for an answer; give it many turns of the loop
            await asyncio.sleep(0.005)
        assert not waiting.done()  # the rest waits for an answer ...
        limiter.record(early[0], status_code=200, headers={}, used_tokens=None)
        await asyncio.wait_for(waiting, 1.0)  # ... and goes once one arrived

    asyncio.run(run())


def test_learns_limits_from_headers_and_starts_pacing():
    store = CountingStore()
    schedule = Schedule(store)
    limiter = SharedLimiter("learn", store)

    async def run():
        first = await limiter.acquire(10)
        limiter.record(
            first,
            status_code=200,
            headers={
                "x-ratelimit-limit-requests": "600",
                "x-ratelimit-remaining-requests": "9",
                "x-ratelimit-reset-requests": "100ms",
            },
            used_tokens=5,
        )
        for _ in range(6):
            await limiter.acquire(10)

    asyncio.run(run())
    # local bucket: min(0.25 s * 10/s, half of the provider's 10) = 2.5 -> the rest paced at 9.85/s
    assert schedule.decisions[-1].limited and store.calls >= 1
    assert len(schedule.slots) == 7  # the first look, then six
    assert sum(s.waited for s in schedule.slots) >= 6 - 3  # paced once learned
    assert_paced(schedule.slots, gap=1 / (0.985 * 10), bucket=2.5)


def test_limit_429_pauses_with_retry_after_and_cuts_the_rate(request):
    limiter = make_limiter(request.node.name, rpm=6000, url="memory://")

    async def run():
        adm = await limiter.acquire(1)
        before = time.monotonic()
        limiter.record(
            adm,
            status_code=429,
            headers={"retry-after-ms": "400", "x-ratelimit-remaining-requests": "0",
                     "x-ratelimit-limit-requests": "6000"},
            used_tokens=None,
        )  # fmt: skip
        recorded = time.monotonic()
        paused_until = limiter._pause_until
        after = await limiter.acquire(1)
        return before, recorded, paused_until, after

    before, recorded, paused_until, after = asyncio.run(run())
    # the pause is the Retry-After from the moment it was read (not more, not less) ...
    assert before + 0.4 <= paused_until <= recorded + 0.4
    # ... and the next admission comes after it
    assert after.granted_at + 0.005 >= paused_until
    assert limiter.limit_429s == 1
    state = open_store("memory://")
    assert isinstance(state, MemoryStore)


def test_429_with_budget_left_is_not_a_limit_signal():
    limiter = make_limiter("overload", rpm=6000, url="memory://")

    async def run():
        adm = await limiter.acquire(1)
        limiter.record(
            adm,
            status_code=429,
            headers={"retry-after": "5", "x-ratelimit-remaining-requests": "90",
                     "x-ratelimit-limit-requests": "6000"},
            used_tokens=None,
        )  # fmt: skip
        await limiter.acquire(1)
        return adm

    adm = asyncio.run(run())
    assert limiter._pause_until <= adm.granted_at  # no pause: the 5 s Retry-After is not ours
    assert limiter.limit_429s == 0


def test_sqlite_state_is_shared_by_two_limiters(tmp_path):
    url = f"sqlite:///{tmp_path / 'lim.sqlite'}"
    a = make_limiter("shared", rpm=600, url=url)
    b = make_limiter("shared", rpm=600, url=url)
    stores = [a.store] if a.store is b.store else [a.store, b.store]
    schedules = [Schedule(store) for store in stores]

    async def run():
        await asyncio.gather(admit_n(a, 12, tasks=10), admit_n(b, 12, tasks=10))

    asyncio.run(run())
    both = [slot for schedule in schedules for slot in schedule.slots]
    assert len(both) == 24
    # one budget for both, not two: the merged schedule is paced at one limit (10/s, bucket 2.5)
    assert_paced(both, gap=1 / (0.985 * 10), bucket=2.5)
    state = SQLiteStore(tmp_path / "lim.sqlite").read("shared")
    assert state is not None and state.tr > 0


def test_factory_choices_and_errors(tmp_path, monkeypatch):
    assert isinstance(make_limiter("x", url="off"), UnlimitedLimiter)
    default = make_limiter("x", rpm=60)
    assert isinstance(default.store, SQLiteStore)
    assert default.store.path.name == "limiter.sqlite"
    assert str(tmp_path) in str(default.store.path)  # under the test's LAKELOOM_HOME
    monkeypatch.setenv("LAKELOOM_LIMITER_URL", "memory://")
    assert isinstance(make_limiter("x").store, MemoryStore)
    with pytest.raises(ValueError, match="LAKELOOM_LIMITER_URL"):
        make_limiter("x", url="postgres://nope")
    with pytest.raises(ValueError, match="rpm must be > 0"):
        make_limiter("x", rpm=0, url="memory://")
    with pytest.raises(LimiterUnavailable, match="cannot open"):
        SQLiteStore("/proc/nope/limiter.sqlite")


def test_custom_tuning_is_used():
    limiter = make_limiter("tuned", rpm=600, url="memory://", tuning=Tuning(burst_s=0.1))
    assert limiter.tuning.burst_s == 0.1


def test_counted_tokens_refund_an_overestimate(request):
    """Reserving 200 tokens that the provider counts as 100 must not halve the throughput."""

    def run(counted):
        store = MemoryStore()
        schedule = Schedule(store)
        limiter = SharedLimiter(f"{request.node.name}-{counted}", store, tpm=60_000)  # 1000/s

        async def go():
            for _ in range(12):
                adm = await limiter.acquire(200)
                limiter.record(
                    adm, status_code=200, headers={}, used_tokens=60, counted_tokens=counted
                )

        asyncio.run(go())
        gaps = sorted(paced_gaps(schedule.slots))
        return gaps[len(gaps) // 2]

    # paced: 200 tokens a request at 985 tokens/s; refunded: at the 100 the provider counted
    assert run(None) == pytest.approx(200 / 985, rel=0.01)
    assert run(100) == pytest.approx(100 / 985, rel=0.01)


def test_sqlite_file_from_an_older_schema_is_upgraded(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE limiter_state (key TEXT PRIMARY KEY, lr REAL NOT NULL)")
        conn.execute("INSERT INTO limiter_state VALUES ('k', 600)")
    store = SQLiteStore(path)
    state = store.read("k")
    assert state.lr == 600 and state.m == 1.0 and state.lv == 1.0
    limiter = SharedLimiter("k", store)
    asyncio.run(limiter.acquire(1))  # learned 600 rpm from the old row: paced, no error
    assert limiter._limited


async def until(condition, turns: int = 100_000) -> None:
    """Yield to the event loop until ``condition()`` holds (a state, not a sleep)."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


class GatedStore(MemoryStore):
    """The real in-memory store whose exchange waits on a gate (to cancel someone meanwhile)."""

    def __init__(self):
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def exchange(self, *args, **kwargs):
        self.entered.set()
        await self.gate.wait()
        return await super().exchange(*args, **kwargs)


def test_a_waiter_cancelled_during_an_exchange_does_not_strand_the_others(request):
    """The CI hang: cancelling a queued waiter mid-exchange once made another spin forever."""

    async def run():
        store = GatedStore()
        limiter = SharedLimiter(request.node.name, store, rpm=60_000)
        async with limiter._loop_lock():  # let three queue up, so one exchange takes all three
            tasks = [asyncio.create_task(limiter.acquire(1)) for _ in range(3)]
            await until(lambda: len(limiter._queue) == 3)
        await store.entered.wait()
        tasks.append(asyncio.create_task(limiter.acquire(1)))  # queued behind the exchange
        await until(lambda: len(limiter._queue) == 4)
        tasks[1].cancel()
        await asyncio.wait({tasks[1]})  # its cancel has run (it left the queue)
        store.gate.set()
        others = [tasks[0], tasks[2], tasks[3]]
        done = await asyncio.wait_for(asyncio.gather(*others), timeout=5)
        return done, tasks[1].cancelled(), len(limiter._queue)

    admissions, cancelled, left = asyncio.run(run())
    assert [a.reserved_tokens for a in admissions] == [1, 1, 1]
    assert cancelled and left == 0
