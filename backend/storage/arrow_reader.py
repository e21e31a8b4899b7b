"""Queries on runs.sqlite answered as Arrow tables, without building a Python object per value.

The ADBC SQLite driver steps through rows in C and fills Arrow arrays; reading the 380 000
run_variables rows of a 2000-run x 200-variable proposal takes it 0.09 s on two threads, where the
``sqlite3`` module needs 0.44 s just to hand over its tuples (benchmarks/README.md, "table()"). Every
query states its result's schema (SQLite columns have no fixed type; each query casts or splits values
so that a column holds one type), so both ways of reading give identical tables.

ADBC carries its own copy of SQLite, so it is used only when no ``sqlite3`` connection of this process
has the file open (``connections.arrow_turn``); otherwise, or where the driver is not installed, the
same queries run through ``sqlite3``.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pyarrow as pa

from .connections import arrow_turn, connect_readonly, readonly_uri

try:  # a dependency; the fallback keeps a damaged installation working, only slower
    import adbc_driver_sqlite.dbapi as adbc_sqlite
except ImportError:  # pragma: no cover
    adbc_sqlite = None

log = logging.getLogger(__name__)

ALL_ROWS_IN_ONE_BATCH = str(2**30)  # the driver infers a column's type from its first batch
PARALLEL_MIN_ROWS = 100_000  # below this, one thread reads faster than two can start
READ_THREADS = max(2, min(4, os.cpu_count() or 2))
_THREADS = ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="damnit-arrow-reader")


class ArrowReader:
    """``with ArrowReader(db_path) as r: r.query(sql, schema, params)``: one read session of a database.

    ``r.via`` says which library answers ("adbc" or "sqlite3"). Not shared between threads.
    """

    def __init__(self, db_path: str | os.PathLike, *, prefer_adbc: bool = True):
        self.path = Path(db_path)
        self.prefer_adbc = prefer_adbc and adbc_sqlite is not None
        self.via = ""
        self._stack: ExitStack | None = None
        self._conn = None

    @classmethod
    def over(cls, conn: sqlite3.Connection) -> ArrowReader:
        """A reader answering through an already open ``sqlite3`` connection (e.g. a ``DamnitDB``'s),
        so the same query functions serve readers and writers."""
        reader = cls(":memory:", prefer_adbc=False)
        reader._conn, reader.via = conn, "sqlite3"
        return reader

    def __enter__(self) -> ArrowReader:
        if not self.path.is_file():
            raise FileNotFoundError(f"No DAMNIT database at {self.path}")
        stack = ExitStack()
        try:
            if self.prefer_adbc and stack.enter_context(arrow_turn(self.path)):
                self._conn = stack.enter_context(_adbc_connection(self.path))
                self.via = "adbc"
            else:
                if self.prefer_adbc:
                    log.debug("%s is open through sqlite3 in this process: reading it with sqlite3", self.path)
                self._conn = stack.enter_context(connect_readonly(self.path))
                self.via = "sqlite3"
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def __exit__(self, *exc) -> None:
        stack, self._stack, self._conn = self._stack, None, None
        if stack is not None:
            stack.close()

    # -- queries ------------------------------------------------------------------------------------

    def query(self, sql: str, schema: pa.Schema, params: Sequence = ()) -> pa.Table:
        """Run ``sql`` and return its rows as a table of ``schema`` (names and types, in select order)."""
        if self.via == "adbc":
            return _adbc_query(self._conn, sql, schema, params)
        return _sqlite3_query(self._conn, sql, schema, params)

    def query_by_rowid(self, table: str, sql: str, schema: pa.Schema, params: Sequence = ()) -> pa.Table:
        """Like ``query`` for ``sql`` ending in a ``WHERE`` clause over ``table``: big tables are read in
        rowid ranges on several threads (ADBC releases the GIL), as one consistent snapshot.

        ``sql`` must end with ``WHERE <condition>`` (use ``WHERE 1`` for all rows); the rowid range is
        appended to it.
        """
        if self.via != "adbc":
            return self.query(sql, schema, params)
        # Two subqueries: SQLite answers a lone min() or max() of the rowid from the b-tree's ends, but
        # scans the whole table for both in one SELECT. The rowid span stands in for the row count.
        first, last = self.query(
            f"SELECT (SELECT min(rowid) FROM {table}), (SELECT max(rowid) FROM {table})",
            pa.schema([("lo", pa.int64()), ("hi", pa.int64())])).to_pylist()[0].values()
        parts = READ_THREADS
        if first is None or last - first + 1 < PARALLEL_MIN_ROWS:
            return self.query(sql, schema, params)
        bounds = [first - 1 + (last - first + 1) * i // parts for i in range(parts)] + [last]
        ranged = f"{sql} AND {table}.rowid > ? AND {table}.rowid <= ?"
        for _ in range(3):
            before = self._data_version()
            futures = [_THREADS.submit(self._query_in_thread, ranged, schema, (*params, lo, hi))
                       for lo, hi in zip(bounds[:-1], bounds[1:])]
            tables = [f.result() for f in futures]
            # Nobody committed between the start of the first part and the end of the last: the parts
            # were read from one state of the database.
            if self._data_version() == before:
                return pa.concat_tables(tables)
            log.debug("%s changed while it was read in parts; reading again", self.path)
        return self.query(sql, schema, params)

    def _data_version(self) -> int:
        return self.query("PRAGMA data_version", pa.schema([("v", pa.int64())])).column(0)[0].as_py()

    def _query_in_thread(self, sql: str, schema: pa.Schema, params: Sequence) -> pa.Table:
        with _adbc_connection(self.path) as conn:  # within our arrow turn
            return _adbc_query(conn, sql, schema, params)


@contextmanager
def _adbc_connection(path: Path) -> Iterator:
    conn = adbc_sqlite.connect(readonly_uri(path))
    try:
        try:
            _adbc_query(conn, "SELECT count(*) FROM sqlite_master", pa.schema([("n", pa.int64())]), ())
        except Exception:
            # A WAL database in a folder we cannot write (no -shm file can be made): an immutable read.
            conn.close()
            conn = adbc_sqlite.connect(readonly_uri(path, immutable=True))
        yield conn
    finally:
        conn.close()


def _adbc_query(conn, sql: str, schema: pa.Schema, params: Sequence) -> pa.Table:
    cur = conn.cursor()
    try:
        cur.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": ALL_ROWS_IN_ONE_BATCH})
        cur.execute(sql, tuple(params) if params else None)
        table = cur.fetch_arrow_table()
    finally:
        cur.close()
    return _conform(table, schema)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """The driver types a column from its values (all-NULL reads as int64): cast to the stated types."""
    if table.num_columns != len(schema):
        raise ValueError(f"query returned {table.num_columns} columns, its schema names {len(schema)}")
    columns = []
    for column, field in zip(table.columns, schema):
        if column.type != field.type:
            column = pa.nulls(len(column), field.type) if column.null_count == len(column) else column.cast(field.type)
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)


def _sqlite3_query(conn: sqlite3.Connection, sql: str, schema: pa.Schema, params: Sequence) -> pa.Table:
    cur = conn.cursor()
    cur.row_factory = None
    rows = cur.execute(sql, tuple(params)).fetchall()
    if not rows:
        return schema.empty_table()
    columns = list(zip(*rows))
    return pa.Table.from_arrays([pa.array(col, type=field.type) for col, field in zip(columns, schema)],
                                schema=schema)
