"""Line cached rows up with the keys a lookup asked for: one row per key, in order.

Kept apart from :mod:`lakeloom.engine.cache.store` (where the rows come from: Delta and the
journal) because the join is the hot path of every run and has its own trick: it runs on the
first 64 bits of the hash as an integer (several times faster than joining strings), then
compares the full hash, so a 64-bit collision can only cause a miss, never a wrong answer.
"""

from __future__ import annotations

import polars as pl

K64 = pl.col("request_hash").str.slice(0, 16).str.to_integer(base=16, dtype=pl.UInt64).alias("k64")
"""The key's first 64 bits as an unsigned integer (the join key)."""


def match_keys(keys: pl.Series, cached: pl.DataFrame) -> pl.DataFrame:
    """``cached`` rows gathered in the order of ``keys``: one row per key, nulls where missing.

    ``cached`` holds at least ``request_hash``; the output has its columns, with
    ``request_hash`` set to the asked key on every row (also on misses).
    """
    left = pl.DataFrame({"request_hash": keys.cast(pl.String)}).with_columns(K64)
    cached = cached.rechunk()  # a gather across scan chunks is ~10x slower than one
    # Join integers, not strings: position of each key's row in ``cached`` (null = miss),
    # then one gather of the response strings in input order.
    positions = cached.select(K64, pl.int_range(pl.len(), dtype=pl.UInt32).alias("i"))
    positions = positions.unique("k64", keep="any")
    index = left.select("k64").join(positions, on="k64", how="left", maintain_order="left")
    out = cached.select(pl.all().gather(index["i"]))
    clash = out["request_hash"].is_not_null() & (out["request_hash"] != left["request_hash"])
    if clash.any():  # keys sharing 64 bits (rare): settle those rows by the full hash
        exact = left.select("request_hash").with_columns(pl.lit(clash).alias("clash"))
        exact = exact.join(
            cached.unique("request_hash", keep="any"),
            on="request_hash",
            how="left",
            maintain_order="left",
        )
        out = out.select(
            pl.when(exact["clash"]).then(exact[c]).otherwise(pl.col(c)).alias(c)
            for c in out.columns
        )
    return out.with_columns(left["request_hash"])
