"""``make demo-scale``: the demo backfill on real local services, with two worker processes.

Starts ``moto_server`` (S3 on 127.0.0.1), ``redis-server`` (the shared limiter, and the Celery
broker with ``--executor celery``) and the provider simulator, points lakeloom at them
(``LAKELOOM_STORAGE_ROOT=s3://...``, ``LAKELOOM_LIMITER_URL=redis://...``), runs the demo graph's
partitioned assets one run per source in two worker processes, then the model and predictions,
prints the demo SQL read from S3 and the simulator's view of the limit, and stops every service
it started (by PID). The simulator stands in for the LLM and embedding servers: the local
135M model labels ~1-2 rows/s on 2 cores, too slow to show scale-out, so labels and vectors are
synthetic here and the model's scores mean nothing; ``make demo`` shows real ones.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from lakeloom.local.process import stop_process_group
from lakeloom.scale.executors import celery_worker_command
from lakeloom.scale.partition_runs import run_partitions
from lakeloom.scale.services import moto_server, redis_server
from lakeloom.sim.launch import SubprocessSim, start_subprocess
from lakeloom.storage.settings import data_dir

JOB = "lakeloom.demos.scale:backfill_job"
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def backfill_job() -> dg.JobDefinition:
    """The demo's partitioned assets as one job, with the executor from ``LAKELOOM_EXECUTOR``."""
    from lakeloom.definitions import defs
    from lakeloom.demos import graph as demo
    from lakeloom.scale.executors import executor_from_env

    selection = [demo.reviews, demo.review_embeddings, demo.review_labels]
    scale_defs = dg.Definitions(
        assets=demo.DEMO_ASSETS,
        jobs=[dg.define_asset_job("scale_demo_backfill", selection=selection)],
        resources=defs.resources,
        executor=executor_from_env(),
    )
    return scale_defs.resolve_job_def("scale_demo_backfill")


@contextlib.contextmanager
def simulator(rpm: int) -> Iterator[SubprocessSim]:
    """The provider simulator on 127.0.0.1 with an RPM limit and realistic latency."""
    sim = start_subprocess(host="127.0.0.1", rpm=rpm, burst_s=2.0, latency_ms="lognormal:60:200")
    try:
        yield sim
    finally:
        sim.stop()


@contextlib.contextmanager
def celery_workers(workdir: Path, count: int) -> Iterator[None]:
    """Celery workers (one process each) for ``LAKELOOM_EXECUTOR=celery``, stopped by PID."""
    argv, env = celery_worker_command(workdir, concurrency=1)
    procs: list[subprocess.Popen[bytes]] = []
    logs = [workdir / f"worker-{i}.log" for i in range(count)]
    try:
        for i, log in enumerate(logs):
            named = [*argv[:-1], f"lakeloom-{i}@%h"]
            with log.open("wb") as out:
                procs.append(subprocess.Popen(named, env=env, stdout=out, stderr=subprocess.STDOUT,
                                              start_new_session=True))  # fmt: skip
        deadline = time.monotonic() + 90
        while not all(b"ready." in log.read_bytes() for log in logs):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"Celery workers did not start; see {workdir}")
            time.sleep(0.2)
        yield
    finally:
        for proc in procs:
            stop_process_group(proc.pid, grace_s=20)
            proc.wait(timeout=30)


def _materialize_rest(partitions: list[str]) -> None:
    """Model (unpartitioned) and predictions (all partitions in one run), in this process."""
    from lakeloom.definitions import defs
    from lakeloom.demos import graph as demo

    with dg.DagsterInstance.get() as instance:
        for selection, tags in (
            ([demo.sentiment_cv, demo.sentiment_model], {}),
            ([demo.sentiment_predictions], {
                "dagster/asset_partition_range_start": partitions[0],
                "dagster/asset_partition_range_end": partitions[-1],
            }),
        ):  # fmt: skip
            started = time.monotonic()
            dg.materialize(demo.DEMO_ASSETS, selection=selection, resources=defs.resources,
                           instance=instance, tags=tags, raise_on_error=True,
                           run_config=QUIET)  # fmt: skip
            names = ", ".join(a.key.to_user_string() for a in selection)
            print(f"materialized {names} in {time.monotonic() - started:.1f}s")


def main(argv: list[str] | None = None) -> int:
    """Run the scale profile end to end; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m lakeloom.demos.scale", description=__doc__)
    parser.add_argument("--executor", choices=["in_process", "multiprocess", "celery"],
                        default="in_process", help="Executor of each partition's run.")  # fmt: skip
    parser.add_argument("--workers", type=int, default=2, help="Worker processes.")
    parser.add_argument("--rpm", type=int, default=1200, help="The simulated provider's limit.")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    from lakeloom.demos.graph import DEMO_QUERY, SOURCES

    workdir = data_dir() / "scale"
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DAGSTER_HOME", str(data_dir() / "dagster"))
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        s3 = stack.enter_context(moto_server(log_path=workdir / "moto.log"))
        redis = stack.enter_context(redis_server(workdir=workdir))
        sim = stack.enter_context(simulator(args.rpm))
        print(f"S3 (moto_server pid {s3.pid}): {s3.url}; Redis (pid {redis.pid}): {redis.url}; "
              f"simulated provider: {sim.base_url} at {args.rpm} requests/min")  # fmt: skip
        root = s3.create_bucket() + f"/demo-{int(time.time())}"
        os.environ.update({
            "LAKELOOM_STORAGE_ROOT": root,
            "LAKELOOM_STORAGE_OPTIONS": json.dumps(s3.storage_options()),
            "LAKELOOM_LIMITER_URL": redis.url,
            "LAKELOOM_LLM_BASE_URL": sim.base_url,
            "LAKELOOM_EMBED_BASE_URL": sim.base_url,
            "LAKELOOM_EXECUTOR": args.executor,
            "LAKELOOM_CELERY_BROKER": redis.url.rsplit("/", 1)[0] + "/1",
        })  # fmt: skip
        if args.executor == "celery":
            stack.enter_context(celery_workers(workdir / "celery", args.workers))
        started = time.monotonic()
        runs = run_partitions(JOB, SOURCES, workers=args.workers)
        for run in runs:
            state = "ok" if run.success else f"FAILED: {run.error}"
            print(f"  partition {run.partition}: run {run.run_id[:8]} {run.seconds:.1f}s {state}")
        if not all(r.success for r in runs):
            return 1
        stats = sim.stats()
        elapsed = time.monotonic() - started
        per_s = args.rpm / 60
        print(f"backfill of {len(runs)} partitions in {args.workers} worker processes "
              f"({args.executor} executor): {elapsed:.1f}s, {stats['served']} requests, peak "
              f"{stats['peak_requests_1s']} in 1 s against a limit of {per_s:.0f}/s "
              f"(+{2 * per_s:.0f} burst), {stats['rejected_429_limit']} limit 429s")  # fmt: skip
        _materialize_rest(list(SOURCES))
        from lakeloom.storage.catalog import Catalog
        from lakeloom.storage.settings import Storage

        con = Catalog(Storage.from_env(), database=":memory:").connect()
        print(f"\nRead from {root} with DuckDB:\n\n{DEMO_QUERY}\n")
        con.sql(DEMO_QUERY).show(max_width=250)
        print("(simulated labels and vectors: the numbers show the plumbing, not a model)")
    print("stopped moto_server, redis-server and the simulator")
    return 0


if __name__ == "__main__":
    sys.exit(main())
