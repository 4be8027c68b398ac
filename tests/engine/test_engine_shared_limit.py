"""Two engine processes against one provider share one limit through the limiter's SQLite state."""

import json
import subprocess
import sys
import time


def test_two_engine_processes_stay_under_one_limit(sim_server, tmp_path):
    sim = sim_server(rpm=1200, burst_s=1.0)  # 20 requests/s for both processes together
    url = f"sqlite:///{tmp_path / 'limiter.sqlite'}"
    start_at = time.time() + 3.0  # both have imported and opened everything by then
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.engine.engine_worker",
                sim.base_url,
                "--n",
                "60",
                "--concurrency",
                "16",
                "--rpm",
                "1200",
                "--limiter-url",
                url,
                "--tag",
                tag,
                "--start-at",
                str(start_at),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for tag in ("a", "b")
    ]
    try:
        outs = [p.communicate(timeout=90)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), outs
    runs = [json.loads(out.strip().splitlines()[-1]) for out in outs]
    stats = sim.stats()
    assert [r["ok"] for r in runs] == [60, 60] and stats["served"] == 120
    assert stats["rejected_429_limit"] <= 2
    elapsed = max(r["wall_s"] for r in runs)
    assert stats["served"] <= 20 + 20 * elapsed  # bucket + rate x time: never over the limit
    assert stats["peak_requests_1s"] <= 40
    assert elapsed < 12  # ~5 s at the limit: shared, not serialized
