"""The per-run HDF5 file `extracted_data/p<prop>_r<run>.h5` in DAMNIT's layout (docs/spec.md "HDF5: per-run files").

Layout: `<name>/data` (or a NetCDF4 group for xarray objects, attr `_damnit_objtype`), `.reduced/<name>`
(summary + attrs), `.preview/<name>`, `.errors/<name>` (message, attr `type`); root attr `provenance`.

Every change is made on a temporary copy in the same directory and swapped in with os.replace under a
per-run fcntl lock, so readers never see a half-written file and concurrent writers of one run
serialise without losing values. Merging follows DAMNIT's rule: a variable present in the new results
replaces *everything* stored under that name (an error replaces data and vice versa).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import io
import os
import posixpath
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .blobs import BlobTypes
from .records import (
    OBJTYPE_DATAARRAY,
    OBJTYPE_DATAFRAME,
    OBJTYPE_DATASET,
    OBJTYPE_IMAGE,
    OBJTYPE_PLOTLY,
    OBJTYPE_SERIES,
    ReducedData,
    VariableResult,
)

OBJTYPE_ATTR = "_damnit_objtype"
SPECIAL_GROUPS = (".reduced", ".preview", ".errors")
NETCDF_COMPRESSION = {"compression": "gzip", "compression_opts": 1, "shuffle": True}
SUMMARY_META_ATTRS = ("max_diff", "summary_method", "summary_type")
RUN_FILE_PATTERN = re.compile(r"p(\d+)_r(\d+)\.h5$")
# xarray's names for an unnamed DataArray stored as a Dataset (xarray.backends.api)
DATAARRAY_VARIABLE = "__xarray_dataarray_variable__"
DATAARRAY_NAME = "__xarray_dataarray_name__"
# Attributes that tie HDF5 dimension scales together; they hold object references into the source file.
_DIMSCALE_ATTRS = {"NAME", "REFERENCE_LIST", "DIMENSION_LIST", "DIMENSION_LABELS"}

_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


def run_file_path(db_dir: str | os.PathLike, proposal: int, run: int) -> Path:
    return Path(db_dir, "extracted_data", f"p{proposal}_r{run}.h5")


# -- locking and atomic replacement -----------------------------------------------------------------

@contextmanager
def run_file_lock(path: str | os.PathLike):
    """Exclusive lock for changing one run file (a sidecar `.p<prop>_r<run>.h5.lock`, kept around)."""
    path = Path(path)
    _ensure_dir(path.parent)
    lock_path = path.with_name(f".{path.name}.lock")
    with _thread_locks_guard:
        tlock = _thread_locks.setdefault(str(lock_path), threading.Lock())
    with tlock:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                os.fchmod(fd, 0o666)
            except PermissionError:
                pass  # someone else's lock file; it is already shared
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the flock


def _ensure_dir(directory: Path) -> None:
    if not directory.is_dir():
        directory.mkdir(parents=True, exist_ok=True)
        try:
            os.chmod(directory, 0o777)
        except PermissionError:
            pass


def _atomic_update(path: Path, fill: Callable[[h5py.File], None], provenance: str | None,
                   replaced: Iterable[str] = (), start_from: Path | None = None,
                   before_replace: Callable[[], None] | None = None) -> None:
    """Build the new version of `path` in a temp file, then swap it in with os.replace.

    The temp file starts as a copy of `start_from` (a fragment becoming the run file) or a repacked
    copy of `path` without the variables in `replaced` (so replacing large data never leaves dead space
    behind); then `fill` writes the new content. `before_replace` runs once the new file is complete;
    if it raises, the old file stays as it was.
    """
    _ensure_dir(path.parent)
    # We hold the run's lock, so temp files of this run left behind are from a writer that died.
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if start_from is not None:
            shutil.copyfile(start_from, tmp)
        with h5py.File(tmp, "r+" if start_from is not None else "w") as f:
            if start_from is None and path.exists():
                _copy_file_except(path, f, set(replaced))
            if "provenance" not in f.attrs and provenance is not None:
                f.attrs["provenance"] = provenance
            for group in SPECIAL_GROUPS:
                f.require_group(group)
            fill(f)
        if before_replace is not None:
            before_replace()
        os.chmod(tmp, 0o666)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _copy_file_except(path: Path, fdst: h5py.File, skip: set[str]) -> None:
    """Copy root attributes and every object of the run file at `path` except variables in `skip`."""
    try:
        fsrc = h5py.File(path, "r")
    except OSError as e:
        raise OSError(f"Cannot update {path}: it is not a readable HDF5 file ({e}). Move it away; "
                      "reprocessing the run recreates it.") from e
    with fsrc:
        for key, value in fsrc.attrs.items():
            fdst.attrs[key] = value
        dimids = _DimIds(fdst)
        for key, obj in fsrc.items():
            if key in SPECIAL_GROUPS:
                fdst.require_group(key)
                for sub in obj:
                    if sub not in skip:
                        _copy_object(fsrc, fdst, f"{key}/{sub}", dimids)
            elif key not in skip:
                _copy_object(fsrc, fdst, key, dimids)


# -- writing VariableResults -------------------------------------------------------------------------

def write_results(path: str | os.PathLike, results: Iterable[VariableResult], provenance: str = "context.py",
                  *, vet: Callable[[dict[str, ReducedData]], dict[str, Exception]] | None = None,
                  commit: Callable[[dict[str, ReducedData]], None] | None = None) -> list[VariableResult]:
    """Merge `results` into the run file at `path` (created if missing). Returns the results as stored.

    A value that HDF5 or NetCDF refuses becomes that variable's error (``could not store the value:
    ...``, with the refusing exception's class) and the other variables are written as usual; the
    returned list has the error in its place. `provenance` is recorded on the file when it is created
    (like the original's first fragment).

    For the database: `vet(summaries)` names values it cannot take ({name: exception}), which become
    errors in the file too; `commit(summaries)` stores the summaries as written (read_reduced's form)
    while the run's lock is held, before the new file replaces the old one, so that if it fails the
    file stays as it was and the two still agree.
    """
    path = Path(path)
    stored = list(results)
    for r in stored:
        _check_name(r.name)
    names = [r.name for r in stored]
    summaries: dict[str, ReducedData] = {}

    def replace_with_error(f: h5py.File, i: int, exc: Exception, where: str = "") -> None:
        delete_variable_objects(f, stored[i].name)  # whatever part of it was written
        stored[i] = unstorable_result(stored[i].name, exc, where)
        _write_result(f, stored[i])

    def fill(f: h5py.File) -> None:
        for i, r in enumerate(stored):
            delete_variable_objects(f, r.name)  # a name given twice: the last result wins
            try:
                _write_result(f, r)
            except Exception as e:
                if r.is_error:
                    raise
                replace_with_error(f, i, e)
        summaries.update(read_reduced(f, names))
        refused = vet(summaries) if vet is not None else {}
        for i, r in enumerate(stored):
            if r.name in refused:
                replace_with_error(f, i, refused[r.name], "in the database")
        if refused:
            summaries.update(read_reduced(f, list(refused)))

    with run_file_lock(path):
        _atomic_update(path, fill, provenance, replaced=names,
                       before_replace=(lambda: commit(summaries)) if commit is not None else None)
    return stored


def unstorable_result(name: str, exc: BaseException, where: str = "") -> VariableResult:
    """The error recorded for a value that could not be stored (``where``: e.g. "in the database")."""
    cause = exc.__cause__ if isinstance(exc, _WriteError) and exc.__cause__ is not None else exc
    where = f" {where}" if where else ""
    return VariableResult(name=name, error=f"could not store the value{where}: {cause}",
                          error_cls=type(cause).__name__)


class _WriteError(Exception):
    """Names the variable and file when writing one result fails (the cause is chained)."""


def safe_text(text: str) -> str:
    """``text`` as HDF5 and SQLite can hold it: NULs and lone surrogates written as escapes."""
    text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ValueError(f"Variable name {name!r} can't be stored in HDF5 (empty, contains '/' or starts "
                         "with '.')")


def delete_variable_objects(f: h5py.File, name: str) -> None:
    """Remove everything stored under `name`: data, summary, preview and error."""
    for p in (name, *(f"{g}/{name}" for g in SPECIAL_GROUPS)):
        if p in f:
            del f[p]


def _write_result(f: h5py.File, r: VariableResult) -> None:
    try:
        if r.is_error:
            # Messages quote user data (exception texts): escape what HDF5 can't hold, never lose the error.
            ds = f[".errors"].create_dataset(r.name, data=safe_text(str(r.error)))
            ds.attrs["type"] = safe_text(r.error_cls or "Exception")
            return
        if r.summary is not None:
            _write_summary(f, r.name, r.summary, r.summary_attrs or {})
        if r.preview is not None:
            _write_object(f, f".preview/{r.name}", r.preview, r.preview_objtype, as_group=False)
        if r.data is not None:
            _write_object(f, r.name, r.data, r.objtype, as_group=True)
    except Exception as e:
        raise _WriteError(f"Could not write variable {r.name!r} to {f.filename}: {e}") from e


def _summary_array(summary: Any) -> Any:
    if isinstance(summary, (bytes, bytearray, memoryview)):
        return np.frombuffer(bytes(summary), dtype=np.uint8)  # PNG thumbnail
    if isinstance(summary, str):
        return str(summary)
    value = np.asarray(summary)
    if value.dtype.kind == "U":  # HDF5 has no fixed-width unicode: store UTF-8 strings like str values
        return value.item() if value.ndim == 0 else value.astype(h5py.string_dtype())
    return value


def _coerce_attr(key: str, value: Any) -> Any:
    if key == "bold":
        return np.bool_(bool(value))
    if key == "background":
        if isinstance(value, str):
            value = value.lstrip("#")
            value = [int(value[i:i + 2], 16) for i in (0, 2, 4)]
        return np.asarray(value, dtype=np.uint8)
    if key == "max_diff":
        return np.float64(value)
    if key in ("units", "summary_method", "summary_type"):
        return str(value)
    return value


def _write_summary(f: h5py.File, name: str, summary: Any, attrs: dict) -> None:
    value = _summary_array(summary)
    ds = f[".reduced"].create_dataset(name, data=value)
    attrs = {k: v for k, v in attrs.items() if v is not None}
    if (isinstance(value, np.ndarray) and value.ndim == 2 and value.shape[0] == 2
            and "summary_type" not in attrs):
        attrs["summary_type"] = "trendline"
    for key, v in attrs.items():
        ds.attrs[key] = _coerce_attr(key, v)


def _as_xarray(obj: Any, objtype: str | None) -> Any:
    """xarray object for `obj` if it is one (or NetCDF bytes of one), else None."""
    import xarray as xr

    if isinstance(obj, (xr.DataArray, xr.Dataset)):
        return obj
    if objtype in (OBJTYPE_DATAARRAY, OBJTYPE_DATASET) and isinstance(obj, (bytes, bytearray, memoryview)):
        loader = xr.load_dataarray if objtype == OBJTYPE_DATAARRAY else xr.load_dataset
        return loader(io.BytesIO(bytes(obj)), engine="h5netcdf")
    if objtype in (OBJTYPE_DATAARRAY, OBJTYPE_DATASET):
        raise TypeError(f"expected an xarray {objtype}, got {type(obj).__name__}")
    return None


def _write_object(f: h5py.File, path: str, obj: Any, objtype: str | None, as_group: bool) -> None:
    """Store a data value (`as_group`: under `<path>/data`) or a preview (at `<path>`)."""
    import xarray as xr

    xobj = _as_xarray(obj, objtype) if (objtype or not isinstance(obj, (np.ndarray, str))) else None
    if xobj is not None:
        kind = OBJTYPE_DATAARRAY if isinstance(xobj, xr.DataArray) else OBJTYPE_DATASET
        if kind == OBJTYPE_DATASET and not as_group:
            raise TypeError("a preview can't be an xarray Dataset")
        write_netcdf_group(f, path, xobj)
        f[path].attrs[OBJTYPE_ATTR] = kind
        return

    if objtype == OBJTYPE_PLOTLY and isinstance(obj, (str, bytes, bytearray)):
        obj = np.frombuffer(obj.encode("utf-8") if isinstance(obj, str) else bytes(obj), dtype=np.uint8)
    elif isinstance(obj, np.ndarray) and obj.dtype.kind == "U":
        obj = obj.astype(h5py.string_dtype())
    elif isinstance(obj, np.ndarray) and obj.dtype.hasobject:
        raise TypeError("object arrays can't be stored in HDF5")

    if as_group:
        grp = f.create_group(path)
        grp.create_dataset("data", data=obj)
        target = grp
    else:
        target = f.create_dataset(path, data=obj)
    if objtype in (OBJTYPE_IMAGE, OBJTYPE_PLOTLY, OBJTYPE_DATAFRAME, OBJTYPE_SERIES):
        target.attrs[OBJTYPE_ATTR] = objtype


def write_netcdf_group(f: h5py.File, group: str, obj: Any) -> None:
    """Write an xarray object as a NetCDF4 group inside an open h5py file (gzip-1 + shuffle)."""
    import h5netcdf
    import xarray as xr
    from xarray.backends import H5NetCDFStore

    if isinstance(obj, xr.DataArray):
        if obj.name is None:
            ds = obj.to_dataset(name=DATAARRAY_VARIABLE)
        elif obj.name in obj.coords or obj.name in obj.dims:
            # NetCDF can't have a variable named like a coordinate: store under xarray's generic
            # name and remember the real one, as DataArray.to_netcdf does.
            ds = obj.to_dataset(name=DATAARRAY_VARIABLE)
            ds.attrs[DATAARRAY_NAME] = obj.name
        else:
            ds = obj.to_dataset()
    else:
        # '/' is the HDF5 path separator, so it can't appear in variable names.
        ds = obj.rename_vars({k: k.replace("/", "_") for k in obj.data_vars
                              if isinstance(k, str) and "/" in k})
    encoding = {k: dict(NETCDF_COMPRESSION) for k in ds.data_vars}
    with h5netcdf.File(f, "a") as nf:
        store = H5NetCDFStore(nf, group=group, mode="w")
        ds.dump_to_store(store, encoding=encoding)


# -- merging foreign fragment files -------------------------------------------------------------------

def fragment_variable_names(f: h5py.File) -> set[str]:
    """All variable names a DAMNIT file mentions (data groups and entries of the special groups)."""
    names = {k for k in f if not k.startswith(".")}
    for group in SPECIAL_GROUPS:
        names |= set(f.get(group, ()))
    return names


def merge_fragment(fragment: str | os.PathLike, dst: str | os.PathLike, *,
                   remove_source: bool = True) -> tuple[set[str], str]:
    """Merge a fragment file (e.g. from the original's `damnit.submit()`) into a run file.

    Returns (variable names merged, the fragment's provenance). NetCDF groups are copied with their
    dimension scales rebuilt, so xarray/netCDF readers still see the dimensions.
    """
    fragment, dst = Path(fragment), Path(dst)
    with h5py.File(fragment, "r") as fs:
        names = fragment_variable_names(fs)
        provenance = fs.attrs.get("provenance", "")
        if isinstance(provenance, bytes):
            provenance = provenance.decode("utf-8", "replace")

    def fill(fd: h5py.File) -> None:
        with h5py.File(fragment, "r") as fs:
            dimids = _DimIds(fd)
            for name in sorted(names):
                copy_variable(fs, fd, name, dimids)

    with run_file_lock(dst):
        if dst.exists():
            _atomic_update(dst, fill, provenance, replaced=names)
        else:
            _atomic_update(dst, lambda f: None, provenance, start_from=fragment)
    if remove_source:
        fragment.unlink()
    return names, str(provenance)


class _DimIds:
    """Next free netCDF dimension id of a file being filled (ids are file-wide in netCDF4)."""

    def __init__(self, f: h5py.File):
        self._file = f
        self._next: int | None = None

    def reserve(self, ids: list[int]) -> int:
        """Offset to add to `ids` (from another file) so they don't clash; marks them used."""
        if self._next is None:
            used = [-1]
            self._file.visititems(lambda _, o: used.append(int(o.attrs["_Netcdf4Dimid"]))
                                  if isinstance(o, h5py.Dataset) and "_Netcdf4Dimid" in o.attrs else None)
            self._next = max(used) + 1
        if not ids:
            return 0
        offset = self._next - min(ids)
        self._next = max(ids) + offset + 1
        return offset


def _copy_object(fsrc: h5py.File, fdst: h5py.File, path: str, dimids: _DimIds) -> None:
    obj = fsrc[path]
    if isinstance(obj, h5py.Group) and obj.attrs.get(OBJTYPE_ATTR, "") in (OBJTYPE_DATAARRAY, OBJTYPE_DATASET):
        copy_netcdf_group(fsrc, fdst, path, dimids)
    else:
        fdst.require_group(posixpath.dirname(path) or "/")
        fsrc.copy(obj, fdst, name=path)


def copy_variable(fsrc: h5py.File, fdst: h5py.File, name: str, dimids: _DimIds | None = None) -> None:
    """Copy everything stored under `name` (data, summary, preview, error) from one file to another."""
    dimids = dimids or _DimIds(fdst)
    for path in (name, *(f"{g}/{name}" for g in SPECIAL_GROUPS)):
        if path in fsrc:
            _copy_object(fsrc, fdst, path, dimids)


def _scale_name(ds: h5py.Dataset) -> str:
    name = ds.attrs.get("NAME", b"")
    return name.decode("utf-8", "surrogateescape") if isinstance(name, bytes) else str(name)


def copy_netcdf_group(fsrc: h5py.File, fdst: h5py.File, path: str, dimids: _DimIds | None = None) -> None:
    """Copy a NetCDF4 group between files, recreating its dimension scales in the destination.

    H5Ocopy leaves dimension-scale references pointing into the source file, and netCDF dimension ids
    are file-wide, so ids are shifted past those already used in the destination.
    """
    src = fsrc[path]
    datasets: list[h5py.Dataset] = []
    src.visititems(lambda _, o: datasets.append(o) if isinstance(o, h5py.Dataset) else None)
    scales = {d.name: _scale_name(d) for d in datasets if d.is_scale}
    attachments = []
    for d in datasets:
        for i in range(d.ndim):
            dim = d.dims[i]
            attached = [s.name for s in dim.values()]
            if attached or dim.label:
                attachments.append((d.name, i, dim.label, attached))
    src_ids = sorted({int(np.ravel(d.attrs[k])[j]) for d in datasets for k in ("_Netcdf4Dimid", "_Netcdf4Coordinates")
                      if k in d.attrs for j in range(np.size(d.attrs[k]))})
    offset = (dimids or _DimIds(fdst)).reserve(src_ids)

    fdst.require_group(posixpath.dirname(src.name) or "/")
    fsrc.copy(src, fdst, name=src.name, without_attrs=True)
    for scale_path, scale_name in scales.items():
        fdst[scale_path].make_scale(scale_name)
    for ds_path, i, label, attached in attachments:
        dim = fdst[ds_path].dims[i]
        for scale_path in attached:
            dim.attach_scale(fdst[scale_path])
        if label:
            dim.label = label

    for obj in [src, *_subtree(src)]:
        target = fdst[obj.name]
        for key in obj.attrs:
            if key in _DIMSCALE_ATTRS or (key == "CLASS" and key in target.attrs):
                continue
            value = obj.attrs[key]
            aid = obj.attrs.get_id(key)
            if isinstance(obj, h5py.Dataset) and key in ("_Netcdf4Dimid", "_Netcdf4Coordinates"):
                value = value + offset
            target.attrs.create(key, value, shape=aid.shape, dtype=aid.dtype)


def _subtree(group: h5py.Group) -> list:
    objs: list = []
    group.visititems(lambda _, o: objs.append(o))
    return objs


# -- deleting ----------------------------------------------------------------------------------------

def delete_variables(path: str | os.PathLike, names: Iterable[str]) -> bool:
    """Remove variables from one run file; returns whether anything was removed."""
    path = Path(path)
    names = list(names)
    with run_file_lock(path):
        if not path.exists():
            return False
        with h5py.File(path, "r") as f:
            present = [n for n in names if any(p in f for p in (n, *(f"{g}/{n}" for g in SPECIAL_GROUPS)))]
        if not present:
            return False

        _atomic_update(path, lambda f: None, None, replaced=present)
    return True


def delete_variable_from_all_runs(db_dir: str | os.PathLike, name: str) -> int:
    """Remove one variable from every run file of a database directory; returns files changed."""
    data_dir = Path(db_dir, "extracted_data")
    if not data_dir.is_dir():
        return 0
    return sum(delete_variables(p, [name]) for p in sorted(data_dir.iterdir())
               if RUN_FILE_PATTERN.match(p.name))


# -- reading summaries for the database -------------------------------------------------------------

def _summary_value(ds: h5py.Dataset) -> Any:
    if h5py.check_string_dtype(ds.dtype) is not None:
        v = ds.asstr("utf-8", "surrogateescape")[()]
        return v if ds.ndim == 0 else np.asarray(v, dtype=object).tolist()
    if ds.ndim == 1 and ds.dtype == np.uint8 and ds.shape[0] >= 8 and \
            BlobTypes.identify(ds[:8].tobytes()) is BlobTypes.png:
        return ds[()].tobytes()
    value = ds[()]
    return value.item() if value.ndim == 0 else value


def _plain_attr(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return value


def read_reduced(path: str | os.PathLike | h5py.File,
                 names: Iterable[str] | None = None) -> dict[str, ReducedData]:
    """Summaries and errors of a run file (a path, or an open file) as ReducedData for
    DamnitDB.set_variables (docs/spec.md "HDF5: from file to database").

    Strings → str, PNG thumbnails → bytes, 0-d → Python scalars (complex stays complex), other arrays →
    numpy; bold/background/units go to `attributes`. An error gives value None and attributes
    {"error", "error_cls"}; it wins over a summary of the same name.
    """
    wanted = None if names is None else set(names)
    out: dict[str, ReducedData] = {}
    with (contextlib.nullcontext(path) if isinstance(path, h5py.File) else h5py.File(path, "r")) as f:
        for name, ds in f.get(".reduced", {}).items():
            if wanted is not None and name not in wanted:
                continue
            attrs = ds.attrs
            max_diff = attrs.get("max_diff")
            summary_type = attrs.get("summary_type")
            out[name] = ReducedData(
                _summary_value(ds),
                max_diff=None if max_diff is None else _plain_attr(max_diff),
                summary_method=_plain_attr(attrs.get("summary_method", "")),
                summary_type=None if summary_type is None else _plain_attr(summary_type),
                attributes={k: _plain_attr(v) for k, v in attrs.items() if k not in SUMMARY_META_ATTRS},
            )
        for name, ds in f.get(".errors", {}).items():
            if wanted is not None and name not in wanted:
                continue
            out[name] = ReducedData(None, attributes={
                "error": _summary_value(ds), "error_cls": _plain_attr(ds.attrs.get("type", ""))})
    return out


def read_provenance(path: str | os.PathLike) -> str:
    with h5py.File(path, "r") as f:
        return str(_plain_attr(f.attrs.get("provenance", "")))
