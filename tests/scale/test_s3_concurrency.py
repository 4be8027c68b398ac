"""Two OS processes committing to one Delta table on S3 at once: nothing lost, one winner."""

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
from deltalake import DeltaTable

from tests.fixtures.together import release

REPO = Path(__file__).resolve().parents[2]
ROUNDS = 6


def run_writers(
    uri: str, jobs: list[tuple[str, str]], barrier: Path, attempts: int = 8
) -> list[dict]:
    """Start one writer process per (partition, writer), release them together; their lines."""
    barrier.mkdir()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.scale.s3_writer",
                uri,
                part,
                writer,
                str(barrier),
                str(ROUNDS),
                str(attempts),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for part, writer in jobs
    ]
    release(barrier, procs)  # both have imported polars/deltalake: go together
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    return outs


def commits(uri: str, options: dict) -> dict[int, tuple[str, str]]:
    """Version -> (writer, round) of every write commit in the table's history."""
    history = DeltaTable(uri, storage_options=options).history()
    return {h["version"]: (h["writer"], h["round"]) for h in history if "writer" in h}


def test_two_processes_committing_different_partitions_both_land(s3_root, tmp_path):
    uri = s3_root.table_uri("assets", "shared")
    a, b = run_writers(uri, [("left", "a"), ("right", "b")], tmp_path / "go")
    versions = sorted(a["versions"] + b["versions"])
    assert not a["errors"] and not b["errors"]
    assert versions == list(range(2 * ROUNDS))  # every commit has its own version: none lost
    history = commits(uri, s3_root.storage_options)
    for out in (a, b):
        assert [history[v] for v in out["versions"]] == [
            (out["writer"], str(i)) for i in range(ROUNDS)
        ]
    table = pl.read_delta(uri, storage_options=s3_root.storage_options)
    last = str(ROUNDS - 1)
    got = table.group_by("part", "writer", "round").len().sort("part").rows()
    assert got == [("left", "a", int(last), 500), ("right", "b", int(last), 500)]


def test_two_processes_overwriting_one_partition_end_with_one_winner(s3_root, tmp_path):
    uri = s3_root.table_uri("assets", "contested")
    a, b = run_writers(uri, [("same", "a"), ("same", "b")], tmp_path / "go")
    assert not a["errors"] and not b["errors"]  # conflicts were retried, none gave up
    versions = sorted(a["versions"] + b["versions"])
    assert versions == list(range(2 * ROUNDS))  # no lost and no shared commit
    assert a["retries"] + b["retries"] >= 1  # the writers really collided, and retried
    history = commits(uri, s3_root.storage_options)
    winner = history[max(history)]
    table = pl.read_delta(uri, storage_options=s3_root.storage_options)
    # the partition holds exactly the last commit's rows: one writer, one round, no mixture
    assert table.height == 500
    assert table.select("writer", pl.col("round").cast(pl.String)).unique().rows() == [winner]
    for version in versions[:-1]:  # every earlier commit is still in the log, readable
        old = pl.read_delta(uri, version=version, storage_options=s3_root.storage_options)
        assert old.height == 500
        assert old.select("writer", pl.col("round").cast(pl.String)).unique().rows() == [
            history[version]
        ]


def test_a_conflict_past_its_attempts_fails_clearly(s3_root, tmp_path):
    uri = s3_root.table_uri("assets", "no_retry")
    outs = run_writers(uri, [("same", "a"), ("same", "b")], tmp_path / "go", attempts=1)
    errors = [e for o in outs for e in o["errors"]]
    landed = sorted(v for o in outs for v in o["versions"])
    assert len(landed) + len(errors) == 2 * ROUNDS
    assert landed == list(range(len(landed)))  # what reported success is really in the log
    for error in errors:
        assert f"write to {uri} still conflicted after 1 attempts" in error
        assert "predicate=" in error and "same" in error
    history = commits(uri, s3_root.storage_options)
    table = pl.read_delta(uri, storage_options=s3_root.storage_options)
    assert table.select("writer", pl.col("round").cast(pl.String)).unique().rows() == [
        history[max(history)]
    ]
