"""Turn one stored variable value (numpy, xarray, image, plotly, text) into a Panel/HoloViews view.

Pure functions with no database access, so the run inspector, the summary plots and the big screen share
one way of drawing a value and the choices (downsampling, colour limits, axes) are unit-testable.
Large values are reduced in numpy before they reach the browser: at most ``MAX_POINTS`` points per line
(min/max envelope, so spikes survive) and ``MAX_PIXELS`` pixels per image side (block means).
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401  (registers the Bokeh backend for .opts())
import numpy as np
import panel as pn

from app.display.formatting import format_number, format_value
from app.display.text import safe_text
from backend.processing.summaries import quiet_nan_warnings

hv.Store.set_current_backend("bokeh")

MAX_POINTS = 10_000
MAX_PIXELS = 1_000
PLOT_HEIGHT = 320
IMAGE_CMAP = "viridis"


# --------------------------------------------------------------------------------------------------
# Reductions
# --------------------------------------------------------------------------------------------------

def downsample_1d(x: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Keep the min and max of each bin (in order), so peaks stay visible when a trace is thinned."""
    n = len(y)
    if n <= max_points:
        return np.asarray(x), np.asarray(y)
    nbins = max(max_points // 2, 1)
    width = math.ceil(n / nbins)
    nbins = math.ceil(n / width)
    pad = nbins * width - n
    yf = np.asarray(y, dtype=float)
    lo_src = np.concatenate([np.where(np.isnan(yf), np.inf, yf), np.full(pad, np.inf)]).reshape(nbins, width)
    hi_src = np.concatenate([np.where(np.isnan(yf), -np.inf, yf), np.full(pad, -np.inf)]).reshape(nbins, width)
    base = np.arange(nbins) * width
    idx = np.stack([base + lo_src.argmin(axis=1), base + hi_src.argmax(axis=1)], axis=1)
    idx = np.unique(np.clip(idx.ravel(), 0, n - 1))
    return np.asarray(x)[idx], np.asarray(y)[idx]


def downsample_factor(shape: tuple[int, ...], max_pixels: int = MAX_PIXELS) -> int:
    """Integer block size that brings the largest of the first two dimensions to at most max_pixels."""
    return max(1, math.ceil(max(shape[0], shape[1]) / max_pixels))


def downsample_2d(image: np.ndarray, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, int]:
    """Block-mean an image (2-D, or 3-D with colour last) to at most max_pixels per side.

    Returns the reduced image and the block size used. NaNs are ignored inside a block; integer RGB(A)
    data keeps its dtype so it still displays as colour.
    """
    f = downsample_factor(image.shape, max_pixels)
    if f == 1:
        return image, 1
    ny, nx = image.shape[0] // f, image.shape[1] // f
    blocks = image[: ny * f, : nx * f].reshape(ny, f, nx, f, *image.shape[2:])
    if image.dtype.kind in "iub" or not np.isnan(blocks).any():
        reduced = blocks.mean(axis=(1, 3), dtype=np.float64)  # integers can't be NaN: skip nanmean's cost
    else:
        with quiet_nan_warnings():
            reduced = np.nanmean(blocks, axis=(1, 3), dtype=np.float64)
    if image.dtype.kind in "iub":
        reduced = reduced.round().astype(image.dtype)
    else:
        reduced = reduced.astype(np.float32)  # half the bytes on the wire; plenty for a colour map
    return reduced, f


def robust_clim(image: np.ndarray) -> tuple[float, float] | None:
    """Colour limits at the 1st and 99th percentile of the finite values, like the original's image view."""
    finite = np.asarray(image, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return None
    lo, hi = np.quantile(finite, [0.01, 0.99], method="nearest")
    if lo == hi:
        lo, hi = finite.min(), finite.max()
        if lo == hi:
            return float(lo) - 0.5, float(hi) + 0.5
    return float(lo), float(hi)


# --------------------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------------------

def _is_xarray(value: Any, kind: str) -> bool:
    return type(value).__module__.startswith("xarray") and type(value).__name__ == kind


def _is_plotly_figure(value: Any) -> bool:
    return type(value).__module__.startswith("plotly") and hasattr(value, "to_plotly_json")


def is_rgb_image(arr: np.ndarray) -> bool:
    """3-D arrays with 3 or 4 colour channels last are colour images (also matplotlib figures, stored as RGBA)."""
    return arr.ndim == 3 and arr.shape[-1] in (3, 4)


def describe_value(value: Any) -> str:
    """Short human text for a value's type and size (shown above each plot)."""
    if _is_xarray(value, "Dataset"):
        return f"Dataset: {', '.join(map(str, value.data_vars))} ({dict(value.sizes)})"
    if _is_xarray(value, "DataArray"):
        return f"DataArray {value.dtype}: {dict(value.sizes)}"
    if isinstance(value, np.ndarray):
        return f"{value.dtype}: {value.shape}"
    if _is_plotly_figure(value):
        return "Plotly figure"
    return type(value).__name__


# --------------------------------------------------------------------------------------------------
# Elements
# --------------------------------------------------------------------------------------------------

def _dim(name: str, units: str | None = None, label: str | None = None) -> hv.Dimension:
    return hv.Dimension(str(name), label=label or str(name), unit=units or None)


def line_element(x: np.ndarray, y: np.ndarray, *, xdim: hv.Dimension, ydim: hv.Dimension,
                 title: str = "") -> hv.Element:
    """A line with dots for short traces; thinned with an envelope for long ones."""
    x, y = downsample_1d(np.asarray(x), np.asarray(y))
    if np.iscomplexobj(y):
        y = np.abs(y)
        ydim = hv.Dimension(ydim.name, label=f"|{ydim.label}|", unit=ydim.unit)
    opts = dict(responsive=True, height=PLOT_HEIGHT, tools=["hover"], title=title, show_grid=True)
    if np.asarray(x).dtype.kind in "iu":
        opts["xformatter"] = "%d"  # train IDs (~1e9) as integers, not 1.0002e+9
    curve = hv.Curve((x, y), kdims=[xdim], vdims=[ydim]).opts(**opts)
    if len(y) <= 2000:
        return curve * hv.Scatter((x, y), kdims=[xdim], vdims=[ydim]).opts(size=4, tools=["hover"])
    return curve


def image_element(data: np.ndarray, *, xs: np.ndarray | None = None, ys: np.ndarray | None = None,
                  xdim: hv.Dimension | None = None, ydim: hv.Dimension | None = None,
                  zdim: hv.Dimension | None = None, title: str = "", flip_y: bool = True) -> hv.Element:
    """A 2-D image with a colour bar and 1-99 % colour limits, block-averaged to MAX_PIXELS per side.

    Plain arrays are shown like matplotlib's imshow (row 0 at the top); arrays with coordinates are
    placed on those coordinates (row 0 at the bottom, as xarray plots them).
    """
    data = np.asarray(data)
    if np.iscomplexobj(data):
        data = np.abs(data)
    if data.dtype == bool:
        data = data.astype(np.uint8)
    reduced, f = downsample_2d(data)
    xdim = xdim or _dim("x")
    ydim = ydim or _dim("y")
    zdim = zdim or _dim("value")
    if f > 1:
        title = f"{title} (shown at 1/{f} resolution)".strip()
    if xs is None:
        xs = np.arange(reduced.shape[1]) * f
    else:
        xs = np.asarray(xs)[: reduced.shape[1] * f : f]
    if ys is None:
        ys = np.arange(reduced.shape[0]) * f
    else:
        ys = np.asarray(ys)[: reduced.shape[0] * f : f]
    if flip_y:
        # Display row 0 on top: feed HoloViews the rows bottom-up and invert the axis.
        element = hv.Image((xs, ys, reduced), kdims=[xdim, ydim], vdims=[zdim])
        opts = dict(invert_yaxis=True)
    elif _regular(xs) and _regular(ys):
        element = hv.Image((xs, ys, reduced), kdims=[xdim, ydim], vdims=[zdim])
        opts = {}
    else:
        element = hv.QuadMesh((xs, ys, reduced), kdims=[xdim, ydim], vdims=[zdim])
        opts = {}
    clim = robust_clim(reduced)
    aspect = reduced.shape[1] / max(reduced.shape[0], 1)
    return element.opts(
        colorbar=True, cmap=IMAGE_CMAP, clim=clim or (np.nan, np.nan), tools=["hover"],
        responsive=True, height=PLOT_HEIGHT + 80 if aspect < 4 else PLOT_HEIGHT, title=title,
        **opts)


def _regular(coords: np.ndarray) -> bool:
    if len(coords) < 3 or not np.issubdtype(np.asarray(coords).dtype, np.number):
        return len(coords) < 3
    steps = np.diff(coords.astype(float))
    return bool(np.allclose(steps, steps[0], rtol=1e-3, atol=0))


def rgb_element(data: np.ndarray, *, title: str = "") -> hv.Element:
    """An RGB(A) image (e.g. a stored matplotlib figure), reduced to MAX_PIXELS per side."""
    reduced, f = downsample_2d(np.asarray(data))
    if np.issubdtype(reduced.dtype, np.floating):
        reduced = np.clip(reduced, 0, 1)
    h, w = reduced.shape[:2]
    width = min(w, 900) if w >= 300 else 300
    return hv.RGB(reduced, bounds=(0, 0, w, h)).opts(
        frame_width=width, frame_height=max(int(width * h / max(w, 1)), 50), xaxis=None, yaxis=None,
        title=title, toolbar="right")


# --------------------------------------------------------------------------------------------------
# Dispatch: value -> viewable
# --------------------------------------------------------------------------------------------------

def plot_value(value: Any, *, title: str = "", units: str | None = None,
               objtype: str | None = None) -> pn.viewable.Viewable:
    """The most useful view of one variable's value: a plot for arrays, text for scalars and strings.

    ``objtype`` is the stored ``_damnit_objtype`` hint ("image", "PlotlyFigure", ...) when known.
    """
    if value is None:
        return safe_text("No data", color="grey")
    if objtype == "PlotlyFigure" and isinstance(value, (str, bytes)):
        return plotly_pane(value)
    if _is_plotly_figure(value):
        return plotly_pane(value)
    if _is_xarray(value, "Dataset"):
        return dataset_view(value, title=title)
    if _is_xarray(value, "DataArray"):
        return pn.pane.HoloViews(dataarray_element(value, title=title, units=units),
                                 sizing_mode="stretch_width", linked_axes=False)
    if _is_pandas(value, "DataFrame"):
        return dataframe_view(value)
    if _is_pandas(value, "Series"):
        return series_view(value, title=title, units=units)
    if isinstance(value, (bytes, bytearray)) and bytes(value[:8]) == b"\x89PNG\r\n\x1a\n":
        return pn.pane.PNG(bytes(value), sizing_mode="scale_width", max_width=800)
    if isinstance(value, np.ndarray) and value.ndim > 0:
        if value.dtype.kind in "USO":
            return safe_text("\n".join(map(str, value.ravel()[:1000])))
        if objtype == "image" or (is_rgb_image(value) and value.dtype == np.uint8):
            return pn.pane.HoloViews(rgb_element(value, title=title), sizing_mode="stretch_width")
        return pn.pane.HoloViews(array_element(value, title=title, units=units),
                                 sizing_mode="stretch_width", linked_axes=False)
    return scalar_view(value, units=units)


def scalar_view(value: Any, *, units: str | None = None, font_size: str = "1.6em") -> pn.viewable.Viewable:
    """A number or text as plain (escaped) text."""
    if isinstance(value, np.ndarray):
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode("utf-8", "surrogateescape")
    return safe_text(format_value(value, units), **{"font-size": font_size})


def array_element(arr: np.ndarray, *, title: str = "", units: str | None = None) -> hv.Element:
    """Plain numpy arrays: 1-D against index, 2-D as image, RGB(A) as colour, higher dims as a slice."""
    arr = np.squeeze(arr) if arr.ndim > 2 and 1 in arr.shape else arr
    if arr.ndim == 1:
        return line_element(np.arange(len(arr)), arr, xdim=_dim("index"),
                            ydim=_dim("value", units, title or "value"), title=title)
    if arr.ndim == 2:
        return image_element(arr, zdim=_dim("value", units), title=title)
    if is_rgb_image(arr):
        return rgb_element(arr, title=title)
    # >2-D: a HoloMap over the first axis (frames computed on demand, each one an image).
    n = arr.shape[0]
    frames = {i: array_element(arr[i], title=title) for i in _frame_indices(n)}
    return hv.HoloMap(frames, kdims=[hv.Dimension("index 0", label=f"axis 0 (of {n})")])


def _frame_indices(n: int, limit: int = 50) -> list[int]:
    """Up to `limit` evenly spaced slice indices so huge stacks don't ship every frame."""
    if n <= limit:
        return list(range(n))
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, limit)})


def dataarray_element(da: Any, *, title: str = "", units: str | None = None) -> hv.Element:
    """DataArrays on their own dims, coordinates and units (1-D line, 2-D image, else slices)."""
    da = da.squeeze() if da.ndim > 2 else da
    name = str(da.name) if da.name is not None else (title or "value")
    vunits = da.attrs.get("units") or units
    title = title or name

    def coord_values(dim: str) -> tuple[np.ndarray, hv.Dimension]:
        if dim in da.coords:
            c = da.coords[dim]
            return np.asarray(c.values), _dim(dim, c.attrs.get("units"))
        return np.arange(da.sizes[dim]), _dim(dim)

    if da.ndim == 0:
        return hv.Text(0, 0, format_number(da.values.item()))
    if da.ndim == 1:
        x, xdim = coord_values(da.dims[0])
        return line_element(x, np.asarray(da.values), xdim=xdim, ydim=_dim(name, vunits), title=title)
    if da.ndim == 2:
        ydim_name, xdim_name = da.dims
        xs, xdim = coord_values(xdim_name)
        ys, ydim = coord_values(ydim_name)
        return image_element(np.asarray(da.values), xs=xs, ys=ys, xdim=xdim, ydim=ydim,
                             zdim=_dim(name, vunits), title=title, flip_y=False)
    if da.ndim == 3 and da.shape[-1] in (3, 4) and da.dtype == np.uint8:
        return rgb_element(np.asarray(da.values), title=title)
    first = da.dims[0]
    idx = _frame_indices(da.sizes[first])
    coords = da.coords[first].values if first in da.coords else np.arange(da.sizes[first])
    frames = {coords[i].item() if hasattr(coords[i], "item") else coords[i]:
              dataarray_element(da.isel({first: i}), title=title, units=units) for i in idx}
    return hv.HoloMap(frames, kdims=[hv.Dimension(str(first))])


def dataset_view(ds: Any, *, title: str = "") -> pn.viewable.Viewable:
    """A Dataset: pick one of its data variables to plot; dims and attributes listed as text."""
    names = [str(n) for n in ds.data_vars]
    if not names:
        return safe_text(f"Empty Dataset {dict(ds.sizes)}")
    choice = pn.widgets.Select(label="Variable", options=names, value=names[0], width=250)

    def show(name: str) -> pn.viewable.Viewable:
        return pn.pane.HoloViews(dataarray_element(ds[name], title=f"{title}: {name}" if title else name),
                                 sizing_mode="stretch_width", linked_axes=False)

    info = safe_text(describe_value(ds), color="grey")
    return pn.Column(pn.Row(choice, info), pn.bind(show, choice), sizing_mode="stretch_width")


def _is_pandas(value: Any, kind: str) -> bool:
    return type(value).__name__ == kind and type(value).__module__.startswith("pandas")


def dataframe_view(df: Any) -> pn.viewable.Viewable:
    """A DataFrame as a read-only table, paged on the server (a frame may have millions of rows)."""
    info = safe_text(f"DataFrame: {len(df)} rows x {len(df.columns)} columns", color="grey")
    table = pn.widgets.Tabulator(df, disabled=True, pagination="remote", page_size=20, show_index=True,
                                 sizing_mode="stretch_width", max_height=600)
    return pn.Column(info, table, sizing_mode="stretch_width")


def series_view(series: Any, *, title: str = "", units: str | None = None) -> pn.viewable.Viewable:
    """A Series: numbers plotted against its index (when numeric), anything else listed."""
    values = series.to_numpy()
    if values.dtype.kind not in "fiucb":
        return dataframe_view(series.to_frame())
    index = series.index.to_numpy()
    x = index if index.dtype.kind in "fiu" else np.arange(len(values))
    xname = str(series.index.name) if series.index.name is not None and x is index else "index"
    yname = str(series.name) if series.name is not None else "value"
    return pn.pane.HoloViews(line_element(x, values, xdim=_dim(xname), ydim=_dim(yname, units, title or yname),
                                          title=title), sizing_mode="stretch_width", linked_axes=False)


def plotly_pane(fig: Any) -> pn.viewable.Viewable:
    """A plotly figure (object or its JSON) as an interactive plotly pane."""
    if isinstance(fig, (bytes, bytearray)):
        fig = bytes(fig).decode()
    if isinstance(fig, str):
        fig = json.loads(fig)
    return pn.pane.Plotly(fig, sizing_mode="stretch_width", height=PLOT_HEIGHT + 80)


def warm_up() -> None:
    """Draw an image and a line once, off screen: the first plot a process makes pays HoloViews' one-off
    set-up (seconds), which should not land on a user's first click."""
    try:
        for value in (np.linspace(0, 1, 16).reshape(4, 4), np.arange(8.0)):
            plot_value(value, title="warm-up").get_root()
    except Exception:  # only an optimisation
        logging.getLogger(__name__).debug("Plot warm-up failed", exc_info=True)
