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
from .run_values import BlobKind, Kind, read_run_values

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
    values = read_run_values(reader)

    run_proposals = runs.column("proposal").to_numpy()
    run_numbers = runs.column("run").to_numpy()
    n = len(run_numbers)
    columns = _pivot(values, (run_proposals << 32) | run_numbers)
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
        data[col_names[name]] = pd.Series(columns[name], dtype=object)
    # Per-column dtypes as the original ends up with: numbers → int64/float64/complex128, text →
    # pandas strings (whose missing value is NaN); mixed columns stay object with pd.NA/None.
    df = pd.DataFrame(data).infer_objects()

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


def _pivot(values, run_keys: np.ndarray) -> dict[str, np.ndarray]:
    """{name: object array over the runs}: each value put at its run's row (newest version wins)."""
    n = len(run_keys)
    if not len(values) or not n:
        return {}
    keys = (values.proposal << 32) | values.run
    pos = np.minimum(np.searchsorted(run_keys, keys), n - 1)
    rows = np.flatnonzero(run_keys[pos] == keys)  # values of runs in the table
    versions = values.version[rows]
    if len(rows) and (versions != versions[0]).any():  # several versions: the newest is the value
        rows = rows[np.argsort(versions, kind="stable")]
    cell = values.name[rows].astype(np.int64) * n + pos[rows]
    _, last = np.unique(cell[::-1], return_index=True)
    if len(last) < len(rows):
        rows = rows[::-1][last]

    grid = np.full((len(values.names), n), pd.NA, dtype=object)
    code, at = values.name[rows], pos[rows]
    kind = values.kind[rows]
    for k, source in ((Kind.INT, values.ints), (Kind.REAL, values.reals)):
        m = kind == k
        grid[code[m], at[m]] = source[rows[m]]
    m = kind == Kind.TEXT
    grid[code[m], at[m]] = values.texts.take(pa.array(rows[m])).to_numpy(zero_copy_only=False)
    m = kind == Kind.EMPTY
    grid[code[m], at[m]] = None
    m = np.flatnonzero(kind == Kind.BLOB)
    summary = values.blob[rows[m]] & ~3
    complex_ = summary == BlobKind.COMPLEX
    grid[code[m[complex_]], at[m[complex_]]] = values.complexes[rows[m[complex_]]]
    for blob_kind, placeholder in BLOB_PLACEHOLDERS.items():
        sel = m[summary == blob_kind]
        grid[code[sel], at[sel]] = placeholder
    return {name: grid[j] for j, name in enumerate(values.names)}
