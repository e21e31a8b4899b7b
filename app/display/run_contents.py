"""What a run's HDF5 file holds, and loading one variable's value for display.

The inspector lists a run's variables from HDF5 metadata only (shapes, types, whether a preview was
stored) so opening a run is instant even when it holds gigabytes; values are read one variable at a
time through the read API (``backend.storage.api``) when a plot is actually shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

# Values of `_damnit_objtype` (docs/spec.md "HDF5: object types").
PLOTTABLE_OBJTYPES = {"dataarray", "dataset", "image", "PlotlyFigure", "dataframe", "series"}


@dataclass
class StoredVariable:
    """HDF5 metadata of one variable in one run: enough to decide how to show it without reading it."""

    name: str
    objtype: str | None = None
    shape: tuple[int, ...] = ()
    dtype: str = ""
    has_preview: bool = False
    preview_shape: tuple[int, ...] = ()
    error: str | None = None
    error_cls: str | None = None
    netcdf_vars: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def is_plottable(self) -> bool:
        """Arrays, images, xarray objects and plotly figures get a plot; scalars and strings don't."""
        if self.error is not None:
            return False
        if self.has_preview or self.objtype in PLOTTABLE_OBJTYPES:
            return True
        return len(self.shape) >= 1 and self.dtype[:1] in ("f", "i", "u", "c", "b") and max(self.shape) > 1

    @property
    def size_text(self) -> str:
        if self.objtype == "dataset":
            return "Dataset: " + ", ".join(f"{k} {v}" for k, v in self.netcdf_vars.items())
        if self.objtype == "dataarray":
            return "DataArray " + ", ".join(f"{v}" for v in self.netcdf_vars.values())
        if self.objtype == "PlotlyFigure":
            return "Plotly figure"
        if self.objtype == "image":
            return f"image {self.shape}"
        if self.objtype in ("dataframe", "series"):  # stored as Parquet bytes: the shape says nothing
            return "DataFrame" if self.objtype == "dataframe" else "Series"
        return f"{self.dtype}: {self.shape}" if self.shape else self.dtype


def run_file(db_dir: Path, proposal: int, run: int) -> Path:
    return Path(db_dir) / "extracted_data" / f"p{proposal}_r{run}.h5"


def _is_dimension_scale(d: h5py.Dataset) -> bool:
    return _decode(d.attrs.get("CLASS")) == "DIMENSION_SCALE"


def _decode(v: Any) -> Any:
    return v.decode() if isinstance(v, bytes) else v


def scan_run_file(path: Path) -> dict[str, StoredVariable]:
    """Read only the metadata of every variable in a per-run file (missing file: empty)."""
    out: dict[str, StoredVariable] = {}
    try:
        f = h5py.File(path, "r")
    except (FileNotFoundError, OSError):
        return out
    with f:
        for name, obj in f.items():
            if name.startswith("."):
                continue
            var = StoredVariable(name, objtype=_decode(obj.attrs.get("_damnit_objtype")) or None)
            if isinstance(obj, h5py.Group):
                if "data" in obj and isinstance(obj["data"], h5py.Dataset) and var.objtype not in (
                        "dataarray", "dataset"):
                    var.shape, var.dtype = tuple(obj["data"].shape), obj["data"].dtype.str.lstrip("<>|=")
                else:
                    var.netcdf_vars = {k: tuple(d.shape) for k, d in obj.items()
                                       if isinstance(d, h5py.Dataset) and not _is_dimension_scale(d)}
                    if var.objtype is None and var.netcdf_vars:
                        var.objtype = "dataarray"
            out[name] = var
        for name, obj in f.get(".preview", {}).items():
            var = out.setdefault(name, StoredVariable(name))
            var.has_preview = True
            if isinstance(obj, h5py.Dataset):
                var.preview_shape = tuple(obj.shape)
        for name, obj in f.get(".errors", {}).items():
            var = out.setdefault(name, StoredVariable(name))
            var.error = _decode(obj[()]) if obj.shape == () else str(obj[()])
            var.error_cls = _decode(obj.attrs.get("type"))
    return out


def holds_booleans(variable_type: str | None, stored: StoredVariable | None) -> bool:
    """A user variable of type boolean, or a value stored as a boolean in the run's file (runs.sqlite
    has no booleans: it keeps them as 0/1)."""
    return variable_type == "boolean" or (stored is not None and stored.dtype in ("b1", "?"))


@dataclass
class LoadedValue:
    """What the inspector displays for one variable: the value and how it was obtained."""

    value: Any
    objtype: str | None
    is_preview: bool
    title: str
    units: str | None


def load_for_display(db_dir: Path, run: int, name: str, *, prefer_preview: bool = True) -> LoadedValue:
    """Read one variable via the read API: its stored preview first (if asked), else the full data."""
    from backend.storage.api import RunVariables

    var = RunVariables(db_dir, run)[name]
    units = var.units
    title = var.title
    if prefer_preview:
        preview = var.preview_data(data_fallback=False, deserialize_plotly=False)
        if preview is not None:
            return LoadedValue(preview, _objtype_of(var), True, title, units)
    value = var.read(deserialize_plotly=False)
    return LoadedValue(value, _objtype_of(var), False, title, units)


def _objtype_of(var: Any) -> str | None:
    hint = var.type_hint()
    return None if hint is None else getattr(hint, "value", str(hint))


def as_array(value: Any) -> np.ndarray | None:
    """1-D numeric values (arrays or DataArrays) for overlays; None if not 1-D numeric."""
    arr = np.asarray(getattr(value, "values", value))
    if arr.ndim == 1 and arr.dtype.kind in "fiub":
        return arr
    return None
