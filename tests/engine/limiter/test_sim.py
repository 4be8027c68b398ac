"""The limiter against the real simulator over HTTP, from separate OS processes.

Pacing is asserted on counters, never on wall-clock durations: the simulator's own (0 limit
429s, its peak requests/tokens in any 1 s window) and the limiter's (every slot its store
reserved, ``tests.fixtures.pacing``: never over the limit, never slower than limit x multiplier
while requests waited). Workers start together on a file barrier, not at a guessed clock time.
"""

import json
import subprocess
import sys

from lakeloom.engine.limiter.core import Feedback, State, Tuning, decide
from tests.fixtures.pacing import assert_paced, slots_from_json
from tests.fixtures.together import release

WORKER = [sys.executable, "-m", "tests.engine.limiter.limiter_worker"]


def run_workers(sim, *argsets, barrier, timeout=120):
    """Start one worker process per argument list, release them together; return summaries."""
    barrier.mkdir(parents=True, exist_ok=True)
    procs = [
        subprocess.Popen(
            [*WORKER, sim.base_url, "--barrier", str(barrier), *map(str, args)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for args in argsets
    ]
    try:
        release(barrier, procs)
        outs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), outs
    return [json.loads(out.strip().splitlines()[-1]) for out in outs]


def slots(*outs):
    return [slot for out in outs for slot in slots_from_json(out["slots"])]


def test_two_processes_share_one_limit_through_sqlite(sim_server, tmp_path):
    sim = sim_server(rpm=1200, burst_s=1.0)  # 20 requests/s, bucket of 20
    url = f"sqlite:///{tmp_path / 'limiter.sqlite'}"
    common = ["--url", url, "--rpm", 1200, "--n", 50, "--concurrency", 32]
    a, b = run_workers(sim, common, common, barrier=tmp_path / "go")
    stats = sim.stats()
    assert a["ok"] == b["ok"] == 50 and stats["served"] == 100
    assert stats["rejected_429_limit"] <= 1
    assert stats["peak_requests_1s"] <= 20 + 20  # the simulator's own window: bucket + 1 s
    # one schedule for both processes, paced at 0.985 x 20/s (local bucket 0.25 s = 5): never
    # over, and never slower than the limit (times the multiplier) while requests waited
    both = slots(a, b)
    assert len(both) == 100 + stats["rejected_429_limit"]
    assert_paced(both, gap=1 / (0.985 * 20), bucket=5)
    assert min(s.multiplier for s in both) >= 0.7  # at most one cut, for at most one 429


def test_429_feedback_brings_an_overestimated_limit_down(sim_server, tmp_path):
    sim = sim_server(rpm=600, burst_s=1.0)  # 10/s; the client is told 20/s
    url = f"sqlite:///{tmp_path / 'limiter.sqlite'}"
    args = ["--url", url, "--rpm", 1200, "--n", 60, "--concurrency", 32]
    (out,) = run_workers(sim, args, barrier=tmp_path / "go")
    stats = sim.stats()
    assert out["ok"] == 60
    # without feedback about half of all attempts would be rejected at 2x the limit
    assert stats["rejected_429_limit"] / stats["received"] < 0.12
    assert stats["peak_requests_1s"] <= 10 + 10
    assert out["limit_429s"] >= 1 and min(s.multiplier for s in slots(out)) < 1.0  # it cut


def test_limits_learned_from_headers_alone(sim_server, tmp_path):
    sim = sim_server(rpm=1200, tpm=60_000, burst_s=1.0)  # tokens bind: 60 tokens/request
    url = f"sqlite:///{tmp_path / 'limiter.sqlite'}"
    args = ["--url", url, "--n", 60, "--concurrency", 16, "--max-tokens", 50]
    (out,) = run_workers(sim, args, barrier=tmp_path / "go")
    stats = sim.stats()
    assert out["ok"] == 60
    assert stats["rejected_429_limit"] <= 16  # only the first wave, before any header was read
    assert stats["peak_tokens_1s"] <= 1000 + 1000
    assert sum(s.waited for s in slots(out)) > 0  # it learned a limit and paced


def test_underestimated_tokens_are_caught_by_the_remaining_headers(sim_server, tmp_path):
    """The client reserves 30 % fewer tokens than the provider counts: headers keep it safe."""
    sim = sim_server(tpm=60_000, burst_s=1.0)  # 1000 tokens/s, bucket 1000
    url = f"sqlite:///{tmp_path / 'limiter.sqlite'}"
    args = ["--url", url, "--tpm", 60_000, "--n", 100, "--reserve-scale", 0.7]
    (out,) = run_workers(sim, args, barrier=tmp_path / "go")
    stats = sim.stats()
    assert out["ok"] == 100 and stats["rejected_429_limit"] == 0
    assert stats["peak_tokens_1s"] <= 1000 + 1000
    # safe but not timid: the header sync slowed it by at most a few gentle cuts
    assert min(s.multiplier for s in slots(out)) >= 0.9**3


def test_counted_tokens_use_the_whole_limit_despite_an_overestimate(sim_server, tmp_path):
    sim = sim_server(tpm=60_000, burst_s=1.0)
    url = f"sqlite:///{tmp_path / 'limiter.sqlite'}"
    args = ["--url", url, "--tpm", 60_000, "--n", 100, "--reserve-scale", 1.4, "--counted"]
    (out,) = run_workers(sim, args, barrier=tmp_path / "go")
    stats = sim.stats()
    assert out["ok"] == 100 and stats["rejected_429_limit"] == 0
    assert stats["peak_tokens_1s"] <= 1000 + 1000
    # the limiter charged its bucket what the provider counted, not the 1.4x reservation ...
    assert out["charged_tokens"] == stats["counted_tokens"]
    # ... and charging the counted tokens uses the whole limit (virtual clock, no wall time)
    assert virtual_requests_per_minute(reserved=87, counted=62) >= 0.97 * 60_000 / 62
    assert virtual_requests_per_minute(reserved=87, counted=None) < 0.75 * 60_000 / 62


def virtual_requests_per_minute(reserved: int, counted: int | None, tpm: float = 60_000) -> int:
    """Slots ``decide`` grants in 60 virtual seconds to a backlog of 32 concurrent requests.

    Each exchange (every ``horizon_s``) feeds back ``counted - reserved`` for the slots of the
    exchange before, as the worker's ``record(counted_tokens=...)`` does.
    """
    tuning, state = Tuning(), State()
    now, granted, pending = 0.0, 0, 0
    while now < 60.0:
        extra = 0.0 if counted is None else pending * (counted - reserved)
        decision = decide(state, now, [reserved] * 32, Feedback(extra_tokens=extra), tuning,
                          None, tpm)  # fmt: skip
        pending = len(decision.waits)
        granted += sum(1 for w in decision.waits if now + w < 60.0)
        now += tuning.horizon_s
    return granted
