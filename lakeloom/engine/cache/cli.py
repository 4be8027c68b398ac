"""``lakeloom cache migrate``: re-key a cache written before per-provider namespaces.

Examples::

    lakeloom cache namespace --kind compatible --base-url http://127.0.0.1:8377/v1
    lakeloom cache migrate --kind openai            # '' -> 'openai:https://api.openai.com/v1'
    lakeloom cache migrate --to-namespace team-shared --model gpt-4o-mini

Entries are copied (the old ones stay readable with ``cache_namespace=""``); the cache lives
under the storage root (``LAKELOOM_STORAGE_ROOT``), like every run's.
"""

from __future__ import annotations

import argparse
import json
import sys

from lakeloom.engine.cache.namespace import migrate_namespace, provider_namespace
from lakeloom.engine.cache.store import ResponseCache
from lakeloom.storage.settings import Storage


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``lakeloom cache``."""
    parser = subparsers.add_parser(
        "cache", help="response cache maintenance", description=__doc__.splitlines()[0]
    )
    actions = parser.add_subparsers(dest="action", required=True)
    show = actions.add_parser("namespace", help="print a provider's default cache namespace")
    _provider_args(show)
    show.set_defaults(func=_namespace)
    migrate = actions.add_parser("migrate", help="copy old entries under a provider's namespace")
    migrate.add_argument("--from-namespace", default="", help="only '' can be re-keyed")
    migrate.add_argument(
        "--to-namespace", help="target namespace (default: from --kind/--base-url)"
    )
    _provider_args(migrate)
    migrate.add_argument("--model", action="append", help="only these models (repeatable)")
    migrate.set_defaults(func=_migrate)


def _provider_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind", choices=("openai", "azure", "compatible"), default="openai")
    parser.add_argument("--base-url", help="the provider's base URL (default: OpenAI's)")


def _namespace(args: argparse.Namespace) -> int:
    print(provider_namespace(args.kind, args.base_url))
    return 0


def _migrate(args: argparse.Namespace) -> int:
    target = args.to_namespace or provider_namespace(args.kind, args.base_url)
    try:
        added = migrate_namespace(
            ResponseCache(Storage.from_env()),
            target,
            from_namespace=args.from_namespace,
            models=args.model,
        )
    except ValueError as exc:
        print(f"lakeloom cache migrate: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"to_namespace": target, "added": added}))
    return 0
