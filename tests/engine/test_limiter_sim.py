"""The limiter against the real simulator over HTTP, from separate OS processes."""

import json
import subprocess
import sys
import time

WORKER = [sys.executable, "-m", "tests.engine.limiter_worker"]


def run_workers(sim, *argsets, timeout=60):
    """Start one worker process per argument list at the same moment; return their summaries."""
    start_at = time.time() + 1.5  # both import first, then start together
    procs = [
        subprocess.Popen(
            [*WORKER, sim.base_url, "--start-at", str(start_at), *map(str, args)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for args in argsets
    ]
    try:
        outs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), outs
    return [json.loads(out.strip().splitlines()[-1]) for out in outs]


def test_two_processes_share_one_limit_through_sqlite(sim_server, tmp_path):
    sim = sim_server(rpm=1200, burst_s=1.0)  # 20 requests/s, bucket of 20
    url = f"sqlite:///{tmp_path / 'limiter.sqlite'}"
    common = ["--url", url, "--rpm", 1200, "--n", 50, "--concurrency", 32]
    a, b = run_workers(sim, common, common)
    stats = sim.stats()
    elapsed = max(a["elapsed_s"], b["elapsed_s"])
    assert a["ok"] == b["ok"] == 50 and stats["served"] == 100
    assert stats["rejected_429_limit"] <= 1
    assert stats["served"] <= 20 + 20 * elapsed  # bucket + rate x time
    assert stats["peak_requests_1s"] <= 20 + 20
    assert stats["served"] / elapsed > 0.8 * 20  # and close to the limit, not timid


def test_429_feedback_brings_an_overestimated_limit_down(sim_server, tmp_path):
    sim = sim_server(rpm=600, burst_s=1.0)  # 10/s; the client is told 20/s
    url = f"sqlite:///{tmp_path / 'limiter.sqlite'}"
    (out,) = run_workers(sim, ["--url", url, "--rpm", 1200, "--n", 60, "--concurrency", 32])
    stats = sim.stats()
    assert out["ok"] == 60
    # without feedback about half of all attempts would be rejected at 2x the limit
    assert stats["rejected_429_limit"] / stats["received"] < 0.12
    assert stats["served"] <= 10 + 10 * out["elapsed_s"]


def test_limits_learned_from_headers_alone(sim_server, tmp_path):
    sim = sim_server(rpm=1200, tpm=60_000, burst_s=1.0)  # tokens bind: 60 tokens/request
    url = f"sqlite:///{tmp_path / 'limiter.sqlite'}"
    (out,) = run_workers(sim, ["--url", url, "--n", 60, "--concurrency", 16, "--max-tokens", 50])
    stats = sim.stats()
    assert out["ok"] == 60
    assert stats["rejected_429_limit"] <= 16  # only the first wave, before any header was read
    assert stats["counted_tokens"] <= 1000 + 1000 * out["elapsed_s"]


def test_underestimated_tokens_are_caught_by_the_remaining_headers(sim_server, tmp_path):
    """The client reserves 30 % fewer tokens than the provider counts: headers keep it safe."""
    sim = sim_server(tpm=60_000, burst_s=1.0)  # 1000 tokens/s, bucket 1000
    url = f"sqlite:///{tmp_path / 'limiter.sqlite'}"
    args = ["--url", url, "--tpm", 60_000, "--n", 100, "--reserve-scale", 0.7]
    (out,) = run_workers(sim, args)
    stats = sim.stats()
    assert out["ok"] == 100 and stats["rejected_429_limit"] == 0
    assert stats["counted_tokens"] <= 1000 + 1000 * out["elapsed_s"]
    assert stats["counted_tokens"] >= 0.85 * 1000 * out["elapsed_s"]


def test_counted_tokens_use_the_whole_limit_despite_an_overestimate(sim_server, tmp_path):
    sim = sim_server(tpm=60_000, burst_s=1.0)
    url = f"sqlite:///{tmp_path / 'limiter.sqlite'}"
    args = ["--url", url, "--tpm", 60_000, "--n", 100, "--reserve-scale", 1.4, "--counted"]
    (out,) = run_workers(sim, args)
    stats = sim.stats()
    assert out["ok"] == 100 and stats["rejected_429_limit"] == 0
    assert stats["counted_tokens"] >= 0.9 * 1000 * out["elapsed_s"]  # not 0.97 / 1.4
