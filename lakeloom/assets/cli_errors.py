"""``lakeloom errors``: the failed rows of recent runs, their reasons, and how to re-run them.

Examples::

    lakeloom errors                          # every run's failures, newest first
    lakeloom errors --run 5cc1cf46-...       # one run
    lakeloom errors --asset review_labels --rows 20
    lakeloom errors -f defs.py               # re-run commands for your own project

The re-run command names the code location the way ``dagster`` does: the ``-m``/``-f``/``-a``/
``-d`` flags given here, else the location the failed run was launched from (as its Dagster
instance, ``DAGSTER_HOME``, recorded it), else the folder's ``pyproject.toml`` (see
:mod:`lakeloom.assets.location`).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

import polars as pl

from lakeloom.assets.error_table import ERRORS_TABLE, read_error_report, summary_markdown
from lakeloom.assets.location import (
    CodeLocation,
    CodeLocationError,
    add_location_arguments,
    location_of_run,
)
from lakeloom.assets.location import location_from_args as _location_from_args
from lakeloom.storage.settings import Storage


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``lakeloom errors``."""
    parser = subparsers.add_parser(
        "errors", help="show failed rows by run and asset", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--run", help="only this run id")
    parser.add_argument("--asset", help="only this asset (e.g. review_labels)")
    parser.add_argument("--rows", type=int, default=5, help="failed rows to print per asset")
    parser.add_argument("--json", action="store_true", help="print the failed rows as JSON lines")
    add_location_arguments(parser)
    parser.set_defaults(func=run)


def rerun_command(asset: str, partitions: list[str], location: CodeLocation | None = None) -> str:
    """The shell command that re-sends only the failed rows of ``asset``'s partitions.

    ``location`` is the code location to name (default: the project's pyproject.toml, else a
    ``-f FILE`` placeholder the user must fill in).  ``lakeloom errors`` passes the flags it was
    given, else the location the failed run was launched from (recorded by its Dagster instance).
    """
    flags = location.shell_flags() if location is not None else _default_flags()
    op = asset.replace("/", "__")
    config = json.dumps({"ops": {op: {"config": {"only_failed": True}}}})
    if len(partitions) == 1:
        where = f" --partition {partitions[0]}"
    elif partitions:
        where = f" --partition-range {partitions[0]}...{partitions[-1]}"
    else:
        where = ""
    return (
        f"dagster asset materialize {flags} --select {shlex.quote(asset)}{where} "
        f"--config-json '{config}'"
    )


def _default_flags() -> str:
    try:
        return _location_from_args(argparse.Namespace()).shell_flags()
    except CodeLocationError:
        return "-f YOUR_DEFINITIONS.py"


def run(args: argparse.Namespace) -> int:
    """Print each (run, asset) summary and the re-run command; exit 0 (2: bad location flags)."""
    try:
        given: CodeLocation | None = _location_from_args(args).check() if _named(args) else None
    except CodeLocationError as exc:
        print(f"lakeloom errors: {exc}", file=sys.stderr)
        return 2
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
        location = given or location_of_run(run_id) or _project_location()
        print(f"\nre-run only these rows:\n  {rerun_command(asset, partitions, location)}\n")
    return 0


def _project_location() -> CodeLocation | None:
    """The folder's pyproject.toml location; ``None`` (a placeholder is printed) without one."""
    try:
        return _location_from_args(argparse.Namespace())
    except CodeLocationError:
        return None


def _named(args: argparse.Namespace) -> bool:
    names = ("module_name", "python_file", "package_name", "autoload_defs_module_name")
    return any(getattr(args, n, None) for n in names)
