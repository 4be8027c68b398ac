"""``lakeloom sim``: run the provider simulator in the foreground.

Flags are generated from ``SimConfig`` (``--rpm``, ``--tpm``, ``--burst-s``, ``--fail-429``, ...),
so every setting documented there is a flag. When it is listening it prints one line,
``lakeloom-sim listening on http://HOST:PORT/v1``, which the launcher waits for.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import types
import typing
from typing import Any

from pydantic import ValidationError

from lakeloom.sim.config import SimConfig
from lakeloom.sim.server import new_event_loop, serve_forever

READY_PREFIX = "lakeloom-sim listening on "


def _flag_type(annotation: Any) -> Any:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _flag_type(args[0])
    return annotation


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per ``SimConfig`` field, with its default and description."""
    for name, field in SimConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        kind = _flag_type(field.annotation)
        help_text = f"{field.description} (default: {field.default})"
        if kind is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        else:
            parser.add_argument(flag, type=kind, default=None, help=help_text)


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """Build a ``SimConfig`` from parsed flags (unset flags keep the model's defaults)."""
    given = {
        name: getattr(args, name)
        for name in SimConfig.model_fields
        if getattr(args, name, None) is not None
    }
    return SimConfig(**given)


def to_argv(config: SimConfig) -> list[str]:
    """Return flags reproducing ``config`` (the API key is left out: pass it by environment)."""
    argv: list[str] = []
    for name, value in config.model_dump(exclude={"api_key"}).items():
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + name.replace("_", "-"))
        else:
            argv += [flag, str(value)]
    return argv


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted."""
    try:
        config = config_from_args(args)
    except ValidationError as exc:
        print(f"lakeloom sim: invalid settings:\n{exc}", file=sys.stderr)
        return 2

    def ready(url: str) -> None:
        print(READY_PREFIX + url, flush=True)

    loop = new_event_loop()
    try:
        loop.run_until_complete(serve_forever(config, ready))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"lakeloom sim: cannot listen on {config.host}:{config.port}: {exc}", file=sys.stderr)
        return 1
    finally:
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
    return 0


def register(subparsers: Any) -> None:
    """Add the ``sim`` subcommand."""
    parser = subparsers.add_parser(
        "sim",
        help="run the OpenAI-compatible provider simulator",
        description=__doc__.splitlines()[0],
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    """``python -m lakeloom.sim``."""
    parser = argparse.ArgumentParser(
        prog="python -m lakeloom.sim", description=__doc__.splitlines()[0]
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
