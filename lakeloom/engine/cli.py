"""``lakeloom cost``: what runs spent, by asset, partition, model or day, from the cost ledger.

Examples::

    lakeloom cost                       # by asset and model
    lakeloom cost --by day model        # daily spend per model
    lakeloom cost --asset review_labels --since 2026-11-01 --json
    lakeloom cost --prices              # the price table in force (with overrides)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys

import polars as pl

from lakeloom.engine.cost import PriceTable
from lakeloom.engine.ledger import CostLedger, report
from lakeloom.storage.settings import Storage

_GROUPS = ("asset", "partition", "model", "day", "run_id")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``lakeloom cost``."""
    parser = subparsers.add_parser(
        "cost",
        help="report LLM spend from the cost ledger",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument(
        "--by", nargs="+", choices=_GROUPS, default=["asset", "model"], help="group columns"
    )
    parser.add_argument("--asset", help="only this asset")
    parser.add_argument("--partition", help="only this partition")
    parser.add_argument("--model", help="only this model")
    parser.add_argument("--since", type=dt.date.fromisoformat, help="first day (YYYY-MM-DD)")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    parser.add_argument("--prices", action="store_true", help="print the price table instead")
    parser.set_defaults(func=run)


def _prices_frame() -> pl.DataFrame:
    table = PriceTable()
    rows = [{"model": m, **table.get(m).model_dump()} for m in table.models]
    return pl.DataFrame(rows).with_columns(pl.lit(table.version).alias("version"))


def run(args: argparse.Namespace) -> int:
    """Print the report; exit 0 (also when the ledger is still empty)."""
    if args.prices:
        frame = _prices_frame()
    else:
        ledger = CostLedger(Storage.from_env()).read()
        for column in ("asset", "partition", "model"):
            value = getattr(args, column)
            if value is not None:
                ledger = ledger.filter(pl.col(column) == value)
        if args.since is not None:
            ledger = ledger.filter(pl.col("day") >= args.since)
        if ledger.is_empty():
            print("no spend recorded yet (the ledger is empty for this selection)")
            return 0
        frame = report(ledger, by=args.by)
    if args.json:
        for row in frame.iter_rows(named=True):
            sys.stdout.write(json.dumps(row, default=str) + "\n")
    else:
        with pl.Config(
            tbl_rows=200, tbl_cols=30, tbl_width_chars=200, tbl_hide_dataframe_shape=True
        ):
            print(frame)
        if not args.prices:
            total = frame["cost_usd"].sum()
            print(f"total: ${total:,.6f}")
    return 0
