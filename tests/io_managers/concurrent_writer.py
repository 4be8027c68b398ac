"""Run in a subprocess by test_concurrency: materialize one partition several times.

Usage: python -m tests.io_managers.concurrent_writer ROOT PARTITION BARRIER_DIR ROUNDS
Each writer drops a ready file in BARRIER_DIR and starts once both are there, so the writes
overlap. Prints one JSON line: the Delta versions this process committed.
"""

import json
import sys
import time
from pathlib import Path

import dagster as dg
import polars as pl

from lakeloom.io_managers import DeltaIOManager

PARTS = dg.StaticPartitionsDefinition(["left", "right"])


@dg.asset(partitions_def=PARTS)
def shared(context: dg.AssetExecutionContext) -> pl.DataFrame:
    n = 1000
    return pl.DataFrame({"id": range(n), "writer": [context.partition_key] * n})


def main(root: str, partition: str, barrier: Path, rounds: int) -> None:
    io_manager = DeltaIOManager(root=root, storage_options={})
    (barrier / partition).touch()
    deadline = time.time() + 60
    while len(list(barrier.iterdir())) < len(PARTS.get_partition_keys()) and time.time() < deadline:
        time.sleep(0.005)
    versions = []
    for _ in range(rounds):
        result = dg.materialize(
            [shared], partition_key=partition, resources={"io_manager": io_manager}
        )
        meta = result.asset_materializations_for_node("shared")[0].metadata
        versions.append(meta["delta_version"].value)
    print(json.dumps({"partition": partition, "versions": versions}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]))
