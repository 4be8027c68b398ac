"""The tables a step reaches besides its inputs and output, through public IO manager methods.

Issue 14: the LLM steps found the asset's table with ``getattr(io_manager, "storage", None)``
and wrote ``lakeloom_errors`` on their own; now ``DeltaIOManager.read_table`` and
``DeltaIOManager.error_table`` are the documented way, on the manager's own root.
"""

import dagster as dg
import polars as pl

from lakeloom.io_managers import DeltaIOManager
from lakeloom.storage.errors import ERRORS_TABLE, ErrorTable
from lakeloom.storage.settings import Storage


@dg.asset
def numbers() -> pl.DataFrame:
    return pl.DataFrame({"n": [1, 2, 3]})


def test_read_table_is_none_before_the_first_write_then_the_stored_rows(tmp_path):
    io = DeltaIOManager(root=str(tmp_path / "lake"), storage_options={})
    key = dg.AssetKey("numbers")
    assert io.read_table(key) is None
    assert dg.materialize([numbers], resources={"io_manager": io}).success
    stored = io.read_table(key)
    assert isinstance(stored, pl.LazyFrame)
    assert stored.collect()["n"].to_list() == [1, 2, 3]


def test_error_table_is_on_the_managers_root_not_the_environments(tmp_path):
    root = str(tmp_path / "elsewhere")
    io = DeltaIOManager(root=root, storage_options={})
    assert root != Storage.from_env().root
    table = io.error_table()
    assert isinstance(table, ErrorTable) and table.storage == io.storage
    assert table.uri == f"{root}/assets/{ERRORS_TABLE}"
