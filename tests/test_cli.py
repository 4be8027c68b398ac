"""The ``lakeloom`` router: one ``cli.py`` per folder, and each command imports only its home.

Before issue 14 the storage and assets folders had a generated ``cli.py`` over ``cli_*``
modules, and ``HOMES`` named only some commands (``lakeloom sim``/``cache``/``local``/``modal``
imported every command's module: Dagster, openai, modal).
"""

import argparse
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lakeloom.cli import COMMANDS, HOMES, build_parser

REPO = Path(__file__).resolve().parents[1]


def _registered_by(module: str) -> set[str]:
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    importlib.import_module(module).register(subparsers)
    return set(subparsers.choices)


def test_every_command_has_a_home_in_the_module_that_registers_it():
    registered = {name: module for module in COMMANDS for name in _registered_by(module)}
    assert registered == HOMES


def test_folders_register_their_commands_from_one_cli_module():
    assert not list((REPO / "lakeloom").glob("*/cli_*.py"))
    assert _registered_by("lakeloom.storage.cli") == {"sql", "storage"}
    assert _registered_by("lakeloom.assets.cli") == {"dataset", "errors", "forecast"}


@pytest.mark.parametrize("command", sorted(HOMES))
def test_a_command_parses_with_only_its_home_registered(command):
    parser = build_parser(command)
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert command in subparsers.choices
    assert set(subparsers.choices) == _registered_by(HOMES[command])


def _modules_after(code: str) -> list[str]:
    probe = (
        "import sys, json\n"
        f"{code}\n"
        "heavy = ('dagster', 'openai', 'modal', 'lakeloom.engine', 'lakeloom.assets')\n"
        "print(json.dumps(sorted({m.split('.')[0] if not m.startswith('lakeloom') else "
        "'.'.join(m.split('.')[:2]) for m in sys.modules if m.startswith(heavy)})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_lakeloom_sql_and_storage_import_no_dagster_engine_or_assets():
    code = (
        "from lakeloom.cli import build_parser\nbuild_parser('sql').parse_args(['sql', 'SELECT 1'])"
    )
    assert _modules_after(code) == []
    code = "from lakeloom.cli import build_parser\nbuild_parser('storage')"
    assert _modules_after(code) == []


def test_lakeloom_errors_does_not_load_the_engine_until_a_forecast_runs():
    loaded = _modules_after("from lakeloom.cli import build_parser\nbuild_parser('errors')")
    assert "lakeloom.engine" not in loaded and "openai" not in loaded
