"""Converts a variable's Cell into a plain record (numpy + builtins only) for the parent process.

Figures become RGBA arrays or plotly JSON, xarray objects plain dicts of numpy arrays, so that the parent needs no
matplotlib/plotly and may run other library versions than the context environment.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from damnit_ctx import Cell, is_mpl_figure, is_plotly_figure, pandas_kind, unstorable_dtype_reason

MAX_BYTES_ENV = "DAMNIT_MAX_VARIABLE_BYTES"
DEFAULT_MAX_VARIABLE_BYTES = 4 * 1024**3


class ValueTooLarge(ValueError):
    """A variable returned more data than the configured limit."""


def max_variable_bytes(explicit: int | None = None) -> int:
    if explicit:
        return int(explicit)
    return int(os.environ.get(MAX_BYTES_ENV) or DEFAULT_MAX_VARIABLE_BYTES)


def unstorable_text(text: str) -> str | None:
    """Why a string cannot be stored as text in HDF5 and SQLite, or None if it can."""
    if "\x00" in text:
        return f"contains a NUL character (at position {text.index(chr(0))})"
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"contains a lone surrogate {text[e.start]!r} (at position {e.start}), which is not valid Unicode"
    return None


def _human(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if nbytes < 1024 or unit == "TiB":
            return f"{nbytes:.1f} {unit}" if unit != "B" else f"{int(nbytes)} B"
        nbytes /= 1024
    return f"{nbytes} B"


def figure_to_rgba(fig) -> np.ndarray:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.array(canvas.buffer_rgba(), dtype=np.uint8)


def _without_slashes(obj, kind: str):
    """HDF5 (so NetCDF4) names cannot contain '/', which extra_data puts in DataArray names: use '_'
    (as DAMNIT does when it stores them)."""
    if kind == "dataarray" and isinstance(obj.name, str) and "/" in obj.name:
        obj = obj.rename(obj.name.replace("/", "_"))
    names = list(obj.coords) + (list(obj.data_vars) if kind == "dataset" else [])
    renames = {k: k.replace("/", "_") for k in names if isinstance(k, str) and "/" in k}
    return obj.rename(renames) if renames else obj


def _check_netcdf_attrs(obj, name: str) -> None:
    """Fail in the worker, naming the attribute, for attrs that NetCDF cannot store."""
    import numbers

    parts = obj.variables if type(obj).__name__ == "Dataset" else obj.coords
    holders = [("", obj)] + [(f"{key}.", part) for key, part in parts.items()]
    for prefix, holder in holders:
        for key, value in holder.attrs.items():
            ok = isinstance(key, str) and isinstance(
                value, (str, bytes, numbers.Number, np.ndarray, np.number, list, tuple))
            if not ok:
                raise TypeError(f"cannot store attribute {prefix}{key}={value!r} of the xarray object "
                                f"returned by variable {name!r}: NetCDF attributes must be strings, "
                                "numbers or arrays/lists of them")
            texts = [key] + ([value] if isinstance(value, str) else
                             [v for v in value if isinstance(v, str)] if isinstance(value, (list, tuple)) else [])
            for text in texts:
                if reason := unstorable_text(text):
                    raise ValueError(f"cannot store attribute {prefix}{key} of the xarray object returned "
                                     f"by variable {name!r}: its text {reason}")


def _xarray_payload(obj, name: str) -> dict:
    """xarray objects travel as ``to_dict(data="array")`` (fast, needs no NetCDF library)."""
    kind = "dataarray" if type(obj).__name__ == "DataArray" else "dataset"
    obj = _without_slashes(obj, kind)
    _check_netcdf_attrs(obj, name)
    return {"__xarray__": kind, "dict": obj.to_dict(data="array")}


def _pandas_payload(obj, kind: str, name: str, limit: int) -> dict:
    """pandas objects travel (and are stored) as Parquet bytes, as DAMNIT stores them, plus what the
    parent needs for the table: a Series' values (summarised like an array), a DataFrame's size."""
    frame = obj.to_frame(name=obj.name) if kind == "series" else obj
    try:
        parquet = frame.to_parquet(path=None, engine="pyarrow", index=None)
    except ImportError as e:
        raise TypeError(f"cannot store the pandas {kind} returned by variable {name!r}: it is stored as "
                        f"Parquet (as DAMNIT does), which needs pyarrow in the context environment "
                        f"({sys.executable}): {e}") from None
    _check_size(name, len(parquet), limit)
    out = {"__pandas__": kind, "parquet": np.frombuffer(parquet, dtype=np.uint8)}
    if kind == "series":
        values = obj.to_numpy()
        out["values"] = None if unstorable_dtype_reason(values.dtype) else values
        out["described"] = f"{values.dtype}: {values.shape}"
    else:
        out["described"] = f"DataFrame ({obj.memory_usage(index=True, deep=True).sum() / 1e6:.2f}MB)"
    return out


def check_text(text: str, name: str, what: str, limit: int) -> str:
    """``text`` if it can be stored as a string (HDF5 and SQLite), else a ValueError saying why."""
    if reason := unstorable_text(text):
        raise ValueError(f"cannot store {what} returned by variable {name!r}: it {reason}; HDF5 and the "
                         "database store text as UTF-8 without NULs (return bytes for binary data)")
    _check_size(name, len(text), limit)
    return text


def to_storable(obj, name: str, limit: int):
    """A transportable form of ``obj`` (Cell data or preview); raises for what cannot be stored."""
    if obj is None:
        return obj
    if isinstance(obj, str):
        return check_text(obj, name, "the string", limit)
    if kind := pandas_kind(obj):
        return _pandas_payload(obj, kind, name, limit)
    if is_mpl_figure(obj):
        out = {"__image__": figure_to_rgba(obj)}
        size = out["__image__"].nbytes
    elif is_plotly_figure(obj):
        out = {"__plotly__": obj.to_json()}
        size = len(out["__plotly__"])
    elif type(obj).__name__ in ("DataArray", "Dataset") and hasattr(obj, "to_netcdf"):
        size = int(obj.nbytes)
        _check_size(name, size, limit)
        arrays = obj.variables.values() if type(obj).__name__ == "Dataset" else [obj]
        if any(a.dtype.hasobject for a in arrays):
            raise TypeError(f"cannot store {type(obj).__name__} returned by variable {name!r}: it "
                            "holds Python objects (object dtype)")
        return _xarray_payload(obj, name)
    else:
        arr = np.asarray(obj)
        reason = unstorable_dtype_reason(arr.dtype)
        if reason:
            raise TypeError(f"cannot store value of type {type(obj).__name__} returned by variable "
                            f"{name!r}: {reason}")
        out, size = arr, arr.nbytes
    _check_size(name, size, limit)
    return out


def _check_size(name: str, size: int, limit: int) -> None:
    if size > limit:
        raise ValueTooLarge(
            f"variable {name!r} returned {_human(size)}, more than the limit of {_human(limit)} "
            f"(the max_variable_bytes setting); return a reduced value, or mark the variable "
            "transient=True if it only feeds other variables")


_PLAIN_SCALARS = (type(None), bool, int, float, complex, str, bytes, np.generic)


def _check_plain(obj, name: str, what: str, path: str = "") -> None:
    """The parent may run other library versions: only builtins and numpy may cross over."""
    if isinstance(obj, _PLAIN_SCALARS):
        return
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            for item in obj.flat:
                _check_plain(item, name, what, path)
        return
    if isinstance(obj, (list, tuple)):
        for item in obj:
            _check_plain(item, name, what, path)
        return
    if isinstance(obj, dict):
        for key, item in obj.items():
            _check_plain(key, name, what, path)
            _check_plain(item, name, what, f"{path}.{key}" if path else str(key))
        return
    raise TypeError(f"cannot store {what} returned by variable {name!r}: {path or 'it'} holds a "
                    f"{type(obj).__module__}.{type(obj).__name__} object")


def cell_record(name: str, cell: Cell, elapsed: float, limit: int) -> dict:
    data = to_storable(cell.data, name, limit)
    preview = to_storable(cell.preview, name, limit)
    if isinstance(data, dict) and "dict" in data:
        _check_plain(data["dict"], name, "the xarray object")
    if isinstance(preview, dict) and "dict" in preview:
        _check_plain(preview["dict"], name, "the xarray preview")
    summary_value = cell.summary_value
    if isinstance(summary_value, str):
        check_text(summary_value, name, "the summary_value", limit)
    elif summary_value is not None:
        summary_value = np.asarray(summary_value)
    if isinstance(cell.units, str):
        check_text(cell.units, name, "the units", limit)
    return {
        "name": name,
        "status": "ok",
        "elapsed": float(elapsed),
        "data": data,
        "preview": preview,
        "cell": {
            "summary": cell.summary,
            "summary_value": summary_value,
            "bold": cell.bold,
            "background": cell.background,
            "units": cell.units,
        },
    }


def error_record(name: str, exc: BaseException, elapsed: float, tb: str = "") -> dict:
    return {
        "name": name,
        "status": "error",
        "elapsed": float(elapsed),
        "error_cls": str(type(exc).__name__),
        "message": exception_text(exc),
        "traceback": tb,
    }


def exception_text(exc: BaseException) -> str:
    """``str(exc)``, or a description if the exception's own ``__str__`` fails or returns a non-str."""
    try:
        text = str(exc)
    except Exception as e:
        return f"<the message of this {type(exc).__name__} could not be read: {type(e).__name__}>"
    return text if type(text) is str else repr(text)
