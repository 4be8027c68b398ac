"""``lakeloom dataset``: add, list and remove dataset partitions (and their owners).

Examples::

    lakeloom dataset add support-tickets --owner team-cx
    lakeloom dataset list
    lakeloom dataset remove support-tickets

The instance is ``DAGSTER_HOME`` (``make`` sets it to ``data/dagster``; default
``$LAKELOOM_HOME/dagster``), the same one ``dagster dev`` and the run queue use.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import dagster as dg

from lakeloom.assets.datasets import (
    DATASETS_NAME,
    DatasetNameError,
    add_dataset,
    list_datasets,
    owner_tags,
    remove_dataset,
)
from lakeloom.storage.settings import data_dir


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``lakeloom dataset``."""
    parser = subparsers.add_parser(
        "dataset", help="manage dataset partitions and owners", description=__doc__.splitlines()[0]
    )
    actions = parser.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="add a dataset partition owned by a team")
    add.add_argument("name")
    add.add_argument("--owner", required=True, help="owning team (run tag lakeloom/owner)")
    add.set_defaults(func=_add)
    listing = actions.add_parser("list", help="list datasets and owners")
    listing.add_argument("--json", action="store_true", help="print JSON rows")
    listing.set_defaults(func=_list)
    remove = actions.add_parser("remove", help="remove a dataset partition (tables keep rows)")
    remove.add_argument("name")
    remove.set_defaults(func=_remove)


def _instance() -> dg.DagsterInstance:
    """The project's Dagster instance (DAGSTER_HOME, else <LAKELOOM_HOME>/dagster)."""
    if not os.environ.get("DAGSTER_HOME"):
        home = data_dir() / "dagster"
        home.mkdir(parents=True, exist_ok=True)
        os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.get()


def _add(args: argparse.Namespace) -> int:
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


def _list(args: argparse.Namespace) -> int:
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


def _remove(args: argparse.Namespace) -> int:
    with _instance() as instance:
        existed = remove_dataset(instance, args.name)
    print(f"dataset {args.name!r} {'removed' if existed else 'was not registered'}")
    return 0 if existed else 1
