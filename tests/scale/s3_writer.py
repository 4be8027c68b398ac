"""Run in a subprocess by test_s3_concurrency: commit one partition of a shared table, repeatedly.

Usage: python -m tests.scale.s3_writer URI PARTITION WRITER BARRIER ROUNDS MAX_ATTEMPTS
Storage options come from LAKELOOM_STORAGE_OPTIONS. Every round overwrites PARTITION with 500
rows tagged (WRITER, round) through ``lakeloom.storage.delta.write_table``. Starts when the test
says go
on the BARRIER folder (``tests.fixtures.together``) so the writers overlap. Prints one JSON
line: committed versions, conflicts retried, errors.
"""

import json
import logging
import sys
from pathlib import Path

import polars as pl

from lakeloom.storage.delta import DeltaWriteConflict, in_predicate, write_table
from lakeloom.storage.settings import Storage
from tests.fixtures.together import wait_for_go


class CountRetries(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "commit conflict" in record.getMessage():
            self.count += 1


def main(uri: str, partition: str, writer: str, barrier: str, rounds: int, attempts: int):
    retries = CountRetries()
    logger = logging.getLogger("lakeloom.storage.delta")
    logger.addHandler(retries)
    logger.setLevel(logging.INFO)
    options = Storage.from_env().storage_options
    versions, errors = [], []
    wait_for_go(Path(barrier))  # start with the other writer (tests.fixtures.together)
    for i in range(rounds):
        df = pl.DataFrame(
            {"id": range(500), "part": [partition] * 500, "writer": writer, "round": i}
        )
        try:
            version = write_table(
                df,
                uri,
                mode="overwrite",
                predicate=in_predicate("part", [partition]),
                partition_by=["part"],
                storage_options=options,
                max_attempts=attempts,
                commit_metadata={"writer": writer, "round": str(i)},
            )
            versions.append(version)
        except DeltaWriteConflict as exc:
            errors.append(str(exc))
    print(json.dumps({"writer": writer, "versions": versions, "retries": retries.count,
                      "errors": errors}))  # fmt: skip


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], a[1], a[2], a[3], int(a[4]), int(a[5]))
