"""``lakeloom errors``: the failed rows of recent runs, their reasons, and how to re-run them.

Examples::

    lakeloom errors                          # every run's failures, newest first
    lakeloom errors --run 5cc1cf46-...       # one run
    lakeloom errors --asset review_labels --rows 20
"""

from __future__ import annotations

import argparse
import json

import polars as pl

from lakeloom.reports import ERRORS_TABLE, read_error_report, summary_markdown
from lakeloom.settings import Storage


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``lakeloom errors``."""
    parser = subparsers.add_parser(
        "errors", help="show failed rows by run and asset", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--run", help="only this run id")
    parser.add_argument("--asset", help="only this asset (e.g. review_labels)")
    parser.add_argument("--rows", type=int, default=5, help="failed rows to print per asset")
    parser.add_argument("--json", action="store_true", help="print the failed rows as JSON lines")
    parser.set_defaults(func=run)


def rerun_command(asset: str, partitions: list[str]) -> str:
    """The shell command that re-sends only the failed rows of ``asset``'s partitions."""
    op = asset.replace("/", "__")
    config = json.dumps({"ops": {op: {"config": {"only_failed": True}}}})
    if len(partitions) == 1:
        where = f" --partition {partitions[0]}"
    elif partitions:
        where = f" --partition-range {partitions[0]}...{partitions[-1]}"
    else:
        where = ""
    return (
        f"dagster asset materialize -m lakeloom.definitions --select {asset}{where} "
        f"--config-json '{config}'"
    )


def run(args: argparse.Namespace) -> int:
    """Print each (run, asset) summary and the re-run command; exit 0."""
    failed = read_error_report(Storage.from_env(), run_id=args.run, asset=args.asset)
    if failed.is_empty():
        print(f"no failed rows recorded in {ERRORS_TABLE}")
        return 0
    if args.json:
        for row in failed.iter_rows(named=True):
            print(json.dumps(row, default=str))
        return 0
    groups = (
        failed.group_by("run_id", "asset")
        .agg(pl.col("recorded_at").max())
        .sort("recorded_at", descending=True)
    )
    for run_id, asset, _ in groups.iter_rows():
        rows = failed.filter((pl.col("run_id") == run_id) & (pl.col("asset") == asset))
        partitions = sorted(p for p in rows["partition"].unique().to_list() if p is not None)
        print(f"## run {run_id} · {asset}\n")
        print(summary_markdown(rows, asset=asset, run_id=run_id, total_rows=None))
        print()
        with pl.Config(tbl_rows=args.rows, fmt_str_lengths=80, tbl_hide_dataframe_shape=True):
            print(rows.select("partition", "key", "_error").head(args.rows))
        print(f"\nre-run only these rows:\n  {rerun_command(asset, partitions)}\n")
    return 0
