"""Measure ways to expose Delta tables to DuckDB 2.0.1 without the delta extension.

Builds a partitioned table (default 2M rows, 40 partitions) and a small dimension table, then
times a full aggregate, a one-partition aggregate (pruning) and a join per method, best of a few
repeats. Ends with one JSON line of the timings.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
from deltalake import DeltaTable

from lakeloom.storage.catalog import Catalog
from lakeloom.storage.delta import write_table
from lakeloom.storage.settings import Storage

QUERIES = {
    "full_agg": "SELECT part, count(*), avg(score) FROM facts GROUP BY part",
    "one_partition": "SELECT count(*), avg(score) FROM facts WHERE part = 'p07'",
    "join": (
        "SELECT d.label, count(*) FROM facts f JOIN dims d USING (id) "
        "WHERE d.label = 'x' GROUP BY 1"
    ),
}


def build(root: Path, rows: int, parts: int) -> tuple[str, str]:
    rng = np.random.default_rng(0)
    facts = pl.DataFrame(
        {
            "id": np.arange(rows) % 100_000,
            "part": [f"p{i:02d}" for i in rng.integers(0, parts, rows)],
            "score": rng.random(rows),
            "text": ["lorem ipsum dolor sit amet"] * rows,
        }
    )
    dims = pl.DataFrame({"id": np.arange(100_000), "label": ["x", "y"] * 50_000})
    # written as the IO manager writes: polars' Arrow stream, strings as string_view (which the
    # plain pyarrow dataset cannot filter: DuckDB's pushed-down string filters fail on it)
    write_table(facts, str(root / "assets" / "facts"), mode="overwrite", partition_by=["part"])
    write_table(dims, str(root / "assets" / "dims"), mode="overwrite")
    return str(root / "assets" / "facts"), str(root / "assets" / "dims")


def by_dataset(con: duckdb.DuckDBPyConnection, name: str, uri: str) -> None:
    con.register(name, DeltaTable(uri).to_pyarrow_dataset())


def by_polars_lazy(con: duckdb.DuckDBPyConnection, name: str, uri: str) -> None:
    con.register(name, pl.scan_delta(uri))


def by_catalog(con: duckdb.DuckDBPyConnection, name: str, uri: str) -> None:
    """lakeloom's choice: read_parquet over the snapshot's file list (see
    lakeloom/storage/catalog.py)."""
    root = uri.rsplit("/assets/", 1)[0]
    catalog = Catalog(Storage(root=root), database=":memory:")
    [table] = [t for t in catalog.tables() if t.name == name]
    catalog._register_one(con, table, None, temp=True)


METHODS: dict[str, Callable[[duckdb.DuckDBPyConnection, str, str], None]] = {
    "pyarrow_dataset": by_dataset,
    "polars_scan_delta": by_polars_lazy,
    "catalog_file_list": by_catalog,
}


def measure(uris: tuple[str, str], repeats: int) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {m: {} for m in METHODS}
    errors: dict[str, str] = {}
    for _ in range(repeats):  # interleave methods so load on the machine hits all alike
        for method, register in METHODS.items():
            con = duckdb.connect()
            con.execute("SET autoinstall_known_extensions = false")
            t0 = time.perf_counter()
            register(con, "facts", uris[0])
            register(con, "dims", uris[1])
            setup = time.perf_counter() - t0
            results[method]["setup"] = min(results[method].get("setup", 1e9), setup)
            for qname, sql in QUERIES.items():
                t0 = time.perf_counter()
                try:
                    con.sql(sql).fetchall()
                except duckdb.Error as exc:
                    errors[f"{method}/{qname}"] = str(exc).splitlines()[0][:160]
                    results[method][qname] = float("nan")
                    continue
                elapsed = time.perf_counter() - t0
                results[method][qname] = min(results[method].get(qname, 1e9), elapsed)
            con.close()
    for where, message in errors.items():
        print(f"error {where}: {message}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--parts", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        uris = build(Path(tmp), args.rows, args.parts)
        results = measure(uris, args.repeats)
    print(f"{'method':<22}" + "".join(f"{k:>14}" for k in ["setup", *QUERIES]))
    for method, times in results.items():
        print(f"{method:<22}" + "".join(f"{times[k] * 1000:>12.1f}ms" for k in ["setup", *QUERIES]))
    figures = {
        m: {k: None if v != v else round(v, 4) for k, v in t.items()} for m, t in results.items()
    }
    print(json.dumps(figures))  # null: the query failed with that method


if __name__ == "__main__":
    main()
