"""The run table of one proposal held as typed arrays, one slot per (variable, run).

A 5000-run x 300-variable proposal is 1.5 million cells: as Python objects that took 1.4 GB and ten
seconds to load. Here every field of a cell lives in a 2-D numpy array ``[column, row]`` of a compact
type (the value as int64/float64, text and JSON attributes as codes into string pools, the timestamp
that versions the cell), about 45 bytes a cell, filled from ``backend.storage.run_values`` without a
Python step per value. Blobs (thumbnails, trendlines) stay in the database; a cell knows only their kind
and timestamp, and the page being shown reads them (``ProposalSource.blobs``).

Rows are kept in the order runs arrived (a new run is appended, never inserted); ``order`` gives them
sorted by run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from backend.storage.run_values import BlobKind, Kind, RunValues

MISSING = -1  # the kind of a cell with no row in run_variables
STATIC_COLUMNS = ("proposal", "run", "start_time", "added_at", "comment")
RUN_FIELDS = {"run": "run_number", "start_time": "start_time", "proposal": "run_proposal", "added_at": "added_at"}
BLOB_PLACEHOLDERS = {"png": "<thumbnail>", "trendline": "<sparkline>", "numpy": "<ndarray>", "blob": "<blob>"}


class StringPool:
    """Distinct strings by int32 code (0 = None): text values, attributes and provenance repeat a lot."""

    def __init__(self) -> None:
        self.strings: list[str | None] = [None]
        self._codes: dict[str, int] = {}
        self._parsed: dict[int, dict] = {}

    def code(self, text: str | None) -> int:
        if text is None:
            return 0
        code = self._codes.get(text)
        if code is None:
            code = self._codes[text] = len(self.strings)
            self.strings.append(text)
        return code

    def codes(self, array: pa.Array) -> np.ndarray:
        """Codes for every entry of an Arrow string array (nulls → 0), one dictionary pass."""
        if len(array) == 0 or array.null_count == len(array):
            return np.zeros(len(array), dtype=np.int32)
        encoded = array.dictionary_encode()
        local = np.fromiter((self.code(s) for s in encoded.dictionary.to_pylist()), dtype=np.int32,
                            count=len(encoded.dictionary))
        indices = encoded.indices.fill_null(-1).to_numpy()
        return np.where(indices >= 0, local[np.maximum(indices, 0)], 0).astype(np.int32)

    def __getitem__(self, code: int) -> str | None:
        return self.strings[code]

    def json(self, code: int) -> dict:
        """The attributes JSON of ``code`` as a dict (parsed once)."""
        got = self._parsed.get(code)
        if got is None:
            got = {}
            text = self.strings[code]
            if text:
                try:
                    obj = json.loads(text)
                    got = obj if isinstance(obj, dict) else {}
                except ValueError:
                    pass
            self._parsed[code] = got
        return got


@dataclass(frozen=True)
class TableCell:
    """One stored cell (a run_variables row) with its value decoded: what renders one table cell."""

    kind: int
    value: Any  # int, float, str, complex or None (blobs: None, see ``blob``)
    blob: int  # BlobKind code when kind is BLOB
    attributes: dict
    max_diff: float | None
    provenance: str | None
    timestamp: float | None

    @property
    def error(self) -> str | None:
        return self.attributes.get("error")

    @property
    def error_cls(self) -> str | None:
        return self.attributes.get("error_cls")

    @property
    def units(self) -> str | None:
        units = self.attributes.get("units")
        return str(units) if units else None

    @property
    def blob_type(self) -> str | None:
        """'png', 'trendline', 'numpy' or 'blob' for blobs; None otherwise."""
        if self.kind != Kind.BLOB:
            return None
        summary, content = BlobKind.summary(self.blob), BlobKind.content(self.blob)
        if summary == BlobKind.TRENDLINE:
            return "trendline"
        if summary == BlobKind.NUMPY or content == BlobKind.NPY:
            return "numpy"
        if content == BlobKind.PNG:
            return "png"
        return "blob"

    @property
    def table_value(self) -> Any:
        """The value as the original's table shows it: blobs as placeholders."""
        btype = self.blob_type
        if btype is None or (self.kind == Kind.BLOB and BlobKind.summary(self.blob) == BlobKind.COMPLEX):
            return self.value
        return BLOB_PLACEHOLDERS[btype]


class LiveTable:
    """Cells of one proposal's runs. Not thread-safe: ``ProposalSource`` guards it with its lock."""

    def __init__(self, proposal: int | None):
        self.proposal = proposal  # the database's own proposal: its runs are keyed by run number
        self.n_rows = 0
        self.names: list[str] = []
        self._col_of: dict[str, int] = {}
        self._row_of: dict[int, int] = {}
        self._order: np.ndarray | None = None
        self.texts, self.attrs, self.provenances = StringPool(), StringPool(), StringPool()
        self.complexes: dict[tuple[int, int], complex] = {}
        self._alloc(0, 0)

    # -- storage ------------------------------------------------------------------------------------

    _ROW_FIELDS = (("keys", np.int64, 0), ("run_proposal", np.int64, 0), ("run_number", np.int64, 0),
                   ("start_time", np.float64, np.nan), ("added_at", np.float64, np.nan))
    _CELL_FIELDS = (("kind", np.int8, MISSING), ("blob", np.int8, 0), ("reals", np.float64, np.nan),
                    ("ints", np.int64, 0), ("text", np.int32, 0), ("attr", np.int32, 0), ("prov", np.int32, 0),
                    ("max_diff", np.float32, np.nan), ("stamp", np.float64, np.nan))

    def _alloc(self, n_cols: int, n_rows: int) -> None:
        for name, dtype, fill in self._ROW_FIELDS:
            setattr(self, name, np.full(n_rows, fill, dtype=dtype))
        for name, dtype, fill in self._CELL_FIELDS:
            setattr(self, name, np.full((n_cols, n_rows), fill, dtype=dtype))

    def _grow(self, n_cols: int, n_rows: int) -> None:
        """Room for at least ``n_cols`` columns and ``n_rows`` rows (capacity doubles, then is copied)."""
        cols_cap, rows_cap = self.kind.shape
        if n_cols <= cols_cap and n_rows <= rows_cap:
            return
        new_cols = cols_cap if n_cols <= cols_cap else max(n_cols, 2 * cols_cap, 8)
        new_rows = rows_cap if n_rows <= rows_cap else max(n_rows, 2 * rows_cap, 64)
        for name, dtype, fill in self._ROW_FIELDS:
            old = getattr(self, name)
            new = np.full(new_rows, fill, dtype=dtype)
            new[:len(old)] = old
            setattr(self, name, new)
        for name, dtype, fill in self._CELL_FIELDS:
            old = getattr(self, name)
            new = np.full((new_cols, new_rows), fill, dtype=dtype)
            new[:old.shape[0], :old.shape[1]] = old
            setattr(self, name, new)

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, n).nbytes for n, _, _ in (*self._ROW_FIELDS, *self._CELL_FIELDS))

    # -- rows ---------------------------------------------------------------------------------------

    def key_for(self, proposal: int | None, run: int) -> int:
        """The row key of a run: its number, or proposal * 1e6 + run for another proposal in this DB."""
        if proposal is None or self.proposal is None or int(proposal) == self.proposal:
            return int(run)
        return int(proposal) * 1_000_000 + int(run)

    def row(self, key: int) -> int | None:
        return self._row_of.get(int(key))

    def has(self, key: int) -> bool:
        return int(key) in self._row_of

    def order(self) -> np.ndarray:
        """Rows sorted by key."""
        if self._order is None:
            self._order = np.argsort(self.keys[:self.n_rows], kind="stable")
        return self._order

    def sorted_keys(self) -> np.ndarray:
        return self.keys[:self.n_rows][self.order()]

    def keys_for(self, proposals: np.ndarray, runs: np.ndarray) -> np.ndarray:
        """``key_for`` of many runs at once."""
        runs = np.asarray(runs, dtype=np.int64)
        if self.proposal is None:
            return runs.copy()
        proposals = np.asarray(proposals, dtype=np.int64)
        return np.where(proposals == self.proposal, runs, proposals * 1_000_000 + runs)

    def _ensure_rows(self, proposals: np.ndarray, runs: np.ndarray) -> tuple[np.ndarray, list[int]]:
        """Row of each (proposal, run), adding rows for new runs; returns (rows, new keys)."""
        keys = self.keys_for(proposals, runs)
        inverse, unique = pd.factorize(keys)  # hashing: quicker than sorting 1.5 M keys
        first = np.empty(len(unique), dtype=np.int64)
        first[inverse[::-1]] = np.arange(len(keys) - 1, -1, -1)  # the last write wins: the first occurrence
        rows_u = np.fromiter((self._row_of.get(k, -1) for k in unique.tolist()), dtype=np.int64, count=len(unique))
        missing = np.flatnonzero(rows_u < 0)
        new: list[int] = []
        if len(missing):
            start = self.n_rows
            self._grow(len(self.names), start + len(missing))
            added = np.arange(start, start + len(missing))
            rows_u[missing] = added
            self.keys[added] = unique[missing]
            self.run_proposal[added] = np.asarray(proposals, dtype=np.int64)[first[missing]]
            self.run_number[added] = np.asarray(runs, dtype=np.int64)[first[missing]]
            new = unique[missing].tolist()
            self._row_of.update(zip(new, added.tolist()))
            self.n_rows += len(missing)
            self._order = None
        return rows_u[inverse], new

    def set_runs(self, infos: Iterable) -> tuple[list[int], list[int]]:
        """Rows from ``run_info`` (``catalog.RunInfo``); returns (new keys, keys whose start time changed)."""
        infos = list(infos)
        if not infos:
            return [], []
        proposals = np.array([i.proposal if i.proposal is not None else (self.proposal or 0) for i in infos],
                             dtype=np.int64)
        rows, new = self._ensure_rows(proposals, np.array([i.run for i in infos], dtype=np.int64))
        starts = np.array([np.nan if i.start_time is None else i.start_time for i in infos], dtype=np.float64)
        added = np.array([np.nan if i.added_at is None else i.added_at for i in infos], dtype=np.float64)
        old = self.start_time[rows]
        moved = ~((old == starts) | (np.isnan(old) & np.isnan(starts)))
        new_set = set(new)
        changed = [int(k) for k in self.keys[rows[moved]] if int(k) not in new_set]
        self.start_time[rows] = starts
        self.added_at[rows] = added
        return new, changed

    # -- columns ------------------------------------------------------------------------------------

    def column(self, name: str) -> int | None:
        return self._col_of.get(name)

    def _ensure_columns(self, names: list[str]) -> tuple[np.ndarray, list[str]]:
        new = [n for n in names if n not in self._col_of]
        if new:
            self._grow(len(self.names) + len(new), self.n_rows)
            for n in new:
                self._col_of[n] = len(self.names)
                self.names.append(n)
        return np.array([self._col_of[n] for n in names], dtype=np.int64), new

    def column_names(self) -> list[str]:
        """Names of variables with at least one cell (static columns left out)."""
        present = (self.kind[:len(self.names), :self.n_rows] != MISSING).any(axis=1) if self.n_rows else []
        return [n for n, has in zip(self.names, present) if has and n not in STATIC_COLUMNS]

    # -- cells --------------------------------------------------------------------------------------

    def put(self, values: RunValues, *, report: bool = True) -> tuple[list[int], dict[int, set[str]], list[str]]:
        """Store rows read from run_variables (newest version wins). Returns (new run keys, {key: names
        whose cell changed}, new column names); ``report=False`` (a first load) skips finding changes."""
        if not len(values):
            return [], {}, []
        versions = bool((values.version != 1).any())
        order = np.argsort(values.version, kind="stable") if versions else slice(None)
        rows, new_runs = self._ensure_rows(values.proposal[order], values.run[order])
        cols, new_cols = self._ensure_columns(values.names)
        cols = cols[values.name[order]]
        if versions:  # the last row of a cell wins (highest version): keep just that one
            cell = cols * (self.kind.shape[1] + 1) + rows
            _, last_rev = np.unique(cell[::-1], return_index=True)
            keep = np.sort(len(cell) - 1 - last_rev)
            src, rows, cols = order[keep], rows[keep], cols[keep]
        else:  # one version per cell (the unique index includes it): rows in their own order
            src = slice(None)

        def pick(array: pa.Array) -> pa.Array:
            return array if isinstance(src, slice) else array.take(pa.array(src))

        kind = values.kind[src]
        reals = np.where(kind == Kind.INT, values.ints[src].astype(np.float64), values.reals[src])
        ints = values.ints[src]
        text = self.texts.codes(pick(values.texts))
        blob = values.blob[src]
        n = len(kind)
        attr = self.attrs.codes(pick(values.attributes)) if values.attributes is not None else np.zeros(n, np.int32)
        prov = self.provenances.codes(pick(values.provenance)) if values.provenance is not None \
            else np.zeros(n, np.int32)
        max_diff = (values.max_diff[src] if values.max_diff is not None else np.full(n, np.nan)).astype(np.float32)
        stamp = values.timestamp[src] if values.timestamp is not None else np.full(n, np.nan)

        # Changes are reported for runs the table had before; a new run is new as a whole.
        if not report:
            old = np.zeros(0, dtype=np.int64)
        elif new_runs:
            old = np.flatnonzero(np.isin(self.keys[rows], new_runs, invert=True))
        else:
            old = np.arange(len(rows))
        oc, orow = cols[old], rows[old]

        def differs(field: str, new: np.ndarray, floats: bool = False) -> np.ndarray:
            before, after = getattr(self, field)[oc, orow], new[old]
            out = before != after
            return out & ~(np.isnan(before) & np.isnan(after)) if floats else out

        changed_mask = (differs("kind", kind) | differs("reals", reals, True) | differs("ints", ints)
                        | differs("text", text) | differs("blob", blob) | differs("attr", attr)
                        | differs("prov", prov) | differs("max_diff", max_diff, True)
                        | differs("stamp", stamp, True))
        self.kind[cols, rows], self.reals[cols, rows], self.ints[cols, rows] = kind, reals, ints
        self.text[cols, rows], self.blob[cols, rows], self.attr[cols, rows] = text, blob, attr
        self.prov[cols, rows], self.max_diff[cols, rows], self.stamp[cols, rows] = prov, max_diff, stamp
        complexes = values.complexes[src]
        for i in np.flatnonzero(blob & ~3 == BlobKind.COMPLEX):
            self.complexes[(int(cols[i]), int(rows[i]))] = complex(complexes[i])

        changed: dict[int, set[str]] = {}
        for c, r in zip(oc[changed_mask].tolist(), orow[changed_mask].tolist()):
            changed.setdefault(int(self.keys[r]), set()).add(self.names[c])
        return new_runs, changed, [n for n in new_cols if n not in STATIC_COLUMNS]

    def clear(self, key: int, names: Iterable[str]) -> set[str]:
        """Forget cells whose rows were deleted; returns the names that had a cell."""
        row = self.row(key)
        gone = set()
        for name in names:
            col = self._col_of.get(name)
            if row is not None and col is not None and self.kind[col, row] != MISSING:
                for field, _, fill in self._CELL_FIELDS:
                    getattr(self, field)[col, row] = fill
                self.complexes.pop((col, row), None)
                gone.add(name)
        return gone

    def cell(self, key: int, name: str) -> TableCell | None:
        """One cell, decoded (None where the run has no row for the variable)."""
        row, col = self.row(key), self._col_of.get(name)
        if row is None or col is None:
            return None
        kind = int(self.kind[col, row])
        if kind == MISSING:
            return None
        value: Any = None
        if kind == Kind.INT:
            value = int(self.ints[col, row])
        elif kind == Kind.REAL:
            value = float(self.reals[col, row])
        elif kind == Kind.TEXT:
            value = self.texts[int(self.text[col, row])]
        elif kind == Kind.BLOB and BlobKind.summary(int(self.blob[col, row])) == BlobKind.COMPLEX:
            value = self.complexes.get((col, row))
        max_diff = float(self.max_diff[col, row])
        stamp = float(self.stamp[col, row])
        return TableCell(kind=kind, value=value, blob=int(self.blob[col, row]),
                         attributes=self.attrs.json(int(self.attr[col, row])),
                         max_diff=None if math.isnan(max_diff) else max_diff,
                         provenance=self.provenances[int(self.prov[col, row])],
                         timestamp=None if math.isnan(stamp) else stamp)

    def numbers(self, name: str, rows: np.ndarray | None = None) -> np.ndarray:
        """The column as float64 over ``rows`` (default: all, in arrival order): NaN where not a number.
        The run's own fields (``run``, ``start_time``, ``proposal``, ``added_at``) are columns too."""
        rows = np.arange(self.n_rows) if rows is None else rows
        if name in RUN_FIELDS:
            return getattr(self, RUN_FIELDS[name])[rows].astype(np.float64)
        col = self._col_of.get(name)
        if col is None:
            return np.full(len(rows), np.nan)
        kind = self.kind[col, rows]
        return np.where((kind == Kind.INT) | (kind == Kind.REAL), self.reals[col, rows], np.nan)

    def kinds(self, name: str, rows: np.ndarray | None = None) -> np.ndarray:
        rows = np.arange(self.n_rows) if rows is None else rows
        col = self._col_of.get(name)
        return np.full(len(rows), MISSING, np.int8) if col is None else self.kind[col, rows]

    def texts_of(self, name: str, rows: np.ndarray | None = None) -> list[str | None]:
        """Text values of a column over ``rows`` (None where the value is not text)."""
        rows = np.arange(self.n_rows) if rows is None else rows
        col = self._col_of.get(name)
        if col is None:
            return [None] * len(rows)
        codes = np.where(self.kind[col, rows] == Kind.TEXT, self.text[col, rows], 0)
        return [self.texts[c] for c in codes.tolist()]

    def table_values(self, name: str, rows: np.ndarray | None = None) -> np.ndarray:
        """A column as the original's table shows it (an object array over ``rows``): numbers, text,
        complex numbers, blob placeholders, None where empty."""
        rows = np.arange(self.n_rows) if rows is None else rows
        out = np.full(len(rows), None, dtype=object)
        col = self._col_of.get(name)
        if col is None:
            return out
        kind = self.kind[col, rows]
        for k, source in ((Kind.INT, self.ints), (Kind.REAL, self.reals)):
            at = np.flatnonzero(kind == k)
            out[at] = source[col, rows[at]]
        at = np.flatnonzero(kind == Kind.TEXT)
        out[at] = [self.texts[c] for c in self.text[col, rows[at]].tolist()]
        for i in np.flatnonzero(kind == Kind.BLOB).tolist():
            out[i] = self.cell(int(self.keys[rows[i]]), name).table_value
        return out

    def units(self, name: str) -> str | None:
        """The units of a variable (from its newest cells' attributes)."""
        col = self._col_of.get(name)
        if col is None or not self.n_rows:
            return None
        for row in self.order()[::-1][:50]:
            code = int(self.attr[col, row])
            if code:
                units = self.attrs.json(code).get("units")
                if units:
                    return str(units)
        return None
