"""``lakeloom forecast``: what a backfill of an LLM asset would send, cost and take; sends nothing.

Examples::

    lakeloom forecast review_labels --partitions movies,tweets
    lakeloom forecast review_labels --all --mode batch --json
    lakeloom forecast labels -m my_project.definitions
    lakeloom forecast ticket_labels -f defs.py --partitions 2025-03-01

The code location is named as for ``dagster`` (``-m``/``-f``/``-a``/``-d``; by default the
project's ``pyproject.toml``): see :mod:`lakeloom.assets.location`.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Any

import dagster as dg

from lakeloom.assets.forecast import ForecastError, forecast_asset
from lakeloom.assets.location import CodeLocationError, add_location_arguments, location_from_args
from lakeloom.engine.cost import UnknownModelError
from lakeloom.engine.plan import EmptyInputError, InvalidRequestError

_ERRORS = (
    CodeLocationError,
    ForecastError,
    UnknownModelError,
    EmptyInputError,
    InvalidRequestError,
)


def register(subparsers: Any) -> None:
    """Add ``lakeloom forecast``."""
    parser = subparsers.add_parser(
        "forecast",
        help="forecast rows, cache hits, tokens, cost and duration of an LLM asset (sends nothing)",
        description=__doc__.splitlines()[0],
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
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the forecast; exit 2 on a problem with the asset or its input."""
    partitions = None
    if args.partitions:
        partitions = [p.strip() for p in args.partitions.split(",") if p.strip()]
    try:
        with warnings.catch_warnings():  # Dagster's beta/preview notices are not for this report
            warnings.simplefilter("ignore")
            defs = location_from_args(args).load()
        result = forecast_asset(defs, args.asset, partitions=partitions, mode=args.mode)
    except _ERRORS as exc:
        print(f"lakeloom forecast: {exc}", file=sys.stderr)
        return 2
    except dg.Failure as exc:  # e.g. the upstream partitions were never materialized
        print(f"lakeloom forecast: {exc.description}", file=sys.stderr)
        return 2
    print(json.dumps(result.as_dict(), default=str) if args.json else result.render())
    return 0
