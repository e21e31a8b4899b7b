"""Turns a worker's raw record for one variable into a ``VariableResult`` with its table summary.

Summary precedence (as DAMNIT): ``summary_value`` -> ``np.<summary>(data)`` (a failure is logged and
falls through) -> a default by type, computed on the preview if there is one:
str -> itself; Dataset -> ``"Dataset (X.XXMB)"``; figure -> PNG <= 300 px; 0-D -> the value;
1-D -> trendline (float64 [2, <=~150], x;y); 2-D -> 300x300 PNG; >=3-D -> ``"<dtype>: <shape>"``.

Plotly thumbnails use kaleido when it is installed and works; otherwise the traces' data are drawn with
matplotlib (lines/markers/bars, heatmaps as images), which needs no browser.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import io
import json
import logging
import threading
import warnings

import numpy as np

from backend.storage.records import (
    OBJTYPE_DATAARRAY,
    OBJTYPE_DATAFRAME,
    OBJTYPE_DATASET,
    OBJTYPE_IMAGE,
    OBJTYPE_PLOTLY,
    OBJTYPE_SERIES,
    VariableResult,
)

log = logging.getLogger(__name__)

THUMBNAIL_SIZE = 300  # px, longest side
TRENDLINE_POINTS = 150
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------- decoding

def decode(storable):
    """Worker transport form -> (value, objtype). Images/plotly become uint8 arrays as stored in HDF5."""
    if isinstance(storable, dict):
        if "__image__" in storable:
            return np.asarray(storable["__image__"], dtype=np.uint8), OBJTYPE_IMAGE
        if "__plotly__" in storable:
            raw = storable["__plotly__"].encode("utf-8")
            return np.frombuffer(raw, dtype=np.uint8).copy(), OBJTYPE_PLOTLY
        if "__xarray__" in storable:
            return _decode_xarray(storable)
        if "__pandas__" in storable:  # stored as the Parquet bytes
            objtype = OBJTYPE_SERIES if storable["__pandas__"] == "series" else OBJTYPE_DATAFRAME
            return np.asarray(storable["parquet"], dtype=np.uint8), objtype
        raise ValueError(f"unknown transport form with keys {sorted(storable)}")
    return storable, None


def _decode_xarray(storable):
    import xarray as xr

    kind = storable["__xarray__"]
    objtype = OBJTYPE_DATAARRAY if kind == "dataarray" else OBJTYPE_DATASET
    if "netcdf" in storable:
        buf = io.BytesIO(storable["netcdf"])
        opener = xr.open_dataarray if kind == "dataarray" else xr.open_dataset
        with opener(buf, engine="h5netcdf") as obj:
            return obj.load(), objtype
    cls = xr.DataArray if kind == "dataarray" else xr.Dataset
    return cls.from_dict(storable["dict"]), objtype


def _is_dataarray(obj) -> bool:
    return type(obj).__name__ == "DataArray" and hasattr(obj, "dims")


def _is_dataset(obj) -> bool:
    return type(obj).__name__ == "Dataset" and hasattr(obj, "data_vars")


# -------------------------------------------------------------------------------- images & PNGs

def png_bytes(rgba_or_rgb: np.ndarray) -> np.ndarray:
    """Encode an image array as PNG, returned as a 1-D uint8 array (how DAMNIT stores thumbnails)."""
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(rgba_or_rgb))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return np.frombuffer(buf.getvalue(), dtype=np.uint8)


def _fit(img, size: int = THUMBNAIL_SIZE, *, upscale: bool):
    from PIL import Image

    w, h = img.size
    scale = size / max(w, h)
    if scale >= 1 and not upscale:
        return img
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    return img.resize(new, Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS)


def image_thumbnail(rgba: np.ndarray) -> np.ndarray:
    """PNG of a rendered figure, at most THUMBNAIL_SIZE px on its longest side."""
    from PIL import Image

    img = _fit(Image.fromarray(np.ascontiguousarray(rgba)), upscale=False)
    return png_bytes(np.asarray(img))


def array_thumbnail(image) -> np.ndarray:
    """PNG of a 2-D array as DAMNIT draws it: always THUMBNAIL_SIZE px square with the array stretched
    to fill it (a (1, 100) row shows as well as a (1000, 1000) image); NaN -> 0, colour scale from the
    1st to the 99th percentile (viridis). Rows and columns are enlarged by repeating pixels and shrunk
    by filtering. A DataArray is oriented as xarray's ``plot.imshow`` draws it: its coordinates increase
    upwards and to the right (so without a descending y coordinate, row 0 is at the bottom)."""
    from matplotlib import colormaps
    from PIL import Image

    arr = np.asarray(image.values if _is_dataarray(image) else image)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if np.iscomplexobj(arr):
        arr = np.abs(arr)
    arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if _is_dataarray(image):
        ydim, xdim = image.dims
        if not _descending(image, ydim):
            arr = arr[::-1]
        if _descending(image, xdim):
            arr = arr[:, ::-1]
    vmin, vmax = np.quantile(arr, [0.01, 0.99]) if arr.size else (0.0, 1.0)
    span = vmax - vmin
    norm = np.clip((arr - vmin) / span, 0, 1) if span > 0 else np.zeros_like(arr)
    img = Image.fromarray((colormaps["viridis"](norm) * 255).astype(np.uint8))
    w, h = img.size
    if w != THUMBNAIL_SIZE:
        img = img.resize((THUMBNAIL_SIZE, h), Image.Resampling.NEAREST if w < THUMBNAIL_SIZE
                         else Image.Resampling.LANCZOS)
    if h != THUMBNAIL_SIZE:
        img = img.resize((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.NEAREST if h < THUMBNAIL_SIZE
                         else Image.Resampling.LANCZOS)
    return png_bytes(np.asarray(img))


def _descending(da, dim: str) -> bool:
    """Whether the DataArray's coordinate along ``dim`` runs from high to low (first > last value);
    no coordinate, or one that is not numbers or times, counts as ascending (its index)."""
    if dim not in da.coords:
        return False
    values = np.asarray(da.coords[dim].values)
    return values.size > 1 and values.dtype.kind in "iufMm" and bool(values[0] > values[-1])


KALEIDO_TIMEOUT = 20.0  # s; kaleido drives a browser, which must not stall processing


def _kaleido_png(fig_json: str) -> bytes | None:
    """PNG from kaleido, or None if it is not installed, fails or takes too long."""
    if importlib.util.find_spec("kaleido") is None:
        return None
    result: list = []

    def render():
        try:
            import plotly.io as pio

            result.append(pio.from_json(fig_json).to_image(format="png"))
        except Exception as exc:
            log.warning("kaleido could not render a plotly thumbnail (%s); drawing it with matplotlib", exc)

    thread = threading.Thread(target=render, name="kaleido", daemon=True)
    thread.start()
    thread.join(KALEIDO_TIMEOUT)
    return result[0] if result else None


def plotly_thumbnail(fig_json: str) -> np.ndarray:
    png = _kaleido_png(fig_json)
    if png is None:
        return _plotly_fallback_thumbnail(json.loads(fig_json))
    from PIL import Image

    img = _fit(Image.open(io.BytesIO(png)).convert("RGBA"), upscale=False)
    return png_bytes(np.asarray(img))


def _plotly_array(value):
    """Plotly JSON stores arrays as lists or as {"dtype", "bdata" (base64), "shape"}."""
    if isinstance(value, dict) and "bdata" in value:
        arr = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = value.get("shape")
        if isinstance(shape, str):
            shape = [int(s) for s in shape.split(",")]
        return arr.reshape(shape) if shape else arr
    return None if value is None else np.asarray(value)


def _plotly_fallback_thumbnail(fig: dict) -> np.ndarray:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    mfig = Figure(figsize=(1.5, 1), dpi=THUMBNAIL_SIZE / 1.5)
    ax = mfig.add_axes((0, 0, 1, 1))
    drawn = False
    for trace in fig.get("data", []):
        kind = trace.get("type", "scatter")
        x, y, z = (_plotly_array(trace.get(k)) for k in ("x", "y", "z"))
        try:
            if z is not None and kind in ("heatmap", "image", "contour", "surface"):
                ax.imshow(np.asarray(z, dtype=float), aspect="auto", origin="lower")
            elif y is not None and kind == "bar":
                ax.bar(np.arange(len(y)) if x is None else x, y)
            elif y is not None:
                xs = np.arange(len(y)) if x is None else x
                mode = trace.get("mode", "lines")
                ax.plot(xs, y, "-" if "lines" in mode else ".", marker="." if "markers" in mode else None)
            elif x is not None and kind == "histogram":
                ax.hist(np.asarray(x, dtype=float), bins=30)
            else:
                continue
            drawn = True
        except (TypeError, ValueError):
            continue
    if not drawn:
        ax.text(0.5, 0.5, "plotly figure", ha="center", va="center")
    ax.axis("off")
    canvas = FigureCanvasAgg(mfig)
    canvas.draw()
    return png_bytes(np.asarray(canvas.buffer_rgba()))


# ----------------------------------------------------------------------------------- trendlines

def _trend_axes(data) -> tuple[np.ndarray, np.ndarray | None]:
    """(y values, x coordinate or None for positions), both views of the data: nothing is copied."""
    y = np.asarray(data.values if _is_dataarray(data) else data)
    x = None
    if _is_dataarray(data) and data.dims and data.dims[0] in data.coords:
        x = np.asarray(data.coords[data.dims[0]].values)
        if x.shape != y.shape or not (np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.datetime64)):
            x = None
    return y, x


def _as_float(values: np.ndarray) -> np.ndarray:
    values = np.abs(values) if np.iscomplexobj(values) else values
    return values.astype(np.float64)


def _x_as_float(x: np.ndarray) -> np.ndarray:
    if np.issubdtype(x.dtype, np.datetime64):
        return x.astype("datetime64[ns]").astype(np.int64) / 1e9
    return x.astype(np.float64)


def _is_sorted(x: np.ndarray, chunk: int = 1 << 20) -> bool:
    """Whether x never decreases (NaN compares as in-order), checked a chunk at a time."""
    for start in range(0, x.size - 1, chunk):
        part = x[start:start + chunk + 1]
        if np.any(part[1:] < part[:-1]):
            return False
    return True


def extrema_positions(y: np.ndarray, order: np.ndarray | None = None, points: int = TRENDLINE_POINTS):
    """Positions (in ``order``, if given) of about ``points`` points of y: each bucket's minimum and
    maximum, in x order, so that peaks and dips survive. A bucket that is all NaN keeps its first
    point. Works a bucket at a time, so a huge line costs no copy of itself."""
    n = y.size
    if n <= points:
        return np.arange(n)
    buckets = max(1, points // 2)
    edges = np.linspace(0, n, buckets + 1).astype(int)
    keep = []
    with quiet_nan_warnings():
        for start, stop in zip(edges[:-1], edges[1:]):
            if stop <= start:
                continue
            chunk = _as_float(y[start:stop] if order is None else y[order[start:stop]])
            if np.all(np.isnan(chunk)):
                keep.append(start)
                continue
            lo, hi = start + int(np.nanargmin(chunk)), start + int(np.nanargmax(chunk))
            keep.extend(sorted({lo, hi}))
    return np.asarray(keep, dtype=int)


def trendline(data) -> np.ndarray:
    """float64 [2, <= ~TRENDLINE_POINTS]: x (coordinate or position) and y of the line's extrema."""
    y, x = _trend_axes(data)
    y = y.ravel()
    order = None
    if x is not None and x.size > 1 and not _is_sorted(x):
        order = np.argsort(x, kind="stable")
    pos = extrema_positions(y, order)
    idx = pos if order is None else order[pos]
    xs = idx.astype(np.float64) if x is None else _x_as_float(x[idx])
    return np.vstack((xs, _as_float(y[idx]))).astype(np.float64)


# ------------------------------------------------------------------------------------- summaries

def default_summary(data, objtype: str | None, full_data=None):
    """The type-based summary of ``data`` (the preview if there is one, else the data)."""
    if data is None:
        return None
    if isinstance(data, str):
        return data
    if objtype == OBJTYPE_IMAGE:
        return _guard(image_thumbnail, data, "<thumbnail error>")
    if objtype == OBJTYPE_PLOTLY:
        return _guard(lambda d: plotly_thumbnail(bytes(d).decode("utf-8")), data, "<thumbnail error>")
    if _is_dataset(data):
        return f"Dataset ({data.nbytes / 1e6:.2f}MB)"
    if _is_dataarray(data) or isinstance(data, (np.ndarray, np.generic, complex, float, int, bool)):
        if not _is_dataarray(data):
            data = np.asarray(data)
        if data.ndim == 0:
            return np.asarray(data.values if _is_dataarray(data) else data)
        if data.ndim == 1:
            return _guard(trendline, data, "<trendline error>")
        if data.ndim == 2:
            return _guard(array_thumbnail, _thumbnail_input(data), "<thumbnail error>")
        described = full_data if full_data is not None and hasattr(full_data, "dtype") else data
        return f"{described.dtype}: {described.shape}"
    return None


THUMBNAIL_INPUT_SIDE = 1024  # px; larger images are subsampled before their thumbnail is drawn


def _thumbnail_input(image):
    """A large 2-D image, every k-th pixel on both axes (a view: aspect kept, nothing copied), so that
    drawing its thumbnail costs memory in proportion to the thumbnail rather than to the image."""
    step = -(-max(image.shape) // THUMBNAIL_INPUT_SIDE)
    if step <= 1:
        return image
    if _is_dataarray(image):
        return image.isel({dim: slice(None, None, step) for dim in image.dims})
    return image[::step, ::step]


def _guard(make, data, fallback):
    try:
        return make(data)
    except Exception:
        log.error("Failed to make a summary image/trendline", exc_info=True)
        return fallback


def max_diff(data) -> np.float64 | None:
    """|nanmax - nanmin| for numeric arrays with more than one element.

    Bool arrays get none: numpy does not count bool as a number, so the original never stores one
    for them (and the table must not auto-bold them)."""
    if _is_dataarray(data):
        data = data.values
    if not isinstance(data, np.ndarray) or data.size <= 1:
        return None
    if not np.issubdtype(data.dtype, np.number):
        return None
    with np.errstate(invalid="ignore"), quiet_nan_warnings():
        return np.abs(np.subtract(np.nanmax(data), np.nanmin(data)), dtype=np.float64)


@contextlib.contextmanager
def quiet_nan_warnings():
    """Silence numpy's RuntimeWarnings for all-NaN slices: NaN is a normal value in run data."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def summarise(record: dict, variable_units: str | None = None) -> VariableResult:
    """One worker record (``var_done`` payload) -> a VariableResult ready for h5format."""
    name = record["name"]
    if record.get("status") != "ok":
        return VariableResult(name=name, error=record.get("message") or "", error_cls=record.get("error_cls")
                              or "Exception")
    cell = record.get("cell") or {}
    data, objtype = decode(record.get("data"))
    preview, preview_objtype = decode(record.get("preview"))
    if isinstance(data, (int, float, bool, complex)) and not isinstance(data, np.generic):
        data = np.asarray(data)
    # What the summary is computed from: the data, but a Series' values rather than its Parquet bytes.
    basis, described = data, None
    if objtype in (OBJTYPE_SERIES, OBJTYPE_DATAFRAME):
        basis, described = record["data"].get("values"), record["data"].get("described")

    summary = None
    method = cell.get("summary")
    if cell.get("summary_value") is not None:
        summary = cell["summary_value"]
    elif data is not None and method:
        try:
            if objtype in (OBJTYPE_IMAGE, OBJTYPE_PLOTLY):  # as DAMNIT: reductions apply to arrays
                raise TypeError(f"cannot apply numpy.{method} to a figure")
            if basis is None:
                raise TypeError(f"cannot apply numpy.{method} to a {objtype}")
            summary = np.asarray(getattr(np, method)(basis))
        except Exception:
            log.error("Failed to produce summary data for %s", name, exc_info=True)
    if summary is None:
        if preview is not None:
            summary = default_summary(preview, preview_objtype, full_data=basis)
        elif basis is None:  # a DataFrame, or a Series of values numpy can't summarise
            summary = described
        else:
            summary = default_summary(basis, objtype)

    attrs = {}
    if method:
        attrs["summary_method"] = method
    if cell.get("bold") is not None:
        attrs["bold"] = np.bool_(cell["bold"])
    if cell.get("background") is not None:
        attrs["background"] = np.asarray(cell["background"], dtype=np.uint8)
    units = cell.get("units") or variable_units
    if units:
        attrs["units"] = units
    if objtype not in (OBJTYPE_IMAGE, OBJTYPE_PLOTLY) and (diff := max_diff(basis)) is not None:
        attrs["max_diff"] = diff
    if isinstance(summary, np.ndarray) and summary.ndim == 2 and summary.shape[0] == 2:
        attrs["summary_type"] = "trendline"

    return VariableResult(name=name, data=data, objtype=objtype, preview=preview,
                          preview_objtype=preview_objtype, summary=summary, summary_attrs=attrs)


def is_png(summary) -> bool:
    return (isinstance(summary, np.ndarray) and summary.dtype == np.uint8 and summary.ndim == 1
            and summary[:8].tobytes() == PNG_MAGIC)
