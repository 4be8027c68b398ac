"""Partitioned LLM backfills through Dagster's multiprocess and Celery executors, chosen by env,
sharing one provider limit through the Redis limiter (simulator /stats), tables on S3."""

import os
import signal
import subprocess
import time
from pathlib import Path

import polars as pl
import pytest

from lakeloom.scale.executors import ExecutorConfigError, celery_worker_command, executor_from_env
from lakeloom.scale.partition_runs import run_partitions
from tests.scale.partition_job import PARTS, ROWS

REPO = Path(__file__).resolve().parents[2]
JOB = "tests.scale.partition_job:partition_job"
DAGSTER_YAML = """
concurrency:
  pools:
    default_limit: 2
    granularity: op
telemetry:
  enabled: false
"""


def test_executor_is_chosen_by_env():
    assert executor_from_env({}).name == "multi_or_in_process_executor"
    assert executor_from_env({"LAKELOOM_EXECUTOR": "in_process"}).name == "in_process"
    multi = executor_from_env({"LAKELOOM_EXECUTOR": "multiprocess", "LAKELOOM_MAX_CONCURRENT": "3"})
    assert multi.name == "multiprocess"
    celery = executor_from_env(
        {"LAKELOOM_EXECUTOR": "celery", "LAKELOOM_CELERY_BROKER": "redis://127.0.0.1:1/0"}
    )
    assert celery.name == "celery"
    assert executor_from_env({"LAKELOOM_EXECUTOR": "k8s"}).name == "k8s"
    with pytest.raises(ExecutorConfigError, match="needs LAKELOOM_CELERY_BROKER"):
        executor_from_env({"LAKELOOM_EXECUTOR": "celery"})
    with pytest.raises(ExecutorConfigError, match="expected one of in_process, multiprocess"):
        executor_from_env({"LAKELOOM_EXECUTOR": "ray"})
    with pytest.raises(ExecutorConfigError, match="LAKELOOM_MAX_CONCURRENT='two'"):
        executor_from_env({"LAKELOOM_EXECUTOR": "multiprocess", "LAKELOOM_MAX_CONCURRENT": "two"})


@pytest.fixture
def backfill_env(tmp_path, monkeypatch, s3_root, sim_server, redis_url):
    """Env for run processes and workers: a DAGSTER_HOME with pools, S3, Redis limiter, sim."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    sim = sim_server(rpm=900, burst_s=1.0, latency_ms="20")  # 15 requests/s for everyone
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("LAKELOOM_TEST_SIM_URL", sim.base_url)
    monkeypatch.setenv("LAKELOOM_LIMITER_URL", redis_url)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    return sim


def check_backfill(runs, sim, s3_root, partitions) -> None:
    assert [r.partition for r in runs] == list(partitions)
    assert all(r.success for r in runs), runs
    stats = sim.stats()
    n = ROWS * len(partitions)
    # under the limit, on the simulator's own counters (its bucket is the limit: a client over
    # it meets 429s), not on wall-clock time: at most one limit 429, and no 1 s window over
    # the bucket (15) plus a second of refill (15)
    assert stats["served"] == n and stats["rejected_429_limit"] <= 1
    assert stats["peak_requests_1s"] <= 30
    table = pl.read_delta(
        f"{s3_root.root}/assets/doc_labels", storage_options=s3_root.storage_options
    )
    assert table.height == n and (table["_status"] == "ok").all()
    assert sorted(table["part"].unique()) == sorted(partitions)


def test_multiprocess_executor_runs_a_partition(backfill_env, s3_root, monkeypatch):
    monkeypatch.setenv("LAKELOOM_EXECUTOR", "multiprocess")  # one spawned process per step
    partitions = PARTS.get_partition_keys()[:1]
    runs = run_partitions(JOB, partitions, workers=1)
    check_backfill(runs, backfill_env, s3_root, partitions)


def test_celery_worker_backfill_stays_under_the_shared_limit(
    backfill_env, s3_root, redis_url, tmp_path, monkeypatch
):
    broker = redis_url.rsplit("/", 1)[0] + "/1"  # the limiter keeps db 0
    monkeypatch.setenv("LAKELOOM_EXECUTOR", "celery")
    monkeypatch.setenv("LAKELOOM_CELERY_BROKER", broker)
    argv, env = celery_worker_command(tmp_path / "celery", concurrency=2)
    log = tmp_path / "celery.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(argv, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while b"ready." not in log.read_bytes():
            assert worker.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        partitions = PARTS.get_partition_keys()
        runs = run_partitions(JOB, partitions, workers=2)
        check_backfill(runs, backfill_env, s3_root, partitions)
        text = log.read_text()
        # every step (docs + doc_labels per partition) ran as a task on the Celery worker
        assert text.count("execute_plan[") >= 2 * len(partitions)
        assert text.count("succeeded in") >= 2 * len(partitions)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()


K8S_RUN_CONFIG = {  # the README's "Kubernetes" run config, validated here (no cluster needed)
    "execution": {
        "config": {
            "job_namespace": "lakeloom",
            "max_concurrent": 8,
            "env_secrets": ["lakeloom-s3", "lakeloom-openai"],
            "env_vars": ["LAKELOOM_STORAGE_ROOT", "LAKELOOM_LIMITER_URL", "LAKELOOM_EXECUTOR=k8s"],
            "step_k8s_config": {
                "container_config": {"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}
            },
        }
    }
}


def test_documented_k8s_executor_config_validates(monkeypatch):
    import dagster as dg

    monkeypatch.setenv("LAKELOOM_EXECUTOR", "k8s")
    from tests.scale.partition_job import partition_job

    job = partition_job()
    assert job.executor_def.name == "k8s"
    resolved = dg.validate_run_config(job, K8S_RUN_CONFIG)["execution"]["k8s"]
    assert resolved["job_namespace"] == "lakeloom" and resolved["max_concurrent"] == 8
