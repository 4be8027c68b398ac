"""The ``lakeloom`` subcommands of ``lakeloom.assets``: each lives in its own ``cli_*`` module.

Imported lazily so that one subcommand only imports the modules it drives.
"""

from __future__ import annotations

import argparse
import importlib

MODULES: tuple[str, ...] = (
    "lakeloom.assets.cli_datasets",
    "lakeloom.assets.cli_errors",
    "lakeloom.assets.cli_forecast",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add every subcommand of this folder to the ``lakeloom`` router."""
    for name in MODULES:
        importlib.import_module(name).register(subparsers)
