"""Numbers and times, formatted one way on every page and in exports.

Numbers follow DAMNIT's table: integral floats below 10 000 as integers, 4 decimals between 1e-4 and
1e4, scientific notation otherwise; booleans as true/false; complex numbers without parentheses.
Times are shown in one zone for the whole server (``ServerConfig.tz``: ``--timezone``, default the
server's own), with the zone named where times are shown.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np

TIME_FORMAT = "%H:%M:%S %d/%m/%Y"


def format_number(value: Any) -> str:
    """DAMNIT's number rules (see the module docstring); anything else as ``str``."""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value % 1 == 0 and abs(value) < 10_000:
            return f"{int(value)}"
        if 0.0001 < abs(value) < 10_000:
            return f"{value:.4f}"
        return f"{value:.3e}"
    if isinstance(value, (complex, np.complexfloating)):
        return f"{complex(value):.4g}".strip("()")
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return format_number(value.item())
    return str(value)


def join_numbers(values: np.ndarray, sep: str = " ") -> str:
    """``sep.join(format_number(v) for v in values)`` for an array of floats, in one formatting call
    instead of a Python call per value (a page of sparklines carries a few hundred thousand)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    magnitude = np.abs(values)
    with np.errstate(invalid="ignore"):
        integral = (np.mod(values, 1) == 0) & (magnitude < 10_000)
        middle = ~integral & (magnitude > 0.0001) & (magnitude < 10_000)
    styles = np.where(integral, "%d", np.where(middle, "%.4f", "%.3e")).astype(object)
    odd = ~np.isfinite(values)
    if odd.any():  # NaN and infinities as format_number spells them
        styles[odd] = [format_number(v) for v in values[odd].tolist()]
        values = values[~odd]
    return sep.replace("%", "%%").join(styles.tolist()) % tuple(values.tolist())


def format_value(value: Any, units: str | None = None) -> str:
    """A value as the table shows it, with its units after numbers."""
    text = format_number(value)
    numeric = isinstance(value, (int, float, complex, np.number)) and not isinstance(value, (bool, np.bool_))
    return f"{text} {units}" if units and numeric else text


def format_summary(value: Any, units: str | None = None, *, boolean: bool = False) -> str:
    """A run's summary value as the table shows it; ``boolean``: the variable holds booleans, which
    runs.sqlite keeps as 0/1, shown as true/false."""
    if boolean and isinstance(value, (int, float, np.integer, np.floating)) and value in (0, 1):
        value = bool(value)
    return format_value(value, units)


def format_editable(value: Any) -> str:
    """A value of an editable column (comment, user variable) as the text its editor starts from."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value if isinstance(value, str) else format_number(value)


# ---------------------------------------------------------------- times

def format_time(ts: float | None, tz: dt.tzinfo, fmt: str = TIME_FORMAT) -> str:
    """Epoch seconds as text in ``tz`` ('' for no time)."""
    if ts is None or (isinstance(ts, float) and math.isnan(ts)):
        return ""
    return dt.datetime.fromtimestamp(float(ts), tz).strftime(fmt)
