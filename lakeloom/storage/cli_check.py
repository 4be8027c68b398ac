"""``lakeloom storage check``: is the storage root safe for Delta commits (and reachable)?"""

from __future__ import annotations

import argparse
import sys

from lakeloom.storage.check import StorageCheckError, check_conditional_writes
from lakeloom.storage.env import is_s3
from lakeloom.storage.settings import Storage


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``storage`` subcommand."""
    parser = subparsers.add_parser("storage", help="Check the Delta storage root.")
    parser.add_argument("action", choices=["check"], help="check: probe conditional writes.")
    parser.add_argument("--root", help="Storage root (default LAKELOOM_STORAGE_ROOT).")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Probe the root; 0 when safe, 2 when refused or unreachable."""
    storage = Storage.resolve(args.root)
    print(f"storage: {storage!r}")
    if not is_s3(storage.root):
        print("ok: not an S3 root (local folders and GCS/Azure need no probe)")
        return 0
    try:
        check_conditional_writes(storage.root, storage.storage_options)
    except StorageCheckError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    print("ok: the store honours 'If-None-Match: *' (second PUT -> 412): Delta commits are safe")
    return 0
