"""Two engine processes against one provider share one limit through the limiter's SQLite state.

Asserted on counters, not wall-clock time: the simulator's (limit 429s, its peak requests in any
1 s window) and the limiter's own schedule (``tests.fixtures.pacing``), with both workers started
on a file barrier (``tests.fixtures.together``), not at a guessed clock time.
"""

import json
import subprocess
import sys

from tests.fixtures.pacing import assert_paced, slots_from_json
from tests.fixtures.together import release


def test_two_engine_processes_stay_under_one_limit(sim_server, tmp_path):
    sim = sim_server(rpm=1200, burst_s=1.0)  # 20 requests/s for both processes together
    url = f"sqlite:///{tmp_path / 'limiter.sqlite'}"
    barrier = tmp_path / "go"
    barrier.mkdir()
    worker = [sys.executable, "-m", "tests.scale.engine_worker", sim.base_url]
    args = ["--n", "60", "--concurrency", "16", "--rpm", "1200", "--limiter-url", url]
    args += ["--key", "sim:shared", "--barrier", str(barrier)]
    procs = [
        subprocess.Popen([*worker, *args, "--tag", tag], stdout=subprocess.PIPE, text=True)
        for tag in ("a", "b")
    ]
    try:
        release(barrier, procs)
        outs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), outs
    runs = [json.loads(out.strip().splitlines()[-1]) for out in outs]
    stats = sim.stats()
    assert [r["ok"] for r in runs] == [60, 60] and stats["served"] == 120
    assert stats["rejected_429_limit"] <= 2
    assert stats["peak_requests_1s"] <= 40  # the simulator's own 1 s window: never over
    # shared, not serialized: one schedule for both, paced at 0.985 x 20/s and never slower
    # than the limit (times the multiplier) while requests waited; the two interleave
    both = [slot for r in runs for slot in slots_from_json(r["slots"])]
    assert_paced(both, gap=1 / (0.985 * 20), bucket=5)
    assert min(s.multiplier for s in both) >= 0.7**2  # at most two cuts, for the 429s allowed
    a_times = [s[0] for s in runs[0]["slots"]]
    assert any(min(a_times) < s[0] < max(a_times) for s in runs[1]["slots"])
