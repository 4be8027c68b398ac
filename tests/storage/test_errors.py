"""The ``lakeloom_errors`` table's storage API (issue 14): one documented way to read and write it.

Real Delta tables on a temporary root; rows shaped as :data:`ERRORS_SCHEMA`.
"""

import ast
import datetime as dt
from pathlib import Path

import polars as pl

from lakeloom.storage.errors import ERRORS_SCHEMA, ERRORS_TABLE, ErrorTable
from lakeloom.storage.settings import Storage

SOURCE = Path(__file__).resolve().parents[2] / "lakeloom" / "storage" / "errors.py"


def rows(run_id: str, asset: str, keys: list[str]) -> pl.DataFrame:
    n = len(keys)
    return pl.DataFrame(
        {
            "run_id": [run_id] * n,
            "asset": [asset] * n,
            "partition": ["p"] * n,
            "key": keys,
            "reason": ["HTTP 503"] * n,
            "_reason": ["http_5xx"] * n,
            "_error": ["HTTP 503: busy"] * n,
            "_request_hash": [f"h-{k}" for k in keys],
            "_model": ["m"] * n,
            "_attempts": [1] * n,
            "recorded_at": [dt.datetime(2026, 1, 1, tzinfo=dt.UTC)] * n,
        },
        schema=ERRORS_SCHEMA,
    )


def test_error_table_lives_beside_the_asset_tables(storage: Storage):
    table = ErrorTable(storage)
    assert table.uri == storage.table_uri("assets", ERRORS_TABLE)
    assert not table.exists() and table.read().schema == pl.Schema(ERRORS_SCHEMA)


def test_replace_swaps_only_the_runs_own_rows_for_one_asset(storage: Storage):
    table = ErrorTable(storage)
    assert table.replace(rows("r1", "a", ["k1", "k2"]), run_id="r1", asset="a") is not None
    table.replace(rows("r1", "b", ["k9"]), run_id="r1", asset="b")
    table.replace(rows("r2", "a", ["k3"]), run_id="r2", asset="a")
    # a retry of run r1 for asset a: its rows are replaced, nobody else's
    version = table.replace(rows("r1", "a", ["k2"]), run_id="r1", asset="a")
    assert version is not None
    assert table.read(run_id="r1", asset="a")["key"].to_list() == ["k2"]
    assert table.read(run_id="r1", asset="b")["key"].to_list() == ["k9"]
    assert table.read(run_id="r2")["key"].to_list() == ["k3"]
    assert table.read().height == 3


def test_replace_with_no_rows_clears_a_retry_and_leaves_a_clean_run_unwritten(storage: Storage):
    table = ErrorTable(storage)
    empty = rows("r1", "a", [])
    assert table.replace(empty, run_id="r1", asset="a") is None and not table.exists()
    table.replace(rows("r1", "a", ["k1"]), run_id="r1", asset="a")
    assert table.has_rows(run_id="r1", asset="a")
    assert table.replace(empty, run_id="r1", asset="a") is not None  # the retry healed them
    assert not table.has_rows(run_id="r1", asset="a")
    assert table.replace(empty, run_id="r2", asset="a") is None  # clean run: no new version


def test_error_table_repr_keeps_secret_options_out(tmp_path):
    secret = "s3cr3t-value-123"
    storage = Storage(root=str(tmp_path), storage_options={"aws_secret_access_key": secret})
    assert secret not in repr(ErrorTable(storage))


def test_error_storage_imports_no_core_engine_or_dagster():
    """The storage layer stores shaped rows; classifying them (core.reasons) stays in assets/."""
    imported: set[str] = set()
    for node in ast.walk(ast.parse(SOURCE.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
    banned = ("lakeloom.core", "lakeloom.engine", "dagster", "lakeloom.assets")
    assert not [m for m in imported if m.startswith(banned)]
