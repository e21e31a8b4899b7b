"""Measuring what the browser drew: screenshots of elements as numpy arrays, and the shapes in them.

Tests of pictures measure the picture (bounding boxes of colours, the height of text in pixels), not
the models behind it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image


def shot(locator) -> np.ndarray:
    """A screenshot of one element as an (h, w, 3) int array."""
    return np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert("RGB")).astype(int)


def page_shot(page) -> np.ndarray:
    """The visible viewport as an (h, w, 3) int array."""
    return np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB")).astype(int)


@dataclass
class Box:
    top: int
    bottom: int  # inclusive
    left: int
    right: int  # inclusive

    @property
    def height(self) -> int:
        return self.bottom - self.top + 1

    @property
    def width(self) -> int:
        return self.right - self.left + 1

    @property
    def aspect(self) -> float:
        return self.width / self.height


def bbox(mask: np.ndarray) -> Box | None:
    """The bounding box of the True pixels (None when there are none)."""
    ys, xs = np.nonzero(mask)
    if not len(ys):
        return None
    return Box(int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max()))


def main_blob(mask: np.ndarray) -> Box | None:
    """The bounding box of the biggest group of True pixels, where groups are separated by empty
    columns, then rows (e.g. an image's spot apart from the same colour in its colour bar)."""
    cols = runs_of(mask.any(axis=0))
    if not cols:
        return None
    left, right = max(cols, key=lambda c: mask[:, c[0]:c[1] + 1].sum())
    sub = mask[:, left:right + 1]
    top, bottom = max(runs_of(sub.any(axis=1)), key=lambda r: sub[r[0]:r[1] + 1].sum())
    return Box(top, bottom, left, right) if sub[top:bottom + 1].any() else None


def near(img: np.ndarray, rgb: tuple[int, int, int], tol: int = 40) -> np.ndarray:
    """Pixels within ``tol`` of a colour in every channel."""
    return (np.abs(img - np.array(rgb)) <= tol).all(axis=2)


def background(img: np.ndarray) -> np.ndarray:
    """The most common colour (the background of a screenshot)."""
    colours, counts = np.unique(img.reshape(-1, 3), axis=0, return_counts=True)
    return colours[counts.argmax()]


def ink(img: np.ndarray, bg: np.ndarray | None = None, threshold: int = 60) -> np.ndarray:
    """Pixels that differ from the background (``bg``, default the most common colour) by more than
    ``threshold`` in some channel: text, lines, markers."""
    bg = background(img) if bg is None else bg
    return (np.abs(img - bg) > threshold).any(axis=2)


def runs_of(flags: np.ndarray) -> list[tuple[int, int]]:
    """(start, end inclusive) of each run of True in a 1-D boolean array."""
    out, start = [], None
    for i, f in enumerate(flags):
        if f and start is None:
            start = i
        elif not f and start is not None:
            out.append((start, i - 1))
            start = None
    if start is not None:
        out.append((start, len(flags) - 1))
    return out


def x_tick_label_height(img: np.ndarray, bg: np.ndarray | None = None) -> int:
    """Height in pixels of the x axis's tick labels in a screenshot of a plot.

    The x axis is the lowest row of ink spanning most of the plot's width; below it come the tick
    marks (ink in a few narrow columns), a gap, then the labels: the first band of rows below the gap
    whose ink is more than isolated tick marks.
    """
    mask = ink(img, bg)
    h, w = mask.shape
    wide = [y for y in range(h) if mask[y].sum() > 0.5 * w]
    if not wide:
        raise AssertionError("no x axis line found in the plot")
    axis = max(wide)
    below = mask[axis + 1:]
    rows = below.sum(axis=1)
    bands = runs_of(rows > 0)
    if len(bands) < 2:
        raise AssertionError(f"no tick labels below the x axis (bands of ink: {bands})")
    # bands[0] are the tick marks hanging from the axis; the labels are the next band.
    start, end = bands[1]
    return end - start + 1
