"""The ``lakeloom`` subcommands of ``lakeloom.storage``: each lives in its own ``cli_*`` module.

Imported lazily so that one subcommand only imports the modules it drives.
"""

from __future__ import annotations

import argparse
import importlib

MODULES: tuple[str, ...] = (
    "lakeloom.storage.cli_check",
    "lakeloom.storage.cli_sql",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add every subcommand of this folder to the ``lakeloom`` router."""
    for name in MODULES:
        importlib.import_module(name).register(subparsers)
