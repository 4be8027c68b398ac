"""Two teams' backfills in two OS processes against one provider (the simulator).

Both share one Dagster instance (the project's dagster.yaml: pools per provider) and one
LAKELOOM_HOME (the limiter's SQLite state). With the pool's default limit of 2 both LLM steps
run at once and the shared limiter keeps their combined rate under the provider's limit, each
getting about half; with a limit of 1 the pool serializes them.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from lakeloom.assets.datasets import OWNER_TAG
from lakeloom.cli import main as lakeloom
from lakeloom.io_managers import DeltaIOManager
from tests.fixtures.pacing import assert_paced, slots_from_json
from tests.fixtures.together import release

ROOT = Path(__file__).resolve().parents[2]
TEAMS = {"team-a": ["a-orders", "a-returns"], "team-b": ["b-orders", "b-returns"]}


def make_home(tmp_path: Path, pool_limit: int | None) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    config = (ROOT / "dagster.yaml").read_text()
    if pool_limit is not None:
        assert "default_limit: 2" in config
        config = config.replace("default_limit: 2", f"default_limit: {pool_limit}")
    (home / "dagster.yaml").write_text(config)
    return home


def write_datasets(folder: Path, rows: int) -> None:
    folder.mkdir()
    for datasets in TEAMS.values():
        for ds in datasets:
            with (folder / f"{ds}.csv").open("w", newline="") as f:
                out = csv.writer(f)
                out.writerow(["ticket", "body"])
                out.writerows([f"{ds}-{i}", f"{ds}: parcel {i} arrived late"] for i in range(rows))


@pytest.fixture
def teams(tmp_path, monkeypatch, sim_server):
    """Start the simulator, register the datasets with the CLI, return a launcher."""

    def setup(*, rows: int, rpm: int, pool_limit: int | None = None):
        sim = sim_server(rpm=rpm, burst_s=1.0)
        home = make_home(tmp_path, pool_limit)
        data = tmp_path / "incoming"
        write_datasets(data, rows)
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        for owner, datasets in TEAMS.items():
            for ds in datasets:
                assert lakeloom(["dataset", "add", ds, "--owner", owner]) == 0
        env = {
            **os.environ,
            "TEAM_DATA_DIR": str(data),
            "LAKELOOM_LLM_BASE_URL": sim.base_url,
        }

        def backfill_both() -> list[dict]:
            barrier = tmp_path / f"go-{len(list(tmp_path.glob('go-*')))}"
            barrier.mkdir()
            procs = [
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "tests.fixtures.team_run",
                        f"{datasets[0]}...{datasets[-1]}",
                        "--owner",
                        owner,
                        "--barrier",
                        str(barrier),
                    ],
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for owner, datasets in TEAMS.items()
            ]
            try:
                release(barrier, procs)  # both have imported everything: go together
                outs = [p.communicate(timeout=180) for p in procs]
            finally:
                for p in procs:
                    if p.poll() is None:
                        p.kill()
            assert all(p.returncode == 0 for p in procs), [err[-3000:] for _, err in outs]
            return [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]

        return sim, home, backfill_both

    return setup


def step_window(instance: dg.DagsterInstance, run_id: str, step: str) -> tuple[float, float]:
    """(start, end) timestamps of a step from the run's event log."""
    times = {}
    for record in instance.get_records_for_run(
        run_id, of_type={dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS}
    ).records:
        event = record.event_log_entry
        if event.dagster_event.step_key == step:
            times[event.dagster_event.event_type] = event.timestamp
    return times[dg.DagsterEventType.STEP_START], times[dg.DagsterEventType.STEP_SUCCESS]


def test_two_teams_backfills_share_the_provider_limit(teams, tmp_path):
    rows, rpm = 40, 1200  # 160 requests in all; 20/s for both processes together
    sim, home, backfill_both = teams(rows=rows, rpm=rpm)
    runs = backfill_both()
    assert all(r["success"] for r in runs)

    stats = sim.stats()
    assert stats["served"] == 4 * rows and stats["rejected_429_limit"] <= 2
    assert stats["peak_requests_1s"] <= 2 * rpm / 60  # bucket (1 s) + 1 s of refill
    table = pl.read_delta(DeltaIOManager().table_uri(dg.AssetKey("ticket_triage")))
    assert table.height == 4 * rows and set(table["_status"]) == {"ok"}
    assert sorted(table["dataset"].unique()) == sorted(d for ds in TEAMS.values() for d in ds)

    with dg.DagsterInstance.from_config(str(home)) as instance:
        windows = [step_window(instance, r["run_id"], "ticket_triage") for r in runs]
        owners = {instance.get_run_by_id(r["run_id"]).tags[OWNER_TAG] for r in runs}
    assert owners == set(TEAMS)
    (a0, a1), (b0, b1) = windows
    # the pool (limit 2) let both steps run at once: each started before the other ended
    assert a0 < b1 and b0 < a1, windows
    # ... and the limiter split the rate, on its own schedule (no wall-clock durations): one
    # schedule for both processes at the shared limit, never slower than it while requests
    # waited, and each team's slots spread through the other's (split, not one after the other)
    slots = [slots_from_json(r["slots"]) for r in runs]
    # (the first few requests, sent before any limit is known, take no slot)
    assert all(2 * rows - 8 <= len(s) <= 2 * rows for s in slots), [len(s) for s in slots]
    assert_paced(slots[0] + slots[1], gap=1 / (0.985 * rpm / 60), bucket=0.25 * rpm / 60)
    for mine, theirs in (slots, slots[::-1]):
        lo, hi = min(s.at for s in theirs), max(s.at for s in theirs)
        inside = sum(lo < s.at < hi for s in mine)
        assert inside >= 0.5 * len(mine) - rpm / 60, (inside, len(mine))


def test_pool_limit_one_runs_provider_steps_one_at_a_time(teams):
    sim, home, backfill_both = teams(rows=10, rpm=6000, pool_limit=1)
    runs = backfill_both()
    assert all(r["success"] for r in runs) and sim.stats()["served"] == 40
    with dg.DagsterInstance.from_config(str(home)) as instance:
        (a0, a1), (b0, b1) = sorted(
            step_window(instance, r["run_id"], "ticket_triage") for r in runs
        )
        blocked = [
            r.event_log_entry.user_message or r.event_log_entry.dagster_event.message
            for run in runs
            for r in instance.get_records_for_run(
                run["run_id"], of_type=dg.DagsterEventType.ENGINE_EVENT
            ).records
        ]
    assert b0 >= a1  # the second team's LLM step waited for the first one's pool slot
    assert any("blocked by limit for pool llm-llm" in (m or "") for m in blocked)
