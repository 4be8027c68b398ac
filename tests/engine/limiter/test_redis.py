"""The Redis backend: the Lua port behaves like the Python arithmetic, shared and fail-fast."""

import asyncio
import time

import pytest
import redis

from lakeloom.engine.limiter.core import Feedback, State, Tuning, decide
from lakeloom.engine.limiter.factory import make_limiter
from lakeloom.engine.limiter.redis import RedisStore
from lakeloom.engine.limiter.stores import LimiterUnavailable
from tests.engine.limiter.test_sim import run_workers
from tests.fixtures.pacing import Schedule, admit_n, assert_paced, slots_from_json
from tests.fixtures.redis import _free_port

EXACT = Tuning(safety=1.0, burst_s=0.5, horizon_s=100.0, backoff=0.5)


def script(t0):
    """(costs, feedback, rpm, tpm) steps exercising every branch of decide (times from t0)."""
    return [
        ([1, 1, 1], Feedback(), 600, None),
        ([200, 20], Feedback(lt=6000, ct=80), None, None),
        ([1] * 4, Feedback(sync_r_at=t0, sync_r_rem=0, cr=4), 600, 6000),
        ([5], Feedback(extra_tokens=30, cut_at=t0), 600, 6000),
        ([5, 5], Feedback(pause_until=t0 + 3.0), None, None),
        ([1], Feedback(cut_at=t0 - 10), 600, None),  # an old episode: no second cut
        ([5], Feedback(extra_tokens=-30), 600, 6000),  # a refund
        ([5], Feedback(ct=100, sync_t_at=t0 + 0.1, sync_t_rem=90), 600, 6000),  # full: re-arm
        "sleep",
        ([5], Feedback(sync_t_at=t0 + 0.6, sync_t_rem=20), 600, 6000),  # draining: cut
    ]


def test_lua_port_matches_python_decide(redis_url, request):
    store = RedisStore(redis_url)
    steps = script(time.time())

    async def run():
        out = []
        for step in steps:
            if step == "sleep":
                await asyncio.sleep(0.6)  # past Tuning.drain_every_s since the last cut
            else:
                out.append(await store.exchange(request.node.name, *step[:2], EXACT, *step[2:]))
        return out

    lua = asyncio.run(run())
    steps = [step for step in steps if step != "sleep"]
    state = State()  # replay in Python at the times Redis saw
    for (costs, fb, rpm, tpm), got in zip(steps, lua, strict=True):
        want = decide(state, got.now, costs, fb, EXACT, rpm, tpm)
        assert got.waits == pytest.approx(want.waits, abs=1e-4)
        assert got.retry_in == pytest.approx(want.retry_in, abs=1e-4)
        assert (got.limited, got.multiplier) == (want.limited, pytest.approx(want.multiplier))
        assert got.pause_until == pytest.approx(want.pause_until, abs=1e-4)
    assert lua[4].waits[0] > 2.9 and lua[5].multiplier > 0.5
    assert lua[-1].multiplier < lua[-2].multiplier  # the drain cut happened in Lua too
    assert state.lv == pytest.approx(0.4)


def test_redis_limiter_paces_and_is_shared(redis_url, request):
    a = make_limiter(request.node.name, rpm=1200, url=redis_url)
    b = make_limiter(request.node.name, rpm=1200, url=redis_url)
    stores = [a.store] if a.store is b.store else [a.store, b.store]
    schedules = [Schedule(store) for store in stores]

    async def run():
        await asyncio.gather(admit_n(a, 20, tasks=10), admit_n(b, 20, tasks=10))

    asyncio.run(run())
    both = [slot for schedule in schedules for slot in schedule.slots]
    assert len(both) == 40
    assert_paced(both, gap=1 / (0.985 * 20), bucket=5)  # one budget for both limiters


def test_redis_decisions_are_batched_from_one_process(redis_url, request):
    limiter = make_limiter(request.node.name, rpm=6_000_000, url=redis_url)
    schedule = Schedule(limiter.store)

    async def run():
        async def worker():
            for _ in range(250):
                await limiter.acquire(1)

        await asyncio.gather(*(worker() for _ in range(40)))

    asyncio.run(run())
    assert len(schedule.slots) == 10_000
    # one Redis round trip serves many waiting requests (the bench asks 5,000/s on a quiet box)
    assert len(schedule.decisions) <= 10_000 / 10


def test_unreachable_redis_fails_fast_with_a_clear_error(monkeypatch):
    url = f"redis://127.0.0.1:{_free_port()}/0"
    pings = []
    real_ping = redis.Redis.ping

    def counting_ping(self, *args, **kwargs):
        pings.append(self.connection_pool.connection_kwargs.get("socket_connect_timeout"))
        return real_ping(self, *args, **kwargs)

    monkeypatch.setattr(redis.Redis, "ping", counting_ping)
    with pytest.raises(LimiterUnavailable, match="unreachable.*LAKELOOM_LIMITER_URL"):
        make_limiter("nowhere", rpm=60, url=url)
    assert pings == [2.0]  # one attempt, bounded by a 2 s connect timeout: no retry loop


def test_two_processes_share_one_limit_through_redis(sim_server, redis_url, request, tmp_path):
    sim = sim_server(rpm=1200, burst_s=1.0)
    common = ["--url", redis_url, "--key", request.node.name, "--rpm", 1200, "--n", 40]
    a, b = run_workers(sim, common, common, barrier=tmp_path / "go")
    stats = sim.stats()
    assert stats["served"] == 80 and stats["rejected_429_limit"] <= 1
    assert stats["peak_requests_1s"] <= 20 + 20  # the simulator's own 1 s window
    both = slots_from_json(a["slots"]) + slots_from_json(b["slots"])
    assert_paced(both, gap=1 / (0.985 * 20), bucket=5)


def test_a_cancel_during_an_exchange_is_never_swallowed(redis_url, request):
    """Python 3.11's wait_for inside redis-py can drop a cancel: the CI hang of a limiter test."""
    store = RedisStore(redis_url)

    async def run():
        outcomes = []
        for i in range(300):
            task = asyncio.create_task(
                store.exchange(request.node.name, [1], Feedback(), EXACT, 600, None)
            )
            await asyncio.sleep(0.0001 * (i % 20))  # cancel at every stage of the round trip
            requested = task.cancel()
            try:
                await task
                outcomes.append("cancelled late" if requested else "finished first")
            except asyncio.CancelledError:
                outcomes.append("cancelled")
        return outcomes

    outcomes = asyncio.run(run())
    assert "cancelled late" not in outcomes
    assert outcomes.count("cancelled") > 20  # cancels did land mid round trip
