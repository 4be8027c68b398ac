"""The ``lakeloom`` subcommands that drive ``lakeloom.assets``: dataset, errors, forecast.

Examples::

    lakeloom dataset add support-tickets --owner team-cx   # a dataset partition and its owner
    lakeloom dataset list
    lakeloom errors --asset review_labels --rows 20         # failed rows and the re-run command
    lakeloom errors -f defs.py                               # ... for your own project
    lakeloom forecast review_labels --partitions movies,tweets --mode batch --json

``register`` adds all three to the ``lakeloom`` router (``lakeloom/cli.py``). The code location
is named as for ``dagster`` (``-m``/``-f``/``-a``/``-d``): the flags given, else (``errors``)
the location the failed run was launched from, as its Dagster instance (``DAGSTER_HOME``)
recorded it, else the folder's ``pyproject.toml`` (see :mod:`lakeloom.assets.location`).
``lakeloom dataset`` uses the same instance as ``dagster dev`` and the run queue (``make`` sets
``DAGSTER_HOME`` to ``data/dagster``; default ``$LAKELOOM_HOME/dagster``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import warnings

import dagster as dg
import polars as pl

from lakeloom.assets.datasets import (
    DATASETS_NAME,
    DatasetNameError,
    add_dataset,
    list_datasets,
    owner_tags,
    remove_dataset,
)
from lakeloom.assets.error_table import summary_markdown
from lakeloom.assets.location import (
    CodeLocation,
    CodeLocationError,
    add_location_arguments,
    location_from_args,
    location_of_run,
)
from lakeloom.storage.errors import ERRORS_TABLE, ErrorTable
from lakeloom.storage.settings import Storage, data_dir

DATASET_DESCRIPTION = (
    "``lakeloom dataset``: add, list and remove dataset partitions (and their owners)."
)
ERRORS_DESCRIPTION = (
    "``lakeloom errors``: the failed rows of recent runs, their reasons, and how to re-run them."
)
FORECAST_DESCRIPTION = (
    "``lakeloom forecast``: what a backfill of an LLM asset would send, cost and take; "
    "sends nothing."
)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``lakeloom dataset``, ``lakeloom errors`` and ``lakeloom forecast`` to the router."""
    _register_dataset(subparsers)
    _register_errors(subparsers)
    _register_forecast(subparsers)


# -- lakeloom dataset ------------------------------------------------------------------------------
def _register_dataset(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``lakeloom dataset add|list|remove``."""
    parser = subparsers.add_parser(
        "dataset", help="manage dataset partitions and owners", description=DATASET_DESCRIPTION
    )
    actions = parser.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="add a dataset partition owned by a team")
    add.add_argument("name")
    add.add_argument("--owner", required=True, help="owning team (run tag lakeloom/owner)")
    add.set_defaults(func=_dataset_add)
    listing = actions.add_parser("list", help="list datasets and owners")
    listing.add_argument("--json", action="store_true", help="print JSON rows")
    listing.set_defaults(func=_dataset_list)
    remove = actions.add_parser("remove", help="remove a dataset partition (tables keep rows)")
    remove.add_argument("name")
    remove.set_defaults(func=_dataset_remove)


def _instance() -> dg.DagsterInstance:
    """The project's Dagster instance (DAGSTER_HOME, else <LAKELOOM_HOME>/dagster)."""
    if not os.environ.get("DAGSTER_HOME"):
        home = data_dir() / "dagster"
        home.mkdir(parents=True, exist_ok=True)
        os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.get()


def _dataset_add(args: argparse.Namespace) -> int:
    try:
        with _instance() as instance:
            new = add_dataset(instance, args.name, owner=args.owner)
    except DatasetNameError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    tags = " ".join(f"{k}={v}" for k, v in owner_tags(args.owner, args.name).items())
    verb = "added" if new else "updated (already a partition)"
    print(f"dataset {args.name!r} {verb}, owner {args.owner!r} ({DATASETS_NAME} partitions)")
    print(f"launch its runs with tags: {tags}")
    return 0


def _dataset_list(args: argparse.Namespace) -> int:
    with _instance() as instance:
        rows = list_datasets(instance)
    if args.json:
        for d in rows:
            print(json.dumps({"dataset": d.name, "owner": d.owner}))
    elif not rows:
        print("no datasets yet: lakeloom dataset add NAME --owner TEAM")
    else:
        width = max(len(d.name) for d in rows)
        for d in rows:
            print(f"{d.name:<{width}}  {d.owner or '-'}")
    return 0


def _dataset_remove(args: argparse.Namespace) -> int:
    with _instance() as instance:
        existed = remove_dataset(instance, args.name)
    print(f"dataset {args.name!r} {'removed' if existed else 'was not registered'}")
    return 0 if existed else 1


# -- lakeloom errors -------------------------------------------------------------------------------
def _register_errors(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``lakeloom errors``."""
    parser = subparsers.add_parser(
        "errors", help="show failed rows by run and asset", description=ERRORS_DESCRIPTION
    )
    parser.add_argument("--run", help="only this run id")
    parser.add_argument("--asset", help="only this asset (e.g. review_labels)")
    parser.add_argument("--rows", type=int, default=5, help="failed rows to print per asset")
    parser.add_argument("--json", action="store_true", help="print the failed rows as JSON lines")
    add_location_arguments(parser)
    parser.set_defaults(func=run_errors)


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
        return location_from_args(argparse.Namespace()).shell_flags()
    except CodeLocationError:
        return "-f YOUR_DEFINITIONS.py"


def run_errors(args: argparse.Namespace) -> int:
    """``lakeloom errors``: each (run, asset) summary and re-run command; 2: bad location flags."""
    try:
        given: CodeLocation | None = location_from_args(args).check() if _named(args) else None
    except CodeLocationError as exc:
        print(f"lakeloom errors: {exc}", file=sys.stderr)
        return 2
    failed = ErrorTable(Storage.from_env()).read(run_id=args.run, asset=args.asset)
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
        return location_from_args(argparse.Namespace())
    except CodeLocationError:
        return None


def _named(args: argparse.Namespace) -> bool:
    names = ("module_name", "python_file", "package_name", "autoload_defs_module_name")
    return any(getattr(args, n, None) for n in names)


# -- lakeloom forecast -----------------------------------------------------------------------------
def _register_forecast(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``lakeloom forecast``."""
    parser = subparsers.add_parser(
        "forecast",
        help="forecast rows, cache hits, tokens, cost and duration of an LLM asset (sends nothing)",
        description=FORECAST_DESCRIPTION,
    )
    parser.add_argument("asset", help="asset key, e.g. review_labels or prefix/name")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--partitions", help="comma-separated partition keys")
    which.add_argument("--all", action="store_true", help="every upstream row (the default)")
    parser.add_argument(
        "--mode",
        choices=("online", "batch", "auto"),
        help="mode to forecast (default: the asset's own mode)",
    )
    add_location_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run_forecast)


def run_forecast(args: argparse.Namespace) -> int:
    """``lakeloom forecast``: print the forecast; exit 2 on a problem with the asset or input."""
    # Here, not at the top: the forecast loads the engine, which `errors`/`dataset` never need.
    from lakeloom.assets.forecast import ForecastError, forecast_asset
    from lakeloom.engine.cost import UnknownModelError
    from lakeloom.engine.plan import EmptyInputError, InvalidRequestError

    errors = (
        CodeLocationError,
        ForecastError,
        UnknownModelError,
        EmptyInputError,
        InvalidRequestError,
    )
    partitions = None
    if args.partitions:
        partitions = [p.strip() for p in args.partitions.split(",") if p.strip()]
    try:
        with warnings.catch_warnings():  # Dagster's beta/preview notices are not for this report
            warnings.simplefilter("ignore")
            defs = location_from_args(args).load()
        result = forecast_asset(defs, args.asset, partitions=partitions, mode=args.mode)
    except errors as exc:
        print(f"lakeloom forecast: {exc}", file=sys.stderr)
        return 2
    except dg.Failure as exc:  # e.g. the upstream partitions were never materialized
        print(f"lakeloom forecast: {exc.description}", file=sys.stderr)
        return 2
    print(json.dumps(result.as_dict(), default=str) if args.json else result.render())
    return 0
