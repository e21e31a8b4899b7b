"""The run table as a file: CSV, Excel or Markdown, with every run (filters and paging aside).

Cells hold what the table shows (numbers as numbers, images and trendlines as ``<image>`` /
``<trendline>``, times in the server's zone). Text that a spreadsheet would run as a formula (starting
with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return) is written as text: in CSV with a leading
apostrophe (the usual CSV-injection defence), in Excel as a string cell.
"""

from __future__ import annotations

import datetime as dt
import io

import numpy as np
import pandas as pd
from tabulate import tabulate

from app.display.formatting import format_number, format_time
from app.live.source import ProposalSource

EXPORT_PLACEHOLDERS = {"<thumbnail>": "<image>", "<sparkline>": "<trendline>"}
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def export_frame(source: ProposalSource, columns: list[str], titles: dict[str, str], tz: dt.tzinfo,
                 keys: list[int] | None = None) -> pd.DataFrame:
    """The table as exported: the chosen columns in display order, titled, placeholders for images;
    every run by run number, or the runs ``keys`` in that order (a copied selection)."""
    data: dict[str, np.ndarray] = {}
    source.wait_loaded()  # a big proposal just opened: its older runs are still being read
    with source.lock:
        table = source.table
        if keys is None:
            rows = table.order()
        else:
            rows = np.array([r for r in (table.row(k) for k in keys) if r is not None], dtype=np.int64)
        for name in columns:
            if name == "run":
                values = table.run_number[rows].astype(object)
            elif name == "proposal":
                values = table.run_proposal[rows].astype(object)
            elif name == "start_time":
                values = np.array([format_time(t, tz) for t in table.start_time[rows].tolist()], dtype=object)
            else:
                values = table.table_values(name, rows)
                values = np.array([EXPORT_PLACEHOLDERS.get(v, v) if isinstance(v, str) else v for v in values],
                                  dtype=object)
            data[titles.get(name, name)] = values
    return pd.DataFrame({t: pd.Series(v, dtype=object) for t, v in data.items()}).infer_objects()


def defuse(value):
    """Text a spreadsheet would take for a formula, as text (numbers stay numbers)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def to_csv(df: pd.DataFrame) -> bytes:
    return df.map(defuse).to_csv(index=False).encode()


def to_excel(df: pd.DataFrame, sheet: str) -> bytes:
    from openpyxl import Workbook

    book = Workbook()
    ws = book.active
    ws.title = sheet[:31]
    ws.append([str(c) for c in df.columns])
    for row in df.itertuples(index=False):
        ws.append([_excel_value(v) for v in row])
    for row in ws.iter_rows(min_row=2):
        for cell in row:
            if cell.data_type == "f":  # openpyxl takes "=..." for a formula: keep it as the text it is
                cell.data_type = "s"
    buf = io.BytesIO()
    book.save(buf)
    return buf.getvalue()


def _excel_value(value):
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, (complex, np.complexfloating)):
        return format_number(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def to_markdown(df: pd.DataFrame) -> str:
    def cell(v):
        if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
            return ""
        return " ".join(format_number(v).split()).replace("|", "\\|")

    rows = [[cell(v) for v in row] for row in df.itertuples(index=False)]
    return tabulate(rows, headers=list(df.columns), tablefmt="github", disable_numparse=True)
