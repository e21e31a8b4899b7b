"""How one cell of the run table looks: number formatting, units, bold/background, errors, thumbnails
and sparklines, rendered as HTML in which every piece of user or data text is escaped.

The table shows these strings with Tabulator's ``html`` formatter, so this module is the one place that
decides what markup reaches a run-table cell; nothing else builds cell HTML.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import logging
import struct

import numpy as np

from app.config import zone_label
from app.display.formatting import format_number, format_time, join_numbers
from app.display.text import escape
from app.live.table import TableCell
from backend.storage import processing_state
from backend.storage.blobs import NPY_MAGIC, blob2numpy
from backend.storage.processing_state import ProcessingFailure, WaitingRun

CSS = """
.dmn-num { font-variant-numeric: tabular-nums; }
.dmn-units { font-style: italic; opacity: 0.65; margin-left: 2px; }
.dmn-err, .dmn-skip { display: inline-block; width: 14px; height: 14px; border-radius: 2px; vertical-align: middle; }
.dmn-err { background: #f57c00; }
.dmn-skip { background: #c8c8c8; }
.dmn-thumb { max-height: 35px; max-width: 100px; image-rendering: auto; vertical-align: middle; }
.dmn-prov { display: inline-block; width: 0; height: 0; border-top: 7px solid var(--dmn-prov, #888);
            border-left: 7px solid transparent; float: right; }
.dmn-run-proc .dmn-proc-mark { color: #1565c0; }
.dmn-fail-mark { color: #c62828; font-weight: bold; }
@keyframes dmn-flash-kf { from { background: #fff59d; } to { background: transparent; } }
.dmn-flash { animation: dmn-flash-kf 3s ease-out 1; display: block; }
.dmn-cell { display: block; padding: 0 2px; }
"""

EMPTY = ""
THUMB_BOX = (200, 70)  # twice .dmn-thumb's max size: as sharp as now on screens up to 2 device px per CSS px
THUMB_SHOWN = (100, 35)  # .dmn-thumb's max size in CSS px

log = logging.getLogger(__name__)


BLOB_HEAD = 256  # bytes of a blob that say an image's size or an array's dtype and shape


def text_colour_for(rgb) -> str:
    """Black or white text on a background, by perceived luminance (threshold 186 as the original)."""
    r, g, b = (int(x) for x in list(rgb)[:3])
    return "#000" if (r * 0.299 + g * 0.587 + b * 0.114) > 186 else "#fff"


def provenance_colour(prov: str) -> str:
    hue = int(hashlib.sha256(prov.encode()).hexdigest()[:8], 16) % 360
    return f"hsl({hue}, 70%, 45%)"


SPARK_POINTS = 100  # about one per pixel of the cell; a page can hold thousands of sparklines


def sparkline_svg(arr: np.ndarray, width: int = 100, height: int = 30) -> str:
    """A trendline (``[2, N]`` x/y, or 1-D y) drawn as an inline SVG polyline.

    Each drawn point's x and y (as the table formats numbers) ride along in ``data-x``/``data-y``, so
    hovering shows the value under the cursor (``js/sparkline_hover.js``); long lines are thinned to
    ``SPARK_POINTS`` evenly spaced points plus the extremes.
    """
    arr = np.asarray(arr, dtype=float)
    if arr.ndim == 2 and arr.shape[0] == 2:
        x, y = arr
    else:
        y = arr.ravel()
        x = np.arange(len(y), dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(y) < 2:
        return "<span class='dmn-num'>-</span>"
    if len(y) > SPARK_POINTS:
        idx = np.union1d(np.linspace(0, len(y) - 1, SPARK_POINTS - 2).astype(int), [np.argmin(y), np.argmax(y)])
        x, y = x[idx], y[idx]
    xr = (x.max() - x.min()) or 1.0
    yr = (y.max() - y.min()) or 1.0
    px = (x - x.min()) / xr * (width - 2) + 1
    py = height - 1 - (y - y.min()) / yr * (height - 2)
    # One formatting call per string (not one per number): a page can hold thousands of sparklines.
    pts = " ".join(["%.1f,%.1f"] * len(px)) % tuple(np.column_stack([px, py]).ravel().tolist())
    xs, ys = join_numbers(x), join_numbers(y)
    summary = f"trendline: min {format_number(float(y.min()))}, max {format_number(float(y.max()))}, {len(y)} points"
    return (f"<svg class='dmn-spark' width='{width}' height='{height}' viewBox='0 0 {width} {height}' "
            f"role='img' aria-label='{escape(summary)}' data-x='{escape(xs)}' data-y='{escape(ys)}'>"
            f"<polyline fill='none' stroke='#1976d2' stroke-width='1' points='{pts}'/></svg>")


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's header, without decoding it."""
    try:
        width, height = struct.unpack(">II", data[16:24])
    except struct.error:
        return None
    return (width, height) if width > 0 and height > 0 else None


def cell_png(data: bytes) -> bytes:
    """A PNG thumbnail no bigger than the cell shows it (``THUMB_BOX``).

    DAMNIT stores 300 px thumbnails (~150 KB for a detector image); a page holds hundreds of them
    but draws each at most 100x35 px, so larger ones are scaled down (once: callers cache).
    Small ones are passed on without decoding (the size is read from the PNG header).
    """
    size = png_size(data)
    if size is None:
        return data
    width, height = size
    if width <= THUMB_BOX[0] and height <= THUMB_BOX[1]:
        return data
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as img:
            img.thumbnail(THUMB_BOX, Image.Resampling.LANCZOS)
            out = io.BytesIO()
            img.save(out, format="PNG")
    except Exception as e:  # an unreadable thumbnail is shown as stored, as before
        log.debug("Thumbnail not scaled down: %s", e)
        return data
    small = out.getvalue()
    return small if len(small) < len(data) else data


def thumbnail_img(data: bytes, src: str | None = None) -> str:
    """An ``<img>`` for a PNG thumbnail (``data``: the PNG, or at least its header): fetched from ``src``
    (lazily, once in view) or inlined.

    Width and height are given, so rows keep their height while images load.
    """
    if src is None:
        src = "data:image/png;base64," + base64.b64encode(cell_png(data)).decode()
    size = png_size(data) or THUMB_SHOWN
    scale = min(1.0, THUMB_SHOWN[0] / size[0], THUMB_SHOWN[1] / size[1])
    w, h = max(1, round(size[0] * scale)), max(1, round(size[1] * scale))
    return (f"<img class='dmn-thumb' src='{escape(src)}' width='{w}' height='{h}' loading='lazy' "
            f"decoding='async' alt='thumbnail'>")


def array_description(head: bytes | None) -> str:
    """``"<dtype>: <shape>"`` of a stored numpy array, from the header at the start of its blob."""
    if not head or not head.startswith(NPY_MAGIC):
        return "<ndarray>"
    try:
        buf = io.BytesIO(head)
        version = np.lib.format.read_magic(buf)
        shape, _, dtype = (np.lib.format.read_array_header_1_0(buf) if version == (1, 0)
                           else np.lib.format.read_array_header_2_0(buf))
    except (ValueError, EOFError):
        return "<ndarray>"
    return f"{dtype}: {shape}"


def cell_html(cell: TableCell | None, blob: bytes | None = None, image_url: str | None = None) -> str:
    """The safe HTML of one computed-variable cell.

    ``blob`` is the cell's stored blob (for trendlines the whole of it, for images and arrays at least
    its first ``BLOB_HEAD`` bytes); ``image_url`` is where a thumbnail is fetched from (inlined without).
    """
    if cell is None:
        return EMPTY
    attrs = cell.attributes or {}
    if cell.value is None and attrs.get("error") is not None:
        cls = attrs.get("error_cls") or "Error"
        msg = str(attrs.get("error"))
        if cls in ("Skip", "SourceNameError"):
            tip = f"Skipped: {msg}" if cls == "Skip" else f"Missing data: {msg}"
            return f"<span class='dmn-skip' title='{escape(tip)}' data-error='{escape(cls)}'></span>"
        tip = f"{cls}: {msg}\n(see processing log for details)"
        return f"<span class='dmn-err' title='{escape(tip)}' data-error='{escape(cls)}'></span>"
    v = cell.value
    btype = cell.blob_type if v is None else None
    if v is None and btype is None:
        return EMPTY
    numeric = False
    if btype == "png":
        inner = thumbnail_img(blob or b"", image_url)
    elif btype == "trendline":
        inner = sparkline_svg(blob2numpy(blob)) if blob else ""
    elif btype == "numpy":
        inner = escape(array_description(blob))
    elif btype == "blob":
        inner = "&lt;blob&gt;"
    elif isinstance(v, (int, float, complex, np.number)) and not isinstance(v, bool):
        numeric = True
        inner = f"<span class='dmn-num'>{escape(format_number(v))}</span>"
        units = attrs.get("units")
        if units:
            inner += f"<span class='dmn-units'>{escape(units)}</span>"
    else:
        inner = escape(format_number(v))
    style = []
    bold = attrs.get("bold")
    if bold is None and numeric and cell.max_diff is not None:
        try:
            bold = float(cell.max_diff) > 1e-9
        except (TypeError, ValueError):
            bold = False
    if bold:
        style.append("font-weight:bold")
    bg = attrs.get("background")
    if bg is not None:
        try:
            rgb = [int(x) for x in list(bg)[:3]]
            style.append(f"background:rgb({rgb[0]},{rgb[1]},{rgb[2]});color:{text_colour_for(rgb)}")
        except (TypeError, ValueError):
            pass
    prov = cell.provenance
    if prov and prov not in ("context.py", "manual-input", "user", ""):
        inner = (f"<span class='dmn-prov' style='--dmn-prov:{provenance_colour(prov)}' "
                 f"title='{escape('Provenance: ' + prov)}'></span>") + inner
    style_attr = f" style='{';'.join(style)}'" if style else ""
    return f"<span class='dmn-cell'{style_attr}>{inner}</span>"


# What failed, in words (``ProcessingFailure.kind``).
FAILURE_KINDS = {
    processing_state.CONTEXT: "the context file did not load",
    processing_state.RUN: "the run could not be processed",
    processing_state.JOB: "the Slurm job failed",
    processing_state.CANCELLED: "the Slurm job was cancelled",
    processing_state.PROCESSING: "processing could not start",
}


def failure_text(failure: ProcessingFailure, tz: dt.tzinfo) -> str:
    """A failure for people, in one paragraph of plain text (what, when, why)."""
    what = FAILURE_KINDS.get(failure.kind, failure.kind)
    text = (f"Processing failed: {what} ({format_time(failure.failed_at, tz)} {zone_label(tz)})."
            f"\n{failure.reason}")
    if failure.slurm_job_id and failure.slurm_job_id not in failure.reason:
        text += f"\nSlurm job {failure.slurm_job_id}"
    return text


def waiting_text(waiting: WaitingRun, tz: dt.tzinfo) -> str:
    """A run waiting in the listener's queue, in plain text (since when, tries, next try, why)."""
    zone = zone_label(tz)
    tries = f"{waiting.attempts} attempt{'s' if waiting.attempts != 1 else ''} so far"
    nxt = (f"next at {format_time(waiting.next_attempt, tz)} {zone}" if waiting.next_attempt
           else "next when Slurm answers")
    return (f"Waiting for Slurm since {format_time(waiting.since, tz)} {zone} ({tries}, {nxt})."
            f"\n{waiting.reason}")


def run_html(run: int, processing: list[dict], failure: ProcessingFailure | None = None,
             waiting: WaitingRun | None = None, tz: dt.tzinfo = dt.timezone.utc) -> str:
    """The Run cell: the number, plus ⚙ (running), ⏳ (waiting in the listener's queue for Slurm) or ⋮
    (queued) with who/where/why as a tooltip, and ✕ when its last processing failed, with why.

    The ⚙/⏳/⋮ mark is a ``dmn-proc-mark`` of its own, which a page hides when its user hides the
    processing status; the failed mark (``dmn-fail-mark``) stays: it is the state of the run's data,
    like a variable's error, and stays until the run is processed successfully."""
    fail = ""
    if failure is not None:
        # The same cell goes to every session, read-only ones too: the way to act is said with who may.
        tip = failure_text(failure, tz) + ("\nTo process it again (with the right to edit): the row's "
                                           "right-click menu, or the Processing page.")
        fail = (f"<span class='dmn-fail-mark' data-failed='{escape(failure.kind)}' "
                f"title='{escape(tip)}'> ✕</span>")
    running = [p for p in processing if p.get("status") == "RUNNING"]
    if running:
        p = running[0]
        where = f"{p.get('username') or '?'}@{p.get('hostname') or '?'}"
        job = p.get("slurm_job_id")
        tip = f"Processing on {where}" + (f" (Slurm job {job})" if job else "")
        if len(processing) > 1:
            tip = f"Processing in {len(processing)} jobs"
        return (f"<b class='dmn-run-proc' data-processing='running'>{int(run)}"
                f"<span class='dmn-proc-mark' title='{escape(tip)}'> ⚙️</span>{fail}</b>")
    if waiting is not None:
        return (f"<b class='dmn-run-proc' data-processing='waiting'>{int(run)}"
                f"<span class='dmn-proc-mark' title='{escape(waiting_text(waiting, tz))}'> ⏳</span>{fail}</b>")
    if processing:
        return (f"<b class='dmn-run-proc' data-processing='queued'>{int(run)}"
                f"<span class='dmn-proc-mark' title='Processing is queued'> ⋮</span>{fail}</b>")
    return f"<b>{int(run)}{fail}</b>"
