"""The run table's "Row filters" controls: pick a column and keep the runs whose cell passes.

Numeric columns get a range slider with the distribution of the column's values drawn under it (a
histogram of the live table's array, the kept range in colour) and min/max fields kept in step with
it (empty = no bound; a slider pushed to an end is no bound either, so new runs beyond it still show).
Other columns get a set of values. Any column can instead keep only the runs with a value in it, or
only those without (an image or none). A range or has-a-value filter applies as it is changed, a set
of values with "Apply filter"; the page shows each filter as a chip and marks the filtered column's
header.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import panel as pn
import param

from app.display.formatting import format_number
from app.display.text import escape, safe_options
from app.live.source import ProposalSource
from app.pages.run_table.model import TableModel
from app.pages.run_table.rows import RowFilter, category_texts, is_numeric

HIST_WIDTH = 320  # px, the slider's and the histogram's
HIST_HEIGHT = 44
HIST_BINS = 40
SLIDER_STEPS = 1000  # a non-integer column's slider moves in steps of its range / this
MODES = {"Values": "values", "Has a value": "has", "Empty": "empty"}


def histogram_svg(values: np.ndarray, start: float, end: float, low: float | None, high: float | None,
                  width: int = HIST_WIDTH, height: int = HIST_HEIGHT, bins: int = HIST_BINS) -> str:
    """The distribution of ``values`` over [start, end] as SVG bars, those in the kept range [low, high]
    (None: open) in colour and the others grey. Each bar's tooltip gives its count and range."""
    values = values[np.isfinite(values)]
    if end <= start:
        start, end = start - 0.5, end + 0.5
    counts, edges = np.histogram(values, bins=bins, range=(start, end))
    top = max(1, int(counts.max()) if len(counts) else 1)
    bar_w = width / bins
    lo = -np.inf if low is None else low
    hi = np.inf if high is None else high
    rects = []
    for i, n in enumerate(counts.tolist()):
        if not n:
            continue
        h = max(1.0, n / top * (height - 2))
        kept = edges[i + 1] > lo and edges[i] <= hi
        tip = f"{n} run{'s' if n > 1 else ''}: {format_number(float(edges[i]))} … {format_number(float(edges[i + 1]))}"
        rects.append(f"<rect class='{'dmn-hist-in' if kept else 'dmn-hist-out'}' x='{i * bar_w:.2f}' "
                     f"y='{height - h:.2f}' width='{max(1.0, bar_w - 1):.2f}' height='{h:.2f}' "
                     f"fill='{'#1976d2' if kept else '#c5cae9'}'><title>{escape(tip)}</title></rect>")
    return (f"<svg class='dmn-hist' width='{width}' height='{height}' viewBox='0 0 {width} {height}' "
            f"data-counts='{' '.join(str(int(c)) for c in counts)}' role='img' "
            f"aria-label='distribution of {len(values)} values'>"
            f"<line x1='0' x2='{width}' y1='{height - 0.5}' y2='{height - 0.5}' stroke='#999'/>"
            + "".join(rects) + "</svg>")


class FilterPanel(pn.viewable.Viewer):
    """Builds ``RowFilter``s for one page; ``apply(filter)`` and ``clear()`` are the page's."""

    column = param.String(default="", doc="The column being filtered")

    def __init__(self, source: ProposalSource, model: TableModel, apply: Callable[[RowFilter], None],
                 clear: Callable[[], None], chips: pn.viewable.Viewable, **params):
        super().__init__(**params)
        self.source, self.model, self._apply, self._clear, self.chips = source, model, apply, clear, chips
        self._syncing = False
        self._values = np.array([])
        self.col = pn.widgets.Select(label="Filter column", options=self._column_options(), width=220)
        self.mode = pn.widgets.RadioButtonGroup(options=MODES, value="values", align="end",
                                                css_classes=["dmn-filter-mode"])
        self.low = pn.widgets.FloatInput(label="min", value=None, width=110)
        self.high = pn.widgets.FloatInput(label="max", value=None, width=110)
        self.slider = pn.widgets.RangeSlider(label="Range", start=0, end=1, value=(0, 1), step=0.001,
                                             width=HIST_WIDTH, show_value=False, css_classes=["dmn-range"])
        self.hist = pn.pane.HTML("", width=HIST_WIDTH, height=HIST_HEIGHT + 4, margin=(0, 10),
                                 css_classes=["dmn-hist-pane"])
        self.cats = pn.widgets.MultiChoice(label="values", options=[], width=300)
        self.empty = pn.widgets.Checkbox(label="include empty", value=False, align="end")
        self.apply_btn = pn.widgets.Button(label="Apply filter", color="primary", align="end")
        self.clear_btn = pn.widgets.Button(label="Clear all filters", align="end")
        self.range_box = pn.Column(pn.Row(self.low, self.high), self.slider, self.hist)
        self.cat_box = pn.Row(self.cats)
        self.value_box = pn.Row(self.range_box, self.cat_box)

        self.col.param.watch(lambda e: setattr(self, "column", e.new or ""), "value")
        self.param.watch(self._on_column, "column")
        self.mode.param.watch(self._on_mode, "value")
        self.slider.param.watch(self._on_slide, "value")
        self.slider.param.watch(lambda e: self.apply(), "value_throttled")
        self.low.param.watch(self._on_bound, "value")
        self.high.param.watch(self._on_bound, "value")
        self.empty.param.watch(lambda e: self.apply(), "value")
        self.apply_btn.on_click(lambda e: self.apply())
        self.clear_btn.on_click(lambda e: self._clear())
        self.column = self.col.value or ""

    # -- choices ------------------------------------------------------------------------------------
    def _column_options(self) -> dict[str, str]:
        return {s.title: n for n, s in self.model.specs().items()}  # a native <select> shows labels as text

    def refresh_columns(self) -> None:
        """After columns came or went."""
        options = self._column_options()
        with param.parameterized.batch_call_watchers(self):
            self.col.options = options
            if self.column not in options.values():
                self.col.value = next(iter(options.values()), None)

    def show(self, column: str) -> None:
        """Filter on ``column`` (the header menu's "Filter on ...")."""
        if column in self.col.options.values():
            self.col.value = column
            self._on_column()

    def refresh_values(self) -> None:
        """Show the column's values again: a big proposal's older runs arrived after it was opened."""
        self._on_column()

    # -- reactions ----------------------------------------------------------------------------------
    def _on_column(self, *_) -> None:
        name = self.column
        if not name:
            return
        with self.source.lock:
            table = self.source.table
            rows = table.order()
            numeric = is_numeric(table, name)
            values = table.numbers(name, rows) if numeric else category_texts(table, name, rows)
        self._syncing = True
        try:
            self.range_box.visible, self.cat_box.visible = numeric, not numeric
            if numeric:
                self._values = values[~np.isnan(values)]
                known = self._values
                start = float(known.min()) if len(known) else 0.0
                end = float(known.max()) if len(known) else 1.0
                if end <= start:
                    start, end = start - 0.5, end + 0.5
                whole = bool(len(known)) and bool(np.all(np.mod(known, 1) == 0)) and end - start >= 1
                step = 1.0 if whole else (end - start) / SLIDER_STEPS
                self.slider.param.update(start=start, end=end, step=step, value=(start, end))
                # The range as placeholders, never as values: a value sent from here could overwrite
                # what the user is already typing (empty = no bound).
                self.low.placeholder = f"from {format_number(start)}" if len(known) else "no minimum"
                self.high.placeholder = f"to {format_number(end)}" if len(known) else "no maximum"
                self.low.value = self.high.value = None
                self._draw()
            else:
                texts = sorted({v for v in values if v is not None})
                self.cats.options = safe_options(texts[:2000])
                self.cats.value = []
        finally:
            self._syncing = False

    def _on_mode(self, event) -> None:
        self.value_box.visible = self.empty.visible = event.new == "values"
        if event.new != "values":
            self.apply()

    def _bounds(self) -> tuple[float | None, float | None]:
        return self.low.value, self.high.value

    def _on_slide(self, event) -> None:
        """The slider moved: its ends become the min/max fields (an end at the column's limit: none)."""
        if self._syncing:
            return
        a, b = event.new
        digits = max(0, 1 - int(np.floor(np.log10(self.slider.step)))) if self.slider.step > 0 else 6
        self._syncing = True
        try:
            self.low.value = None if a <= self.slider.start else round(float(a), digits)
            self.high.value = None if b >= self.slider.end else round(float(b), digits)
        finally:
            self._syncing = False
        self._draw()

    def _on_bound(self, event) -> None:
        """A bound typed in: the slider follows, and the filter applies."""
        if self._syncing:
            return
        low, high = self._bounds()
        start, end = self.slider.start, self.slider.end
        a = start if low is None else min(max(low, start), end)
        b = end if high is None else max(min(high, end), start)
        self._syncing = True
        try:
            self.slider.value = (a, max(a, b))
        finally:
            self._syncing = False
        self._draw()
        self.apply()

    def _draw(self) -> None:
        low, high = self._bounds()
        self.hist.object = histogram_svg(self._values, self.slider.start, self.slider.end, low, high)

    # -- the filter ---------------------------------------------------------------------------------
    def current(self) -> RowFilter | None:
        """The filter the controls describe (None: no column)."""
        name = self.column
        if not name:
            return None
        specs = self.model.specs()
        title = specs[name].title if name in specs else name
        if self.mode.value != "values":
            return RowFilter(column=name, title=title, kind="presence", has_value=self.mode.value == "has")
        if self.range_box.visible:
            low, high = self._bounds()
            return RowFilter(column=name, title=title, kind="range", low=low, high=high,
                             include_empty=self.empty.value)
        return RowFilter(column=name, title=title, kind="categories", categories=list(self.cats.value),
                         include_empty=self.empty.value)

    def apply(self) -> None:
        if self._syncing:
            return
        flt = self.current()
        if flt is not None:
            self._apply(flt)

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(pn.Row(self.col, self.mode, self.empty, self.apply_btn, self.clear_btn), self.value_box,
                         self.chips, sizing_mode="stretch_width")
