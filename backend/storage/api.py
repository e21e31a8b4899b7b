"""Read API for DAMNIT databases, compatible with the original `damnit.api` (docs/spec.md "Read API: Damnit, RunVariables, VariableData").

```python
db = Damnit(1234)            # or Damnit("/path/to/usr/Shared/amore")
db.table(with_titles=True)   # one row per run
db[100, "xgm_intensity"].read()
```

Differences from the original, on purpose:
- `table()` is built from one query + a vectorised pivot (much faster); cells of runs without any
  value at all are `pd.NA`/NaN like other missing cells (the original's merge leaves NaN there).
- A variable named like a fixed column (`proposal`, `run`, `start_time`) appears as `var:<name>`
  instead of making `table()` fail. With titles, a title clashing with another column gets
  ` (<name>)` appended.
- Variables that failed are listed in the KeyError raised when indexing them; summary-only
  variables `read()` their summary; user-editable booleans read as bool.
"""

from __future__ import annotations

import gc
import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from io import BytesIO
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pyarrow as pa

from backend.base.paths import DB_NAME, amore_dir

from . import catalog
from .arrow_reader import ArrowReader
from .blobs import decode_summary
from .connections import connect_readonly
from .h5format import read_reduced
from .run_table import run_table
from .user_variables import value_types_by_name

OBJTYPE_ATTR = "_damnit_objtype"
SPECIAL_TITLES = {"start_time": "Timestamp", "comment": "Comment"}


class DataType(Enum):
    """What kind of Python object a stored variable represents (`_damnit_objtype`)."""

    DataArray = "dataarray"
    DataFrame = "dataframe"
    Dataset = "dataset"
    Image = "image"
    PlotlyFigure = "PlotlyFigure"
    Series = "series"
    Timestamp = "timestamp"


def _type_hint(obj: h5py.HLObject) -> DataType | None:
    hint = obj.attrs.get(OBJTYPE_ATTR, "")
    if isinstance(hint, bytes):
        hint = hint.decode()
    return DataType(hint) if hint else None


def _is_numeric(dtype: np.dtype) -> bool:
    return np.issubdtype(dtype, np.number) or dtype == np.bool_


@contextmanager
def _gc_paused():
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class VariableData:
    """One variable of one run. Get it by indexing `Damnit` or `RunVariables`."""

    def __init__(self, name: str, title: str, proposal: int, run: int, h5_path: Path, db_path: Path,
                 db_only: bool):
        self._name = name
        self._title = title
        self._proposal = proposal
        self._run = run
        self._h5_path = h5_path
        self._db_path = db_path
        self._db_only = db_only

    name = property(lambda self: self._name, doc="The variable name.")
    title = property(lambda self: self._title, doc="The column title (the name if none was set).")
    proposal = property(lambda self: self._proposal)
    run = property(lambda self: self._run)
    file = property(lambda self: self._h5_path, doc="The run's HDF5 file (user variables aren't in it).")

    @property
    def units(self) -> str | None:
        """Physical units, if the variable has any."""
        units = self._db_attributes().get("units")
        if units is None and not self._db_only:
            with self._open_file() as f:
                if (ds := f.get(f".reduced/{self._name}")) is not None:
                    units = ds.attrs.get("units")
        if isinstance(units, bytes):
            units = units.decode()
        return units

    def _db_row(self) -> sqlite3.Row | None:
        with connect_readonly(self._db_path) as conn:
            conn.row_factory = sqlite3.Row
            return conn.execute(
                "SELECT value, summary_type, attributes FROM run_variables WHERE proposal=? AND run=? AND name=?"
                " ORDER BY version DESC LIMIT 1", (self._proposal, self._run, self._name)).fetchone()

    def _db_attributes(self) -> dict:
        row = self._db_row()
        if row is None or row["attributes"] is None:
            return {}
        return json.loads(row["attributes"])

    @contextmanager
    def _open_file(self) -> Iterator[h5py.File]:
        with h5py.File(self._h5_path, "r") as f:
            yield f

    def type_hint(self) -> DataType | None:
        """`DataType` of the stored object, or None for plain arrays/scalars/strings."""
        if self._db_only:
            return None
        with self._open_file() as f:
            obj = f.get(self._name)
            return None if obj is None else _type_hint(obj)

    def _read_netcdf(self, group: str, one_array: bool):
        import xarray as xr

        load = xr.load_dataarray if one_array else xr.load_dataset
        obj = load(self._h5_path, group=group, engine="h5netcdf")
        obj.attrs = {k: v for k, v in obj.attrs.items() if not k.startswith("_damnit_")}
        return obj

    @staticmethod
    def _read_parquet(dset: h5py.Dataset):
        import pandas as pd

        return pd.read_parquet(BytesIO(dset[()].tobytes()))

    def read(self, deserialize_plotly: bool = True) -> Any:
        """The variable's full value.

        xarray objects come back as DataArray/Dataset, Plotly figures as `Figure` (or their JSON string
        with `deserialize_plotly=False`), strings as str, scalars as numpy scalars, arrays as numpy.
        """
        if self._db_only:
            return self.summary()
        with self._open_file() as f:
            grp = f.get(self._name)
            if grp is None:  # only a summary was stored
                return self.summary()
            hint = _type_hint(grp)
            if hint in (DataType.Dataset, DataType.DataArray):
                return self._read_netcdf(self._name, one_array=hint is DataType.DataArray)
            dset = grp["data"]
            if hint is DataType.Series:
                return self._read_parquet(dset).iloc[:, 0]
            if hint is DataType.DataFrame:
                return self._read_parquet(dset)
            if hint is DataType.PlotlyFigure:
                raw = dset[()].tobytes()
                if not deserialize_plotly:
                    return raw.decode()
                import plotly.io as pio
                return pio.from_json(raw)
            if h5py.check_string_dtype(dset.dtype) is not None:
                if dset.ndim == 0:
                    return dset.asstr("utf-8", "surrogateescape")[()]
                return dset.asstr("utf-8", "surrogateescape")[0]
            return dset[()]

    def summary(self) -> Any:
        """The value shown in the table: numbers, strings, complex; arrays for trendlines; PNG bytes."""
        row = self._db_row()
        if row is None:
            if not self._db_only and self._h5_path.is_file():
                reduced = read_reduced(self._h5_path, [self._name]).get(self._name)
                if reduced is not None:
                    return reduced.value
            raise RuntimeError(f"No value for {self._name!r} in p{self._proposal}, r{self._run}")
        value = decode_summary(row["value"], row["summary_type"])
        user_var = None
        if self._db_only:
            with ArrowReader(self._db_path) as reader:
                user_var = catalog.user_variables(reader).get(self._name)
        if user_var is not None and user_var.variable_type in value_types_by_name:
            value = user_var.get_type_class().from_db_value(value)
        return value

    def preview_data(self, *, data_fallback: bool = True, deserialize_plotly: bool = True) -> Any:
        """Data for a quick look: the explicit preview if any, else the data if it is previewable.

        Returns a 1-D/2-D numeric array or DataArray, a 3-D RGB(A) array, a Plotly figure (JSON str
        with `deserialize_plotly=False`) or None.
        """
        if self._db_only:
            return None
        with self._open_file() as f:
            obj = f.get(f".preview/{self._name}")
            if obj is not None:
                hint = _type_hint(obj)
            else:
                if not data_fallback or (grp := f.get(self._name)) is None:
                    return None
                hint = _type_hint(grp)  # for data, the type is marked on the group
                if hint in (DataType.Dataset, DataType.DataFrame):
                    return None
                obj = grp if hint is DataType.DataArray else grp["data"]
            if isinstance(obj, h5py.Group):
                for d in obj.values():
                    if isinstance(d, h5py.Dataset) and (d.ndim > 3 or (d.ndim == 3 and d.shape[-1] not in (3, 4))):
                        return None
                path = obj.name
            elif hint is DataType.Series:
                return self._read_parquet(obj).iloc[:, 0]
            elif _is_numeric(obj.dtype) and (obj.ndim in (1, 2) or (obj.ndim == 3 and obj.shape[-1] in (3, 4))):
                value = obj[()]
                if hint is DataType.PlotlyFigure:
                    if not deserialize_plotly:
                        return value.tobytes().decode()
                    import plotly.io as pio
                    return pio.from_json(value.tobytes())
                return value
            else:
                return None
        arr = self._read_netcdf(path, one_array=True)
        if arr.ndim != 0 and _is_numeric(arr.dtype):
            return arr
        return None

    def preview(self):
        """Plot the preview (for notebooks): Plotly figures are shown, arrays drawn with matplotlib."""
        obj = self.preview_data()
        if obj is None:
            raise ValueError(f"No preview available for {self._name!r} in run {self._run}")
        if type(obj).__module__.startswith("plotly"):
            obj.show()
            return obj
        if hasattr(obj, "plot") and not isinstance(obj, np.ndarray):
            return obj.plot()
        import matplotlib.pyplot as plt

        obj = np.squeeze(obj)
        fig, ax = plt.subplots()
        if obj.ndim == 3:
            res = ax.imshow(obj)
            ax.set_axis_off()
            return res
        if obj.ndim == 2:
            res = ax.imshow(obj, interpolation="antialiased")
            finite = obj[np.isfinite(obj)] if np.issubdtype(obj.dtype, np.floating) else obj
            if finite.size:
                res.set_clim(np.quantile(finite, 0.01), np.quantile(finite, 0.99))
            fig.colorbar(res, ax=ax)
        elif obj.ndim == 1:
            res = ax.plot(obj, "o")
            ax.set_ylabel(self._title)
        else:
            return None
        ax.set_title(f"{self._title} (run {self._run})")
        return res

    def __repr__(self) -> str:
        return f"<VariableData for '{self._name}' in p{self._proposal}, r{self._run}>"


class RunVariables:
    """The variables of one run; index by name or title to get a `VariableData`."""

    def __init__(self, db_dir: str | os.PathLike, run: int, proposal: int | None = None):
        self._db_path = Path(db_dir) / DB_NAME
        if proposal is None:
            with ArrowReader(self._db_path) as reader:
                proposal = catalog.settings(reader)["proposal"]
        self._proposal = proposal
        self._run = run
        self._h5_path = Path(db_dir) / "extracted_data" / f"p{self._proposal}_r{self._run}.h5"

    proposal = property(lambda self: self._proposal)
    run = property(lambda self: self._run)
    file = property(lambda self: self._h5_path, doc="The run's HDF5 file.")

    def _key_locations(self) -> dict[str, bool]:
        """{name: stored only in the database}."""
        keys: dict[str, bool] = {}
        if self._h5_path.is_file():
            with h5py.File(self._h5_path, "r") as f:
                keys.update((k, False) for k in f if not k.startswith("."))
                keys.update((k, False) for k in f.get(".reduced", ()) if k not in keys)
        with ArrowReader(self._db_path) as reader:
            where = "proposal=? AND run=? AND value IS NOT NULL"
            params: list = [self._proposal, self._run]
            if keys:  # from the database, only what is never in the run's file
                db_names = [*catalog.user_variables(reader), "comment"]
                where += f" AND name IN ({','.join('?' * len(db_names))})"
                params += db_names
            # else no HDF5 file (e.g. a copied database): everything the database has for this run
            rows = reader.query(f"SELECT CAST(name AS TEXT) FROM run_variables WHERE {where}",
                                pa.schema([("name", pa.string())]), params).column(0).to_pylist()
        keys.update((name, True) for name in rows)
        return keys

    def _errors(self) -> dict[str, str]:
        if not self._h5_path.is_file():
            return {}
        with h5py.File(self._h5_path, "r") as f:
            return {k: f"{d.attrs.get('type', 'Error')}: {d.asstr()[()]}" for k, d in f.get(".errors", {}).items()}

    def keys(self) -> list[str]:
        """Names of the variables with data for this run, sorted."""
        return sorted(self._key_locations())

    def _var_titles(self, available) -> dict[str, str]:
        with ArrowReader(self._db_path) as reader:
            titles = {n: t for n, t in catalog.variable_titles(reader).items() if n in available}
        titles.update({n: t for n, t in SPECIAL_TITLES.items() if n in available})
        return {n: titles.get(n, n) for n in available}

    def titles(self) -> list[str]:
        """Titles of the variables with data for this run, sorted."""
        return sorted(self._var_titles(self._key_locations()).values())

    def __getitem__(self, key: str) -> VariableData:
        locations = self._key_locations()
        titles = self._var_titles(locations)
        name = key if key in locations else {t: n for n, t in titles.items()}.get(key)
        if name is None:
            msg = f"Variable data for {key!r} not found for p{self._proposal}, r{self._run}"
            if (err := self._errors().get(key)) is not None:
                msg += f" (it failed: {err})"
            raise KeyError(msg)
        return VariableData(name, titles[name], self._proposal, self._run, self._h5_path, self._db_path,
                            locations[name])

    def __contains__(self, key: str) -> bool:
        locations = self._key_locations()
        return key in locations or key in self._var_titles(locations).values()

    def _ipython_key_completions_(self) -> list[str]:
        return self.keys()

    def __repr__(self) -> str:
        return f"<RunVariables for p{self._proposal}, r{self._run} with {len(self.keys())} variables>"


class Damnit:
    """A DAMNIT database, by proposal number or directory.

    `db[run]` / `db[proposal, run]` → RunVariables; `db[run, name]` / `db[proposal, run, name]` →
    VariableData.
    """

    def __init__(self, location: int | str | os.PathLike):
        if isinstance(location, (int, np.integer)) and not isinstance(location, bool):
            self._db_dir = amore_dir(int(location))
        elif isinstance(location, (str, os.PathLike)):
            self._db_dir = Path(location)
        else:
            raise TypeError(f"Unsupported location {location!r}: pass a proposal number or a directory")
        if not self._db_dir.is_dir():
            raise FileNotFoundError(f"DAMNIT directory does not exist: {self._db_dir}")
        self._db_path = self._db_dir / DB_NAME
        if not self._db_path.is_file():
            raise FileNotFoundError(f"DAMNIT database does not exist: {self._db_path}")
        with ArrowReader(self._db_path):  # a readable DAMNIT database, or a clear error now
            pass

    @property
    def proposal(self) -> int:
        with ArrowReader(self._db_path) as reader:
            return catalog.settings(reader)["proposal"]

    @property
    def db_dir(self) -> Path:
        return self._db_dir

    def close(self) -> None:
        """Nothing to close (every read opens the database briefly); kept for the original's API."""

    def __enter__(self) -> Damnit:
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    def __getitem__(self, key) -> RunVariables | VariableData:
        proposal = variable = None
        if isinstance(key, (int, np.integer)):
            run = key
        elif isinstance(key, tuple) and len(key) == 2:
            if isinstance(key[1], str):
                run, variable = key
            else:
                proposal, run = key
        elif isinstance(key, tuple) and len(key) == 3:
            proposal, run, variable = key
        else:
            raise TypeError(f"Unrecognised key {key!r}: use run, (run, name), (proposal, run) or "
                            "(proposal, run, name)")
        with ArrowReader(self._db_path) as reader:
            taken = catalog.runs(reader, taken_only=True)
        if not any(r.run == run and (proposal is None or r.proposal == proposal) for r in taken):
            raise KeyError(f"Unknown run {run} for p{proposal if proposal is not None else self.proposal}")
        run_vars = RunVariables(self._db_dir, int(run), proposal=proposal)
        return run_vars if variable is None else run_vars[variable]

    def runs(self) -> list[int]:
        """Runs taken by the DAQ (pre-created rows without a start time are left out)."""
        with ArrowReader(self._db_path) as reader:
            return [r.run for r in catalog.runs(reader, taken_only=True)]

    def table(self, with_titles: bool = False):
        """The run table as a DataFrame: proposal, run, start_time, comment, then one column per variable.

        Blob summaries become placeholders: `<sparkline>` (trendline), `<ndarray>` (numpy),
        `<thumbnail>` (PNG), `<blob>` (other); complex numbers are decoded. A variable without a value
        for a run is `pd.NA`; a value that was cleared (or an error) is None. Column dtypes are then
        inferred like the original's: all-number columns become numeric, all-text columns pandas
        strings (where a missing value reads as NaN).
        """
        with _gc_paused(), ArrowReader(self._db_path) as reader:  # many short-lived objects: no GC passes
            return run_table(reader, with_titles=with_titles)

    def __repr__(self) -> str:
        return f"<Damnit database for p{self.proposal}>"
