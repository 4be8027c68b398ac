"""Two OS processes materializing two partitions of one asset at once: every commit lands."""

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
from deltalake import DeltaTable

from lakeloom.storage.lineage import CommitLineage

ROUNDS = 4


def test_two_processes_writing_different_partitions_both_land(storage, tmp_path):
    repo = Path(__file__).resolve().parents[2]
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.io_managers.concurrent_writer",
                storage.root,
                part,
                str(barrier),
                str(ROUNDS),
            ],
            cwd=repo,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for part in ["left", "right"]
    ]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        outputs.append(json.loads(out.strip().splitlines()[-1]))

    uri = storage.table_uri("assets", "shared")
    table = pl.read_delta(uri)
    assert table.group_by("writer").len().sort("writer").rows() == [("left", 1000), ("right", 1000)]
    versions = sorted(v for o in outputs for v in o["versions"])
    assert versions == list(range(2 * ROUNDS))  # no lost or shared commit
    history = DeltaTable(uri).history()
    writers = {h["version"]: CommitLineage.from_history_entry(h).partitions for h in history}
    for output in outputs:  # each process's reported version is its own commit
        for version in output["versions"]:
            assert list(writers[version]) == [output["partition"]]
