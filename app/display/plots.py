"""Turn one stored variable value (numpy, xarray, image, plotly, text) into a Panel/HoloViews view.

Pure functions with no database access, so the run inspector, the summary plots and the big screen share
one way of drawing a value and the choices (downsampling, colour limits, axes) are unit-testable.
Large values are reduced in numpy before they reach the browser: at most ``MAX_POINTS`` points per line
(min/max envelope, so spikes survive) and ``MAX_PIXELS`` pixels per image side (block means).

Images are true to their data: 2-D values are drawn with square pixels (or one coordinate unit as long
on both axes) at any size of the plot, and RGB(A) values such as matplotlib figures are shown as
stored, pixel for pixel. ``PlotStyle`` says whether a plot sits in a page or fills a wall display.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import numbers
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import panel as pn
import param
from bokeh.models import DataRange1d
from bokeh.palettes import viridis

from app.display.formatting import format_value
from app.display.hv import hv
from app.display.text import escape, plot_name, plot_text, plot_title, safe_table, safe_text
from app.display.theme import TABLE_CSS
from backend.processing.summaries import quiet_nan_warnings

MAX_POINTS = 10_000
MAX_PIXELS = 1_000
PLOT_HEIGHT = 320
LONG_LABEL_TICKS = 3  # ticks wanted on an axis of train IDs (the run panel is ~400 px wide)
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
# Style: a card in a page, or a wall display
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PlotStyle:
    """How a value is drawn: in a page's card (fixed height, the toolkit's type sizes, view options) or
    on a wall display (``height=None``: fill the box the page gives it; type scaled to the screen; no
    controls)."""

    height: int | None = PLOT_HEIGHT
    font_px: int | None = None  # tick labels in px; axis labels and titles scaled from it
    controls: bool = True  # image/lines and aspect toggles for 2-D values; Bokeh's toolbar
    titles: bool = True  # a title in the plot (the big screen shows it above, larger)

    def size(self, height: int | None = None) -> dict:
        """HoloViews options for the plot's size (``height`` overrides the style's fixed height) and type."""
        opts: dict[str, Any] = {"responsive": True}
        if self.height is not None:
            opts["height"] = height or self.height
        if not self.controls:
            opts["toolbar"] = None
        if self.font_px:
            t = self.font_px
            opts["fontsize"] = {"ticks": f"{t}px", "labels": f"{round(t * 1.15)}px",
                                "title": f"{round(t * 1.3)}px", "legend": f"{t}px"}
        return opts

    def title(self, title: str) -> str:
        """``title`` as a HoloViews title option (a format string: see ``plot_title``)."""
        return plot_title(title) if self.titles else ""

    def pane(self, **extra: Any) -> dict:
        """Panel sizing for a pane holding one plot: page width at a fixed height, or the whole box."""
        return {"sizing_mode": "stretch_width" if self.height is not None else "stretch_both", **extra}


PAGE_STYLE = PlotStyle()


# --------------------------------------------------------------------------------------------------
# Elements
# --------------------------------------------------------------------------------------------------

def _dim(name: str, units: str | None = None, label: str | None = None) -> hv.Dimension:
    """A dimension named from data: its label and unit drawn as written (``plot_text``)."""
    return hv.Dimension(plot_name(name), label=plot_text(label or name), unit=plot_text(units) or None)


def line_element(x: np.ndarray, y: np.ndarray, *, xdim: hv.Dimension, ydim: hv.Dimension,
                 title: str = "", style: PlotStyle = PAGE_STYLE) -> hv.Element:
    """A line with dots for short traces; thinned with an envelope for long ones."""
    x, y = downsample_1d(np.asarray(x), np.asarray(y))
    if np.iscomplexobj(y):
        y = np.abs(y)
        ydim = hv.Dimension(ydim.name, label=f"|{ydim.label}|", unit=ydim.unit)
    opts = dict(tools=["hover"], title=style.title(title), show_grid=True, **style.size())
    if np.asarray(x).dtype.kind in "iu":
        opts["xformatter"] = "%d"  # train IDs (~1e9) as integers, not 1.0002e+9
        if len(x) and np.abs(x).max() >= 1e6:  # ten-digit labels: fewer of them, or they run into each other
            opts["xticks"] = LONG_LABEL_TICKS
    if style.font_px:
        opts["line_width"] = max(1.5, style.font_px / 9)  # seen from across a room
    curve = hv.Curve((x, y), kdims=[xdim], vdims=[ydim]).opts(**opts)
    if len(y) <= 2000:
        dot = 4 if style.font_px is None else max(4, style.font_px // 3)
        return curve * hv.Scatter((x, y), kdims=[xdim], vdims=[ydim]).opts(size=dot, tools=["hover"])
    return curve


@dataclass
class Image2D:
    """A 2-D value ready to draw: the (reduced) data, its pixel centres and dimensions.

    ``origin_top``: row 0 at the top, as cameras and matplotlib's imshow show arrays; values with
    coordinates are drawn as xarray plots them (row 0 at the bottom). ``data_aspect``: the coordinates
    of both axes are in the same units, so a unit on one axis is as long as on the other; otherwise
    pixels are square.
    """

    data: np.ndarray
    xs: np.ndarray
    ys: np.ndarray
    xdim: hv.Dimension
    ydim: hv.Dimension
    zdim: hv.Dimension
    title: str = ""
    origin_top: bool = True
    data_aspect: bool = False

    @classmethod
    def from_array(cls, data: np.ndarray, *, xs: np.ndarray | None = None, ys: np.ndarray | None = None,
                   xdim: hv.Dimension | None = None, ydim: hv.Dimension | None = None,
                   zdim: hv.Dimension | None = None, title: str = "", origin_top: bool = True,
                   data_aspect: bool = False) -> Image2D:
        """Complex values as magnitudes, booleans as 0/1, reduced to MAX_PIXELS per side by block means."""
        data = np.asarray(data)
        if np.iscomplexobj(data):
            data = np.abs(data)
        if data.dtype == bool:
            data = data.astype(np.uint8)
        reduced, f = downsample_2d(data)
        if f > 1:
            title = f"{title} (shown at 1/{f} resolution)".strip()
        xs = np.arange(data.shape[1]) if xs is None else np.asarray(xs)
        ys = np.arange(data.shape[0]) if ys is None else np.asarray(ys)
        xs, ys = xs[: reduced.shape[1] * f: f], ys[: reduced.shape[0] * f: f]
        return cls(reduced, xs, ys, xdim or _dim("x"), ydim or _dim("y"), zdim or _dim("value"), title,
                   origin_top, data_aspect and _numeric(xs) and _numeric(ys))

    @property
    def shown_aspect(self) -> float:
        """Width / height of the image as it will be drawn."""
        if self.data_aspect:
            return _extent(self.xs) / max(_extent(self.ys), 1e-300)
        return self.data.shape[1] / max(self.data.shape[0], 1)

    @property
    def elongated(self) -> bool:
        """More than 4 times wider than high (or the reverse): DAMNIT stretches such images to fill the
        plot by default ("dynamic aspect ratio"), or they would be a thin strip."""
        return not 0.25 <= self.shown_aspect <= 4


def _numeric(coords: np.ndarray) -> bool:
    return np.issubdtype(np.asarray(coords).dtype, np.number) and len(coords) > 0


def _extent(coords: np.ndarray) -> float:
    """Width covered by pixels centred on ``coords`` (a pixel counts as one step)."""
    c = np.asarray(coords, dtype=float)
    if len(c) < 2:
        return 1.0
    return abs(c[-1] - c[0]) * len(c) / (len(c) - 1)


def _regular(coords: np.ndarray) -> bool:
    if len(coords) < 3 or not np.issubdtype(np.asarray(coords).dtype, np.number):
        return len(coords) < 3
    steps = np.diff(coords.astype(float))
    return bool(np.allclose(steps, steps[0], rtol=1e-3, atol=0))


def _image_ranges(flip_y: bool, aspect_scale: float | None) -> Callable[[Any, Any], None]:
    """A HoloViews hook giving an image plot ranges that fit the image exactly, row 0 at the top when
    ``flip_y``, and with ``aspect_scale`` (width of one x unit / height of one y unit on screen) kept at
    any size of the plot: Bokeh's ``match_aspect`` on data ranges widens the x or the y range to the
    plot's shape instead of stretching the image. ``None`` stretches the image over the whole plot."""
    def hook(plot: Any, element: Any) -> None:
        fig = plot.state
        fig.x_range = DataRange1d(range_padding=0)
        fig.y_range = DataRange1d(range_padding=0, flipped=flip_y)
        fig.match_aspect = aspect_scale is not None
        fig.aspect_scale = aspect_scale or 1.0
    return hook


def image_element(img: Image2D, *, stretch: bool = False, style: PlotStyle = PAGE_STYLE) -> hv.Element:
    """A 2-D image with a colour bar and 1-99 % colour limits, drawn with square pixels (or, for
    coordinates in the same units on both axes, one unit as long on both), unless ``stretch``."""
    xs, ys = img.xs, img.ys
    if _regular(xs) and _regular(ys):
        element = hv.Image((xs, ys, img.data), kdims=[img.xdim, img.ydim], vdims=[img.zdim])
    else:
        element = hv.QuadMesh((xs, ys, img.data), kdims=[img.xdim, img.ydim], vdims=[img.zdim])
    if stretch:
        aspect_scale = None
    elif img.data_aspect:
        aspect_scale = 1.0
    else:  # one pixel as wide as high: (y step) / (x step) in data units
        xstep = _extent(xs) / len(xs) if _numeric(xs) else 1.0
        ystep = _extent(ys) / len(ys) if _numeric(ys) else 1.0
        aspect_scale = ystep / xstep if xstep > 0 and ystep > 0 else 1.0
    clim = robust_clim(img.data)
    opts: dict[str, Any] = dict(colorbar=True, cmap=IMAGE_CMAP, clim=clim or (np.nan, np.nan), tools=["hover"],
                                title=style.title(img.title), hooks=[_image_ranges(img.origin_top, aspect_scale)],
                                **style.size(_image_height(img, stretch, style)))
    for axis, coords in (("xformatter", xs), ("yformatter", ys)):
        if np.asarray(coords).dtype.kind in "iu" and np.abs(coords).max(initial=0) > 1e5:
            opts[axis] = "%d"  # train IDs
    return element.opts(**opts)


def _image_height(img: Image2D, stretch: bool, style: PlotStyle) -> int | None:
    """Height of an image plot in a page: tall enough that a square image is not a stamp, lower for
    wide images (they then fill the width)."""
    if style.height is None:
        return None
    if stretch:
        return style.height
    return int(np.clip(700 / max(img.shown_aspect, 1e-9), style.height, style.height + 200))


def lines_element(img: Image2D, *, style: PlotStyle = PAGE_STYLE, max_lines: int = 100) -> hv.Element:
    """DAMNIT's "plot as lines" view of a 2-D value: each row a line against the x axis, coloured in
    order (a legend for up to 10 rows); at most ``max_lines`` evenly spaced rows."""
    n = img.data.shape[0]
    rows = np.unique(np.linspace(0, n - 1, min(n, max_lines)).round().astype(int))
    colours = viridis(max(len(rows), 3))[: len(rows)] if len(rows) > 1 else ["#1f77b4"]
    title = img.title + (f" (every {n / len(rows):.3g}th of {n} rows)" if len(rows) < n else "")
    curves = {}
    for colour, r in zip(colours, rows):
        label = img.ys[r].item() if hasattr(img.ys[r], "item") else img.ys[r]
        curves[label] = hv.Curve((img.xs, img.data[r]), kdims=[img.xdim], vdims=[img.zdim]).opts(
            color=colour, tools=["hover"])
    return hv.NdOverlay(curves, kdims=[img.ydim]).opts(
        show_legend=len(rows) <= 10, legend_position="right", title=style.title(title), show_grid=True,
        **style.size())


def image_view(img: Image2D, *, style: PlotStyle = PAGE_STYLE) -> pn.viewable.Viewable:
    """A 2-D value as an image with square pixels, and in a page the choice to see its rows as lines
    or the image stretched to the plot (on by default for images more than 4 times longer than high)."""
    def draw(as_lines: bool, stretch: bool) -> pn.viewable.Viewable:
        if as_lines:
            return pn.pane.HoloViews(lines_element(img, style=style), linked_axes=False,
                                     **style.pane(css_classes=["damnit-image-lines"]))
        extra = {}
        height = _image_height(img, stretch, style)
        if height is not None and not stretch:  # no wider than the image needs (axes, colour bar: ~260 px)
            extra["max_width"] = int((height - 75) * img.shown_aspect + 260)
        return pn.pane.HoloViews(image_element(img, stretch=stretch, style=style), linked_axes=False,
                                 **style.pane(css_classes=["damnit-image"], **extra))

    if not style.controls:
        return draw(False, img.elongated)
    mode = pn.widgets.RadioButtonGroup(options=["Image", "Lines"], value="Image",
                                       css_classes=["damnit-image-mode"],
                                       description="Lines: each row of the 2-D value as a line")
    stretch = pn.widgets.Checkbox(label="Stretch to fit", value=img.elongated, css_classes=["damnit-stretch"])
    return pn.Column(pn.Row(mode, stretch), pn.bind(draw, pn.bind(lambda m: m == "Lines", mode), stretch),
                     **style.pane())


def png_bytes(rgb: np.ndarray) -> bytes:
    """An RGB(A) image (uint8, or floats in 0..1) as PNG, pixel for pixel."""
    from PIL import Image  # heavy, and only needed when an image is shown

    arr = np.asarray(rgb)
    if arr.dtype != np.uint8:
        arr = (np.clip(np.nan_to_num(arr.astype(float)), 0, 1) * 255).round().astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr), mode="RGBA" if arr.shape[-1] == 4 else "RGB").save(out, "PNG")
    return out.getvalue()


class StoredImage(pn.custom.JSComponent):
    """An image exactly as stored (a matplotlib figure, any RGB(A) array): a PNG shown whole, upright
    and at its own aspect ratio. In a page it is drawn at its own size, or smaller when the page is
    narrower; with ``fill`` it is as large as its box allows, enlarged by a whole factor only (each
    stored pixel becomes an exact block of screen pixels: no blur from resampling)."""

    src = param.String(default="", doc="data: URL of the PNG")
    natural_width = param.Integer(default=1)
    natural_height = param.Integer(default=1)
    fill = param.Boolean(default=False)
    alt = param.String(default="")

    _esm = """
    export function render({ model, el }) {
      const img = document.createElement('img')
      img.className = 'damnit-stored-image'
      img.style.display = 'block'
      img.style.margin = '0 auto'
      el.appendChild(img)
      function size() {
        const w = model.natural_width, h = model.natural_height
        const boxW = el.clientWidth || w
        const boxH = model.fill ? (el.clientHeight || h) : Infinity
        let s = Math.min(boxW / w, boxH / h)
        if (!(s > 0) || !isFinite(s)) s = 1
        if (s >= 1) s = model.fill ? Math.floor(s) : 1
        img.style.width = Math.max(1, Math.floor(w * s)) + 'px'
        img.style.height = Math.max(1, Math.floor(h * s)) + 'px'
        img.style.imageRendering = s > 1 ? 'pixelated' : 'auto'
      }
      function load() { img.src = model.src; img.alt = model.alt; size() }
      if (model.fill) { el.style.height = '100%'; el.style.display = 'flex'; el.style.alignItems = 'center' }
      const observer = new ResizeObserver(size)
      observer.observe(el)
      model.on(['src', 'alt', 'natural_width', 'natural_height'], load)
      model.on('remove', () => observer.disconnect())
      load()
    }
    """


def rgb_view(data: np.ndarray, *, title: str = "", style: PlotStyle = PAGE_STYLE) -> pn.viewable.Viewable:
    """An RGB(A) image (e.g. a stored matplotlib figure) as it was stored: see ``StoredImage``. Images
    larger than MAX_PIXELS per side are reduced by block means first."""
    reduced, _ = downsample_2d(np.asarray(data))
    h, w = reduced.shape[:2]
    src = "data:image/png;base64," + base64.b64encode(png_bytes(reduced)).decode()
    image = StoredImage(src=src, natural_width=w, natural_height=h, fill=style.height is None, alt=title,
                        css_classes=["damnit-rgb"], **style.pane())
    if style.height is None or not style.titles:
        return image
    return pn.Column(safe_text(title, **{"font-weight": "bold"}), image, sizing_mode="stretch_width")


# --------------------------------------------------------------------------------------------------
# Dispatch: value -> viewable
# --------------------------------------------------------------------------------------------------

def plot_value(value: Any, *, title: str = "", units: str | None = None, objtype: str | None = None,
               style: PlotStyle = PAGE_STYLE) -> pn.viewable.Viewable:
    """The most useful view of one variable's value: a plot for arrays, text for scalars and strings.

    ``objtype`` is the stored ``_damnit_objtype`` hint ("image", "PlotlyFigure", ...) when known.
    """
    if value is None:
        return safe_text("No data", color="grey")
    if objtype == "PlotlyFigure" and isinstance(value, (str, bytes)):
        return plotly_pane(value, style=style)
    if _is_plotly_figure(value):
        return plotly_pane(value, style=style)
    if _is_xarray(value, "Dataset"):
        return dataset_view(value, title=title, style=style)
    if _is_xarray(value, "DataArray"):
        return dataarray_view(value, title=title, units=units, style=style)
    if _is_pandas(value, "DataFrame"):
        return dataframe_view(value)
    if _is_pandas(value, "Series"):
        return series_view(value, title=title, units=units, style=style)
    if isinstance(value, (bytes, bytearray)) and bytes(value[:8]) == b"\x89PNG\r\n\x1a\n":
        return png_view(bytes(value), title=title, style=style)
    if isinstance(value, np.ndarray) and value.ndim > 0:
        if value.dtype.kind in "USO":
            return safe_text("\n".join(map(str, value.ravel()[:1000])))
        return array_view(value, title=title, units=units, objtype=objtype, style=style)
    return scalar_view(value, units=units)


def scalar_view(value: Any, *, units: str | None = None, font_size: str = "1.6em") -> pn.viewable.Viewable:
    """A number or text as plain (escaped) text, formatted as the run table does."""
    if isinstance(value, np.ndarray):
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode("utf-8", "surrogateescape")
    return safe_text(format_value(value, units), css_classes=["damnit-scalar"], **{"font-size": font_size})


def png_view(data: bytes, *, title: str = "", style: PlotStyle = PAGE_STYLE) -> pn.viewable.Viewable:
    """A stored PNG (e.g. a 2-D preview), decoded and shown as stored."""
    from PIL import Image  # heavy, and only needed when an image is shown

    with Image.open(io.BytesIO(data)) as im:
        rgba = np.asarray(im.convert("RGBA"))
    return rgb_view(rgba, title=title, style=style)


def array_view(arr: np.ndarray, *, title: str = "", units: str | None = None, objtype: str | None = None,
               style: PlotStyle = PAGE_STYLE) -> pn.viewable.Viewable:
    """Plain numpy arrays: 1-D against index, 2-D as an image, RGB(A) as stored, higher dims as slices."""
    squeezed = np.squeeze(arr) if arr.ndim > 2 and 1 in arr.shape else arr
    if objtype == "image" or is_rgb_image(squeezed) and (squeezed.dtype == np.uint8 or objtype == "image"):
        return rgb_view(squeezed, title=title, style=style)
    if squeezed.ndim == 2:
        return image_view(Image2D.from_array(squeezed, zdim=_dim("value", units), title=title), style=style)
    return element_view(array_element(squeezed, title=title, units=units, style=style), style=style)


def array_element(arr: np.ndarray, *, title: str = "", units: str | None = None,
                  style: PlotStyle = PAGE_STYLE) -> hv.Element:
    """Plain numpy arrays as one HoloViews element: 1-D against index, 2-D as image, RGB(A) as colour,
    higher dims as a slider over the first axis."""
    arr = np.squeeze(arr) if arr.ndim > 2 and 1 in arr.shape else arr
    if arr.ndim == 1:
        return line_element(np.arange(len(arr)), arr, xdim=_dim("index"),
                            ydim=_dim("value", units, title or "value"), title=title, style=style)
    if arr.ndim == 2:
        return image_element(Image2D.from_array(arr, zdim=_dim("value", units), title=title), style=style)
    if is_rgb_image(arr):
        reduced, _ = downsample_2d(arr)
        h, w = reduced.shape[:2]
        return hv.RGB(reduced, bounds=(0, 0, w, h)).opts(
            xaxis=None, yaxis=None, title=style.title(title), data_aspect=1, **style.size())
    # >2-D: a HoloMap of images over the first axis; more leading axes are taken as one (frames in C
    # order), since a map of maps makes HoloViews recurse without end.
    label = f"axis 0 (of {arr.shape[0]})"
    frame_dims = 3 if arr.ndim > 3 and is_rgb_image(arr.reshape(-1, *arr.shape[-3:])[0]) else 2
    if arr.ndim > frame_dims + 1:
        lead = arr.shape[:-frame_dims]
        label = f"frame (axes 0-{len(lead) - 1} of shape {lead}, in order; {int(np.prod(lead))})"
        arr = arr.reshape(-1, *arr.shape[-frame_dims:])
    frames = {i: array_element(arr[i], title=title, units=units, style=style) for i in _frame_indices(arr.shape[0])}
    return hv.HoloMap(frames, kdims=[hv.Dimension("index 0", label=label)])


def _frame_indices(n: int, limit: int = 50) -> list[int]:
    """Up to `limit` evenly spaced slice indices so huge stacks don't ship every frame."""
    if n <= limit:
        return list(range(n))
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, limit)})


def _dataarray_image(da: Any, *, title: str, units: str | None) -> Image2D:
    """A 2-D DataArray on its coordinates: one unit as long on both axes when both axes have
    coordinates in the same units, else square pixels."""
    name = _value_label(da, title)
    vunits = da.attrs.get("units") or units
    ydim_name, xdim_name = da.dims
    (xs, xdim, xu), (ys, ydim, yu) = _coords(da, xdim_name), _coords(da, ydim_name)
    both = xdim_name in da.coords and ydim_name in da.coords
    return Image2D.from_array(np.asarray(da.values), xs=xs, ys=ys, xdim=xdim, ydim=ydim,
                              zdim=_dim(name, vunits), title=title or name, origin_top=False,
                              data_aspect=both and xu == yu)


def _coords(da: Any, dim: str) -> tuple[np.ndarray, hv.Dimension, str | None]:
    if dim in da.coords:
        c = da.coords[dim]
        units = c.attrs.get("units")
        return np.asarray(c.values), _dim(dim, units), units
    return np.arange(da.sizes[dim]), _dim(dim), None


def _value_label(da: Any, title: str) -> str:
    """The value axis of a DataArray: the variable's title (extra-data names arrays after their source
    and key, e.g. ``SA1_XTD2_XGM/DOOCS/MAIN.pulseEnergy.photonFlux``: too long for an axis)."""
    return title or (str(da.name) if da.name is not None else "value")


def dataarray_view(da: Any, *, title: str = "", units: str | None = None,
                   style: PlotStyle = PAGE_STYLE) -> pn.viewable.Viewable:
    """A DataArray: 0-d as its value, 2-D as an image (with the lines option), RGB as stored, else one
    element (lines, or slices of higher dims)."""
    squeezed = da.squeeze() if da.ndim > 2 else da
    if squeezed.ndim == 0:
        return scalar_view(squeezed.values, units=da.attrs.get("units") or units)
    if squeezed.ndim == 2:
        return image_view(_dataarray_image(squeezed, title=title, units=units), style=style)
    if squeezed.ndim == 3 and squeezed.shape[-1] in (3, 4) and squeezed.dtype == np.uint8:
        return rgb_view(np.asarray(squeezed.values), title=title or _value_label(da, title), style=style)
    return element_view(dataarray_element(da, title=title, units=units, style=style), style=style)


def element_view(element: hv.core.Dimensioned, *, style: PlotStyle = PAGE_STYLE) -> pn.viewable.Viewable:
    """A HoloViews element, or frames (a HoloMap) with the widget that picks one: in a page the pane's
    layout, since a pane put into a Column alone loses its widgets (the big screen shows the first frame).
    Panel's slider over numeric frame keys puts its label into HTML: there it is escaped (a list of
    frames shows it as text)."""
    widgets = {}
    if isinstance(element, hv.HoloMap):
        for dim in element.kdims:
            keys = set(element.dimension_values(dim, expanded=False))
            if len(keys) > 1 and all(isinstance(k, numbers.Number) for k in keys):
                widgets[dim.name] = {"label": escape(dim.pprint_label)}
    pane = pn.pane.HoloViews(element, linked_axes=False, widgets=widgets, **style.pane())
    return pane.layout if style.controls and isinstance(element, hv.HoloMap) else pane


def dataarray_element(da: Any, *, title: str = "", units: str | None = None,
                      style: PlotStyle = PAGE_STYLE) -> hv.Element:
    """DataArrays on their own dims, coordinates and units (1-D line, 2-D image, else slices)."""
    da = da.squeeze() if da.ndim > 2 else da
    name = _value_label(da, title)
    vunits = da.attrs.get("units") or units
    title = title or name

    if da.ndim == 0:
        return hv.Text(0, 0, format_value(da.values.item(), vunits))
    if da.ndim == 1:
        x, xdim, _ = _coords(da, da.dims[0])
        return line_element(x, np.asarray(da.values), xdim=xdim, ydim=_dim(name, vunits), title=title,
                            style=style)
    if da.ndim == 2:
        return image_element(_dataarray_image(da, title=title, units=units), style=style)
    if da.ndim == 3 and da.shape[-1] in (3, 4) and da.dtype == np.uint8:
        return array_element(np.asarray(da.values), title=title, style=style)
    first = da.dims[0]
    idx = _frame_indices(da.sizes[first])
    coords = da.coords[first].values if first in da.coords else np.arange(da.sizes[first])
    frames = {coords[i].item() if hasattr(coords[i], "item") else coords[i]:
              dataarray_element(da.isel({first: i}), title=title, units=units, style=style) for i in idx}
    return hv.HoloMap(frames, kdims=[_dim(first)])


def dataset_view(ds: Any, *, title: str = "", style: PlotStyle = PAGE_STYLE) -> pn.viewable.Viewable:
    """A Dataset: pick one of its data variables to plot (the first one without controls); dims and
    attributes listed as text."""
    names = [str(n) for n in ds.data_vars]
    if not names:
        return safe_text(f"Empty Dataset {dict(ds.sizes)}")

    def show(name: str) -> pn.viewable.Viewable:
        return dataarray_view(ds[name], title=f"{title}: {name}" if title else name, style=style)

    if not style.controls:
        return show(names[0])
    choice = pn.widgets.Select(label="Variable", options=names, value=names[0], width=250)
    info = safe_text(describe_value(ds), color="grey")
    return pn.Column(pn.Row(choice, info), pn.bind(show, choice), sizing_mode="stretch_width")


def _is_pandas(value: Any, kind: str) -> bool:
    return type(value).__name__ == kind and type(value).__module__.startswith("pandas")


def dataframe_view(df: Any) -> pn.viewable.Viewable:
    """A DataFrame as a read-only table, paged on the server (a frame may have millions of rows)."""
    info = safe_text(f"DataFrame: {len(df)} rows x {len(df.columns)} columns", color="grey")
    shown, titles = safe_table(df)  # column names are data: Tabulator renders titles as HTML
    table = pn.widgets.Tabulator(shown, titles=titles, disabled=True, pagination="remote", page_size=20,
                                 show_index=True, sizing_mode="stretch_width", max_height=600,
                                 stylesheets=[TABLE_CSS])
    return pn.Column(info, table, sizing_mode="stretch_width")


def series_view(series: Any, *, title: str = "", units: str | None = None,
                style: PlotStyle = PAGE_STYLE) -> pn.viewable.Viewable:
    """A Series: numbers plotted against its index (when numeric), anything else listed."""
    values = series.to_numpy()
    if values.dtype.kind not in "fiucb":
        return dataframe_view(series.to_frame())
    index = series.index.to_numpy()
    x = index if index.dtype.kind in "fiu" else np.arange(len(values))
    xname = str(series.index.name) if series.index.name is not None and x is index else "index"
    yname = str(series.name) if series.name is not None else "value"
    return pn.pane.HoloViews(line_element(x, values, xdim=_dim(xname), ydim=_dim(yname, units, title or yname),
                                          title=title, style=style), linked_axes=False, **style.pane())


def plotly_pane(fig: Any, *, style: PlotStyle = PAGE_STYLE) -> pn.viewable.Viewable:
    """A plotly figure (object or its JSON) as an interactive plotly pane."""
    if isinstance(fig, (bytes, bytearray)):
        fig = bytes(fig).decode()
    if isinstance(fig, str):
        fig = json.loads(fig)
    if style.height is None:
        return pn.pane.Plotly(fig, sizing_mode="stretch_both")
    return pn.pane.Plotly(fig, sizing_mode="stretch_width", height=style.height + 80)


def warm_up() -> None:
    """Draw an image and a line once, off screen: the first plot a process makes pays HoloViews' one-off
    set-up (seconds), which should not land on a user's first click."""
    try:
        for value in (np.linspace(0, 1, 16).reshape(4, 4), np.arange(8.0)):
            plot_value(value, title="warm-up").get_root()
    except Exception:  # only an optimisation
        logging.getLogger(__name__).debug("Plot warm-up failed", exc_info=True)


_WARM_UP_NOW = threading.Event()


def warm_up_now() -> None:
    """A page is on screen and idle: the warm-up may take the CPU now (see ``warm_up_in_background``)."""
    _WARM_UP_NOW.set()


def warm_up_in_background(at_latest: float) -> threading.Thread:
    """``warm_up`` in a thread, once a session says its page is drawn (``warm_up_now``) or after
    ``at_latest`` seconds: not while the first visitor's page is being built, whose CPU it would take
    (0.7 s of it, holding the GIL)."""
    def run() -> None:
        _WARM_UP_NOW.wait(at_latest)
        warm_up()

    thread = threading.Thread(target=run, name="damnit-warm-up-plots", daemon=True)
    thread.start()
    return thread
