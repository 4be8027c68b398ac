"""Errors name rows by their key, never by a position in a batch (issue 17.6)."""

import polars as pl
import pytest

from lakeloom.core.embed import embed_column
from lakeloom.core.row_keys import RowKeyError, check_unique_keys, name_rows, row_labels


def test_embedding_input_errors_name_rows_by_key(sim_resource):
    sim, resource = sim_resource()
    df = pl.DataFrame({"ticket_id": ["B9", "C1"], "text": ["late parcel", "lost parcel"]})
    with pytest.raises(ValueError, match="no-such-embedder") as caught:
        embed_column(
            df, "text", engine=resource.engine(), model="no-such-embedder", keep=["ticket_id"]
        )
    message = str(caught.value)
    assert "ticket_id=" in message and "rows 0" not in message and "row 0" not in message
    assert sim.stats()["received"] == 0


def test_row_labels_and_key_checks():
    df = pl.DataFrame({"shop": ["n", "n", "s", "s"], "id": [1, 2, 1, 1], "text": list("abcd")})
    assert row_labels(df, ["shop", "id"])[0] == "shop=n, id=1"
    assert row_labels(df, []) is None
    assert name_rows([f"id={i}" for i in range(7)], limit=2) == "id=0, id=1 and 5 more"
    check_unique_keys(df.head(3), ["id"], where="x", unique_within=["shop"])  # unique per shop
    with pytest.raises(RowKeyError, match=r"'id' must be unique within shop .*id=1 \(2 rows\)"):
        check_unique_keys(df, ["id"], where="x", unique_within=["shop"])
    with pytest.raises(RowKeyError, match="null key"):
        check_unique_keys(pl.DataFrame({"id": [1, None]}), ["id"], where="x")
