"""The Delta log is JSON Lines: commit metadata holding U+2028 is still read back (issue 13.2).

delta-rs writes ``commitInfo`` with raw U+2028/U+0085 (JSON allows them); ``str.splitlines()``
cut that line in two, so confirming a write's version failed after the commit had landed.
"""

import polars as pl

from lakeloom.storage.delta import read_table, write_table


def test_commit_metadata_with_raw_line_separators_is_read_back(tmp_path):
    uri = str(tmp_path / "t")
    note = {"prompt": "label it\u2028carefully\u2029now\x85please"}
    versions = [write_table(pl.DataFrame({"a": [i]}), uri, commit_metadata=note) for i in range(3)]
    assert versions == [0, 1, 2]
    assert "\u2028" in (tmp_path / "t" / "_delta_log" / "00000000000000000001.json").read_text()
    assert read_table(uri)["a"].sort().to_list() == [0, 1, 2]
