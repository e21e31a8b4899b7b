"""A HoloViews plot as a PNG file, drawn on the server (to send it to the logbook).

The browser draws plots with Bokeh, whose own PNG export needs a browser on the server; instead the
plotted elements are drawn again with HoloViews' matplotlib backend, from the same data, labels and
title, in the server process. A live plot (``DynamicMap``, ``HoloMap``) is drawn as it is now. Text is
drawn as text (no ``$...$`` maths), so titles and labels from context files show as they are written.
Drawing goes through pyplot, which is not thread-safe: one drawing at a time per process.
"""

from __future__ import annotations

import io
import threading
from typing import Any

from app.display.hv import hv

DPI = 150  # as the original saves its figures for the logbook
SIZE_INCHES = (9.0, 5.0)
_lock = threading.Lock()


def snapshot(obj: Any) -> hv.core.Dimensioned:
    """The static elements a plot shows now (live containers replaced by their current element)."""
    obj = getattr(obj, "object", obj)  # a pn.pane.HoloViews
    if isinstance(obj, hv.DynamicMap):
        obj = obj.last if obj.last is not None else obj[()]
    if isinstance(obj, hv.HoloMap):
        obj = obj.last
    if isinstance(obj, hv.Overlay) and any(isinstance(o, hv.HoloMap) for o in obj):
        obj = obj.clone([snapshot(o) for o in obj])  # a clone keeps the overlay's options (its title)
    if obj is None or not isinstance(obj, hv.core.Dimensioned):
        raise ValueError("nothing is plotted yet")
    return obj


def plot_title(obj: Any) -> str:
    """The title the plot was given for the browser (its Bokeh ``title`` option), or ''."""
    try:
        static = snapshot(obj)
    except ValueError:
        return ""
    title = hv.Store.lookup_options("bokeh", static, "plot").kwargs.get("title") or ""
    return title if isinstance(title, str) and "{" not in title else ""


def plot_png(obj: Any, title: str | None = None) -> bytes:
    """``obj`` (an element, overlay, live plot or HoloViews pane) as a PNG of about 1050x650 pixels
    (9x5 inches at 150 dpi, margins trimmed). Raises ValueError if there is nothing to draw."""
    # matplotlib is only needed here, and loading HoloViews' matplotlib backend takes a second or two:
    # imported on the first drawing, not when the dashboard starts.
    import matplotlib
    import matplotlib.pyplot as plt

    static = snapshot(obj)
    title = plot_title(obj) if title is None else title
    with _lock:
        hv.renderer("matplotlib")  # loads the backend, so that options for it are taken (first call)
    with _lock, matplotlib.rc_context({"text.parse_math": False}):
        sized = static.opts(backend="matplotlib", clone=True, aspect=SIZE_INCHES[0] / SIZE_INCHES[1],
                            fig_inches=SIZE_INCHES[0])
        fig = hv.render(sized, backend="matplotlib")
        try:
            if title and fig.axes:
                fig.axes[0].set_title(title)
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
        finally:
            plt.close(fig)
    return buf.getvalue()
