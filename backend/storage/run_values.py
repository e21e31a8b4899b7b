"""run_variables as typed columns: what the read API's ``table()`` and the dashboard's live table are built
from.

SQLite keeps any type in ``run_variables.value``; this splits it by type in SQL (integers, reals, text,
complex blobs; other blobs only classified, never transferred) so that each column read has one type and
no Python object is made per value (``arrow_reader.py``). The dashboard also reads the columns that
decorate a cell (attributes with errors/units/colours, max_diff, provenance, timestamp) in the same pass.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .arrow_reader import ArrowReader

log = logging.getLogger(__name__)


class Kind(IntEnum):
    """What a run_variables value is."""

    EMPTY = 0  # NULL: the value was cleared, or the variable failed (its error is in the attributes)
    INT = 1
    REAL = 2
    TEXT = 3
    BLOB = 4  # see BlobKind


class BlobKind(IntEnum):
    """A blob's summary type and content, as one small code: ``summary * 4 + content``."""

    UNTYPED = 0  # summary_type NULL or '' (DAMNIT's thumbnails)
    COMPLEX = 4  # summary_type 'complex': two little-endian float64
    TRENDLINE = 8  # 'trendline': a numpy [2, N] x/y array
    NUMPY = 12  # 'numpy': a numpy array (an array-valued summary)
    OTHER = 16  # any other summary_type
    # content, added to the above
    PNG = 1
    NPY = 2

    @staticmethod
    def summary(code: int) -> int:
        return code & ~3

    @staticmethod
    def content(code: int) -> int:
        return code & 3


_VALUE_COLUMNS = """proposal, run, name,
  CASE WHEN typeof(value) = 'integer' THEN value END,
  CASE WHEN typeof(value) = 'real' THEN value END,
  CASE WHEN typeof(value) = 'text' THEN value END,
  CASE WHEN typeof(value) = 'blob' THEN
    (CASE WHEN summary_type = 'complex' THEN 4 WHEN summary_type = 'trendline' THEN 8
          WHEN summary_type = 'numpy' THEN 12 WHEN summary_type IS NULL OR summary_type = '' THEN 0 ELSE 16 END)
    + (CASE WHEN substr(value, 1, 8) = x'89504e470d0a1a0a' THEN 1
            WHEN substr(value, 1, 6) = x'934e554d5059' THEN 2 ELSE 0 END) END,
  CASE WHEN summary_type = 'complex' AND typeof(value) = 'blob' THEN value END"""
# Columns of other types than the schema says (a run number stored as text, ...) would make the driver
# fail; such a database is read again with every column cast.
_CAST_VALUE_COLUMNS = _VALUE_COLUMNS.replace("proposal, run, name,", "CAST(proposal AS INTEGER), "
                                             "CAST(run AS INTEGER), CAST(name AS TEXT),", 1)
_VERSION_COLUMN = ", CAST(version AS INTEGER)"
_VALUE_SCHEMA = [("proposal", pa.int64()), ("run", pa.int64()), ("name", pa.string()), ("int", pa.int64()),
                 ("real", pa.float64()), ("text", pa.string()), ("blob", pa.int8()), ("complex", pa.binary())]
_DETAIL_COLUMNS = """, CAST(attributes AS TEXT), CAST(max_diff AS REAL), CAST(provenance AS TEXT),
  CAST(timestamp AS REAL)"""
_DETAIL_SCHEMA = [("attributes", pa.string()), ("max_diff", pa.float64()), ("provenance", pa.string()),
                  ("timestamp", pa.float64())]


@dataclass
class RunValues:
    """Rows of run_variables as parallel arrays (row ``i`` of each belongs together).

    ``kind`` says which of ``ints``/``reals``/``texts``/``blob`` holds a row's value; ``complexes`` is
    set for complex blobs. The detail arrays are None unless read with ``details=True``.
    """

    proposal: np.ndarray  # int64
    run: np.ndarray  # int64
    name: np.ndarray  # int32 index into ``names``
    names: list[str]
    kind: np.ndarray  # int8, Kind
    ints: np.ndarray  # int64, 0 where not INT
    reals: np.ndarray  # float64, NaN where not REAL
    texts: pa.Array  # string, null where not TEXT
    blob: np.ndarray  # int8, BlobKind code where BLOB
    complexes: np.ndarray  # complex128, 0 where not a complex blob
    version: np.ndarray  # int64
    attributes: pa.Array | None = None  # string (JSON) or null
    max_diff: np.ndarray | None = None  # float64, NaN where null
    provenance: pa.Array | None = None  # string or null
    timestamp: np.ndarray | None = None  # float64, NaN where null
    versions_read: bool = True  # False: ``version`` is all 1 because the column was not read

    def __len__(self) -> int:
        return len(self.kind)


def read_run_values(reader: ArrowReader, *, details: bool = False, since: float | None = None,
                    runs: Iterable[tuple[int, int]] | None = None,
                    names: Sequence[str] | None = None, versions: bool | None = None) -> RunValues:
    """All run_variables rows (or those written at or after ``since``, of the given (proposal, run)
    pairs, or of the given names).

    ``versions``: read the version column (True), leave it out and say every row is version 1
    (False: for a caller that notices a cell given twice and reads again), or decide by looking
    (None)."""
    # Rows without proposal, run or name are left out: by SQL for a partial read, afterwards for the
    # whole table (testing three columns of every row in SQL costs 6 % of a scan that is mostly not NULL).
    where, params = ["1"], []
    if since is not None:
        where.append("timestamp >= ?")
        params.append(float(since))
    if runs is not None:
        runs = [(int(p), int(r)) for p, r in runs]
        if not runs:
            return _empty(details)
        where.append(f"(proposal, run) IN (VALUES {', '.join(['(?, ?)'] * len(runs))})")
        params += [x for pr in runs for x in pr]
    if names is not None:
        names = list(names)
        if not names:
            return _empty(details)
        where.append(f"name IN ({', '.join('?' * len(names))})")
        params += names
    whole = since is None and runs is None and names is None
    if not whole:
        where[0] = "proposal IS NOT NULL AND run IS NOT NULL AND name IS NOT NULL"
    # Only rows with several versions of one cell need the version column (the unique index includes it):
    # DAMNIT writes version 1, so for the whole table a quick look at the index usually saves it.
    if versions is None:
        versions = not whole or bool(reader.query(
            "SELECT EXISTS(SELECT 1 FROM run_variables WHERE version IS NOT 1)",
            pa.schema([("any", pa.int64())])).column(0)[0].as_py())
    schema = pa.schema(_VALUE_SCHEMA + ([("version", pa.int64())] if versions else [])
                       + (_DETAIL_SCHEMA if details else []))
    tail = f"{_VERSION_COLUMN if versions else ''}{_DETAIL_COLUMNS if details else ''} FROM run_variables " \
           f"WHERE {' AND '.join(where)}"
    try:
        table = _query(reader, f"SELECT {_VALUE_COLUMNS}{tail}", schema, params, whole)
    except Exception as e:  # the driver met a column of an unexpected type: cast everything
        if reader.via != "adbc":
            raise
        log.info("Reading %s with casts (%s)", reader.path, e)
        table = _query(reader, f"SELECT {_CAST_VALUE_COLUMNS}{tail}", schema, params, whole)
    keys = [table.column(c) for c in ("proposal", "run", "name")]
    if any(k.null_count for k in keys):
        table = table.filter(pc.and_(pc.and_(pc.is_valid(keys[0]), pc.is_valid(keys[1])), pc.is_valid(keys[2])))
    return _from_table(table, details)


def _query(reader: ArrowReader, sql: str, schema: pa.Schema, params: list, whole: bool) -> pa.Table:
    return reader.query_by_rowid("run_variables", sql, schema, params) if whole else reader.query(sql, schema, params)


def _empty(details: bool) -> RunValues:
    schema = pa.schema(_VALUE_SCHEMA + (_DETAIL_SCHEMA if details else []))
    return _from_table(schema.empty_table(), details)


def _numbers(column: pa.ChunkedArray, dtype, fill) -> np.ndarray:
    return column.fill_null(fill).to_numpy().astype(dtype, copy=False)


def _complexes(column: pa.ChunkedArray, n: int) -> np.ndarray:
    """Complex blobs (two little-endian float64, real then imaginary) as complex128; NaN for a blob of
    another length, 0 where there is none."""
    out = np.zeros(n, dtype=np.complex128)
    if column.null_count == n:
        return out
    valid = np.flatnonzero(np.asarray(column.is_valid()))
    raw = column.take(pa.array(valid)).combine_chunks().cast(pa.large_binary())
    offsets = np.frombuffer(raw.buffers()[1], dtype=np.int64)[raw.offset:raw.offset + len(raw) + 1]
    whole = np.diff(offsets) == 16
    starts = offsets[:-1][whole]
    data = np.frombuffer(raw.buffers()[2] or b"", dtype=np.uint8)
    # each whole blob's 16 bytes, gathered into one array and read as little-endian complex128
    out[valid[whole]] = data[starts[:, None] + np.arange(16)].reshape(-1).view("<c16").astype(np.complex128)
    out[valid[~whole]] = np.nan
    return out


def _from_table(t: pa.Table, details: bool) -> RunValues:
    n = t.num_rows
    names = t.column("name").combine_chunks().dictionary_encode() if n else None
    ints, reals = t.column("int"), t.column("real")
    texts = t.column("text").combine_chunks() if n else pa.array([], pa.string())
    blob = t.column("blob")
    kind = np.zeros(n, dtype=np.int8)
    for k, col in ((Kind.INT, ints), (Kind.REAL, reals), (Kind.TEXT, texts), (Kind.BLOB, blob)):
        if col.null_count < n:
            kind[np.asarray(col.is_valid())] = k
    complexes = _complexes(t.column("complex"), n)
    values = RunValues(
        proposal=_numbers(t.column("proposal"), np.int64, 0), run=_numbers(t.column("run"), np.int64, 0),
        name=(names.indices.to_numpy().astype(np.int32) if n else np.zeros(0, np.int32)),
        names=(names.dictionary.to_pylist() if n else []), kind=kind,
        ints=_numbers(ints, np.int64, 0), reals=_numbers(reals, np.float64, np.nan), texts=texts,
        blob=_numbers(blob, np.int8, 0), complexes=complexes,
        version=_numbers(t.column("version"), np.int64, 1) if "version" in t.column_names else np.ones(n, np.int64),
        versions_read="version" in t.column_names)
    if details:
        values.attributes = t.column("attributes").combine_chunks() if n else pa.array([], pa.string())
        values.max_diff = _numbers(t.column("max_diff"), np.float64, np.nan)
        values.provenance = t.column("provenance").combine_chunks() if n else pa.array([], pa.string())
        values.timestamp = _numbers(t.column("timestamp"), np.float64, np.nan)
    return values


def read_blobs(reader: ArrowReader, cells: Iterable[tuple[int, int, str]], head: int | None = None,
               ) -> dict[tuple[int, int, str], bytes]:
    """The stored blobs of the given (proposal, run, name) cells (newest version), or their first ``head``
    bytes; cells without a blob are left out. For the few cells a page shows: thumbnails, trendlines."""
    cells = list(dict.fromkeys((int(p), int(r), str(n)) for p, r, n in cells))
    out: dict[tuple[int, int, str], bytes] = {}
    schema = pa.schema([("proposal", pa.int64()), ("run", pa.int64()), ("name", pa.string()),
                        ("value", pa.binary())])
    for start in range(0, len(cells), 300):  # SQLite's default limit is 32766 parameters
        chunk = cells[start:start + 300]
        rows = reader.query(
            f"SELECT proposal, run, name, {'value' if head is None else f'substr(value, 1, {int(head)})'} "
            "FROM run_variables "
            f"WHERE (proposal, run, name) IN (VALUES {', '.join(['(?, ?, ?)'] * len(chunk))}) "
            "AND typeof(value) = 'blob' ORDER BY version",
            schema, [x for cell in chunk for x in cell]).to_pylist()
        for row in rows:
            out[(row["proposal"], row["run"], row["name"])] = row["value"]
    return out
