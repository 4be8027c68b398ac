"""The ``lakeloom`` command: each subcommand lives beside the code it drives.

A module listed in ``COMMANDS`` exposes ``register(subparsers)``, which adds its parser and sets
``func`` (called with the parsed args, returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: list[str] = [
    "lakeloom.sim.cli",
    "lakeloom.catalog_cli",
    "lakeloom.modal_apps.cli",
    "lakeloom.engine.cli",
    "lakeloom.engine.cache_cli",
    "lakeloom.local.cli",
    "lakeloom.storage.cli",
    "lakeloom.forecast_cli",
    "lakeloom.datasets_cli",
    "lakeloom.reports_cli",
]


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every registered subcommand."""
    parser = argparse.ArgumentParser(prog="lakeloom", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        importlib.import_module(module).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lakeloom`` console script."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
