"""The run table as a DataFrame, as the original DAMNIT's ``Damnit.table()`` returns it.

One row per run that has a start time, ``proposal, run, start_time, comment``, then one column per
variable (sorted by name). Blob summaries become placeholders (``<sparkline>``, ``<ndarray>``,
``<thumbnail>``, ``<blob>``), complex numbers are decoded, a variable without a value for a run is
``pd.NA`` and a cleared value (or an error) is None; column dtypes are then inferred as the original's
end up (numbers numeric, text as pandas strings, mixed columns object).

Built from typed columns (``run_values.py``), so the cost is one vectorised scatter per value type
rather than a Python step per cell.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from .arrow_reader import ArrowReader
from .run_values import BlobKind, Kind, RunValues, read_run_values

FIXED_COLUMNS = ("proposal", "run", "start_time")
TABLE_TITLES = {"proposal": "Proposal", "run": "Run", "start_time": "Timestamp"}
TIMEZONE = "Europe/Berlin"  # the original reports start times in the facility's zone
BLOB_PLACEHOLDERS = {BlobKind.TRENDLINE: "<sparkline>", BlobKind.NUMPY: "<ndarray>",
                     BlobKind.UNTYPED: "<thumbnail>", BlobKind.OTHER: "<blob>"}


def run_table(reader: ArrowReader, *, with_titles: bool = False) -> pd.DataFrame:
    """The run table of the database ``reader`` reads (see the module docstring)."""
    runs = reader.query(
        "SELECT CAST(proposal AS INTEGER), CAST(run AS INTEGER), CAST(start_time AS REAL) FROM run_info "
        "WHERE start_time IS NOT NULL AND proposal IS NOT NULL AND run IS NOT NULL ORDER BY proposal, run",
        pa.schema([("proposal", pa.int64()), ("run", pa.int64()), ("start_time", pa.float64())]))
    variables = reader.query("SELECT CAST(name AS TEXT), title FROM variables WHERE name IS NOT NULL",
                             pa.schema([("name", pa.string()), ("title", pa.string())])).to_pylist()
    run_proposals = runs.column("proposal").to_numpy()
    run_numbers = runs.column("run").to_numpy()
    n = len(run_numbers)
    # DAMNIT writes every value as version 1: read without the version column, and again with it
    # only if some cell turns out to have several rows (cheaper than asking first, a scan of its own).
    pivot = _pivot(read_run_values(reader, versions=False), (run_proposals << 32) | run_numbers)
    if pivot is None:
        pivot = _pivot(read_run_values(reader, versions=True), (run_proposals << 32) | run_numbers)
    columns, settled = pivot
    for var in variables:  # defined variables without any value yet still get a column
        if var["name"] not in columns:
            columns[var["name"]] = np.full(n, None, dtype=object)

    start = pd.to_datetime(pd.Series(runs.column("start_time").to_numpy(), dtype="float64"), unit="s", utc=True)
    data = {
        "proposal": pd.Series(run_proposals, dtype="int64"),
        "run": pd.Series(run_numbers, dtype="int64"),
        "start_time": start.dt.tz_convert(TIMEZONE),
        "comment": pd.Series(columns.pop("comment", np.full(n, None, dtype=object)), dtype=object),
    }
    names = sorted(columns)
    col_names = {name: (f"var:{name}" if name in FIXED_COLUMNS else name) for name in names}
    for name in names:
        column = columns[name]
        data[col_names[name]] = pd.Series(column, dtype=column.dtype)
    _infer_dtypes(data, {col_names.get(name, name) for name in settled})
    df = pd.DataFrame(data)

    if with_titles:
        titles = {v["name"]: (v["title"] if v["title"] is not None else v["name"]) for v in variables}
        renames = dict(TABLE_TITLES)
        taken = set(renames.values()) | {"comment"}
        for name in names:
            title = titles.get(name, name)
            if title in taken:
                title = f"{title} ({name})"
            taken.add(title)
            renames[col_names[name]] = title
        df = df.rename(columns=renames)
    return df


def _infer_dtypes(data: dict[str, pd.Series], settled: set[str]) -> None:
    """Per-column dtypes as the original's table ends up with (``DataFrame.infer_objects``): numbers →
    int64/float64/complex128, text → pandas strings (whose missing value is NaN); mixed columns stay
    object with pd.NA/None. As pandas does it for a frame: if no object column becomes a numeric one,
    all stay object (a pandas string column counts as object there).

    Column by column, skipping ``settled`` ones (known to stay object), instead of on the whole frame.
    """
    objects = [name for name, series in data.items() if series.dtype == object]
    inferred = {name: data[name].infer_objects() for name in objects if name not in settled}
    if any(series.dtype.kind != "O" for series in inferred.values()):
        data.update(inferred)


def _pivot(values: RunValues, run_keys: np.ndarray) -> tuple[dict[str, np.ndarray], set[str]] | None:
    """({name: array over the runs}, names of object arrays that dtype inference leaves as they are):
    each value put at its run's row (newest version wins).

    A variable with a number of one type for every run gets a float64/int64 array straight away (what
    dtype inference would make of it); the rest get object arrays with ``pd.NA`` for missing cells and
    None for cleared ones, as the original's table has them. None if ``values`` were read without
    versions (all 1) and some cell has several rows: read them with versions.
    """
    n = len(run_keys)
    if not len(values) or not n:
        return {}, set()
    keys = (values.proposal << 32) | values.run
    pos = np.minimum(np.searchsorted(run_keys, keys), n - 1)
    rows = np.flatnonzero(run_keys[pos] == keys)  # values of runs in the table
    versions = values.version[rows]
    if len(rows) and (versions != versions[0]).any():  # several versions: the newest is the value
        rows = rows[np.argsort(versions, kind="stable")]
        cell = values.name[rows].astype(np.int64) * n + pos[rows]
        _, last = np.unique(cell[::-1], return_index=True)
        rows = rows[::-1][last]
    elif not values.versions_read and len(rows) and \
            np.bincount(values.name[rows].astype(np.int64) * n + pos[rows]).max() > 1:
        return None
    code, at, kind = values.name[rows], pos[rows], values.kind[rows]
    n_names = len(values.names)
    counts = np.bincount(code.astype(np.int64) * 5 + kind, minlength=n_names * 5).reshape(n_names, 5)
    typed = {Kind.REAL: (counts[:, Kind.REAL] == n, values.reals, np.float64),
             Kind.INT: (counts[:, Kind.INT] == n, values.ints, np.int64)}
    out: dict[str, np.ndarray] = {}
    handled = np.zeros(n_names, dtype=bool)
    for complete, source, dtype in typed.values():
        codes = np.flatnonzero(complete)
        if not len(codes):
            continue
        index = np.full(n_names, -1)
        index[codes] = np.arange(len(codes))
        grid = np.empty((len(codes), n), dtype=dtype)
        m = complete[code]
        grid[index[code[m]], at[m]] = source[rows[m]]
        out.update((values.names[c], grid[i]) for i, c in enumerate(codes))
        handled |= complete

    codes = np.flatnonzero(~handled)
    index = np.full(n_names, -1)
    index[codes] = np.arange(len(codes))
    keep = ~handled[code]
    rows, at, kind, row_of = rows[keep], at[keep], kind[keep], index[code[keep]]
    grid = np.full((len(codes), n), pd.NA, dtype=object)
    for k, source in ((Kind.INT, values.ints), (Kind.REAL, values.reals)):
        m = kind == k
        grid[row_of[m], at[m]] = source[rows[m]]
    m = kind == Kind.TEXT
    grid[row_of[m], at[m]] = values.texts.take(pa.array(rows[m])).to_numpy(zero_copy_only=False)
    m = kind == Kind.EMPTY
    grid[row_of[m], at[m]] = None
    m = np.flatnonzero(kind == Kind.BLOB)
    summary = values.blob[rows[m]] & ~3
    complex_ = m[summary == BlobKind.COMPLEX]
    grid[row_of[complex_], at[complex_]] = values.complexes[rows[complex_]]
    for blob_kind, placeholder in BLOB_PLACEHOLDERS.items():
        sel = m[summary == blob_kind]
        grid[row_of[sel], at[sel]] = placeholder
    out.update((values.names[c], grid[i]) for i, c in enumerate(codes))
    # A pd.NA (a missing cell) keeps a column object unless all its values are text (which become
    # pandas strings): such columns need no dtype inference.
    c = counts[codes]
    settled = {values.names[code] for code in codes[(c.sum(axis=1) < n) & (c[:, Kind.TEXT] + c[:, Kind.BLOB] == 0)]}
    return out, settled
