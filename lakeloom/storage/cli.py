"""The ``lakeloom`` subcommands that drive ``lakeloom.storage``: ``sql`` and ``storage check``.

``register`` adds both to the ``lakeloom`` router (``lakeloom/cli.py``). This module imports
DuckDB and polars but no Dagster, engine or core, so ``lakeloom sql`` starts fast.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from typing import TextIO

import duckdb
import polars as pl

from lakeloom.storage.catalog import Catalog
from lakeloom.storage.check import StorageCheckError, check_conditional_writes
from lakeloom.storage.env import is_s3
from lakeloom.storage.settings import Storage

SQL_DESCRIPTION = """``lakeloom sql``: query every asset table with DuckDB SQL from the shell.

``lakeloom sql "SELECT ..."`` prints the result; with no query it reads SQL from stdin when stdin
is not a terminal, else opens a small interactive shell (statements end with ``;``, ``.tables``
lists views, ``.quit`` leaves). ``--as-of asset=version`` pins a table to a Delta version.
CSV has no nested values: ``--format csv`` writes a struct as one ``col.field`` column per field
and a list (an embedding, a list of structs) as JSON text; ``json`` and ``table`` keep the nesting.
"""
FORMATS = ("table", "csv", "json")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``lakeloom sql`` and ``lakeloom storage`` to the router."""
    _register_sql(subparsers)
    _register_storage(subparsers)


# -- lakeloom storage check ------------------------------------------------------------------------
def _register_storage(subparsers: argparse._SubParsersAction) -> None:
    """Add ``lakeloom storage check``."""
    parser = subparsers.add_parser("storage", help="Check the Delta storage root.")
    parser.add_argument("action", choices=["check"], help="check: probe conditional writes.")
    parser.add_argument("--root", help="Storage root (default LAKELOOM_STORAGE_ROOT).")
    parser.set_defaults(func=run_storage_check)


def run_storage_check(args: argparse.Namespace) -> int:
    """``lakeloom storage check``: probe the root; 0 when safe, 2 when refused or unreachable."""
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


# -- lakeloom sql ----------------------------------------------------------------------------------
def _register_sql(subparsers: argparse._SubParsersAction) -> None:
    """Add ``lakeloom sql``."""
    parser = subparsers.add_parser(
        "sql", help="Query asset tables with DuckDB SQL.", description=SQL_DESCRIPTION
    )
    parser.add_argument("query", nargs="?", help="SQL to run; omitted: stdin or interactive shell.")
    parser.add_argument(
        "--as-of",
        action="append",
        default=[],
        metavar="ASSET=VERSION",
        help="Pin a table (view name or a/b asset key) to a Delta version; repeatable.",
    )
    parser.add_argument("--format", choices=FORMATS, default="table", help="Output format.")
    parser.add_argument(
        "--database", help="DuckDB file (default <data>/catalog.duckdb) or :memory:."
    )
    parser.add_argument("--root", help="Storage root of the Delta tables (default from env).")
    parser.add_argument("--max-rows", type=int, default=50, help="Rows shown by --format table.")
    parser.set_defaults(func=run_sql)


def parse_as_of(items: Sequence[str]) -> dict[str, int]:
    """Parse ``name=version`` pins, naming the bad item on error."""
    pins: dict[str, int] = {}
    for item in items:
        name, sep, version = item.partition("=")
        if not sep or not name or not version.strip().isdigit():
            raise ValueError(f"--as-of expects ASSET=VERSION (e.g. raw__reviews=3), got {item!r}")
        pins[name.strip()] = int(version)
    return pins


def run_sql(args: argparse.Namespace) -> int:
    """Entry point of ``lakeloom sql``; returns the exit code."""
    try:
        catalog = Catalog(Storage.resolve(args.root), database=args.database)
        con = catalog.connect(as_of=parse_as_of(args.as_of))
    except (ValueError, duckdb.Error) as exc:
        print(f"lakeloom sql: {exc}", file=sys.stderr)
        return 2
    try:
        if args.query is not None:
            return execute(con, args.query, args.format, args.max_rows, sys.stdout)
        if not sys.stdin.isatty():
            return execute(con, sys.stdin.read(), args.format, args.max_rows, sys.stdout)
        return shell(con, args.format, args.max_rows)
    finally:
        con.close()


def execute(con: duckdb.DuckDBPyConnection, sql: str, fmt: str, max_rows: int, out: TextIO) -> int:
    """Run SQL (the last statement's result is printed); 1 on a SQL error."""
    if not sql.strip():
        return 0
    try:
        relation = con.sql(sql)
        frame = relation.pl() if relation is not None else None
    except duckdb.Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if frame is not None:
        out.write(render(frame, fmt, max_rows))
    return 0


def render(frame: pl.DataFrame, fmt: str, max_rows: int) -> str:
    """Format a result as a table, CSV or JSON (an array of row objects)."""
    if fmt == "csv":
        return flatten_for_csv(frame).write_csv()
    if fmt == "json":
        return frame.write_json() + "\n"
    with pl.Config(
        tbl_rows=max_rows, tbl_cols=-1, fmt_str_lengths=80, tbl_hide_dataframe_shape=True
    ):
        shown = str(frame)
    suffix = f"({frame.height} rows)\n" if frame.height != 1 else "(1 row)\n"
    return shown + "\n" + suffix


def flatten_for_csv(frame: pl.DataFrame) -> pl.DataFrame:
    """Structs become ``col.field`` columns (recursively), lists and arrays JSON text."""
    exprs: list[pl.Expr] = []
    for name, dtype in frame.schema.items():
        exprs.extend(_flat(pl.col(name), name, dtype))
    return frame.select(exprs)


def _flat(expr: pl.Expr, name: str, dtype: pl.DataType) -> list[pl.Expr]:
    if isinstance(dtype, pl.Struct):
        return [
            part
            for f in dtype.fields
            for part in _flat(expr.struct.field(f.name), f"{name}.{f.name}", f.dtype)
        ]
    if isinstance(dtype, (pl.List, pl.Array)) or dtype == pl.Binary:
        return [_json_text(expr, dtype).alias(name)]
    return [expr.alias(name)]


def _json_text(expr: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """One value as JSON text, vectorized (a one-field struct's JSON minus its wrapper)."""
    if dtype == pl.Binary:
        return expr.bin.encode("base64")
    wrapped = pl.struct(expr.alias("v")).struct.json_encode()
    text = wrapped.str.strip_prefix('{"v":').str.strip_suffix("}")
    return pl.when(expr.is_null()).then(None).otherwise(text)


def shell(con: duckdb.DuckDBPyConnection, fmt: str, max_rows: int) -> int:
    """Run a minimal interactive loop; statements end with ';'."""
    with contextlib.suppress(ImportError):  # line editing and history where available
        import readline  # noqa: F401
    print("lakeloom sql: end statements with ';', .tables lists views, .quit leaves")
    buffer: list[str] = []
    while True:
        try:
            line = input("...> " if buffer else "sql> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        command = line.strip()
        if not buffer and command in {".quit", ".exit", "\\q"}:
            return 0
        if not buffer and command == ".tables":
            execute(
                con,
                "SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1",
                fmt,
                max_rows,
                sys.stdout,
            )
            continue
        buffer.append(line)
        if command.endswith(";"):
            execute(con, "\n".join(buffer), fmt, max_rows, sys.stdout)
            buffer.clear()
