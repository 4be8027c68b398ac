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
    "lakeloom.storage.cli",
    "lakeloom.modal_apps.cli",
    "lakeloom.engine.cli",
    "lakeloom.engine.cache.cli",
    "lakeloom.local.cli",
    "lakeloom.assets.cli",
]


# Where a command lives, so `lakeloom sql ...` imports one module, not every command's (dagster,
# openai, modal: seconds per call). A command missing here still works, through every module
# (tests/test_cli.py checks that every registered command is here, under its own module).
HOMES: dict[str, str] = {
    "sim": "lakeloom.sim.cli",
    "sql": "lakeloom.storage.cli",
    "storage": "lakeloom.storage.cli",
    "modal": "lakeloom.modal_apps.cli",
    "cost": "lakeloom.engine.cli",
    "cache": "lakeloom.engine.cache.cli",
    "local": "lakeloom.local.cli",
    "dataset": "lakeloom.assets.cli",
    "errors": "lakeloom.assets.cli",
    "forecast": "lakeloom.assets.cli",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with every registered subcommand (only ``command``'s when its home is known)."""
    parser = argparse.ArgumentParser(prog="lakeloom", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    home = HOMES.get(command or "")
    for module in [home] if home in COMMANDS else COMMANDS:
        importlib.import_module(module).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lakeloom`` console script."""
    given = sys.argv[1:] if argv is None else argv
    args = build_parser(given[0] if given else None).parse_args(given)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
